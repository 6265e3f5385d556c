//! FUSE unlink/rmdir, rename, hard links and symbolic links, and what an unlink means for open
//! files.
//!
//! Open-file state ([`crate::handles`]) is keyed by inode, so renaming an open file changes nothing
//! there. What does matter is a file losing its last link while this mount has it open, by unlink
//! or by a rename over it: meta forgets the inode, but POSIX says the open handles keep working, so
//! its chunks stay until the last handle is released ([`Inner::after_unlink`]).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, Generation, INodeNo, RenameFlags, ReplyData, ReplyEmpty, ReplyEntry, Request};
use t3fs_client::UserInfo;
use t3fs_common::InodeId;
use t3fs_common::proto::{self, InodeType};

use crate::fs::{Inner, T3Fs, check_name, errno, fail};

/// The client's rename flags for the kernel's, or `None` for a flag t3fs does not support
/// (`RENAME_WHITEOUT`, unknown bits).
pub fn rename_flags(flags: RenameFlags) -> Option<t3fs_client::RenameFlags> {
    let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
    if !flags.difference(known).is_empty() {
        return None;
    }
    Some(t3fs_client::RenameFlags {
        no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
        exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
    })
}

impl Inner {
    /// After meta removed a name of `inode` (unlink, rmdir, or a rename over it): when that was a
    /// file's last link and this mount has it open, asks meta to hold it (a session, as a writer
    /// has) until the last release, so meta's GC leaves its chunks to the open handles. Otherwise
    /// GC removes it after its delay.
    pub(crate) async fn after_unlink(&self, inode: &proto::Inode) {
        if inode.inode_type != InodeType::File as i32 || inode.nlink != 0 {
            return;
        }
        if self.handles.unlinked(inode.id, inode.length) {
            match self.client.open(&UserInfo::root(), InodeId(inode.id), false, true).await {
                Ok((_, session)) => self.handles.set_hold(inode.id, session),
                Err(e) => {
                    tracing::warn!(inode = inode.id, error = %e, "holding a file unlinked while open failed; GC may take it after its delay");
                }
            }
        }
    }
}

impl T3Fs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rename_op(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let Some(flags) = rename_flags(flags) else { return reply.error(Errno::from_i32(libc::EINVAL)) };
        let (name, newname) = match (check_name(name), check_name(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!(
            "rename",
            parent = parent.0,
            name = %String::from_utf8_lossy(&name),
            newparent = newparent.0,
            newname = %String::from_utf8_lossy(&newname),
            ?flags,
        );
        self.spawn("rename", span, |fs| async move {
            let request_id = t3fs_common::new_request_id();
            let (src, dst) = (InodeId(parent.0), InodeId(newparent.0));
            let res = fs.client.rename_entry(&user, &request_id, src, &name, dst, &newname, flags).await;
            fs.dir_attrs.clear();
            match res {
                Ok(replaced) => {
                    if let Some(inode) = replaced {
                        fs.after_unlink(&inode).await;
                    }
                    reply.ok()
                }
                Err(e) => reply.error(fail("rename", &e)),
            }
        });
    }

    pub(crate) fn link_op(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let newname = match check_name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, newname = %String::from_utf8_lossy(&newname));
        self.spawn("link", span, |fs| async move {
            let res = fs.client.link(&user, InodeId(ino.0), InodeId(newparent.0), &newname).await;
            fs.dir_attrs.clear();
            match res {
                Ok(i) => reply.entry_with_ttls(&fs.attr_ttl, &fs.entry_ttl, &fs.attr(&i), Generation(0)),
                Err(e) => reply.error(fail("link", &e)),
            }
        });
    }

    pub(crate) fn symlink_op(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        if let Err(e) = t3fs_client::links::validate_symlink_target(&target) {
            return reply.error(errno(&e));
        }
        let user = self.user(req);
        let span = tracing::debug_span!("symlink", parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn("symlink", span, |fs| async move {
            let res = fs.client.symlink(&user, InodeId(parent.0), &name, &target).await;
            fs.dir_attrs.clear();
            match res {
                Ok(i) => reply.entry_with_ttls(&fs.attr_ttl, &fs.entry_ttl, &fs.attr(&i), Generation(0)),
                Err(e) => reply.error(fail("symlink", &e)),
            }
        });
    }

    pub(crate) fn readlink_op(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let user = self.user(req);
        self.spawn("readlink", tracing::debug_span!("readlink", ino = ino.0), |fs| async move {
            match fs.client.readlink(&user, InodeId(ino.0)).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(fail("readlink", &e)),
            }
        });
    }
}

impl T3Fs {
    /// unlink and rmdir: the entry goes at meta; the parent's kept attributes follow
    /// ([`crate::dirattr`]) and an open file keeps its chunks ([`Inner::after_unlink`]).
    pub(crate) fn remove(&self, req: &Request, parent: INodeNo, name: &OsStr, is_dir: bool, reply: ReplyEmpty) {
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let op = if is_dir { "rmdir" } else { "unlink" };
        let span = tracing::debug_span!("remove", op, parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn(op, span, |fs| async move {
            let request_id = t3fs_common::new_request_id();
            match fs.client.remove_entry(&user, &request_id, InodeId(parent.0), &name, is_dir).await {
                Ok(inode) => {
                    // Meta set the parent's times and the removed inode's ctime from one clock.
                    if is_dir {
                        fs.dir_attrs.clear();
                    } else {
                        fs.dir_attrs.touched(parent.0, inode.ctime_ns);
                    }
                    fs.after_unlink(&inode).await;
                    reply.ok()
                }
                Err(e) => {
                    fs.dir_attrs.clear();
                    reply.error(fail(op, &e))
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rename_flags() {
        assert_eq!(rename_flags(RenameFlags::empty()), Some(t3fs_client::RenameFlags::default()));
        let nr = rename_flags(RenameFlags::RENAME_NOREPLACE).unwrap();
        assert!(nr.no_replace && !nr.exchange);
        let ex = rename_flags(RenameFlags::RENAME_EXCHANGE).unwrap();
        assert!(!ex.no_replace && ex.exchange);
        assert_eq!(rename_flags(RenameFlags::RENAME_WHITEOUT), None);
        assert_eq!(rename_flags(RenameFlags::from_bits_retain(1 << 20)), None);
        // Both at once passes through here; the client refuses it (EINVAL, as the kernel would).
        let both = rename_flags(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE).unwrap();
        assert!(both.no_replace && both.exchange);
    }
}
