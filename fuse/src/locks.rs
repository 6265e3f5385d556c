//! Cluster-wide file locks through FUSE: `fcntl` record locks (F_GETLK, F_SETLK, F_SETLKW) and
//! `flock`, kept by meta so that every mount of the cluster sees the same locks (issue 7).
//!
//! At init the daemon asks for `FUSE_POSIX_LOCKS` and `FUSE_FLOCK_LOCKS`; the kernel then sends
//! every lock request here instead of keeping locks per host. The lock owner is the kernel's
//! `lock_owner` (POSIX: the process's file table; flock: the open file description), prefixed by
//! meta with this mount's client session id.
//!
//! - flock: fuser 0.18 does not pass the request's `FUSE_LK_FLOCK` flag on, so a flock arrives as
//!   a whole-file lock of its open file description and is stored as a POSIX lock: flock locks work
//!   across hosts, but a flock and an fcntl lock of different owners on one file conflict (as on
//!   NFS), unlike on a local Linux file system. Meta itself keeps the two kinds apart (`LockKind`).
//! - Blocking requests (F_SETLKW, flock without LOCK_NB) retry in their own task with backoff
//!   ([`BACKOFF_START`] doubling to [`BACKOFF_MAX`]); other requests go on meanwhile. fuser answers
//!   FUSE_INTERRUPT with ENOSYS (the kernel then stops sending them), so the wait watches the
//!   caller instead: when the waiting thread has a signal pending that it does not block (from
//!   `/proc/<tid>/status`), or is gone, the request ends with EINTR. The kernel restarts the call
//!   after a handler with SA_RESTART, returns EINTR otherwise, and a killed process dies: no wait
//!   ever hangs a process beyond the next backoff step. A caller the daemon cannot see (pid 0: in
//!   a pid namespace the daemon's does not contain) waits at most [`UNSEEN_CALLER_WAIT`], then gets
//!   ENOLCK.
//! - Release: flush (every close) drops the closing process's POSIX locks on the file; release
//!   with `FUSE_RELEASE_FLOCK_UNLOCK` drops the flock of that open file description; unmounting
//!   drops what is left; a daemon that dies leaves its locks until meta prunes its client session.
//!   Only (inode, owner) pairs this mount ever locked cost an RPC at close ([`Holders`]).
//! - F_GETLK reports the conflicting lock's type and range; its pid for locks of other hosts is 0
//!   (a remote pid means nothing here), the real pid for this host's.
//! - Deadlocks across owners are not detected (no EDEADLK).
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use fuser::{Errno, FileHandle, INodeNo, InitFlags, KernelConfig, LockOwner, ReplyEmpty, ReplyLock, Request};
use t3fs_client::{LockSpec, UserInfo};
use t3fs_common::InodeId;
use t3fs_common::proto::{FileLock, LockKind, LockType};

use crate::fs::{Inner, T3Fs, fail};

/// First wait of a blocking lock request between tries.
pub const BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest wait between tries (also the longest a signal waits to be noticed).
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How long a blocking request waits when the caller's pid is 0 (a process outside the daemon's
/// pid namespace, whose signals cannot be watched): then it fails with ENOLCK.
pub const UNSEEN_CALLER_WAIT: Duration = Duration::from_secs(60);
/// The kernel's "to the end of the file" (`OFFSET_MAX`).
const KERNEL_EOF: u64 = i64::MAX as u64;

/// Asks the kernel to send fcntl and flock locks to the daemon; false if it does not offer them
/// (then locks stay per host, as before).
pub fn negotiate(config: &mut KernelConfig) -> bool {
    match config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS) {
        Ok(()) => true,
        Err(missing) => {
            tracing::warn!(?missing, "the kernel does not offer remote locks; file locks stay per host");
            false
        }
    }
}

/// The (inode, lock owner) pairs this mount set locks for, so that closes of files never locked
/// cost nothing.
#[derive(Default)]
pub struct Holders(Mutex<HashSet<(u64, u64)>>);

impl Holders {
    fn note(&self, ino: u64, owner: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert((ino, owner));
    }
    fn take(&self, ino: u64, owner: u64) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&(ino, owner))
    }
    fn drain(&self) -> Vec<(u64, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).drain().collect()
    }
}

/// The request's lock from the kernel's terms (`typ`: F_RDLCK, F_WRLCK, F_UNLCK; inclusive range
/// with `OFFSET_MAX` for "to EOF"); EINVAL for a type or range the kernel should never send.
pub fn spec_from_kernel(start: u64, end: u64, typ: i32, pid: u32) -> Result<LockSpec, Errno> {
    let lock_type = match typ {
        libc::F_RDLCK => LockType::Read,
        libc::F_WRLCK => LockType::Write,
        libc::F_UNLCK => LockType::Unlock,
        _ => return Err(Errno::EINVAL),
    };
    let end = if end >= KERNEL_EOF { u64::MAX } else { end };
    if start > end {
        return Err(Errno::EINVAL);
    }
    Ok(LockSpec { kind: LockKind::Posix, lock_type, start, end, pid })
}

/// A held lock in the kernel's terms for F_GETLK: (start, end, type, pid). `ours`: whether it is
/// this mount's (then its pid means something here).
pub fn lock_to_kernel(l: &FileLock, ours: bool) -> (u64, u64, i32, u32) {
    let typ = if l.lock_type == LockType::Write as i32 { libc::F_WRLCK } else { libc::F_RDLCK };
    let end = l.end.min(KERNEL_EOF);
    (l.start.min(KERNEL_EOF), end, typ, if ours { l.pid } else { 0 })
}

/// Whether thread `tid` has a signal pending that it does not block, or is gone (`/proc` status).
pub fn interrupted(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => signal_pending(&status),
        Err(_) => true,
    }
}

/// [`interrupted`] on the text of a `/proc/<tid>/status`.
pub fn signal_pending(status: &str) -> bool {
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") != 0
}

impl T3Fs {
    /// F_GETLK.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn getlk_op(
        &self,
        req: &Request,
        ino: INodeNo,
        owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let spec = match spec_from_kernel(start, end, typ, pid) {
            Ok(s) if s.lock_type != LockType::Unlock => s,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("getlk", ino = ino.0, owner = owner.0, start, end, typ);
        self.spawn("getlk", span, move |fs| async move {
            match fs.client.get_lock(&user, InodeId(ino.0), owner.0, &spec).await {
                Ok(None) => reply.locked(0, 0, libc::F_UNLCK, 0),
                Ok(Some(l)) => {
                    crate::metrics::metrics().lock_conflicts.inc();
                    let (s, e, t, p) = lock_to_kernel(&l, l.client_id == fs.client.client_id());
                    reply.locked(s, e, t, p)
                }
                Err(e) => reply.error(fail("getlk", &e)),
            }
        });
    }

    /// F_SETLK / F_SETLKW / flock (see the module note for blocking requests).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setlk_op(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let spec = match spec_from_kernel(start, end, typ, pid) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let tid = req.pid();
        let span = tracing::debug_span!("setlk", ino = ino.0, owner = owner.0, start, end, typ, sleep);
        self.spawn("setlk", span, move |fs| async move {
            let mut delay = BACKOFF_START;
            let started = std::time::Instant::now();
            loop {
                match fs.client.set_lock(&user, InodeId(ino.0), owner.0, &spec).await {
                    Ok(None) => {
                        if spec.lock_type != LockType::Unlock {
                            fs.lock_holders.note(ino.0, owner.0);
                        }
                        return reply.ok();
                    }
                    Ok(Some(_)) => {
                        crate::metrics::metrics().lock_conflicts.inc();
                    }
                    Err(e) => return reply.error(fail("setlk", &e)),
                }
                if !sleep {
                    return reply.error(Errno::EAGAIN);
                }
                if tid != 0 && interrupted(tid) {
                    tracing::debug!("blocking lock request interrupted by a signal");
                    return reply.error(Errno::EINTR);
                }
                if tid == 0 && started.elapsed() >= UNSEEN_CALLER_WAIT {
                    tracing::info!("blocking lock request of a caller outside this pid namespace gave up");
                    return reply.error(Errno::ENOLCK);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        });
    }
}

impl Inner {
    /// Drops the locks of `owner` on `ino` if this mount ever set any (flush, flock release).
    pub(crate) async fn release_locks(&self, ino: u64, owner: u64) {
        if !self.lock_holders.take(ino, owner) {
            return;
        }
        if let Err(e) = self.client.release_locks(&UserInfo::root(), InodeId(ino), owner, LockKind::Posix).await {
            tracing::warn!(error = %e, ino, "releasing file locks failed; meta drops them with the client session");
        }
    }

    /// Drops every lock this mount still holds (before unmounting). Best effort.
    pub(crate) async fn release_all_locks(&self) {
        for (ino, owner) in self.lock_holders.drain() {
            if let Err(e) = self.client.release_locks(&UserInfo::root(), InodeId(ino), owner, LockKind::Posix).await {
                tracing::warn!(error = %e, ino, "releasing file locks at unmount failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_terms_round_trip() {
        let s = spec_from_kernel(0, KERNEL_EOF, libc::F_WRLCK, 7).unwrap();
        assert_eq!((s.lock_type, s.start, s.end, s.pid), (LockType::Write, 0, u64::MAX, 7));
        let s = spec_from_kernel(10, 19, libc::F_RDLCK, 1).unwrap();
        assert_eq!((s.lock_type, s.start, s.end), (LockType::Read, 10, 19));
        assert_eq!(spec_from_kernel(0, 1, libc::F_UNLCK, 1).unwrap().lock_type, LockType::Unlock);
        assert_eq!(spec_from_kernel(0, 1, 99, 1).unwrap_err(), Errno::EINVAL);
        assert_eq!(spec_from_kernel(5, 4, libc::F_RDLCK, 1).unwrap_err(), Errno::EINVAL);
        let l = FileLock { lock_type: LockType::Write as i32, start: 50, end: u64::MAX, pid: 9, ..Default::default() };
        assert_eq!(lock_to_kernel(&l, false), (50, KERNEL_EOF, libc::F_WRLCK, 0));
        assert_eq!(lock_to_kernel(&l, true).3, 9);
        let r = FileLock { lock_type: LockType::Read as i32, start: 0, end: 99, ..Default::default() };
        assert_eq!(lock_to_kernel(&r, true), (0, 99, libc::F_RDLCK, 0));
    }

    #[test]
    fn pending_signals_from_proc_status() {
        let status = |pnd: &str, shd: &str, blk: &str| {
            format!("Name:\tx\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\nSigIgn:\t0\n")
        };
        assert!(!signal_pending(&status("0000000000000000", "0000000000000000", "0000000000000000")));
        // SIGKILL (9) pending process-wide.
        assert!(signal_pending(&status("0000000000000000", "0000000000000100", "0000000000000000")));
        // SIGINT (2) pending on the thread.
        assert!(signal_pending(&status("0000000000000002", "0000000000000000", "0000000000000000")));
        // A blocked signal does not interrupt.
        assert!(!signal_pending(&status("0000000000000002", "0000000000000000", "0000000000000002")));
        // This thread is alive with nothing pending; a pid that cannot exist is gone.
        assert!(!interrupted(std::process::id()));
        assert!(interrupted(u32::MAX));
    }

    #[test]
    fn holders_track_locked_owners() {
        let h = Holders::default();
        assert!(!h.take(1, 2));
        h.note(1, 2);
        h.note(1, 2);
        assert!(h.take(1, 2));
        assert!(!h.take(1, 2), "taken once");
        h.note(3, 4);
        assert_eq!(h.drain(), [(3, 4)]);
    }
}
