//! rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE, as one KV transaction.
//!
//! Reads (all conflicting): both parent inodes, both dentries, the moved inodes, and — when a
//! directory changes parent — every ancestor of the parent it moves into, walked through
//! `Inode.parent` up to the root. A concurrent rename that changes any of those ancestors writes
//! an inode this one read, so the two conflict and one retries: two racing renames can never
//! build a loop (A into B while B into A) or detach a subtree.
//!
//! Check order (as Linux `renameat2`): names, flags; parents exist, are directories, searchable;
//! source exists; NOREPLACE/EXCHANGE vs the destination; moving a directory into its own subtree
//! (InvalidArgument); source and destination naming the same inode (a no-op success); write
//! permission on both parents and sticky rules, write permission on a directory that changes
//! parent (its `..` changes); type rules (NotDirectory / IsDirectory / DirectoryNotEmpty).
use prost::Message;
use t3fs_common::names::validate_name;
use t3fs_common::proto::{DirEntry, Inode, InodeType, RenameRsp};
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{KvError, Transaction};

use super::mutate::{check_empty, exists, missing};
use super::perm;
use super::{
    Caller, MetaStore, delete_inode, get_dentry, get_dir, get_entry_inode, get_inode, is_dir, put_dentry, put_inode,
    show,
};
use crate::{idem, keys};

/// Deepest directory tree the loop check walks; deeper means a corrupt parent chain.
pub const MAX_DEPTH: usize = 4096;

/// rename flags (Linux `renameat2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with AlreadyExists if the destination exists.
    pub no_replace: bool,
    /// Swap source and destination atomically (both must exist).
    pub exchange: bool,
}

/// InvalidArgument if `moved` is `start` or one of its ancestors, i.e. moving directory `moved`
/// into directory `start` would create a loop. Reads every ancestor with a conflicting read.
async fn check_not_ancestor(txn: &mut dyn Transaction, moved: InodeId, start: InodeId) -> Result<(), KvError> {
    let mut cur = start;
    for _ in 0..MAX_DEPTH {
        if cur == moved {
            return Err(Error::invalid(format!("cannot move directory {moved} into its own subtree ({start})")).into());
        }
        if cur == InodeId::ROOT {
            return Ok(());
        }
        let inode = get_inode(txn, cur, false)
            .await?
            .ok_or_else(|| Error::internal(format!("directory {cur} on the parent chain of {start} is missing")))?;
        cur = InodeId(inode.parent);
    }
    Err(Error::internal(format!("parent chain of directory {start} is longer than {MAX_DEPTH}: a loop?")).into())
}

/// The inodes a rename touches, kept once even when source and destination parents coincide.
struct Parents {
    src: Inode,
    /// `None` when the destination parent is the source parent.
    dst: Option<Inode>,
}

impl Parents {
    fn dst_mut(&mut self) -> &mut Inode {
        self.dst.as_mut().unwrap_or(&mut self.src)
    }
    fn dst(&self) -> &Inode {
        self.dst.as_ref().unwrap_or(&self.src)
    }
    fn write(mut self, txn: &mut dyn Transaction, now: i64) {
        super::mutate::touch_dir(txn, &mut self.src, now);
        if let Some(mut d) = self.dst {
            super::mutate::touch_dir(txn, &mut d, now);
        }
    }
}

fn add_links(dir: &mut Inode, delta: i64) {
    dir.nlink = (dir.nlink as i64 + delta).clamp(2, u32::MAX as i64) as u32;
}

impl MetaStore {
    /// Renames `src_parent/src_name` to `dst_parent/dst_name`. Returns the inode the rename
    /// replaced if that inode lost its last link (it is deleted; a file's chunks are the caller's
    /// to free); `None` otherwise. A non-empty `request_id` makes a retry return the first result.
    #[allow(clippy::too_many_arguments)]
    pub async fn rename(
        &self,
        caller: &Caller,
        src_parent: InodeId,
        src_name: &[u8],
        dst_parent: InodeId,
        dst_name: &[u8],
        flags: RenameFlags,
        request_id: &str,
    ) -> Result<Option<Inode>> {
        validate_name(src_name)?;
        validate_name(dst_name)?;
        idem::validate_request_id(request_id)?;
        if flags.exchange && flags.no_replace {
            return Err(Error::invalid("RENAME_EXCHANGE and RENAME_NOREPLACE exclude each other"));
        }
        let (caller, rid, ttl) = (caller.clone(), request_id.to_string(), self.idempotency_ttl());
        let (sname, dname) = (src_name.to_vec(), dst_name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, rid, sname, dname) = (caller.clone(), rid.clone(), sname.clone(), dname.clone());
            Box::pin(async move {
                if let Some(done) = idem::recorded(txn, &rid, "rename", caller.uid, ttl).await? {
                    let rsp = RenameRsp::decode(done.as_slice())
                        .map_err(|e| Error::internal(format!("corrupt rename record: {e}")))?;
                    return Ok(rsp.replaced);
                }
                let replaced =
                    rename_txn(txn, &caller, (src_parent, &sname), (dst_parent, &dname), flags, now_ns()).await?;
                let rsp = RenameRsp { replaced: replaced.clone() };
                idem::record(txn, &rid, "rename", caller.uid, rsp.encode_to_vec());
                Ok(replaced)
            })
        })
        .await?)
    }
}

async fn rename_txn(
    txn: &mut dyn Transaction,
    caller: &Caller,
    (sp, sname): (InodeId, &[u8]),
    (dp, dname): (InodeId, &[u8]),
    flags: RenameFlags,
    now: i64,
) -> Result<Option<Inode>, KvError> {
    let src_dir = get_dir(txn, sp, false).await?;
    perm::check(caller, &src_dir, perm::X)?;
    let dst_dir = if dp == sp { None } else { Some(get_dir(txn, dp, false).await?) };
    let mut parents = Parents { src: src_dir, dst: dst_dir };
    perm::check(caller, parents.dst(), perm::X)?;

    let src_entry = get_dentry(txn, sp, sname, false).await?.ok_or_else(|| missing(sp, sname))?;
    let dst_entry = get_dentry(txn, dp, dname, false).await?;
    if flags.no_replace && dst_entry.is_some() {
        return Err(exists(dp, dname));
    }
    if flags.exchange && dst_entry.is_none() {
        return Err(missing(dp, dname));
    }
    let mut src = get_entry_inode(txn, sp, &src_entry, false).await?;
    let mut dst = match &dst_entry {
        Some(e) => Some(get_entry_inode(txn, dp, e, false).await?),
        None => None,
    };
    // Loops: a directory changing parent must not move below itself.
    if sp != dp {
        if is_dir(&src) {
            check_not_ancestor(txn, InodeId(src.id), dp).await?;
        }
        if let Some(d) = dst.as_ref().filter(|d| flags.exchange && is_dir(d)) {
            check_not_ancestor(txn, InodeId(d.id), sp).await?;
        }
    }
    // Two names of one inode (or one name onto itself): POSIX says do nothing.
    if dst.as_ref().is_some_and(|d| d.id == src.id) {
        return Ok(None);
    }

    perm::check_modify_dir(caller, &parents.src)?;
    perm::check_sticky(caller, &parents.src, &src)?;
    perm::check_modify_dir(caller, parents.dst())?;
    if let Some(d) = &dst {
        perm::check_sticky(caller, parents.dst(), d)?;
    }
    if sp != dp {
        if is_dir(&src) {
            perm::check(caller, &src, perm::W)?;
        }
        if let Some(d) = dst.as_ref().filter(|d| flags.exchange && is_dir(d)) {
            perm::check(caller, d, perm::W)?;
        }
    }

    if flags.exchange {
        let mut d = dst.take().expect("exchange checked the destination exists");
        put_dentry(txn, sp, &DirEntry { name: sname.to_vec().into(), inode: d.id, inode_type: d.inode_type });
        put_dentry(txn, dp, &DirEntry { name: dname.to_vec().into(), inode: src.id, inode_type: src.inode_type });
        // Directories keep their own name (real paths).
        if is_dir(&src) {
            src.name = dname.to_vec().into();
        }
        if is_dir(&d) {
            d.name = sname.to_vec().into();
        }
        if sp != dp {
            if is_dir(&src) {
                src.parent = dp.0;
                add_links(&mut parents.src, -1);
                add_links(parents.dst_mut(), 1);
            }
            if is_dir(&d) {
                d.parent = sp.0;
                add_links(parents.dst_mut(), -1);
                add_links(&mut parents.src, 1);
            }
        }
        src.ctime_ns = now;
        d.ctime_ns = now;
        put_inode(txn, &src);
        put_inode(txn, &d);
        parents.write(txn, now);
        return Ok(None);
    }

    let mut replaced = None;
    if let Some(mut d) = dst {
        match (is_dir(&src), is_dir(&d)) {
            (true, false) => {
                return Err(Error::new(
                    StatusCode::NotDirectory,
                    format!("cannot replace non-directory {} with a directory", show(dname)),
                )
                .into());
            }
            (false, true) => {
                return Err(Error::new(
                    StatusCode::IsDirectory,
                    format!("cannot replace directory {} with a non-directory", show(dname)),
                )
                .into());
            }
            (true, true) => {
                check_empty(txn, InodeId(d.id), dname).await?;
                delete_inode(txn, InodeId(d.id));
                d.nlink = 0;
                // The destination parent loses the replaced subdirectory.
                add_links(parents.dst_mut(), -1);
                replaced = Some(d);
            }
            (false, false) => {
                d.nlink = d.nlink.saturating_sub(1);
                d.ctime_ns = now;
                if d.nlink == 0 && d.inode_type == InodeType::File as i32 {
                    super::retire_file(txn, &d, now);
                    replaced = Some(d);
                } else if d.nlink == 0 {
                    delete_inode(txn, InodeId(d.id));
                    replaced = Some(d);
                } else {
                    put_inode(txn, &d);
                }
            }
        }
    }
    txn.clear(&keys::dentry_key(sp, sname));
    put_dentry(txn, dp, &DirEntry { name: dname.to_vec().into(), inode: src.id, inode_type: src.inode_type });
    if is_dir(&src) {
        src.name = dname.to_vec().into();
    }
    if is_dir(&src) && sp != dp {
        src.parent = dp.0;
        add_links(&mut parents.src, -1);
        add_links(parents.dst_mut(), 1);
    }
    src.ctime_ns = now;
    put_inode(txn, &src);
    parents.write(txn, now);
    Ok(replaced)
}
