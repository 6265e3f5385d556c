//! FUSE fallocate: the default mode (0) and `FALLOC_FL_KEEP_SIZE`.
//!
//! t3fs allocates storage as chunks are written, so there is nothing to reserve: the default mode
//! only grows the file to `offset + length` when that is past its end (the new bytes read as zeros,
//! as after an extending truncate), and `FALLOC_FL_KEEP_SIZE` changes nothing. Every other mode
//! (punch hole, zero/collapse/insert range, unshare) answers `EOPNOTSUPP`, which tools such as
//! `fallocate(1)` and `posix_fallocate(3)` callers understand. Storage space is not reserved, so a
//! later write may still fail with ENOSPC.
use fuser::{Errno, FileHandle, INodeNo, ReplyEmpty, Request};
use t3fs_common::{Error, InodeId};

use crate::fs::{T3Fs, fail};

/// What a fallocate call does to the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Grow the file to this length if it is shorter.
    Extend(u64),
    /// Nothing (`FALLOC_FL_KEEP_SIZE`).
    Nothing,
}

/// The plan for `fallocate(offset, length, mode)`, or the errno to answer.
pub fn plan(offset: u64, length: u64, mode: i32) -> Result<Falloc, i32> {
    if length == 0 {
        return Err(libc::EINVAL);
    }
    let end = offset.checked_add(length).filter(|&e| e <= i64::MAX as u64).ok_or(libc::EFBIG)?;
    match mode {
        0 => Ok(Falloc::Extend(end)),
        libc::FALLOC_FL_KEEP_SIZE => Ok(Falloc::Nothing),
        _ => Err(libc::EOPNOTSUPP),
    }
}

impl T3Fs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fallocate_op(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let end = match plan(offset, length, mode) {
            Ok(Falloc::Extend(end)) => end,
            Ok(Falloc::Nothing) => return reply.ok(),
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("fallocate", ino = ino.0, fh = fh.0, offset, length, mode);
        self.spawn("fallocate", span, |fs| async move {
            let res = async {
                let inode = fs.client.getattr(&user, InodeId(ino.0)).await?;
                // The size this mount reports (its own unreported writes included).
                let size = fs.handles.read_len(ino.0, inode.length).max(inode.length);
                if end > size {
                    fs.setattr(&user, ino.0, None, None, None, Some(end), None, None).await?;
                }
                Ok::<(), Error>(())
            }
            .await;
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fallocate", &e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(plan(10, 5, 0), Ok(Falloc::Extend(15)));
        assert_eq!(plan(10, 5, libc::FALLOC_FL_KEEP_SIZE), Ok(Falloc::Nothing));
        assert_eq!(plan(10, 0, 0), Err(libc::EINVAL));
        assert_eq!(plan(u64::MAX, 2, 0), Err(libc::EFBIG));
        assert_eq!(plan(i64::MAX as u64, 1, 0), Err(libc::EFBIG));
        assert_eq!(plan(0, 1, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE), Err(libc::EOPNOTSUPP));
        assert_eq!(plan(0, 1, libc::FALLOC_FL_ZERO_RANGE), Err(libc::EOPNOTSUPP));
    }
}
