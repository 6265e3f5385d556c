//! Close-to-open consistency for the kernel's attribute cache.
//!
//! The kernel caches a file's attributes (its size above all) for `attr_timeout_ms` and clamps
//! reads to the cached size. Without help, a reader that looked a file up shortly before another
//! client wrote and closed it would open it and read up to the old size (possibly nothing) until
//! the cache times out. So every open tells the kernel to forget the inode's cached attributes
//! (`FUSE_NOTIFY_INVAL_INODE` with offset -1: attributes only; the page cache is dropped anyway,
//! as files are opened without `FOPEN_KEEP_CACHE`) before answering; the kernel then asks again
//! (getattr, served fresh from meta) on the first read past the old size or the first stat.
//!
//! Invariant: the notification is sent before the open reply, so no read of the new open can use
//! the stale size. It never touches page locks (offset -1), so it cannot deadlock with reads in
//! flight on the same inode.
use std::sync::OnceLock;

use fuser::{INodeNo, Notifier};

/// The channel to the kernel for cache invalidations; set once the mount is up.
#[derive(Default)]
pub struct KernelCache {
    notifier: OnceLock<Notifier>,
}

impl KernelCache {
    /// Connects to the mounted session (called once, right after mounting).
    pub fn connect(&self, notifier: Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// Makes the kernel forget `ino`'s cached attributes. Best effort: before the mount is up, or
    /// if the kernel refuses, the attributes time out as usual (logged).
    pub fn forget_attrs(&self, ino: u64) {
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(INodeNo(ino), -1, 0)
        {
            tracing::debug!(ino, error = %e, "invalidating cached attributes failed");
        }
    }
}
