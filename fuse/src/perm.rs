//! Permission checks the FUSE daemon makes itself.
//!
//! Three layers: the mount uses `default_permissions`, so the kernel checks mode bits (with the
//! caller's real credentials) on every path walk, open and `access(2)` from the attributes meta
//! returned; meta checks every namespace operation against the header's uid, gid and groups; and
//! `open` here checks the caller may read and/or write the file, because file data goes straight to
//! storage, which knows no users (this matters if the mount is ever made without
//! `default_permissions`). The rules are meta's: owner, then group (primary or supplementary), then
//! other bits; root may read and write anything, and execute what has an execute bit or is a
//! directory. `access` is only called by a kernel without `default_permissions` and applies the same
//! check.
use fuser::{AccessFlags, Errno, INodeNo, OpenAccMode, OpenFlags, ReplyEmpty, Request};
use t3fs_client::UserInfo;
use t3fs_common::InodeId;
use t3fs_common::proto::{self, InodeType};

use crate::fs::{T3Fs, fail};

/// Whether `user` may access `inode` for `mask` (`R_OK | W_OK | X_OK` bits; 0 = existence).
pub fn may_access(inode: &proto::Inode, user: &UserInfo, mask: i32) -> bool {
    let want = (mask & (libc::R_OK | libc::W_OK | libc::X_OK)) as u32;
    if want == 0 {
        return true;
    }
    let mode = inode.mode;
    if user.uid == 0 {
        let x_ok = inode.inode_type == InodeType::Directory as i32 || mode & 0o111 != 0;
        return want & libc::X_OK as u32 == 0 || x_ok;
    }
    let bits = if user.uid == inode.uid {
        mode >> 6
    } else if user.gid == inode.gid || user.gids.contains(&inode.gid) {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & want == want
}

/// The access an `open` with `flags` needs (`R_OK`/`W_OK` bits; `O_TRUNC` needs write).
pub fn open_mask(flags: OpenFlags) -> i32 {
    let mut mask = match flags.acc_mode() {
        OpenAccMode::O_RDONLY => libc::R_OK,
        OpenAccMode::O_WRONLY => libc::W_OK,
        OpenAccMode::O_RDWR => libc::R_OK | libc::W_OK,
    };
    if flags.0 & libc::O_TRUNC != 0 {
        mask |= libc::W_OK;
    }
    mask
}

impl T3Fs {
    pub(crate) fn access_op(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let user = self.user(req);
        self.spawn("access", tracing::debug_span!("access", ino = ino.0, mask = mask.bits()), |fs| async move {
            match fs.client.getattr(&user, InodeId(ino.0)).await {
                Ok(i) if may_access(&i, &user, mask.bits()) => reply.ok(),
                Ok(_) => reply.error(Errno::from_i32(libc::EACCES)),
                Err(e) => reply.error(fail("access", &e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_by_mode_bits() {
        let file = |mode, uid, gid| proto::Inode {
            id: 9,
            inode_type: InodeType::File as i32,
            mode,
            uid,
            gid,
            ..Default::default()
        };
        let (r, w, x) = (libc::R_OK, libc::W_OK, libc::X_OK);
        let alice = UserInfo { uid: 1000, gid: 1000, gids: vec![50] };
        // Owner bits.
        assert!(may_access(&file(0o600, 1000, 0), &alice, r | w));
        assert!(!may_access(&file(0o600, 1000, 0), &alice, x));
        // Group bits through the primary group and through a supplementary one.
        assert!(may_access(&file(0o640, 0, 1000), &alice, r));
        assert!(may_access(&file(0o640, 0, 50), &alice, r));
        assert!(!may_access(&file(0o640, 0, 50), &alice, w));
        // Other bits; the owner's class decides even when other is more generous.
        assert!(!may_access(&file(0o600, 0, 0), &alice, r));
        assert!(may_access(&file(0o604, 0, 0), &alice, r));
        assert!(!may_access(&file(0o066, 1000, 0), &alice, r));
        // Existence only.
        assert!(may_access(&file(0o000, 0, 0), &alice, libc::F_OK));
        // Root: read and write anything; execute needs some execute bit, unless a directory.
        let root = UserInfo::root();
        assert!(may_access(&file(0o000, 5, 5), &root, r | w));
        assert!(!may_access(&file(0o644, 5, 5), &root, x));
        assert!(may_access(&file(0o001, 5, 5), &root, x));
        let dir = proto::Inode { inode_type: InodeType::Directory as i32, ..file(0o000, 5, 5) };
        assert!(may_access(&dir, &root, x));
    }

    #[test]
    fn open_needs() {
        assert_eq!(open_mask(OpenFlags(libc::O_RDONLY)), libc::R_OK);
        assert_eq!(open_mask(OpenFlags(libc::O_WRONLY | libc::O_APPEND)), libc::W_OK);
        assert_eq!(open_mask(OpenFlags(libc::O_RDWR)), libc::R_OK | libc::W_OK);
        assert_eq!(open_mask(OpenFlags(libc::O_RDONLY | libc::O_TRUNC)), libc::R_OK | libc::W_OK);
    }
}
