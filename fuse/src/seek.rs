//! FUSE lseek: `SEEK_DATA` and `SEEK_HOLE` (the kernel handles the other whences itself).
//!
//! The mount's own buffered writes to the file are data too, so every handle's buffer for the file
//! is written out first; then [`t3fs_client::Client::seek`] walks the file's chunks on storage. The
//! size is the one this mount reports (its unreported writes included): at or past it the answer is
//! `ENXIO`, and the end of the file is a hole.
use fuser::{Errno, FileHandle, INodeNo, ReplyLseek, Request};
use t3fs_client::Seek;
use t3fs_common::InodeId;

use crate::fs::{T3Fs, fail};

impl T3Fs {
    pub(crate) fn lseek_op(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(Errno::ENXIO) };
        let user = self.user(req);
        let span = tracing::debug_span!("lseek", ino = ino.0, fh = fh.0, offset, whence);
        self.spawn("lseek", span, |fs| async move {
            let res = async {
                drop(fs.flush_inode_locked(ino.0).await?);
                let inode = fs.client.getattr(&user, InodeId(ino.0)).await?;
                let size = fs.handles.read_len(ino.0, inode.length).max(inode.length);
                fs.client.seek(&inode, offset, size, what).await
            }
            .await;
            match res {
                Ok(Some(pos)) => match i64::try_from(pos) {
                    Ok(pos) => reply.offset(pos),
                    Err(_) => reply.error(Errno::EOVERFLOW),
                },
                Ok(None) => reply.error(Errno::ENXIO),
                Err(e) => reply.error(fail("lseek", &e)),
            }
        });
    }
}
