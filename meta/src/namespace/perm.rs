//! POSIX permission checks on stored inodes, for the caller named in the request header.
//!
//! Rules (as Linux without ACLs or capabilities other than "uid 0 is root"):
//! - uid 0 bypasses every mode-bit check;
//! - otherwise exactly one class applies: owner if the uid matches, else group if the inode's gid is
//!   the caller's gid or one of its supplementary gids, else other — a denying owner class is not
//!   rescued by permissive group/other bits;
//! - the sticky bit on a directory restricts removing/renaming its entries to the entry's owner, the
//!   directory's owner and root.
//!
//! Mode-bit denials are `PermissionDenied` (EACCES). The EPERM cases (sticky, chmod/chown/utimens by
//! a non-owner, linking a directory, `trusted.*` xattrs) are `OperationNotPermitted` (EPERM).
use t3fs_common::proto::Inode;
use t3fs_common::{Error, StatusCode};

use super::Caller;

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;
/// Sticky bit (restricted deletion in directories).
pub const S_ISVTX: u32 = 0o1000;
/// Set-group-id bit (directories: new entries inherit the directory's group).
pub const S_ISGID: u32 = 0o2000;
/// Set-user-id bit.
pub const S_ISUID: u32 = 0o4000;

impl Caller {
    /// Root bypasses permission checks.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }

    /// Whether the caller owns `inode` (or is root).
    pub fn owns(&self, inode: &Inode) -> bool {
        self.is_root() || self.uid == inode.uid
    }
}

/// The rwx bits of `inode` that apply to `caller` (7 for root).
pub fn granted(caller: &Caller, inode: &Inode) -> u32 {
    if caller.is_root() {
        7
    } else if caller.uid == inode.uid {
        (inode.mode >> 6) & 7
    } else if caller.in_group(inode.gid) {
        (inode.mode >> 3) & 7
    } else {
        inode.mode & 7
    }
}

/// EACCES unless the caller has every bit of `want` (a mask of [`R`], [`W`], [`X`]) on `inode`.
pub fn check(caller: &Caller, inode: &Inode, want: u32) -> Result<(), Error> {
    if granted(caller, inode) & want == want {
        return Ok(());
    }
    let what = [(R, "read"), (W, "write"), (X, "search/execute")]
        .iter()
        .filter(|(b, _)| want & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("+");
    Err(Error::new(
        StatusCode::PermissionDenied,
        format!("permission denied: uid {} lacks {what} on inode {}", caller.uid, inode.id),
    ))
}

/// An EPERM-class refusal (see the module note on codes).
pub fn not_permitted(what: impl std::fmt::Display) -> Error {
    Error::new(StatusCode::OperationNotPermitted, format!("operation not permitted: {what}"))
}

/// Sticky-directory rule: in a sticky `dir`, only `victim`'s owner, `dir`'s owner or root may
/// remove or rename (away or over) the entry.
pub fn check_sticky(caller: &Caller, dir: &Inode, victim: &Inode) -> Result<(), Error> {
    if dir.mode & S_ISVTX == 0 || caller.is_root() || caller.uid == dir.uid || caller.uid == victim.uid {
        return Ok(());
    }
    Err(not_permitted(format!(
        "uid {} may not remove inode {} from sticky directory {}",
        caller.uid, victim.id, dir.id
    )))
}

/// What a directory entry operation checks on its parent: search first (needed to look the name
/// up at all), then write+search for the change itself.
pub fn check_modify_dir(caller: &Caller, dir: &Inode) -> Result<(), Error> {
    check(caller, dir, W | X)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(mode: u32, uid: u32, gid: u32) -> Inode {
        Inode { id: 9, mode, uid, gid, ..Default::default() }
    }

    #[test]
    fn classes_are_exclusive_and_root_bypasses() {
        let owner = Caller { uid: 10, gid: 1, gids: vec![] };
        let member = Caller { uid: 11, gid: 2, gids: vec![5] };
        let other = Caller { uid: 12, gid: 3, gids: vec![] };
        let root = Caller::default();
        let i = inode(0o057, 10, 5);
        assert_eq!(granted(&owner, &i), 0, "the owner class denies even though group/other allow");
        assert_eq!(granted(&member, &i), 5);
        assert_eq!(granted(&other, &i), 7);
        assert_eq!(granted(&root, &inode(0, 10, 5)), 7);
        assert!(check(&member, &i, R | X).is_ok());
        let e = check(&member, &i, W).unwrap_err();
        assert_eq!(e.code, StatusCode::PermissionDenied);
        assert!(e.message.contains("write"), "{}", e.message);
        assert!(check(&owner, &i, R).is_err());
        assert!(check(&root, &inode(0, 10, 5), R | W | X).is_ok());
    }

    #[test]
    fn sticky_rule() {
        let dir = inode(0o1777, 1, 1);
        let file = inode(0o644, 2, 2);
        let stranger = Caller { uid: 3, gid: 3, gids: vec![] };
        assert!(check_sticky(&stranger, &dir, &file).is_err());
        assert!(check_sticky(&Caller { uid: 2, ..Default::default() }, &dir, &file).is_ok());
        assert!(check_sticky(&Caller { uid: 1, ..Default::default() }, &dir, &file).is_ok());
        assert!(check_sticky(&Caller::default(), &dir, &file).is_ok());
        assert!(check_sticky(&stranger, &inode(0o777, 1, 1), &file).is_ok());
    }
}
