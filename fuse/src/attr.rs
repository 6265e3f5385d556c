//! Conversions between t3fs inodes and FUSE attributes.
//!
//! t3fs inode ids are FUSE inode numbers as they are (both use 1 for the root). Modes on the wire
//! carry permission bits only; the file type comes from `inode_type`.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use t3fs_common::proto::{self, InodeType};

/// `blksize` reported when an inode has no layout (directories).
pub const DEFAULT_BLKSIZE: u32 = 4096;

/// The FUSE file type of an inode type (unknown types show as regular files).
pub fn file_type(t: i32) -> FileType {
    match InodeType::try_from(t) {
        Ok(InodeType::Directory) => FileType::Directory,
        Ok(InodeType::Symlink) => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

/// Nanoseconds since the epoch (negative: before it) as a `SystemTime`.
pub fn time_from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A `SystemTime` as nanoseconds since the epoch (saturating at the `i64` range).
pub fn ns_from_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
    }
}

/// FUSE attributes of `inode`, reporting `size` as the file size (the caller passes
/// `max(meta length, locally written length)`).
pub fn to_file_attr(inode: &proto::Inode, size: u64) -> FileAttr {
    let blksize = inode.layout.as_ref().map(|l| l.chunk_size).filter(|&c| c > 0).unwrap_or(DEFAULT_BLKSIZE);
    let kind = file_type(inode.inode_type);
    FileAttr {
        ino: INodeNo(inode.id),
        size,
        blocks: size.div_ceil(512),
        atime: time_from_ns(inode.atime_ns),
        mtime: time_from_ns(inode.mtime_ns),
        ctime: time_from_ns(inode.ctime_ns),
        crtime: time_from_ns(inode.ctime_ns),
        kind,
        perm: (inode.mode & 0o7777) as u16,
        // 0 for a file unlinked while open (meta keeps it until GC); a directory always has >= 1.
        nlink: if inode.inode_type == InodeType::File as i32 { inode.nlink } else { inode.nlink.max(1) },
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_attr_from_inode() {
        let inode = proto::Inode {
            id: 42,
            inode_type: InodeType::File as i32,
            mode: 0o104_755, // stray high bits must not leak into perm
            uid: 1000,
            gid: 100,
            nlink: 1,
            length: 1025,
            atime_ns: 1_500_000_000_123_456_789,
            mtime_ns: 2_000_000_000,
            ctime_ns: -1_000_000_001,
            layout: Some(proto::Layout { chunk_size: 1 << 20, stripe: 1, ..Default::default() }),
            ..Default::default()
        };
        let a = to_file_attr(&inode, 5000);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(a.perm, 0o4755);
        assert_eq!(a.size, 5000);
        assert_eq!(a.blocks, 10);
        assert_eq!(a.blksize, 1 << 20);
        assert_eq!((a.uid, a.gid, a.nlink), (1000, 100, 1));
        assert_eq!(a.atime, UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(2));
        assert_eq!(a.ctime, UNIX_EPOCH - Duration::new(1, 1));
        assert_eq!(ns_from_time(a.atime), inode.atime_ns);
        assert_eq!(ns_from_time(a.ctime), inode.ctime_ns);
    }

    #[test]
    fn directory_attr_defaults() {
        let inode = proto::Inode { id: 1, inode_type: InodeType::Directory as i32, mode: 0o755, ..Default::default() };
        let a = to_file_attr(&inode, 0);
        assert_eq!(a.kind, FileType::Directory);
        assert_eq!(a.blksize, DEFAULT_BLKSIZE);
        assert_eq!(a.nlink, 1);
        assert_eq!(a.blocks, 0);
        assert_eq!(file_type(InodeType::Symlink as i32), FileType::Symlink);
        assert_eq!(file_type(99), FileType::RegularFile);
    }
}
