//! The GC queue's KV side (`GCQU` records): which unlinked files are due, and the final deletion.
//! The worker that removes their chunks on storage is `crate::gc`.
//!
//! Invariants: a queued file has nlink 0 and no dentry (its inode stays readable by id until
//! collected); the final transaction deletes the inode, its xattrs and the queue entry together,
//! and only if no write session appeared (read in the same transaction, so a racing open conflicts).
//! Every step is idempotent: a crash anywhere leaves the entry queued and the next pass redoes it.
use t3fs_common::proto::Inode;
use t3fs_common::{InodeId, Result};
use t3fs_kv::RangeOpts;

use super::{MetaStore, delete_inode, get_inode};
use crate::keys;

/// What the final step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Inode, xattrs and queue entry deleted.
    Collected,
    /// A write session holds the file: nothing deleted.
    Held,
    /// The entry was gone already (another meta server collected it).
    Gone,
}

impl MetaStore {
    /// Queue entries (unlink time ns, inode) of files unlinked before `before_ns`, oldest first.
    pub async fn gc_due(&self, before_ns: u64, limit: usize) -> Result<Vec<(u64, InodeId)>> {
        let kvs = t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                let (b, e) = keys::gc_due_range(before_ns);
                txn.get_range(&b, &e, RangeOpts { limit, reverse: false, snapshot: true }).await
            })
        })
        .await?;
        Ok(kvs.iter().filter_map(|kv| keys::gc_key_parts(&kv.key)).collect())
    }

    /// The queued inode (snapshot read); `None` if it is gone.
    pub async fn gc_inode(&self, id: InodeId) -> Result<Option<Inode>> {
        Ok(t3fs_kv::run(&*self.db, move |txn| Box::pin(async move { get_inode(txn, id, true).await })).await?)
    }

    /// Deletes the inode, its xattrs and the queue entry, unless a write session holds the file.
    pub async fn gc_finish(&self, unlinked_ns: u64, id: InodeId) -> Result<Finish> {
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                let key = keys::gc_key(unlinked_ns, id);
                if txn.get(&key, false).await?.is_none() {
                    return Ok(Finish::Gone);
                }
                let (b, e) = keys::session_range(id);
                if !txn.get_range(&b, &e, RangeOpts { limit: 1, reverse: false, snapshot: false }).await?.is_empty() {
                    return Ok(Finish::Held);
                }
                txn.clear(&key);
                if get_inode(txn, id, false).await?.is_some_and(|i| i.nlink == 0) {
                    delete_inode(txn, id);
                }
                Ok(Finish::Collected)
            })
        })
        .await?)
    }

    /// Moves a held entry to the back of the queue (unlink time `now_ns`), so held files do not
    /// keep the head of the queue busy.
    pub async fn gc_requeue(&self, unlinked_ns: u64, id: InodeId, now_ns: u64) -> Result<()> {
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                let old = keys::gc_key(unlinked_ns, id);
                if txn.get(&old, false).await?.is_some() {
                    txn.clear(&old);
                    txn.set(&keys::gc_key(now_ns, id), b"");
                }
                Ok(())
            })
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use t3fs_common::StatusCode;
    use t3fs_common::proto::OpenSession;

    use super::*;
    use crate::namespace::Caller;
    use crate::namespace::check::check_invariants;
    use crate::namespace::tests::store;

    #[tokio::test]
    async fn unlinked_files_wait_in_the_queue_until_collected() {
        let s = store().await;
        let root = Caller::default();
        let f = s.create(&root, InodeId::ROOT, b"f", 0o644, true).await.unwrap();
        let id = InodeId(f.id);
        s.add_session(&root, id, OpenSession { client_id: "c".into(), session_id: 9 }).await.unwrap();
        assert!(s.gc_due(u64::MAX, 10).await.unwrap().is_empty());
        let removed = s.remove(&root, InodeId::ROOT, b"f", false, "").await.unwrap();
        assert_eq!(removed.nlink, 0);
        check_invariants(s.db()).await;
        // Still readable by id (open handles), no longer linkable.
        assert_eq!(s.getattr(id).await.unwrap().nlink, 0);
        assert_eq!(s.link(&root, id, InodeId::ROOT, b"back").await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.statfs().await.unwrap().inodes, 1, "only the root is in the namespace");

        let due = s.gc_due(u64::MAX, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        let (t, qid) = due[0];
        assert_eq!(qid, id);
        assert!(s.gc_due(t, 10).await.unwrap().is_empty(), "not due before its unlink time");
        // The write session holds it; requeue moves it back.
        assert_eq!(s.gc_finish(t, id).await.unwrap(), Finish::Held);
        s.gc_requeue(t, id, t + 5).await.unwrap();
        assert_eq!(s.gc_due(u64::MAX, 10).await.unwrap(), vec![(t + 5, id)]);
        check_invariants(s.db()).await;
        // Closed: collected, once.
        s.end_session(id, 9).await.unwrap();
        assert_eq!(s.gc_finish(t + 5, id).await.unwrap(), Finish::Collected);
        assert_eq!(s.gc_finish(t + 5, id).await.unwrap(), Finish::Gone);
        assert_eq!(s.getattr(id).await.unwrap_err().code, StatusCode::NotFound);
        assert!(s.gc_inode(id).await.unwrap().is_none());
        check_invariants(s.db()).await;
    }
}
