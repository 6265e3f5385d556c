//! Cluster-wide file locks (issue 7): POSIX `fcntl` record locks and BSD `flock` locks, kept by
//! meta in one lock table per inode so that every client (every FUSE host) sees the same locks.
//!
//! A lock's owner is this client's mgmtd client session id ([`Client::client_id`]) plus a
//! caller-chosen 64-bit `owner` (the FUSE kernel's `lock_owner`) and the lock kind. When this client
//! dies without releasing, meta drops its locks once mgmtd no longer lists its client session (see
//! docs/meta.md). Requests never wait: a conflicting set is answered with the conflicting lock, and
//! blocking waits are the caller's (the FUSE daemon retries with backoff, see docs/fuse.md).
use t3fs_common::proto::{self, FileLock, LockKind, LockOp, LockType};
use t3fs_common::{Error, InodeId, Result};

use crate::{Client, UserInfo};

/// One lock request: kind, type (read, write, or unlock for [`Client::set_lock`]) and the inclusive
/// byte range (`end == u64::MAX`: to the end of the file). `pid` is informational (F_GETLK shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSpec {
    pub kind: LockKind,
    pub lock_type: LockType,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

impl Client {
    async fn lock_call(
        &self,
        user: &UserInfo,
        inode: InodeId,
        op: LockOp,
        owner: u64,
        s: &LockSpec,
    ) -> Result<proto::LockRsp> {
        if s.start > s.end {
            return Err(Error::invalid(format!("lock range {}..={} is empty", s.start, s.end)));
        }
        let req = proto::LockReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            op: op as i32,
            lock: Some(FileLock {
                client_id: self.client_id().to_string(),
                owner,
                kind: s.kind as i32,
                lock_type: s.lock_type as i32,
                start: s.start,
                end: s.end,
                pid: s.pid,
                acquired_ns: 0,
            }),
        };
        self.meta_call("lock", |mut c| {
            let r = req.clone();
            async move { c.lock(r).await }
        })
        .await
    }

    /// F_GETLK: the first lock of another owner that conflicts with `want`, or `None`.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, owner, start = want.start, end = want.end))]
    pub async fn get_lock(
        &self,
        user: &UserInfo,
        inode: InodeId,
        owner: u64,
        want: &LockSpec,
    ) -> Result<Option<FileLock>> {
        let rsp = self.lock_call(user, inode, LockOp::Get, owner, want).await?;
        Ok(if rsp.granted { None } else { rsp.conflict })
    }

    /// F_SETLK: sets (or, with `LockType::Unlock`, clears) `want` for `owner`. `Ok(None)`: done;
    /// `Ok(Some(conflict))`: another owner holds a conflicting lock and nothing changed. Setting the
    /// same lock twice is harmless, so retries after a lost answer are safe.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, owner, start = want.start, end = want.end))]
    pub async fn set_lock(
        &self,
        user: &UserInfo,
        inode: InodeId,
        owner: u64,
        want: &LockSpec,
    ) -> Result<Option<FileLock>> {
        let rsp = self.lock_call(user, inode, LockOp::Set, owner, want).await?;
        if rsp.granted {
            return Ok(None);
        }
        rsp.conflict.map(Some).ok_or_else(|| Error::internal("meta refused a lock without naming the conflict"))
    }

    /// Drops every lock of `owner` (of `kind`) on `inode` (close of a file, release of a flock).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, owner))]
    pub async fn release_locks(&self, user: &UserInfo, inode: InodeId, owner: u64, kind: LockKind) -> Result<()> {
        let s = LockSpec { kind, lock_type: LockType::Unlock, start: 0, end: u64::MAX, pid: 0 };
        self.lock_call(user, inode, LockOp::ReleaseOwner, owner, &s).await.map(|_| ())
    }
}
