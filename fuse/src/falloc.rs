//! FUSE fallocate: the default mode (0), `FALLOC_FL_KEEP_SIZE`, `FALLOC_FL_PUNCH_HOLE` and
//! `FALLOC_FL_ZERO_RANGE`.
//!
//! t3fs allocates storage as chunks are written, so there is nothing to reserve: the default mode
//! only grows the file to `offset + length` when that is past its end (the new bytes read as zeros,
//! as after an extending truncate), and `FALLOC_FL_KEEP_SIZE` alone changes nothing. Storage space
//! is not reserved, so a later write may still fail with ENOSPC.
//!
//! Punch hole (with KEEP_SIZE, as Linux requires) and zero range make the part of the range inside
//! the file read as zeros ([`t3fs_client::Client::punch_hole`]: whole chunks are removed and their
//! space freed, the ends are overwritten with zeros); zero range without KEEP_SIZE then grows the
//! file to the range's end. Like a truncate, they first write out every handle's buffered data for
//! the file and hold the handles until storage is done, so an older buffered write cannot land over
//! the hole afterwards; the read-ahead of the file is dropped (the kernel drops its page cache range
//! itself). Collapse/insert range and unshare answer `EOPNOTSUPP`, which tools such as
//! `fallocate(1)` understand.
use fuser::{Errno, FileHandle, INodeNo, ReplyEmpty, Request, TimeOrNow};
use t3fs_client::UserInfo;
use t3fs_common::{Error, InodeId};

use crate::fs::{Inner, T3Fs, fail};

/// What a fallocate call does to the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Grow the file to this length if it is shorter.
    Extend(u64),
    /// Nothing (`FALLOC_FL_KEEP_SIZE`).
    Nothing,
    /// Zero `[offset, end)` where it lies inside the file; with `extend`, then grow the file to `end`.
    Zero { offset: u64, end: u64, extend: bool },
}

/// The plan for `fallocate(offset, length, mode)`, or the errno to answer.
pub fn plan(offset: u64, length: u64, mode: i32) -> Result<Falloc, i32> {
    if length == 0 {
        return Err(libc::EINVAL);
    }
    let end = offset.checked_add(length).filter(|&e| e <= i64::MAX as u64).ok_or(libc::EFBIG)?;
    const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
    const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
    const ZERO_KEEP: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    match mode {
        0 => Ok(Falloc::Extend(end)),
        KEEP => Ok(Falloc::Nothing),
        PUNCH | ZERO_KEEP => Ok(Falloc::Zero { offset, end, extend: false }),
        ZERO => Ok(Falloc::Zero { offset, end, extend: true }),
        // Punch hole without KEEP_SIZE (Linux refuses it too), collapse, insert, unshare.
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
        let plan = match plan(offset, length, mode) {
            Ok(Falloc::Nothing) => return reply.ok(),
            Ok(p) => p,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("fallocate", ino = ino.0, fh = fh.0, offset, length, mode);
        self.spawn("fallocate", span, |fs| async move {
            let res = async {
                let end = match plan {
                    Falloc::Extend(end) => end,
                    Falloc::Zero { offset, end, extend } => {
                        fs.zero_range(&user, ino.0, offset, end).await?;
                        if !extend {
                            return Ok(());
                        }
                        end
                    }
                    Falloc::Nothing => return Ok(()),
                };
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

impl Inner {
    /// Zeros `[offset, end)` where it lies inside the file (as this mount sees its size), with every
    /// handle of the file written out and held meanwhile, then sets mtime (and so ctime).
    async fn zero_range(&self, user: &UserInfo, ino: u64, offset: u64, end: u64) -> t3fs_common::Result<()> {
        self.prefetch.invalidate(ino);
        let guards = self.flush_inode_locked(ino).await?;
        let inode = self.client.getattr(user, InodeId(ino)).await?;
        let size = self.handles.read_len(ino, inode.length).max(inode.length);
        let end = end.min(size);
        if offset < end {
            self.client.punch_hole(&inode, offset, end - offset).await?;
        }
        drop(guards);
        self.setattr(user, ino, None, None, None, None, None, Some(TimeOrNow::Now)).await?;
        Ok(())
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
        let zero = |extend| Ok(Falloc::Zero { offset: 3, end: 5, extend });
        assert_eq!(plan(3, 2, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE), zero(false));
        assert_eq!(plan(3, 2, libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE), zero(false));
        assert_eq!(plan(3, 2, libc::FALLOC_FL_ZERO_RANGE), zero(true));
        assert_eq!(plan(0, 1, libc::FALLOC_FL_PUNCH_HOLE), Err(libc::EOPNOTSUPP));
        assert_eq!(plan(0, 1, libc::FALLOC_FL_COLLAPSE_RANGE), Err(libc::EOPNOTSUPP));
        assert_eq!(plan(0, 1, libc::FALLOC_FL_INSERT_RANGE), Err(libc::EOPNOTSUPP));
    }
}
