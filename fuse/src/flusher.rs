//! The periodic flush: every `flush_interval_ms`, each open file with buffered writes or writes
//! meta has not heard of is written out and its length reported (a Close with the length hint that
//! keeps the handle and its write session open).
//!
//! Why: between a writer's open and its close, other clients see only what meta knows. A
//! long-running writer (a log, a checkpoint being streamed, a training job that keeps its output
//! open for hours) would otherwise stay invisible to every other mount until it closes, and a crash
//! of the daemon would lose everything still buffered. With the flush, other mounts see the data
//! (up to the reported length) within one interval, and at most one interval of buffered writes is
//! at risk. It is not a durability promise: `fsync` and `close` remain the points where writes are
//! known to be on storage and their errors reported.
//!
//! A handle whose mutex is held (an op is running on it) is skipped until the next tick, so the
//! flush never waits behind a slow op. A failure is logged and kept in the handle
//! (`OpenFile::failed`): the application's next flush, fsync or close returns it, as a kernel
//! reports a failed background writeback.
//!
//! The loop holds the mount's state weakly and stops when the state is dropped (its `stop` token).
use std::sync::{Arc, Weak};
use std::time::Duration;

use t3fs_client::UserInfo;
use t3fs_common::periodic::{First, spawn_every};

use crate::fs::Inner;

/// Starts the periodic flush of `inner`'s handles every `interval` (none if it is zero).
pub(crate) fn start(inner: &Arc<Inner>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let _rt = inner.rt.enter();
    spawn_every(
        First::AfterInterval,
        move || interval,
        inner.stop.clone(),
        move || {
            let weak = weak.clone();
            async move {
                if let Some(inner) = weak.upgrade() {
                    flush_all(&inner).await;
                }
            }
        },
    );
}

/// Writes out and reports every idle handle that has something to flush; returns how many.
pub(crate) async fn flush_all(inner: &Inner) -> usize {
    let mut flushed = 0;
    for f in inner.handles.all_files() {
        let Ok(mut g) = f.try_lock() else { continue };
        if g.buf.is_empty() && !g.dirty {
            continue;
        }
        let ino = g.inode.id;
        // The length hint and buffered bytes come from this mount's own writes; reporting them
        // needs no permission beyond the write access the handle was opened with.
        match inner.sync_handle(&UserInfo::root(), &mut g, false).await {
            Ok(()) => {
                flushed += 1;
                crate::metrics::metrics().periodic_flushes.inc();
            }
            Err(e) => {
                tracing::warn!(inode = ino, error = %e, "periodic flush failed; the next flush, fsync or close reports it");
                g.failed = Some(e);
            }
        }
    }
    flushed
}
