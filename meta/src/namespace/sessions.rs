//! Write sessions: which clients have a file open for write (`INOS` records).
//!
//! A client opening a file for write (create, or open with `write`) names an [`OpenSession`]: its
//! mgmtd client session id and a random id for this open. Meta records it; close with that id
//! deletes it. A file with a write session is never garbage-collected (`crate::gc` skips it), so a
//! writer whose file another client unlinked keeps writing into chunks that stay. Sessions of
//! clients that died without closing are pruned when mgmtd no longer lists their client session
//! (`crate::gc::prune_sessions`).
//!
//! Open checks the caller's permission on the file itself (read, plus write for `write`); create
//! checks the parent as before. A create names its session in the create request and the record is
//! written in the create's own transaction ([`MetaStore::create_open`]); a close ends it in the
//! close's transaction ([`MetaStore::close_session`]). So opening a new file for write and closing
//! it cost one durable commit each, not two.
use prost::Message;
use t3fs_common::proto::{Inode, InodeType, OpenSession, WriteSession};
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{RangeOpts, Transaction};

use super::{Caller, MetaStore, is_dir, must_inode, perm};
use crate::keys;

/// Longest client id accepted in a session.
pub const MAX_CLIENT_ID: usize = 256;

pub(super) fn check_session(s: &OpenSession) -> Result<()> {
    if s.client_id.is_empty() || s.client_id.len() > MAX_CLIENT_ID || s.session_id == 0 {
        return Err(Error::invalid(format!(
            "a write session needs a client id of 1 to {MAX_CLIENT_ID} bytes and a non-zero session id"
        )));
    }
    Ok(())
}

pub(super) fn put_session(txn: &mut dyn Transaction, id: InodeId, s: &OpenSession, uid: u32) {
    let value = WriteSession { client_id: s.client_id.clone(), uid, opened_ns: now_ns() };
    txn.set(&keys::session_key(id, s.session_id), &value.encode_to_vec());
}

impl MetaStore {
    /// Opens an existing regular file: checks write permission with `write`, else read permission
    /// (the caller checks read too for O_RDWR, as a FUSE mount does from the attributes);
    /// with a session, records it (a writer, or a reader that wants the file kept, e.g. a FUSE mount
    /// holding an unlinked file open). Directories are refused with IsDirectory.
    pub async fn open_file(
        &self,
        caller: &Caller,
        id: InodeId,
        write: bool,
        session: Option<OpenSession>,
    ) -> Result<Inode> {
        if let Some(s) = &session {
            check_session(s)?;
        }
        let caller = caller.clone();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, session) = (caller.clone(), session.clone());
            Box::pin(async move {
                let inode = must_inode(txn, id, false).await?;
                if is_dir(&inode) {
                    return Err(Error::new(StatusCode::IsDirectory, format!("inode {id} is a directory")).into());
                }
                if inode.inode_type != InodeType::File as i32 {
                    return Err(Error::invalid(format!("inode {id} is not a regular file")).into());
                }
                perm::check(&caller, &inode, if write { perm::W } else { perm::R })?;
                if let Some(s) = &session {
                    put_session(txn, id, s, caller.uid);
                }
                Ok(inode)
            })
        })
        .await?)
    }

    /// Records a write session for a file the caller just created or opened.
    pub async fn add_session(&self, caller: &Caller, id: InodeId, session: OpenSession) -> Result<()> {
        check_session(&session)?;
        let uid = caller.uid;
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let session = session.clone();
            Box::pin(async move {
                must_inode(txn, id, true).await?;
                put_session(txn, id, &session, uid);
                Ok(())
            })
        })
        .await?)
    }

    /// Ends a write session (a missing one is fine: close may be retried).
    pub async fn end_session(&self, id: InodeId, session_id: u64) -> Result<()> {
        if session_id == 0 {
            return Ok(());
        }
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            txn.clear(&keys::session_key(id, session_id));
            Box::pin(async { Ok(()) })
        })
        .await?)
    }

    /// Deletes the write sessions whose client is not in `live` and that were opened before
    /// `older_than_ns`; returns how many.
    pub async fn prune_sessions(&self, live: &std::collections::HashSet<String>, older_than_ns: i64) -> Result<usize> {
        let mut scan = t3fs_kv::PageScan::new(keys::all_sessions_range(), 1000);
        let mut pruned = 0;
        while let Some(page) = scan.next(&*self.db).await? {
            let dead: Vec<Vec<u8>> = page
                .iter()
                .filter(|kv| match WriteSession::decode(kv.value.as_slice()) {
                    Ok(w) => !live.contains(&w.client_id) && w.opened_ns < older_than_ns,
                    Err(_) => true,
                })
                .map(|kv| kv.key.clone())
                .collect();
            if !dead.is_empty() {
                let n = dead.len();
                t3fs_kv::run(&*self.db, move |txn| {
                    for k in &dead {
                        txn.clear(k);
                    }
                    Box::pin(async { Ok(()) })
                })
                .await?;
                pruned += n;
            }
        }
        Ok(pruned)
    }

    /// The write sessions of `id` (session id, record).
    pub async fn sessions_of(&self, id: InodeId) -> Result<Vec<(u64, WriteSession)>> {
        let kvs = t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                let (b, e) = keys::session_range(id);
                txn.get_range(&b, &e, RangeOpts { limit: 0, reverse: false, snapshot: true }).await
            })
        })
        .await?;
        kvs.iter()
            .map(|kv| {
                let (_, sid) = keys::session_key_parts(&kv.key)
                    .ok_or_else(|| Error::internal("malformed write session key".to_string()))?;
                let s = WriteSession::decode(kv.value.as_slice())
                    .map_err(|e| Error::internal(format!("corrupt write session of inode {id}: {e}")))?;
                Ok((sid, s))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::CloseLength;
    use crate::namespace::tests::store;

    fn sess(id: u64) -> OpenSession {
        OpenSession { client_id: "client-a".into(), session_id: id }
    }

    /// The newest commit version: each durable commit adds one.
    async fn version(s: &MetaStore) -> u64 {
        s.db().begin().await.unwrap().read_version()
    }

    #[tokio::test]
    async fn create_for_write_and_close_are_one_commit_each() {
        let s = store().await;
        let root = Caller::default();
        // The first create takes an id batch (its own commit); measure after it.
        s.create(&root, InodeId::ROOT, b"warm", 0o644, true).await.unwrap();
        let v0 = version(&s).await;
        let f = s.create_open(&root, InodeId::ROOT, b"f", 0o644, true, Some(sess(7))).await.unwrap();
        let id = InodeId(f.id);
        assert_eq!(version(&s).await, v0 + 1, "create and its session in one commit");
        let got = s.sessions_of(id).await.unwrap();
        assert_eq!(got.iter().map(|(sid, w)| (*sid, w.uid)).collect::<Vec<_>>(), [(7, 0)]);

        // Opening the existing file through create records the session too, still one commit.
        let again = s.create_open(&root, InodeId::ROOT, b"f", 0o644, false, Some(sess(8))).await.unwrap();
        assert_eq!(again.id, f.id);
        assert_eq!(version(&s).await, v0 + 2);
        assert_eq!(s.sessions_of(id).await.unwrap().len(), 2);

        // A close that wrote nothing ends the session in one commit and changes nothing else.
        let v1 = version(&s).await;
        let c = s.close_session(id, false, CloseLength { hint: 123, ..Default::default() }, 7).await.unwrap();
        assert_eq!((c.length, c.mtime_ns), (f.length, f.mtime_ns));
        assert_eq!(version(&s).await, v1 + 1);
        // A close that wrote grows the length and ends the session in the same commit.
        let c = s.close_session(id, true, CloseLength { hint: 4096, ..Default::default() }, 8).await.unwrap();
        assert_eq!(c.length, 4096);
        assert_eq!(version(&s).await, v1 + 2);
        assert!(s.sessions_of(id).await.unwrap().is_empty());
        // Neither wrote nor held a session: no commit at all. Retried closes are harmless.
        s.close_session(id, false, CloseLength::default(), 0).await.unwrap();
        assert_eq!(version(&s).await, v1 + 2);
        s.close_session(id, false, CloseLength::default(), 8).await.unwrap();
        assert!(s.sessions_of(id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn create_with_a_bad_session_changes_nothing() {
        let s = store().await;
        let root = Caller::default();
        let bad = OpenSession { client_id: String::new(), session_id: 3 };
        let e = s.create_open(&root, InodeId::ROOT, b"f", 0o644, true, Some(bad)).await.unwrap_err();
        assert_eq!(e.code, StatusCode::InvalidArgument);
        assert_eq!(s.lookup(&root, InodeId::ROOT, b"f").await.unwrap_err().code, StatusCode::NotFound);
        // A refused create (name exists, exclusive) records no session either.
        let f = s.create(&root, InodeId::ROOT, b"g", 0o644, true).await.unwrap();
        let e = s.create_open(&root, InodeId::ROOT, b"g", 0o644, true, Some(sess(5))).await.unwrap_err();
        assert_eq!(e.code, StatusCode::AlreadyExists);
        assert!(s.sessions_of(InodeId(f.id)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_checks_permissions_and_records_sessions() {
        let s = store().await;
        let root = Caller::default();
        let alice = Caller { uid: 1000, gid: 1000, gids: vec![] };
        let f = s.create(&root, InodeId::ROOT, b"f", 0o644, true).await.unwrap();
        let id = InodeId(f.id);
        // Read is fine for others; write is not.
        s.open_file(&alice, id, false, None).await.unwrap();
        s.open_file(&alice, id, false, Some(sess(7))).await.unwrap();
        s.end_session(id, 7).await.unwrap();
        let e = s.open_file(&alice, id, true, Some(sess(1))).await.unwrap_err();
        assert_eq!(e.code, StatusCode::PermissionDenied);
        assert!(s.sessions_of(id).await.unwrap().is_empty(), "a refused open records nothing");
        // The owner opens for write twice; each open is its own session.
        s.open_file(&root, id, true, Some(sess(1))).await.unwrap();
        s.add_session(&root, id, sess(2)).await.unwrap();
        let got = s.sessions_of(id).await.unwrap();
        assert_eq!(
            got.iter().map(|(sid, w)| (*sid, w.client_id.as_str())).collect::<Vec<_>>(),
            [(1, "client-a"), (2, "client-a")]
        );
        s.end_session(id, 1).await.unwrap();
        s.end_session(id, 1).await.unwrap();
        assert_eq!(s.sessions_of(id).await.unwrap().len(), 1);
        // Bad sessions and directories are refused.
        let bad = OpenSession { client_id: String::new(), session_id: 3 };
        assert_eq!(s.open_file(&root, id, true, Some(bad)).await.unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(s.open_file(&root, InodeId::ROOT, false, None).await.unwrap_err().code, StatusCode::IsDirectory);
        assert_eq!(s.add_session(&root, InodeId(999_999), sess(4)).await.unwrap_err().code, StatusCode::NotFound);

        // Pruning: only dead clients' sessions older than the bound go.
        let other = OpenSession { client_id: "client-b".into(), session_id: 5 };
        s.add_session(&root, id, other).await.unwrap();
        let live: std::collections::HashSet<String> = ["client-a".to_string()].into();
        assert_eq!(s.prune_sessions(&live, 0).await.unwrap(), 0, "too young");
        assert_eq!(s.prune_sessions(&live, i64::MAX).await.unwrap(), 1);
        let left: Vec<u64> = s.sessions_of(id).await.unwrap().into_iter().map(|(sid, _)| sid).collect();
        assert_eq!(left, [2]);
    }
}
