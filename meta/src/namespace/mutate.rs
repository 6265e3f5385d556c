//! Namespace mutations: mkdir, create, symlink, link, remove (unlink/rmdir), setattr, close.
//!
//! Each is one read-write transaction. The parent directory inode and the dentry are read with
//! conflicting reads before anything is written, and rmdir's emptiness check is a conflicting range
//! read of the directory, so a create inside a directory being removed conflicts with the rmdir.
//! Errors (including permission denials) are returned before any write, so a failed operation
//! changes nothing. Check order per op follows Linux: search permission on the parent, existence,
//! write permission on the parent, sticky bit, then type checks (docs/meta.md).
use prost::Message;
use t3fs_common::names::validate_name;
use t3fs_common::proto::{DirEntry, Inode, InodeType, OpenSession, RemoveRsp};
use t3fs_common::routing::Routing;
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{KvError, RangeOpts, Transaction};

use super::dir_batch::DirOp;
use super::perm::{self, S_ISGID, S_ISUID};
use super::sessions::put_session;
use super::{
    Caller, MetaStore, Placement, delete_inode, get_dentry, get_dir, get_entry_inode, is_dir, must_inode, put_dentry,
    put_inode, retire_file, show,
};
use crate::{idem, keys};

/// Longest symlink target in bytes (Linux PATH_MAX).
pub use t3fs_common::names::SYMLINK_MAX;
/// Largest file length (off_t is signed 64-bit).
pub const MAX_FILE_LENGTH: u64 = i64::MAX as u64;

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
    /// Set atime / mtime to meta's clock (UTIME_NOW): allowed to the owner and to anyone who may
    /// write the inode, where explicit times need the owner.
    pub atime_now: bool,
    pub mtime_now: bool,
}

/// Permission, setuid/setgid and sticky bits: what an inode's `mode` stores.
const MODE_MASK: u32 = 0o7777;

pub(super) fn exists(parent: InodeId, name: &[u8]) -> KvError {
    Error::new(StatusCode::AlreadyExists, format!("{} already exists in directory {parent}", show(name))).into()
}

pub(super) fn missing(parent: InodeId, name: &[u8]) -> KvError {
    Error::not_found(format!("{} not found in directory {parent}", show(name))).into()
}

/// Sets a directory's mtime and ctime to `now` and writes it.
pub(super) fn touch_dir(txn: &mut dyn Transaction, dir: &mut Inode, now: i64) {
    dir.mtime_ns = now;
    dir.ctime_ns = now;
    put_inode(txn, dir);
}

/// A new directory `name` (inode `id`) in `parent`: owned by the caller; a set-group-id parent
/// passes its group and the bit itself on; the parent's default layout is copied; the round-robin
/// counter starts unset (random start at the first create).
pub(super) fn new_dir_inode(caller: &Caller, parent: &Inode, id: InodeId, name: &[u8], mode: u32, now: i64) -> Inode {
    Inode {
        id: id.0,
        inode_type: InodeType::Directory as i32,
        mode: (mode & MODE_MASK) | (parent.mode & S_ISGID),
        uid: caller.uid,
        gid: new_gid(caller, parent),
        nlink: 2,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        parent: parent.id,
        layout: parent.layout,
        name: name.to_vec().into(),
        ..Default::default()
    }
}

/// The group a new inode in `dir` gets: the directory's if it is set-group-id, else the caller's.
fn new_gid(caller: &Caller, dir: &Inode) -> u32 {
    if dir.mode & S_ISGID != 0 { dir.gid } else { caller.gid }
}

/// The checks before adding a new name to `parent`: it is a directory the caller may search, the
/// name is free (AlreadyExists), and the caller may write it. Returns the directory.
async fn prepare_new_entry(
    txn: &mut dyn Transaction,
    caller: &Caller,
    parent: InodeId,
    name: &[u8],
) -> Result<Inode, KvError> {
    let dir = get_dir(txn, parent, false).await?;
    perm::check(caller, &dir, perm::X)?;
    if get_dentry(txn, parent, name, false).await?.is_some() {
        return Err(exists(parent, name));
    }
    perm::check_modify_dir(caller, &dir)?;
    Ok(dir)
}

pub use t3fs_common::names::validate_symlink_target;

fn check_length(length: u64) -> Result<()> {
    if length > MAX_FILE_LENGTH {
        return Err(Error::invalid(format!("length {length} exceeds the largest file length {MAX_FILE_LENGTH}")));
    }
    Ok(())
}

impl MetaStore {
    /// Creates directory `name` in `parent` (AlreadyExists if the name is taken). Batched with the
    /// directory's other creates and removes ([`super::dir_batch`]).
    pub async fn mkdir(&self, caller: &Caller, parent: InodeId, name: &[u8], mode: u32) -> Result<Inode> {
        validate_name(name)?;
        self.check_space("mkdir")?;
        let id = self.ids.alloc(&*self.db).await?;
        let args = MkdirArgs { caller: caller.clone(), name: name.to_vec(), mode, id };
        self.dir_op(parent, DirOp::Mkdir(args)).await
    }

    /// Creates file `name` in `parent` with a layout from the current routing info. If the name
    /// exists: `exclusive` => AlreadyExists; a directory => IsDirectory; otherwise the existing
    /// inode is returned unchanged (open of an existing file; only search permission is needed —
    /// access to the file itself is checked by the client at open).
    pub async fn create(
        &self,
        caller: &Caller,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> Result<Inode> {
        self.create_open(caller, parent, name, mode, exclusive, None).await
    }

    /// [`Self::create`] that with `session` also records a write session for the file (new or
    /// existing) in the same transaction, so a create-for-write is one durable commit. Batched with
    /// the directory's other creates and removes ([`super::dir_batch`]).
    pub async fn create_open(
        &self,
        caller: &Caller,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
        session: Option<OpenSession>,
    ) -> Result<Inode> {
        validate_name(name)?;
        if let Some(s) = &session {
            super::sessions::check_session(s)?;
        }
        // The layout comes from the directory (round-robin counter) and this routing snapshot.
        let (routing, placement) = (self.routing.get(), self.placement.clone());
        let id = self.ids.alloc(&*self.db).await?;
        let args = CreateArgs {
            caller: caller.clone(),
            name: name.to_vec(),
            mode,
            exclusive,
            session,
            id,
            routing,
            placement,
            full: self.space_refusal("creating a file"),
        };
        self.dir_op(parent, DirOp::Create(Box::new(args))).await
    }

    /// Creates symlink `name` in `parent` pointing at `target` (mode 0777, length = target size).
    /// readlink is `getattr(..).symlink_target`.
    pub async fn symlink(&self, caller: &Caller, parent: InodeId, name: &[u8], target: &[u8]) -> Result<Inode> {
        validate_name(name)?;
        validate_symlink_target(target)?;
        self.check_space("symlink")?;
        let id = self.ids.alloc(&*self.db).await?;
        let (caller, name, target) = (caller.clone(), name.to_vec(), target.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, name, target) = (caller.clone(), name.clone(), target.clone());
            Box::pin(async move {
                let mut dir = prepare_new_entry(txn, &caller, parent, &name).await?;
                let now = now_ns();
                let inode = Inode {
                    id: id.0,
                    inode_type: InodeType::Symlink as i32,
                    mode: 0o777,
                    uid: caller.uid,
                    gid: new_gid(&caller, &dir),
                    nlink: 1,
                    length: target.len() as u64,
                    atime_ns: now,
                    mtime_ns: now,
                    ctime_ns: now,
                    symlink_target: target.into(),
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

    /// Adds hard link `new_name` in `new_parent` to `inode` (a file or symlink; a directory is
    /// refused with OperationNotPermitted, EPERM). Returns the inode with its new `nlink`.
    pub async fn link(&self, caller: &Caller, inode: InodeId, new_parent: InodeId, new_name: &[u8]) -> Result<Inode> {
        validate_name(new_name)?;
        self.check_space("link")?;
        let (caller, name) = (caller.clone(), new_name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, name) = (caller.clone(), name.clone());
            Box::pin(async move {
                let mut target = must_inode(txn, inode, false).await?;
                let mut dir = prepare_new_entry(txn, &caller, new_parent, &name).await?;
                if is_dir(&target) {
                    return Err(perm::not_permitted(format!("hard link to directory {inode}")).into());
                }
                if target.nlink == 0 {
                    // Unlinked, waiting for GC: it cannot come back.
                    return Err(Error::not_found(format!("inode {inode} was unlinked")).into());
                }
                let now = now_ns();
                target.nlink = target.nlink.checked_add(1).ok_or_else(|| Error::invalid("too many links"))?;
                target.ctime_ns = now;
                put_inode(txn, &target);
                let entry = DirEntry { name: name.into(), inode: target.id, inode_type: target.inode_type };
                put_dentry(txn, new_parent, &entry);
                touch_dir(txn, &mut dir, now);
                Ok(target)
            })
        })
        .await?)
    }

    /// Removes `name` from `parent`. `is_dir`: rmdir (must be an empty directory, else NotDirectory /
    /// DirectoryNotEmpty); otherwise unlink (must not be a directory, else IsDirectory). Returns the
    /// removed inode with its new `nlink`; at 0 a file goes to the GC queue (its chunks and inode
    /// are removed after `gc_delay_ms`, once no write session holds it), anything else is gone. A
    /// non-empty `request_id` makes a retry return the first result. Batched with the directory's
    /// other creates and removes ([`super::dir_batch`]).
    pub async fn remove(
        &self,
        caller: &Caller,
        parent: InodeId,
        name: &[u8],
        is_dir_op: bool,
        request_id: &str,
    ) -> Result<Inode> {
        validate_name(name)?;
        idem::validate_request_id(request_id)?;
        let args = RemoveArgs {
            caller: caller.clone(),
            name: name.to_vec(),
            is_dir: is_dir_op,
            request_id: request_id.to_string(),
            ttl: self.idempotency_ttl(),
        };
        self.dir_op(parent, DirOp::Remove(args)).await
    }

    /// Changes attributes; ctime becomes now. Permissions: length needs write permission on the
    /// file; mode, explicit times and uid/gid need ownership (OperationNotPermitted, EPERM,
    /// otherwise); only root gives a file away; the owner may set a group it belongs to.
    pub async fn setattr(&self, caller: &Caller, id: InodeId, attrs: SetAttr) -> Result<Inode> {
        if let Some(length) = attrs.length {
            check_length(length)?;
        }
        let caller = caller.clone();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (attrs, caller) = (attrs.clone(), caller.clone());
            Box::pin(async move {
                let mut inode = must_inode(txn, id, false).await?;
                check_setattr(&caller, &inode, &attrs)?;
                let now = now_ns();
                if let Some(length) = attrs.length {
                    check_file(&inode)?;
                    // Every truncate (even to the current length: chunks past it were cut) makes
                    // older length hints stale.
                    inode.truncate_version = inode.truncate_version.wrapping_add(1);
                    if length != inode.length {
                        inode.length = length;
                        inode.mtime_ns = now;
                    }
                }
                if let Some(mode) = attrs.mode {
                    inode.mode = mode & MODE_MASK;
                    if !caller.is_root() && !caller.in_group(inode.gid) {
                        inode.mode &= !S_ISGID;
                    }
                }
                if attrs.uid.is_some() || attrs.gid.is_some() {
                    inode.uid = attrs.uid.unwrap_or(inode.uid);
                    inode.gid = attrs.gid.unwrap_or(inode.gid);
                    if !is_dir(&inode) {
                        // chown drops set-user-id, and set-group-id where it means "run as group".
                        inode.mode &= !S_ISUID;
                        if inode.mode & 0o010 != 0 {
                            inode.mode &= !S_ISGID;
                        }
                    }
                }
                if attrs.atime_now {
                    inode.atime_ns = now;
                } else if let Some(t) = attrs.atime_ns {
                    inode.atime_ns = t;
                }
                if attrs.mtime_now {
                    inode.mtime_ns = now;
                } else if let Some(t) = attrs.mtime_ns {
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
    /// of its highest write) and mtime becomes now; otherwise nothing changes. See [`Self::close_with`].
    pub async fn close(&self, id: InodeId, length_hint: u64, wrote: bool) -> Result<Inode> {
        self.close_with(id, wrote, CloseLength { hint: length_hint, ..Default::default() }).await
    }

    /// [`Self::close`] with lazy length: when `len.exact` (the end of the file's data as storage
    /// has it, probed at truncate version `tv`) is known and no truncate happened since the probe,
    /// the length grows to it; otherwise to the hint, unless the hint's truncate version is older
    /// than the file's (a truncate made it stale; 0 = the client does not track it).
    pub async fn close_with(&self, id: InodeId, wrote: bool, len: CloseLength) -> Result<Inode> {
        self.close_session(id, wrote, len, 0).await
    }

    /// [`Self::close_with`] that also ends write session `session_id` (0: none) in the same
    /// transaction, so a Close is at most one durable commit, and none when the client neither
    /// wrote nor held a session. A missing session is fine (close may be retried).
    pub async fn close_session(&self, id: InodeId, wrote: bool, len: CloseLength, session_id: u64) -> Result<Inode> {
        if !wrote && session_id == 0 {
            return self.getattr(id).await;
        }
        if wrote {
            check_length(len.hint)?;
            if let Some((exact, _)) = len.exact {
                check_length(exact)?;
            }
        }
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                if session_id != 0 {
                    txn.clear(&keys::session_key(id, session_id));
                }
                if !wrote {
                    // Nothing about the file changes: a snapshot read, so no conflict with writers.
                    return must_inode(txn, id, true).await;
                }
                let mut inode = must_inode(txn, id, false).await?;
                check_file(&inode)?;
                let now = now_ns();
                let tv = inode.truncate_version;
                let grow = match len.exact {
                    Some((exact, probed_at)) if probed_at == tv => exact,
                    _ if len.hint_truncate_version == 0 || len.hint_truncate_version == tv => len.hint,
                    _ => 0,
                };
                inode.length = inode.length.max(grow);
                inode.mtime_ns = now;
                inode.ctime_ns = now;
                put_inode(txn, &inode);
                Ok(inode)
            })
        })
        .await?)
    }
}

/// What a Close knows about a file's length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseLength {
    /// The end of the client's highest write.
    pub hint: u64,
    /// The truncate version the client saw (0: unknown, the hint is taken as is).
    pub hint_truncate_version: u64,
    /// The end of the file's data on storage, and the truncate version when it was probed.
    pub exact: Option<(u64, u64)>,
}

/// DirectoryNotEmpty unless directory `id` has no entries (a conflicting range read, so a create
/// racing into it conflicts).
pub(super) async fn check_empty(txn: &mut dyn Transaction, id: InodeId, name: &[u8]) -> Result<(), KvError> {
    let (b, e) = keys::dentry_range(id);
    let opts = RangeOpts { limit: 1, reverse: false, snapshot: false };
    if !txn.get_range(&b, &e, opts).await?.is_empty() {
        return Err(
            Error::new(StatusCode::DirectoryNotEmpty, format!("directory {} ({id}) is not empty", show(name))).into()
        );
    }
    Ok(())
}

/// Every permission check of a setattr, before anything changes.
fn check_setattr(caller: &Caller, inode: &Inode, attrs: &SetAttr) -> Result<(), Error> {
    if attrs.length.is_some() {
        perm::check(caller, inode, perm::W)?;
    }
    if caller.is_root() {
        return Ok(());
    }
    let owner = caller.uid == inode.uid;
    if let Some(uid) = attrs.uid
        && (!owner || uid != inode.uid)
    {
        return Err(perm::not_permitted(format!("uid {} may not chown inode {} to uid {uid}", caller.uid, inode.id)));
    }
    if let Some(gid) = attrs.gid
        && (!owner || !(caller.in_group(gid) || gid == inode.gid))
    {
        return Err(perm::not_permitted(format!("uid {} may not chgrp inode {} to gid {gid}", caller.uid, inode.id)));
    }
    if attrs.mode.is_some() && !owner {
        return Err(perm::not_permitted(format!("uid {} may not chmod inode {}", caller.uid, inode.id)));
    }
    let explicit_time =
        (attrs.atime_ns.is_some() && !attrs.atime_now) || (attrs.mtime_ns.is_some() && !attrs.mtime_now);
    if explicit_time && !owner {
        return Err(perm::not_permitted(format!("uid {} may not set times of inode {}", caller.uid, inode.id)));
    }
    if (attrs.atime_now || attrs.mtime_now) && !owner {
        // utimensat(UTIME_NOW): anyone who may write the inode may touch it.
        perm::check(caller, inode, perm::W)?;
    }
    Ok(())
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

/// What [`MetaStore::mkdir`] does, in a transaction.
#[derive(Clone, Debug)]
pub(super) struct MkdirArgs {
    pub caller: Caller,
    pub name: Vec<u8>,
    pub mode: u32,
    /// The new directory's inode id (allocated before the transaction).
    pub id: InodeId,
}

/// What [`MetaStore::create_open`] does, in a transaction.
#[derive(Clone, Debug)]
pub(super) struct CreateArgs {
    pub caller: Caller,
    pub name: Vec<u8>,
    pub mode: u32,
    pub exclusive: bool,
    pub session: Option<OpenSession>,
    /// The new file's inode id (allocated before the transaction; unused if the name exists).
    pub id: InodeId,
    /// The routing snapshot and placement the new file's layout comes from.
    pub routing: std::sync::Arc<Routing>,
    pub placement: Placement,
    /// Set when the store's disk is down to its reserve: a new file is refused with this error
    /// (an existing one still opens).
    pub full: Option<Error>,
}

/// What [`MetaStore::remove`] does, in a transaction.
#[derive(Clone, Debug)]
pub(super) struct RemoveArgs {
    pub caller: Caller,
    pub name: Vec<u8>,
    pub is_dir: bool,
    pub request_id: String,
    pub ttl: std::time::Duration,
}

/// mkdir in `txn`. Every error comes before any write.
pub(super) async fn mkdir_in(txn: &mut dyn Transaction, parent: InodeId, a: &MkdirArgs) -> Result<Inode, KvError> {
    let (caller, name, id) = (&a.caller, &a.name, a.id);
    let mut dir = prepare_new_entry(txn, caller, parent, name).await?;
    let now = now_ns();
    let inode = new_dir_inode(caller, &dir, id, name, a.mode, now);
    dir.nlink = dir.nlink.checked_add(1).ok_or_else(|| Error::invalid("too many subdirectories"))?;
    put_inode(txn, &inode);
    put_dentry(txn, parent, &DirEntry { name: name.clone().into(), inode: id.0, inode_type: inode.inode_type });
    touch_dir(txn, &mut dir, now);
    Ok(inode)
}

/// create (open of an existing file) in `txn`. Every error comes before any write.
pub(super) async fn create_in(txn: &mut dyn Transaction, parent: InodeId, a: &CreateArgs) -> Result<Inode, KvError> {
    let (caller, name, id) = (&a.caller, &a.name, a.id);
    let mut dir = get_dir(txn, parent, false).await?;
    perm::check(caller, &dir, perm::X)?;
    if let Some(entry) = get_dentry(txn, parent, name, false).await? {
        if a.exclusive {
            return Err(exists(parent, name));
        }
        let inode = get_entry_inode(txn, parent, &entry, false).await?;
        if is_dir(&inode) {
            return Err(Error::new(
                StatusCode::IsDirectory,
                format!("{} in directory {parent} is a directory", show(name)),
            )
            .into());
        }
        if let Some(s) = &a.session {
            put_session(txn, InodeId(inode.id), s, caller.uid);
        }
        return Ok(inode);
    }
    perm::check_modify_dir(caller, &dir)?;
    if let Some(e) = &a.full {
        return Err(e.clone().into());
    }
    let layout = super::layout::next_file_layout(&a.routing, &a.placement, &mut dir)?;
    let now = now_ns();
    let inode = Inode {
        id: id.0,
        inode_type: InodeType::File as i32,
        mode: a.mode & MODE_MASK,
        uid: caller.uid,
        gid: new_gid(caller, &dir),
        nlink: 1,
        length: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        layout: Some(layout),
        ..Default::default()
    };
    put_inode(txn, &inode);
    put_dentry(txn, parent, &DirEntry { name: name.clone().into(), inode: id.0, inode_type: inode.inode_type });
    touch_dir(txn, &mut dir, now);
    if let Some(s) = &a.session {
        put_session(txn, id, s, caller.uid);
    }
    Ok(inode)
}

/// unlink / rmdir in `txn`. Every error comes before any write.
pub(super) async fn remove_in(txn: &mut dyn Transaction, parent: InodeId, a: &RemoveArgs) -> Result<Inode, KvError> {
    let (caller, name, rid) = (&a.caller, &a.name, &a.request_id);
    if let Some(done) = idem::recorded(txn, rid, "remove", caller.uid, a.ttl).await? {
        let rsp =
            RemoveRsp::decode(done.as_slice()).map_err(|e| Error::internal(format!("corrupt remove record: {e}")))?;
        return rsp.inode.ok_or_else(|| Error::internal("remove record without inode").into());
    }
    let mut dir = get_dir(txn, parent, false).await?;
    perm::check(caller, &dir, perm::X)?;
    let entry = get_dentry(txn, parent, name, false).await?.ok_or_else(|| missing(parent, name))?;
    perm::check_modify_dir(caller, &dir)?;
    let mut inode = get_entry_inode(txn, parent, &entry, false).await?;
    perm::check_sticky(caller, &dir, &inode)?;
    let id = InodeId(inode.id);
    let now = now_ns();
    match (a.is_dir, is_dir(&inode)) {
        (true, false) => {
            return Err(Error::new(
                StatusCode::NotDirectory,
                format!("{} in directory {parent} is not a directory", show(name)),
            )
            .into());
        }
        (false, true) => {
            return Err(Error::new(
                StatusCode::IsDirectory,
                format!("{} in directory {parent} is a directory", show(name)),
            )
            .into());
        }
        (true, true) => {
            check_empty(txn, id, name).await?;
            delete_inode(txn, id);
            inode.nlink = 0;
            dir.nlink = dir.nlink.saturating_sub(1).max(2);
        }
        (false, false) => {
            inode.nlink = inode.nlink.saturating_sub(1);
            inode.ctime_ns = now;
            if inode.nlink == 0 && inode.inode_type == InodeType::File as i32 {
                retire_file(txn, &inode, now);
            } else if inode.nlink == 0 {
                delete_inode(txn, id);
            } else {
                put_inode(txn, &inode);
            }
        }
    }
    txn.clear(&keys::dentry_key(parent, name));
    touch_dir(txn, &mut dir, now);
    let rsp = RemoveRsp { inode: Some(inode.clone()) };
    idem::record(txn, rid, "remove", caller.uid, rsp.encode_to_vec());
    Ok(inode)
}
