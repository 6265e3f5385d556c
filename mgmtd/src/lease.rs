//! The primary lease: which of several mgmtd sharing one KV store is primary (3FS's
//! `extendLease`, research/3fs.md §2).
//!
//! The lease is one record, `SINGMgmtdLease` ([`crate::keys::LEASE`]), a prost-encoded [`Lease`].
//! Every mgmtd runs [`acquire`] every `extend_lease_interval_ms`; the transaction reads the record
//! (a conflicting read) and applies [`decide`]:
//!
//! | Stored lease | Outcome |
//! |---|---|
//! | none | take it: term 1 |
//! | written by a newer release | leave it alone (never roll back to older code) |
//! | held by me, with the term I hold | extend: end = now + length (never shortened) |
//! | expired (end <= now) | take over: term + 1 |
//! | otherwise (held by another, or by an earlier run of me) | leave it alone |
//!
//! The term never goes down: a lease is only ever rewritten with the same term (extension) or
//! the stored term + 1 (takeover). A takeover means the taker's memory is stale: it reloads
//! everything from the store and bootstraps again (see `crate::election`).
//!
//! **Clock assumption.** `lease_start_ms` / `lease_end_ms` are wall-clock ms (Unix epoch) of the
//! writer; standbys compare them with their own wall clock. The primary does not trust its lease
//! for its whole length: it stops serving `lease_margin_ms` before `start of the extending call +
//! lease_length_ms`, measured on its monotonic clock. That is safe as long as no standby's wall
//! clock runs ahead of the primary's by `lease_margin_ms` or more.
//!
//! Writes do not rely on clocks: every state-changing transaction of a primary re-reads the lease
//! with [`check_holder`] (3FS's `validate_lease_on_write`), so once another mgmtd took the lease a
//! deposed primary's writes fail (or conflict and then fail) with `NotPrimary`.
use prost::Message;
use t3fs_common::Error;
use t3fs_common::mgmtd_conn::not_primary;
use t3fs_kv::{KvEngine, KvError, Transaction};

use crate::keys;

/// This code's release of the lease rules. A lease written by a higher release is never taken
/// over by this code (no rolling back an upgrade by an old mgmtd that is still running).
pub const RELEASE: u32 = 1;

/// The stored lease (an on-disk format: only add fields).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Lease {
    /// The primary's node id.
    #[prost(uint32, tag = "1")]
    pub node_id: u32,
    /// The primary's gRPC address, as standbys name it in `NotPrimary` answers.
    #[prost(string, tag = "2")]
    pub grpc_addr: String,
    /// When this primary's term began (wall-clock ms of the primary).
    #[prost(uint64, tag = "3")]
    pub lease_start_ms: u64,
    /// When the lease ends unless extended (wall-clock ms of the primary).
    #[prost(uint64, tag = "4")]
    pub lease_end_ms: u64,
    /// Increases by one with every takeover; never goes down.
    #[prost(uint64, tag = "5")]
    pub term: u64,
    /// [`RELEASE`] of the code that wrote it.
    #[prost(uint32, tag = "6")]
    pub release_version: u32,
}

impl Lease {
    /// Whether the lease still runs at `now_ms` (by the reader's clock).
    pub fn live(&self, now_ms: u64) -> bool {
        self.lease_end_ms > now_ms
    }
}

/// The mgmtd running the transaction.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node_id: u32,
    pub grpc_addr: String,
}

/// What [`acquire`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The caller took the lease (a new term): it is primary with stale memory.
    Acquired(Lease),
    /// The caller held the lease and extended it.
    Extended(Lease),
    /// Someone else holds it (or it is not the caller's to take): the caller is a standby.
    Held(Lease),
}

/// The lease rules (the table above), pure. `held_term`: the term the caller holds as primary
/// (`None` on a standby).
pub fn decide(stored: Option<&Lease>, me: &Candidate, held_term: Option<u64>, now_ms: u64, length_ms: u64) -> Outcome {
    let fresh = |term: u64| Lease {
        node_id: me.node_id,
        grpc_addr: me.grpc_addr.clone(),
        lease_start_ms: now_ms,
        lease_end_ms: now_ms.saturating_add(length_ms),
        term,
        release_version: RELEASE,
    };
    let Some(stored) = stored else {
        return Outcome::Acquired(fresh(1));
    };
    if stored.release_version > RELEASE {
        return Outcome::Held(stored.clone());
    }
    if stored.node_id == me.node_id && held_term == Some(stored.term) {
        let mut l = stored.clone();
        l.grpc_addr = me.grpc_addr.clone();
        l.lease_end_ms = stored.lease_end_ms.max(now_ms.saturating_add(length_ms));
        l.release_version = RELEASE;
        return Outcome::Extended(l);
    }
    if !stored.live(now_ms) {
        return Outcome::Acquired(fresh(stored.term.saturating_add(1)));
    }
    Outcome::Held(stored.clone())
}

/// Reads and decodes the lease inside `txn` (a conflicting read).
pub async fn read(txn: &mut dyn Transaction) -> Result<Option<Lease>, KvError> {
    match txn.get(keys::LEASE, false).await? {
        None => Ok(None),
        Some(v) => Lease::decode(v.as_slice())
            .map(Some)
            .map_err(|e| KvError::User(Error::internal(format!("corrupt mgmtd lease record: {e}")))),
    }
}

/// Runs the lease transaction once (retrying conflicts) at the caller's wall clock.
pub async fn acquire(
    db: &dyn KvEngine,
    me: &Candidate,
    held_term: Option<u64>,
    length_ms: u64,
) -> Result<Outcome, Error> {
    let outcome = t3fs_kv::run(db, |txn| {
        let me = me.clone();
        Box::pin(async move {
            let stored = read(txn).await?;
            let outcome = decide(stored.as_ref(), &me, held_term, t3fs_common::now_ms(), length_ms);
            if let Outcome::Acquired(l) | Outcome::Extended(l) = &outcome {
                txn.set(keys::LEASE, &l.encode_to_vec());
            }
            Ok(outcome)
        })
    })
    .await?;
    Ok(outcome)
}

/// Fails with `NotPrimary` (naming the holder) unless `node_id` holds the lease in `term`. Call it
/// inside every state-changing transaction of a primary: the read conflicts with a takeover.
pub async fn check_holder(txn: &mut dyn Transaction, node_id: u32, term: u64) -> Result<(), KvError> {
    match read(txn).await? {
        Some(l) if l.node_id == node_id && l.term == term => Ok(()),
        Some(l) if l.node_id != node_id => Err(KvError::User(lost(Some(&l.grpc_addr)))),
        _ => Err(KvError::User(lost(None))),
    }
}

fn lost(primary: Option<&str>) -> Error {
    let e = not_primary(primary);
    Error::new(e.code, format!("lease lost: {}", e.message))
}

/// Ends the lease now if `node_id` still holds it in `term` (a clean shutdown hands over at once).
/// Returns whether it did.
pub async fn release(db: &dyn KvEngine, node_id: u32, term: u64) -> Result<bool, Error> {
    let released = t3fs_kv::run(db, |txn| {
        Box::pin(async move {
            match read(txn).await? {
                Some(mut l) if l.node_id == node_id && l.term == term => {
                    l.lease_end_ms = l.lease_end_ms.min(t3fs_common::now_ms());
                    txn.set(keys::LEASE, &l.encode_to_vec());
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    })
    .await?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use t3fs_common::StatusCode;

    use super::*;

    fn me(id: u32) -> Candidate {
        Candidate { node_id: id, grpc_addr: format!("h{id}:1") }
    }

    fn lease(id: u32, term: u64, end: u64) -> Lease {
        Lease {
            node_id: id,
            grpc_addr: format!("h{id}:1"),
            lease_start_ms: 0,
            lease_end_ms: end,
            term,
            release_version: RELEASE,
        }
    }

    #[test]
    fn rules() {
        // Empty store: take it with term 1.
        let Outcome::Acquired(l) = decide(None, &me(1), None, 100, 50) else { panic!() };
        assert_eq!((l.node_id, l.term, l.lease_start_ms, l.lease_end_ms), (1, 1, 100, 150));
        assert_eq!(l.grpc_addr, "h1:1");
        // Held by another and live: leave it alone, whatever the caller thinks it holds.
        let other = lease(2, 7, 200);
        assert_eq!(decide(Some(&other), &me(1), None, 199, 50), Outcome::Held(other.clone()));
        assert_eq!(decide(Some(&other), &me(1), Some(7), 199, 50), Outcome::Held(other.clone()));
        // Expired (end <= now): take over with the next term.
        let Outcome::Acquired(l) = decide(Some(&other), &me(1), None, 200, 50) else { panic!() };
        assert_eq!((l.node_id, l.term, l.lease_start_ms, l.lease_end_ms), (1, 8, 200, 250));
        // Mine in the term I hold: extend, keeping the start and the term; never shorten.
        let mine = Lease { lease_start_ms: 10, ..lease(1, 8, 250) };
        let Outcome::Extended(l) = decide(Some(&mine), &me(1), Some(8), 220, 50) else { panic!() };
        assert_eq!((l.term, l.lease_start_ms, l.lease_end_ms), (8, 10, 270));
        let Outcome::Extended(l) = decide(Some(&mine), &me(1), Some(8), 100, 50) else { panic!() };
        assert_eq!(l.lease_end_ms, 250, "an extension never shortens the lease");
        // Mine even after it expired, as long as nobody took it: still the same term.
        let Outcome::Extended(l) = decide(Some(&mine), &me(1), Some(8), 400, 50) else { panic!() };
        assert_eq!((l.term, l.lease_end_ms), (8, 450));
        // My node id but not my term (an earlier run of this mgmtd): wait for it to expire.
        assert_eq!(decide(Some(&mine), &me(1), None, 249, 50), Outcome::Held(mine.clone()));
        assert_eq!(decide(Some(&mine), &me(1), Some(7), 249, 50), Outcome::Held(mine.clone()));
        let Outcome::Acquired(l) = decide(Some(&mine), &me(1), None, 250, 50) else { panic!() };
        assert_eq!(l.term, 9);
        // A newer release's lease is never taken, even expired.
        let newer = Lease { release_version: RELEASE + 1, ..lease(2, 3, 10) };
        assert_eq!(decide(Some(&newer), &me(1), None, 1000, 50), Outcome::Held(newer.clone()));
    }

    #[test]
    fn terms_never_go_down() {
        // Random walks over candidates, clocks and held terms: every rewrite keeps or raises the term.
        for seed in 0..200u64 {
            let mut stored: Option<Lease> = None;
            let mut held: [Option<u64>; 3] = [None; 3];
            let mut now = 0u64;
            for step in 0..50u64 {
                let x = seed.wrapping_mul(6364136223846793005).wrapping_add(step.wrapping_mul(1442695040888963407));
                let who = (x >> 33) as usize % 3;
                now += (x >> 40) % 40;
                let before = stored.as_ref().map_or(0, |l| l.term);
                match decide(stored.as_ref(), &me(who as u32 + 1), held[who], now, 50) {
                    Outcome::Acquired(l) => {
                        assert_eq!(l.term, before + 1);
                        held = [None; 3];
                        held[who] = Some(l.term);
                        stored = Some(l);
                    }
                    Outcome::Extended(l) => {
                        assert_eq!(l.term, before);
                        assert_eq!(held[who], Some(l.term));
                        stored = Some(l);
                    }
                    Outcome::Held(l) => assert_eq!(Some(&l), stored.as_ref()),
                }
            }
        }
    }

    #[test]
    fn golden_encoding() {
        let l = Lease {
            node_id: 2,
            grpc_addr: "a:1".into(),
            lease_start_ms: 3,
            lease_end_ms: 4,
            term: 5,
            release_version: 1,
        };
        assert_eq!(l.encode_to_vec(), b"\x08\x02\x12\x03a:1\x18\x03\x20\x04\x28\x05\x30\x01");
        assert_eq!(Lease::decode(l.encode_to_vec().as_slice()).unwrap(), l);
    }

    #[tokio::test]
    async fn transactions_against_the_store() {
        let db = t3fs_kv::mem::MemKv::new();
        let len = 60_000;
        // 1 takes the empty lease; 2 and 3 are standbys.
        let Outcome::Acquired(l1) = acquire(db.as_ref(), &me(1), None, len).await.unwrap() else { panic!() };
        assert_eq!(l1.term, 1);
        assert!(matches!(acquire(db.as_ref(), &me(2), None, len).await.unwrap(), Outcome::Held(l) if l == l1));
        // 1 extends; 2 claiming to hold term 1 changes nothing.
        assert!(matches!(acquire(db.as_ref(), &me(1), Some(1), len).await.unwrap(), Outcome::Extended(_)));
        assert!(matches!(acquire(db.as_ref(), &me(2), Some(1), len).await.unwrap(), Outcome::Held(_)));

        // Writes check the holder inside their transaction.
        let check = |id: u32, term: u64| {
            let db = db.clone();
            async move {
                t3fs_kv::run(db.as_ref(), |txn| Box::pin(async move { check_holder(txn, id, term).await }))
                    .await
                    .map_err(Error::from)
            }
        };
        check(1, 1).await.unwrap();
        let e = check(2, 1).await.unwrap_err();
        assert_eq!(e.code, StatusCode::NotPrimary);
        assert_eq!(t3fs_common::mgmtd_conn::primary_hint(&e).as_deref(), Some("h1:1"));
        assert_eq!(check(1, 2).await.unwrap_err().code, StatusCode::NotPrimary);

        // Releasing needs the right term; then a standby takes over with term 2.
        assert!(!release(db.as_ref(), 1, 7).await.unwrap());
        assert!(!release(db.as_ref(), 2, 1).await.unwrap());
        assert!(release(db.as_ref(), 1, 1).await.unwrap());
        let Outcome::Acquired(l2) = acquire(db.as_ref(), &me(2), None, len).await.unwrap() else { panic!() };
        assert_eq!((l2.node_id, l2.term), (2, 2));
        // The deposed primary can neither extend nor write.
        assert!(matches!(acquire(db.as_ref(), &me(1), Some(1), len).await.unwrap(), Outcome::Held(l) if l == l2));
        assert_eq!(check(1, 1).await.unwrap_err().code, StatusCode::NotPrimary);
        check(2, 2).await.unwrap();

        // A corrupt record is an error, not a takeover.
        t3fs_kv::run(db.as_ref(), |txn| {
            txn.set(keys::LEASE, b"\xff\xff");
            Box::pin(async { Ok(()) })
        })
        .await
        .unwrap();
        assert_eq!(acquire(db.as_ref(), &me(3), None, len).await.unwrap_err().code, StatusCode::Internal);
    }

    #[tokio::test]
    async fn concurrent_candidates_elect_exactly_one() {
        let db = t3fs_kv::mem::MemKv::new();
        let tasks: Vec<_> = (1..=5u32)
            .map(|id| {
                let db = db.clone();
                tokio::spawn(async move { acquire(db.as_ref(), &me(id), None, 60_000).await.unwrap() })
            })
            .collect();
        let mut acquired = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Outcome::Acquired(_)) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 1);
    }
}
