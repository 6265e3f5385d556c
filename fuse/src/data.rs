//! The data path of the FUSE daemon: reads (through read-ahead) and buffered writes of open file
//! handles, and the flush points that write buffers out and report lengths to meta.
//!
//! Invariants: a handle's buffer is only touched with its mutex held; a read first writes out the
//! buffers of every handle of the inode on this mount (so one handle reads another's writes); a
//! failed background write-out is kept in the handle (`OpenFile::failed`) until a flush point
//! returns it. Buffering policy: [`crate::wbuf`]; periodic flush: [`crate::flusher`].
use std::sync::Arc;

use t3fs_client::UserInfo;
use t3fs_common::{Error, InodeId, StatusCode};

use crate::fs::Inner;
use crate::handles::{FileRef, OpenFile};

/// A handle kept locked past the call that locked it.
pub(crate) type OwnedFileGuard = tokio::sync::OwnedMutexGuard<OpenFile>;

impl Inner {
    /// Writes out a handle's buffered data. The buffer is gone either way, so a failure the client
    /// stopped retrying (storage unavailable past its retry timeout) is EIO, not EAGAIN: trying
    /// the call again would not bring the data back.
    pub(crate) async fn flush_buf(&self, f: &mut OpenFile) -> t3fs_common::Result<()> {
        let Some((offset, data)) = f.buf.take() else { return Ok(()) };
        self.client.write(&f.inode, offset, &data).await.map_err(|e| {
            if e.errno() == libc::EAGAIN {
                Error::new(StatusCode::Io, format!("writing {} buffered bytes at {offset}: {e}", data.len()))
            } else {
                e
            }
        })
    }

    /// Writes out buffered data and, if the handle wrote since the last report, tells meta the
    /// length (Close with the length hint). What flush, fsync and release do; `last` (release)
    /// always closes and ends the handle's write session, even after a failed write-out. An
    /// unlinked file still reports its length (meta keeps its inode until GC, which removes the
    /// chunks that length covers). The first error wins: a background write-out that failed
    /// earlier ([`OpenFile::failed`]), then this write-out, then the Close.
    pub(crate) async fn sync_handle(&self, user: &UserInfo, f: &mut OpenFile, last: bool) -> t3fs_common::Result<()> {
        let flushed = self.flush_buf(f).await;
        let earlier = f.failed.take();
        let mut closed = Ok(());
        if (flushed.is_ok() || last) && (f.dirty || (last && (f.writable || f.session != 0))) {
            let ino = f.inode.id;
            let hint = self.handles.local_len(ino);
            let session = if last { std::mem::take(&mut f.session) } else { 0 };
            closed = match self.client.close_session(user, InodeId(ino), session, hint, f.dirty).await {
                Ok(inode) => {
                    self.handles.seen(ino, inode.length);
                    f.dirty = false;
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        match earlier {
            Some(e) => Err(e),
            None => flushed.and(closed),
        }
    }

    /// Writes out the buffers of every open handle of `ino` (before a read).
    pub(crate) async fn flush_inode(&self, ino: u64) -> t3fs_common::Result<()> {
        self.flush_inode_locked(ino).await.map(drop)
    }

    /// Writes out the buffers of every open handle of `ino` and returns them still locked, in
    /// handle order ([`crate::handles::Handles::files_of`]), so no write or background flush can
    /// touch them until the guards drop (a truncate holds them until the local length is lowered).
    pub(crate) async fn flush_inode_locked(&self, ino: u64) -> t3fs_common::Result<Vec<OwnedFileGuard>> {
        let files = self.handles.files_of(ino);
        let mut guards = Vec::with_capacity(files.len());
        for f in files {
            let mut g = f.lock_owned().await;
            self.flush_buf(&mut g).await?;
            guards.push(g);
        }
        Ok(guards)
    }

    /// Writes out every handle's buffer and reports lengths (before unmounting). Best effort.
    pub(crate) async fn sync_all(&self) {
        for f in self.handles.all_files() {
            let mut g = f.lock().await;
            let ino = g.inode.id;
            if let Err(e) = self.sync_handle(&UserInfo::root(), &mut g, false).await {
                tracing::warn!(inode = ino, error = %e, "flushing an open file at unmount failed");
            }
        }
    }

    pub(crate) async fn read(&self, fh: u64, f: FileRef, offset: u64, size: u32) -> t3fs_common::Result<Vec<u8>> {
        let mut inode = f.lock().await.inode.clone();
        // Buffered writes of every handle of this inode go out first, so a read through one handle
        // sees what was written through another (as on a local file system), not a hole.
        self.flush_inode(inode.id).await?;
        inode.length = self.handles.read_len(inode.id, inode.length);
        let (ino, len) = (inode.id, inode.length);
        let client = self.client.clone();
        let inode = Arc::new(inode);
        let fetch: crate::prefetch::Fetch = Arc::new(move |off, n| {
            let (client, inode) = (client.clone(), inode.clone());
            Box::pin(async move { client.read(&inode, off, n).await })
        });
        self.prefetch.read(fh, ino, len, offset, size, fetch).await
    }

    /// Buffers (or with `direct`, O_DIRECT, writes through) one write.
    pub(crate) async fn write(&self, f: FileRef, offset: u64, data: &[u8], direct: bool) -> t3fs_common::Result<()> {
        let mut g = f.lock().await;
        // Prefetched bytes of this inode are stale from now on (and again once the write is out).
        self.prefetch.invalidate(g.inode.id);
        if !g.buf.can_append(offset) {
            self.flush_buf(&mut g).await?;
        }
        let end =
            offset.checked_add(data.len() as u64).ok_or_else(|| Error::invalid("write past the largest offset"))?;
        g.buf.append(offset, data);
        g.dirty = true;
        self.handles.note_write(g.inode.id, end);
        if direct || g.buf.should_flush() {
            self.flush_buf(&mut g).await?;
        }
        self.prefetch.invalidate(g.inode.id);
        Ok(())
    }
}
