//! Cluster-wide file locks (`LOCK` records, issue 7): the `Lock` RPC's get / set / release-owner,
//! and pruning the locks of clients that died.
//!
//! Each request is one KV transaction: it reads the inode (it must exist, except for a release;
//! any inode type, since flock works on directories too) and the inode's whole lock table with a conflicting read, decides
//! with [`crate::lock_table`] and writes the table back (or clears the key when it is empty). Two
//! concurrent setters on one inode therefore conflict in the KV and one retries against the
//! other's result: check-and-set is atomic across meta servers.
//!
//! A client's locks go away when it releases them (close / release of the file on its host), or,
//! if it died, when meta prunes its dead client session ([`MetaStore::prune_locks`], called by the
//! session pruner of `crate::gc` next to the write sessions). Deadlocks across owners are not
//! detected (no EDEADLK).
use prost::Message;
use t3fs_common::proto::{FileLock, LockOp, LockRsp, LockTable};
use t3fs_common::{Error, InodeId, Result, now_ns};
use t3fs_kv::{KvError, Transaction};

use super::{MetaStore, must_inode};
use crate::keys;
use crate::lock_table;

async fn read_table(
    txn: &mut dyn Transaction,
    id: InodeId,
    snapshot: bool,
) -> std::result::Result<Vec<FileLock>, KvError> {
    match txn.get(&keys::lock_key(id), snapshot).await? {
        None => Ok(Vec::new()),
        Some(v) => Ok(LockTable::decode(v.as_slice())
            .map_err(|e| Error::internal(format!("corrupt lock table of inode {id}: {e}")))?
            .locks),
    }
}

fn write_table(txn: &mut dyn Transaction, id: InodeId, locks: Vec<FileLock>) {
    if locks.is_empty() {
        txn.clear(&keys::lock_key(id));
    } else {
        txn.set(&keys::lock_key(id), &LockTable { locks }.encode_to_vec());
    }
}

impl MetaStore {
    /// Runs one lock request on inode `id` (see `LockOp` in meta.proto). A refused SET answers
    /// `granted: false` with the conflicting lock and changes nothing.
    pub async fn lock(&self, id: InodeId, op: LockOp, lock: FileLock) -> Result<LockRsp> {
        match op {
            LockOp::Get => lock_table::validate(&lock, false)?,
            LockOp::Set => lock_table::validate(&lock, true)?,
            LockOp::ReleaseOwner => {
                if lock.client_id.is_empty() {
                    return Err(Error::invalid("releasing locks needs a client id"));
                }
            }
            LockOp::Unspecified => return Err(Error::invalid("lock request without an op")),
        }
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let mut want = lock.clone();
            Box::pin(async move {
                // GET reads a snapshot: it changes nothing and need not conflict with setters.
                let snapshot = op == LockOp::Get;
                // Releasing needs no inode: a file deleted meanwhile must not keep its locks.
                if op != LockOp::ReleaseOwner {
                    must_inode(txn, id, true).await?;
                }
                let mut locks = read_table(txn, id, snapshot).await?;
                match op {
                    LockOp::Get => {
                        let conflict = lock_table::find_conflict(&locks, &want).cloned();
                        Ok(LockRsp { granted: conflict.is_none(), conflict })
                    }
                    LockOp::Set => {
                        if let Some(c) = lock_table::find_conflict(&locks, &want) {
                            return Ok(LockRsp { granted: false, conflict: Some(c.clone()) });
                        }
                        want.acquired_ns = now_ns();
                        lock_table::apply(&mut locks, &want);
                        write_table(txn, id, locks);
                        Ok(LockRsp { granted: true, conflict: None })
                    }
                    _ => {
                        if lock_table::release_owner(&mut locks, &want) > 0 {
                            write_table(txn, id, locks);
                        }
                        Ok(LockRsp { granted: true, conflict: None })
                    }
                }
            })
        })
        .await?)
    }

    /// Every lock held on `id` (for tests and tools).
    pub async fn locks_of(&self, id: InodeId) -> Result<Vec<FileLock>> {
        Ok(t3fs_kv::run(&*self.db, move |txn| Box::pin(async move { read_table(txn, id, true).await })).await?)
    }

    /// Drops the locks whose client is not in `live` and that were granted before `older_than_ns`;
    /// returns how many.
    pub async fn prune_locks(&self, live: &std::collections::HashSet<String>, older_than_ns: i64) -> Result<usize> {
        let dead = |l: &FileLock| !live.contains(&l.client_id) && l.acquired_ns < older_than_ns;
        let mut scan = t3fs_kv::PageScan::new(keys::all_locks_range(), 1000);
        let mut pruned = 0;
        while let Some(page) = scan.next(&*self.db).await? {
            for kv in &page {
                let id = keys::inode_id_of(&kv.key);
                let any_dead = match LockTable::decode(kv.value.as_slice()) {
                    Ok(t) => t.locks.iter().any(dead),
                    Err(_) => true,
                };
                if !any_dead {
                    continue;
                }
                // Re-read with a conflicting read: a lock set meanwhile is kept.
                let (live, key) = (live.clone(), kv.key.clone());
                pruned += t3fs_kv::run(&*self.db, move |txn| {
                    let (live, key) = (live.clone(), key.clone());
                    Box::pin(async move {
                        let locks = match txn.get(&key, false).await? {
                            None => return Ok(0),
                            Some(v) => LockTable::decode(v.as_slice()).map(|t| t.locks).unwrap_or_default(),
                        };
                        let before = locks.len();
                        let kept: Vec<FileLock> = locks
                            .into_iter()
                            .filter(|l| live.contains(&l.client_id) || l.acquired_ns >= older_than_ns)
                            .collect();
                        let n = before - kept.len();
                        if kept.is_empty() {
                            txn.clear(&key);
                        } else if n > 0 {
                            txn.set(&key, &LockTable { locks: kept }.encode_to_vec());
                        }
                        Ok(n)
                    })
                })
                .await?;
                tracing::debug!(inode = id.0, "locks of dead clients pruned");
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use t3fs_common::StatusCode;
    use t3fs_common::proto::{LockKind, LockType};

    use super::*;
    use crate::lock_table::tests::lk;
    use crate::namespace::Caller;
    use crate::namespace::tests::store;

    #[tokio::test]
    async fn set_get_release_and_prune_through_the_store() {
        let s = store().await;
        let f = s.create(&Caller::default(), InodeId::ROOT, b"f", 0o644, true).await.unwrap();
        let id = InodeId(f.id);
        let ok = s.lock(id, LockOp::Set, lk("a", 1, LockType::Write, 0, 99)).await.unwrap();
        assert!(ok.granted);
        assert!(s.lock(id, LockOp::Set, lk("b", 1, LockType::Write, 100, 199)).await.unwrap().granted);
        let no = s.lock(id, LockOp::Set, lk("b", 1, LockType::Write, 50, 150)).await.unwrap();
        assert!(!no.granted);
        let c = no.conflict.unwrap();
        assert_eq!((c.client_id.as_str(), c.start, c.end, c.pid), ("a", 0, 99, 42));
        let got = s.lock(id, LockOp::Get, lk("b", 1, LockType::Read, 0, u64::MAX)).await.unwrap();
        assert!(!got.granted);
        assert_eq!(got.conflict.unwrap().lock_type, LockType::Write as i32);
        assert_eq!(s.locks_of(id).await.unwrap().len(), 2, "a refused set changed nothing");
        // flock locks are another kind: no conflict with the POSIX ones.
        let mut fl = lk("c", 9, LockType::Write, 0, u64::MAX);
        fl.kind = LockKind::Flock as i32;
        assert!(s.lock(id, LockOp::Set, fl.clone()).await.unwrap().granted);
        // Release of one owner drops only its locks.
        assert!(s.lock(id, LockOp::ReleaseOwner, fl).await.unwrap().granted);
        assert!(s.lock(id, LockOp::ReleaseOwner, lk("a", 1, LockType::Unlock, 0, 0)).await.unwrap().granted);
        assert!(s.lock(id, LockOp::Set, lk("d", 1, LockType::Write, 0, 99)).await.unwrap().granted);
        // Bad input and missing inodes are refused.
        let e = s.lock(id, LockOp::Set, lk("a", 1, LockType::Write, 9, 1)).await.unwrap_err();
        assert_eq!(e.code, StatusCode::InvalidArgument);
        let e = s.lock(InodeId(999_999), LockOp::Set, lk("a", 1, LockType::Write, 0, 1)).await.unwrap_err();
        assert_eq!(e.code, StatusCode::NotFound);
        let gone = s.lock(InodeId(999_999), LockOp::ReleaseOwner, lk("a", 1, LockType::Unlock, 0, 0)).await;
        assert!(gone.unwrap().granted, "releasing on a deleted inode is fine");
        assert_eq!(
            s.lock(id, LockOp::Unspecified, lk("a", 1, LockType::Write, 0, 1)).await.unwrap_err().code,
            StatusCode::InvalidArgument
        );

        // Pruning: only dead clients' locks older than the bound go; an emptied table is cleared.
        let live: std::collections::HashSet<String> = ["b".to_string()].into();
        assert_eq!(s.prune_locks(&live, 0).await.unwrap(), 0, "too young");
        assert_eq!(s.prune_locks(&live, i64::MAX).await.unwrap(), 1);
        let left: Vec<String> = s.locks_of(id).await.unwrap().into_iter().map(|l| l.client_id).collect();
        assert_eq!(left, ["b"]);
        assert_eq!(s.prune_locks(&Default::default(), i64::MAX).await.unwrap(), 1);
        assert!(s.locks_of(id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_setters_exclude_each_other() {
        let s = std::sync::Arc::new(store().await);
        let f = s.create(&Caller::default(), InodeId::ROOT, b"g", 0o644, true).await.unwrap();
        let id = InodeId(f.id);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.lock(id, LockOp::Set, lk(&format!("c{i}"), 1, LockType::Write, 0, u64::MAX))
                        .await
                        .unwrap()
                        .granted
                })
            })
            .collect();
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.unwrap());
        }
        assert_eq!(granted, 1, "exactly one of the racing exclusive lockers wins");
        assert_eq!(s.locks_of(id).await.unwrap().len(), 1);
    }
}
