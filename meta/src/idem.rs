//! Idempotency records: a retried remove/rename returns the first attempt's result.
//!
//! A client that loses the reply of a successful `remove` and retries would otherwise get NotFound
//! (or, for a rename, apply a second rename). So a mutation carrying a non-empty request id reads
//! `IDEM` + request id with a *conflicting* read inside its transaction: a live record for the same
//! op and uid short-circuits to the recorded result; otherwise the op runs and writes its result
//! under that key in the same transaction (so the record exists iff the effect committed).
//! Concurrent retries of one id conflict on the key and serialize.
//!
//! Records older than the TTL are ignored (and overwritten) and deleted by [`spawn_cleaner`]. Only
//! successes are recorded: a failed op changed nothing, so re-running it is correct.
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use t3fs_common::periodic::{First, spawn_every};
use t3fs_common::{Error, now_ns};
use t3fs_kv::{Db, KvError, RangeOpts, Transaction};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::keys;

/// Records deleted per cleaner transaction.
const CLEAN_PAGE: usize = 512;
/// Longest request id that gets a record (longer ones are refused as bad input).
pub const MAX_REQUEST_ID: usize = 256;

/// The stored value of an `IDEM` key.
#[derive(Clone, PartialEq, Message)]
pub struct IdemRecord {
    /// When the op committed (wall clock, ns).
    #[prost(int64, tag = "1")]
    pub time_ns: i64,
    /// "remove" or "rename": a reused id for another op is not a retry.
    #[prost(string, tag = "2")]
    pub op: String,
    /// The caller's uid: another user's record is never returned.
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    /// The op's encoded response message.
    #[prost(bytes = "vec", tag = "4")]
    pub result: Vec<u8>,
}

/// Checks a request id before it is used as a key.
pub fn validate_request_id(request_id: &str) -> Result<(), Error> {
    if request_id.len() > MAX_REQUEST_ID {
        return Err(Error::invalid(format!("request id is {} bytes, the limit is {MAX_REQUEST_ID}", request_id.len())));
    }
    Ok(())
}

/// The live recorded result of `op` by `uid` under `request_id`, if any (conflicting read).
pub async fn recorded(
    txn: &mut dyn Transaction,
    request_id: &str,
    op: &str,
    uid: u32,
    ttl: Duration,
) -> Result<Option<Vec<u8>>, KvError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let Some(v) = txn.get(&keys::idem_key(request_id), false).await? else { return Ok(None) };
    let rec = IdemRecord::decode(v.as_slice())
        .map_err(|e| Error::internal(format!("corrupt idempotency record {request_id}: {e}")))?;
    let age = now_ns().saturating_sub(rec.time_ns);
    if rec.op != op || rec.uid != uid || age > ttl.as_nanos().min(i64::MAX as u128) as i64 {
        return Ok(None);
    }
    Ok(Some(rec.result))
}

/// Writes the record of a successful op (nothing when `request_id` is empty).
pub fn record(txn: &mut dyn Transaction, request_id: &str, op: &str, uid: u32, result: Vec<u8>) {
    if request_id.is_empty() {
        return;
    }
    let rec = IdemRecord { time_ns: now_ns(), op: op.to_string(), uid, result };
    txn.set(&keys::idem_key(request_id), &rec.encode_to_vec());
}

/// Deletes every record older than `ttl`; returns how many. Scans with snapshot reads and adds a
/// read conflict on each key it clears only, so it never conflicts with ops on other ids.
pub async fn clean_expired(db: &Db, ttl: Duration) -> Result<usize, Error> {
    let (mut begin, end) = keys::idem_range();
    let cutoff = now_ns().saturating_sub(ttl.as_nanos().min(i64::MAX as u128) as i64);
    let mut total = 0;
    loop {
        let (b, e) = (begin.clone(), end.clone());
        let (cleared, next) = t3fs_kv::run(&**db, move |txn| {
            let (b, e) = (b.clone(), e.clone());
            Box::pin(async move {
                let opts = RangeOpts { limit: CLEAN_PAGE, reverse: false, snapshot: true };
                let page = txn.get_range(&b, &e, opts).await?;
                let mut cleared = 0;
                for kv in &page {
                    // An undecodable record is garbage too.
                    let old = IdemRecord::decode(kv.value.as_slice()).map(|r| r.time_ns < cutoff).unwrap_or(true);
                    if old {
                        txn.add_read_conflict_range(&kv.key, &t3fs_kv::key_after(&kv.key));
                        txn.clear(&kv.key);
                        cleared += 1;
                    }
                }
                let next = (page.len() == CLEAN_PAGE).then(|| page.last().map(|kv| t3fs_kv::key_after(&kv.key)));
                Ok((cleared, next.flatten()))
            })
        })
        .await?;
        total += cleared;
        match next {
            Some(n) => begin = n,
            None => return Ok(total),
        }
    }
}

/// Runs [`clean_expired`] every interval until `cancel`. `settings` gives the TTL and the interval
/// in force (both hot config items), read before every wait and every cleanup.
pub fn spawn_cleaner(
    db: Db,
    settings: impl Fn() -> (Duration, Duration) + Send + Sync + 'static,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let settings = Arc::new(settings);
    let ttl = settings.clone();
    spawn_every(
        First::AfterInterval,
        move || settings().1,
        cancel,
        move || {
            let (db, ttl) = (db.clone(), ttl().0);
            async move {
                match clean_expired(&db, ttl).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(n, "removed expired idempotency records"),
                    Err(e) => tracing::warn!(error = %e, "idempotency record cleanup failed"),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3fs_kv::mem::MemKv;

    #[tokio::test]
    async fn records_expire_and_are_cleaned() {
        let db: Db = MemKv::new();
        let ttl = Duration::from_secs(60);
        t3fs_kv::run(&*db, |txn| {
            Box::pin(async move {
                record(txn, "fresh", "remove", 7, b"r1".to_vec());
                record(txn, "", "remove", 7, b"ignored".to_vec());
                let old =
                    IdemRecord { time_ns: now_ns() - 120_000_000_000, op: "remove".into(), uid: 7, result: vec![] };
                txn.set(&keys::idem_key("old"), &old.encode_to_vec());
                txn.set(&keys::idem_key("junk"), b"\xff\xff\xff");
                Ok(())
            })
        })
        .await
        .unwrap();
        let got = t3fs_kv::run(&*db, |txn| {
            Box::pin(async move {
                Ok((
                    recorded(txn, "fresh", "remove", 7, ttl).await?,
                    recorded(txn, "fresh", "rename", 7, ttl).await?,
                    recorded(txn, "fresh", "remove", 8, ttl).await?,
                    recorded(txn, "old", "remove", 7, ttl).await?,
                    recorded(txn, "", "remove", 7, ttl).await?,
                ))
            })
        })
        .await
        .unwrap();
        assert_eq!(got, (Some(b"r1".to_vec()), None, None, None, None));
        assert_eq!(clean_expired(&db, ttl).await.unwrap(), 2);
        assert_eq!(clean_expired(&db, ttl).await.unwrap(), 0);
        let (b, e) = keys::idem_range();
        let left = t3fs_kv::run(&*db, move |txn| {
            let (b, e) = (b.clone(), e.clone());
            Box::pin(async move { txn.get_range(&b, &e, RangeOpts::default()).await })
        })
        .await
        .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, keys::idem_key("fresh"));
        assert!(validate_request_id(&"x".repeat(MAX_REQUEST_ID + 1)).is_err());
    }
}
