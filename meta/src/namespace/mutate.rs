//! Namespace mutations: mkdir, create, remove (unlink/rmdir), setattr, close.
//!
//! Each is one read-write transaction. The parent directory inode and the dentry are read with
//! conflicting reads before anything is written, and rmdir's emptiness check is a conflicting range
//! read of the directory, so a create inside a directory being removed conflicts with the rmdir.
//! Errors are returned before any write, so a failed operation changes nothing.
use t3fs_common::names::validate_name;
use t3fs_common::proto::{DirEntry, Inode, InodeType};
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{KvError, RangeOpts, Transaction};

use super::{Caller, MetaStore, get_dentry, get_dir, get_entry_inode, get_inode, is_dir, put_dentry, put_inode, show};
use crate::keys;

/// Attribute changes; `None` leaves a field alone. `ctime` is always set to now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (file-type bits are dropped).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Files only; a change also sets mtime to now (unless `mtime_ns` is given too).
    pub length: Option<u64>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

/// Permission, setuid/setgid and sticky bits: what an inode's `mode` stores.
const MODE_MASK: u32 = 0o7777;

fn exists(parent: InodeId, name: &[u8]) -> KvError {
    Error::new(StatusCode::AlreadyExists, format!("{} already exists in directory {parent}", show(name))).into()
}

fn missing(parent: InodeId, name: &[u8]) -> KvError {
    Error::not_found(format!("{} not found in directory {parent}", show(name))).into()
}

/// Sets a directory's mtime and ctime to `now` and writes it.
fn touch_dir(txn: &mut dyn Transaction, dir: &mut Inode, now: i64) {
    dir.mtime_ns = now;
    dir.ctime_ns = now;
    put_inode(txn, dir);
}

impl MetaStore {
    /// Creates directory `name` in `parent` (AlreadyExists if the name is taken).
    pub async fn mkdir(&self, caller: &Caller, parent: InodeId, name: &[u8], mode: u32) -> Result<Inode> {
        validate_name(name)?;
        let id = self.ids.alloc(&*self.db).await?;
        let (uid, gid, name) = (caller.uid, caller.gid, name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let name = name.clone();
            Box::pin(async move {
                let mut dir = get_dir(txn, parent, false).await?;
                if get_dentry(txn, parent, &name, false).await?.is_some() {
                    return Err(exists(parent, &name));
                }
                let now = now_ns();
                let inode = Inode {
                    id: id.0,
                    inode_type: InodeType::Directory as i32,
                    mode: mode & MODE_MASK,
                    uid,
                    gid,
                    nlink: 2,
                    atime_ns: now,
                    mtime_ns: now,
                    ctime_ns: now,
                    parent: parent.0,
                    ..Default::default()
                };
                put_inode(txn, &inode);
                put_dentry(txn, parent, &DirEntry { name: name.into(), inode: id.0, inode_type: inode.inode_type });
                dir.nlink = dir.nlink.saturating_add(1);
                touch_dir(txn, &mut dir, now);
                Ok(inode)
            })
        })
        .await?)
    }

    /// Creates file `name` in `parent` with a layout from the current routing info. If the name
    /// exists: `exclusive` => AlreadyExists; a directory => IsDirectory; otherwise the existing
    /// inode is returned unchanged (open of an existing file).
    pub async fn create(
        &self,
        caller: &Caller,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> Result<Inode> {
        validate_name(name)?;
        // Computed up front (it needs no KV), but only an error if a file is actually created.
        let layout = self.new_layout();
        let id = self.ids.alloc(&*self.db).await?;
        let (uid, gid, name) = (caller.uid, caller.gid, name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (name, layout) = (name.clone(), layout.clone());
            Box::pin(async move {
                let mut dir = get_dir(txn, parent, false).await?;
                if let Some(entry) = get_dentry(txn, parent, &name, false).await? {
                    if exclusive {
                        return Err(exists(parent, &name));
                    }
                    let inode = get_entry_inode(txn, parent, &entry, false).await?;
                    if is_dir(&inode) {
                        return Err(Error::new(
                            StatusCode::IsDirectory,
                            format!("{} in directory {parent} is a directory", show(&name)),
                        )
                        .into());
                    }
                    return Ok(inode);
                }
                let now = now_ns();
                let inode = Inode {
                    id: id.0,
                    inode_type: InodeType::File as i32,
                    mode: mode & MODE_MASK,
                    uid,
                    gid,
                    nlink: 1,
                    length: 0,
                    atime_ns: now,
                    mtime_ns: now,
                    ctime_ns: now,
                    layout: Some(layout?),
                    ..Default::default()
                };
                put_inode(txn, &inode);
                put_dentry(txn, parent, &DirEntry { name: name.into(), inode: id.0, inode_type: inode.inode_type });
                touch_dir(txn, &mut dir, now);
                Ok(inode)
            })
        })
        .await?)
    }

    /// Removes `name` from `parent`. `is_dir`: rmdir (must be an empty directory, else NotDirectory /
    /// DirectoryNotEmpty); otherwise unlink (must not be a directory, else IsDirectory). Returns the
    /// removed inode with its new `nlink`; at 0 the inode is gone and its chunks are the caller's to free.
    pub async fn remove(&self, parent: InodeId, name: &[u8], is_dir_op: bool) -> Result<Inode> {
        validate_name(name)?;
        let name = name.to_vec();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let name = name.clone();
            Box::pin(async move {
                let mut dir = get_dir(txn, parent, false).await?;
                let entry = get_dentry(txn, parent, &name, false).await?.ok_or_else(|| missing(parent, &name))?;
                let mut inode = get_entry_inode(txn, parent, &entry, false).await?;
                let id = InodeId(inode.id);
                let now = now_ns();
                match (is_dir_op, is_dir(&inode)) {
                    (true, false) => {
                        return Err(Error::new(
                            StatusCode::NotDirectory,
                            format!("{} in directory {parent} is not a directory", show(&name)),
                        )
                        .into());
                    }
                    (false, true) => {
                        return Err(Error::new(
                            StatusCode::IsDirectory,
                            format!("{} in directory {parent} is a directory", show(&name)),
                        )
                        .into());
                    }
                    (true, true) => {
                        let (b, e) = keys::dentry_range(id);
                        let opts = RangeOpts { limit: 1, reverse: false, snapshot: false };
                        if !txn.get_range(&b, &e, opts).await?.is_empty() {
                            return Err(Error::new(
                                StatusCode::DirectoryNotEmpty,
                                format!("directory {} ({id}) is not empty", show(&name)),
                            )
                            .into());
                        }
                        txn.clear(&keys::inode_key(id));
                        inode.nlink = 0;
                        dir.nlink = dir.nlink.saturating_sub(1).max(2);
                    }
                    (false, false) => {
                        inode.nlink = inode.nlink.saturating_sub(1);
                        inode.ctime_ns = now;
                        if inode.nlink == 0 {
                            txn.clear(&keys::inode_key(id));
                        } else {
                            put_inode(txn, &inode);
                        }
                    }
                }
                txn.clear(&keys::dentry_key(parent, &name));
                touch_dir(txn, &mut dir, now);
                Ok(inode)
            })
        })
        .await?)
    }

    /// Changes attributes; ctime becomes now. Length applies to files only.
    pub async fn setattr(&self, id: InodeId, attrs: SetAttr) -> Result<Inode> {
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let attrs = attrs.clone();
            Box::pin(async move {
                let mut inode = get_inode(txn, id, false)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("inode {id} not found")))?;
                let now = now_ns();
                if let Some(length) = attrs.length {
                    check_file(&inode)?;
                    if length != inode.length {
                        inode.length = length;
                        inode.mtime_ns = now;
                    }
                }
                if let Some(mode) = attrs.mode {
                    inode.mode = mode & MODE_MASK;
                }
                if let Some(uid) = attrs.uid {
                    inode.uid = uid;
                }
                if let Some(gid) = attrs.gid {
                    inode.gid = gid;
                }
                if let Some(t) = attrs.atime_ns {
                    inode.atime_ns = t;
                }
                if let Some(t) = attrs.mtime_ns {
                    inode.mtime_ns = t;
                }
                inode.ctime_ns = now;
                put_inode(txn, &inode);
                Ok(inode)
            })
        })
        .await?)
    }

    /// A client closes a file. If it wrote, the length grows to at least `length_hint` (the end
    /// of its highest write) and mtime becomes now; otherwise nothing changes. (Exact lengths from
    /// storage are issue 5.)
    pub async fn close(&self, id: InodeId, length_hint: u64, wrote: bool) -> Result<Inode> {
        if !wrote {
            return self.getattr(id).await;
        }
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                let mut inode = get_inode(txn, id, false)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("inode {id} not found")))?;
                check_file(&inode)?;
                let now = now_ns();
                inode.length = inode.length.max(length_hint);
                inode.mtime_ns = now;
                inode.ctime_ns = now;
                put_inode(txn, &inode);
                Ok(inode)
            })
        })
        .await?)
    }
}

/// Length-changing operations apply to regular files only.
fn check_file(inode: &Inode) -> Result<(), KvError> {
    if is_dir(inode) {
        return Err(Error::new(StatusCode::IsDirectory, format!("inode {} is a directory", inode.id)).into());
    }
    if inode.inode_type != InodeType::File as i32 {
        return Err(Error::invalid(format!("inode {} is not a regular file", inode.id)).into());
    }
    Ok(())
}
