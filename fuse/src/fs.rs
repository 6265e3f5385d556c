//! The FUSE adapter: kernel requests -> client library calls.
//!
//! Every operation that talks to the cluster is spawned as a task on the tokio runtime and answers
//! its reply from there, so FUSE event-loop threads never block on the network. Names are validated
//! (`validate_name`) before any RPC; errors map to errnos through `Error::errno()`. The caller's
//! uid/gid from the request header, with its supplementary groups from /proc ([`crate::creds`]), is
//! the user of every RPC: meta checks permissions on every namespace operation, and the kernel
//! checks them too (`default_permissions`, see [`crate::perm`]).
//!
//! Kernel caching: attributes and entries are cached for `attr_timeout_ms`/`entry_timeout_ms`; files
//! are opened without `FOPEN_KEEP_CACHE`, so the page cache of a file is dropped on each open, and
//! each open makes the kernel forget the file's cached attributes ([`crate::coherence`]), so the
//! size is re-read from meta (close-to-open consistency). Reads go through the read-ahead of
//! [`crate::prefetch`]; O_DIRECT opens get `FOPEN_DIRECT_IO` (no page cache, no read-ahead, writes go
//! out before they are answered). readdirplus: [`crate::dirplus`]. A directory's attributes, which
//! the kernel re-reads after every create or unlink in it, are answered from [`crate::dirattr`].
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use t3fs_client::{Client, SetAttr, UserInfo};
use t3fs_common::names::validate_name;
use t3fs_common::proto::{self, InodeType};
use t3fs_common::{Error, InodeId, StatusCode};
use tracing::Instrument;

use crate::attr::{file_type, ns_from_time, to_file_attr};
use crate::coherence::KernelCache;
use crate::config::MountConfig;
use crate::creds::GroupCache;
use crate::handles::{DirItem, Handles};
use crate::perm::{may_access, open_mask};

/// Block size reported by statfs.
const STATFS_BSIZE: u64 = 4096;

/// Shared state of one mount; ops hold it by `Arc` inside their tasks.
pub(crate) struct Inner {
    pub(crate) client: Arc<Client>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) handles: Handles,
    pub(crate) attr_ttl: Duration,
    pub(crate) entry_ttl: Duration,
    /// Supplementary groups of callers.
    groups: GroupCache,
    /// Read-ahead of sequential readers, O_DIRECT handles ([`crate::prefetch`]).
    pub(crate) prefetch: crate::prefetch::Prefetcher,
    /// Ask the kernel for readdirplus at init ([`crate::dirplus`]).
    readdirplus: bool,
    /// Invalidations sent to the kernel (close-to-open, see [`crate::coherence`]).
    pub(crate) kernel: KernelCache,
    /// Owners this mount set file locks for ([`crate::locks`]).
    pub(crate) lock_holders: crate::locks::Holders,
    /// Directory attributes kept across this mount's creates and unlinks ([`crate::dirattr`]).
    pub(crate) dir_attrs: crate::dirattr::DirAttrs,
    /// Stops the mount's background jobs ([`crate::flusher`]) when the mount's state goes.
    pub(crate) stop: tokio_util::sync::CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The t3fs FUSE filesystem.
pub struct T3Fs {
    inner: Arc<Inner>,
}

pub(crate) fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Validates a name from the kernel, answering with the errno on failure.
pub(crate) fn check_name(name: &OsStr) -> Result<Vec<u8>, Errno> {
    let b = name.as_bytes();
    validate_name(b).map_err(|e| errno(&e))?;
    Ok(b.to_vec())
}

/// An explicit time in ns; `None` for "now", which meta sets from its own clock (UTIME_NOW may be
/// used by any writer, explicit times only by the owner).
fn explicit_ns(t: TimeOrNow) -> Option<i64> {
    match t {
        TimeOrNow::SpecificTime(t) => Some(ns_from_time(t)),
        TimeOrNow::Now => None,
    }
}

/// Logs an op's failure (expected ones quietly) and returns its errno.
pub(crate) fn fail(op: &'static str, e: &Error) -> Errno {
    crate::metrics::metrics()
        .errors
        .get_or_create(&crate::metrics::OpCode { op, code: t3fs_common::metrics::Code(e.code) })
        .inc();
    match e.code {
        StatusCode::NotFound
        | StatusCode::AlreadyExists
        | StatusCode::DirectoryNotEmpty
        | StatusCode::PermissionDenied
        | StatusCode::OperationNotPermitted => {
            tracing::debug!(error = %e, "{op} failed")
        }
        _ => tracing::warn!(error = %e, "{op} failed"),
    }
    errno(e)
}

impl T3Fs {
    pub fn new(client: Arc<Client>, rt: tokio::runtime::Handle, cfg: &MountConfig) -> Self {
        let fs = Self {
            inner: Arc::new(Inner {
                client,
                rt,
                handles: Handles::with_write_buffers(
                    usize::try_from(cfg.write_buffer_bytes).unwrap_or(usize::MAX),
                    cfg.write_buffer_memory_bytes,
                ),
                attr_ttl: Duration::from_millis(cfg.attr_timeout_ms),
                entry_ttl: Duration::from_millis(cfg.entry_timeout_ms),
                groups: GroupCache::default(),
                prefetch: crate::prefetch::Prefetcher::new(cfg.prefetch_config()),
                readdirplus: cfg.readdirplus,
                kernel: KernelCache::default(),
                stop: tokio_util::sync::CancellationToken::new(),
                lock_holders: crate::locks::Holders::default(),
                dir_attrs: crate::dirattr::DirAttrs::new(Duration::from_millis(cfg.attr_timeout_ms)),
            }),
        };
        crate::flusher::start(&fs.inner, Duration::from_millis(cfg.flush_interval_ms));
        fs
    }

    pub(crate) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    /// The caller of `req`: its fs uid/gid and supplementary groups (see [`crate::creds`]).
    pub(crate) fn user(&self, req: &Request) -> UserInfo {
        self.inner.groups.user(req.pid(), req.uid(), req.gid())
    }

    /// Runs `f(inner)` as a task on the runtime, inside a span naming the op, counting it in
    /// the `op` metrics (requests and latency from dispatch to reply; errors count in [`fail`]).
    pub(crate) fn spawn<F, Fut>(&self, op: &'static str, span: tracing::Span, f: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let m = crate::metrics::metrics();
        m.ops.get_or_create(&crate::metrics::Op { op }).inc();
        let start = std::time::Instant::now();
        let fut = f(self.inner.clone());
        self.inner.rt.spawn(
            async move {
                fut.await;
                m.op_duration.get_or_create(&crate::metrics::Op { op }).observe(start.elapsed().as_secs_f64());
            }
            .instrument(span),
        );
    }
}

impl Inner {
    /// FUSE attributes, with the size including this mount's unflushed/unreported writes.
    pub(crate) fn attr(&self, inode: &proto::Inode) -> fuser::FileAttr {
        let size = if inode.inode_type == InodeType::File as i32 {
            self.handles.seen(inode.id, inode.length)
        } else {
            inode.length
        };
        to_file_attr(inode, size)
    }

    /// Attributes of a file unlinked while open here, from one of its handles (`nlink` 0).
    async fn unlinked_attr(&self, ino: u64) -> Option<fuser::FileAttr> {
        let f = self.handles.files_of(ino).into_iter().next()?;
        let inode = f.lock().await.inode.clone();
        let mut a = to_file_attr(&inode, self.handles.read_len(ino, inode.length));
        a.nlink = 0;
        Some(a)
    }

    async fn create(
        &self,
        user: &UserInfo,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> t3fs_common::Result<(proto::Inode, u64)> {
        let exclusive = flags & libc::O_EXCL != 0;
        let writable = OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY;
        let (mut inode, session) = if writable {
            self.client.create_for_write(user, InodeId(parent), name, mode, exclusive).await?
        } else {
            (self.client.create(user, InodeId(parent), name, mode, exclusive).await?, 0)
        };
        if flags & libc::O_TRUNC != 0 && inode.length > 0 {
            // As a truncate by setattr: other handles' buffers go out first and the local length drops.
            inode = self.setattr(user, inode.id, None, None, None, Some(0), None, None).await?;
        }
        let fh = self.handles.open_file(inode.clone(), writable);
        if let Some(f) = self.handles.file(fh) {
            f.lock().await.session = session;
        }
        Ok((inode, fh))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn setattr(
        &self,
        user: &UserInfo,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> t3fs_common::Result<proto::Inode> {
        let mut inode = None;
        if let Some(size) = size {
            self.prefetch.invalidate(ino);
            // Every handle of the inode stays locked from its write-out until the local length is
            // lowered: a flush in between (the periodic one) would otherwise report the old
            // length to meta after the truncate and bring the cut bytes' size back.
            let guards = self.flush_inode_locked(ino).await?;
            let known = self.handles.local_len(ino);
            inode = Some(self.client.truncate_from(user, InodeId(ino), size, known).await?);
            self.handles.truncated(ino, size);
            drop(guards);
        }
        let attr = SetAttr {
            mode,
            uid,
            gid,
            atime_ns: atime.and_then(explicit_ns),
            mtime_ns: mtime.and_then(explicit_ns),
            atime_now: matches!(atime, Some(TimeOrNow::Now)),
            mtime_now: matches!(mtime, Some(TimeOrNow::Now)),
        };
        if !attr.is_empty() {
            inode = Some(self.client.setattr(user, InodeId(ino), attr).await?);
        }
        match inode {
            Some(i) => Ok(i),
            None => self.client.getattr(user, InodeId(ino)).await,
        }
    }
    /// The reply flags of an open of handle `fh` with `flags`: O_DIRECT opens bypass the page
    /// cache (FOPEN_DIRECT_IO) and read-ahead, and write through.
    fn open_flags(&self, fh: u64, flags: i32) -> FopenFlags {
        if flags & libc::O_DIRECT != 0 {
            self.prefetch.set_direct(fh);
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    }

    async fn opendir(&self, user: &UserInfo, ino: u64) -> t3fs_common::Result<u64> {
        let (dir, entries) =
            tokio::join!(self.client.getattr(user, InodeId(ino)), self.client.readdir(user, InodeId(ino)));
        let dir = dir?;
        if dir.inode_type != InodeType::Directory as i32 {
            return Err(Error::new(StatusCode::NotDirectory, format!("inode {ino} is not a directory")));
        }
        let entries = entries?;
        let parent = if ino == InodeId::ROOT.0 || dir.parent == 0 { ino } else { dir.parent };
        let mut items = Vec::with_capacity(entries.len() + 2);
        items.push(DirItem { ino, kind: FileType::Directory, name: ".".into() });
        items.push(DirItem { ino: parent, kind: FileType::Directory, name: "..".into() });
        items.extend(entries.into_iter().map(|e| DirItem {
            ino: e.inode,
            kind: file_type(e.inode_type),
            name: OsStr::from_bytes(&e.name).to_os_string(),
        }));
        Ok(self.handles.open_dir(items))
    }
}

impl Filesystem for T3Fs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let p = self.inner.prefetch.config();
        let readahead = if p.enabled { u32::try_from(p.min_window).unwrap_or(u32::MAX) } else { 0 };
        crate::dirplus::negotiate(config, self.inner.readdirplus, readahead);
        crate::locks::negotiate(config);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("lookup", parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn("lookup", span, |fs| async move {
            match fs.client.lookup(&user, InodeId(parent.0), &name).await {
                Ok(i) => reply.entry_with_ttls(&fs.attr_ttl, &fs.entry_ttl, &fs.attr(&i), Generation(0)),
                Err(e) => reply.error(fail("lookup", &e)),
            }
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let user = self.user(req);
        self.spawn("getattr", tracing::debug_span!("getattr", ino = ino.0), |fs| async move {
            if let Some((i, ttl)) = fs.dir_attrs.get(ino.0) {
                return reply.attr(&ttl, &fs.attr(&i));
            }
            let generation = fs.dir_attrs.generation();
            match fs.client.getattr(&user, InodeId(ino.0)).await {
                Ok(i) => {
                    fs.dir_attrs.fetched(&i, generation);
                    reply.attr(&fs.attr_ttl, &fs.attr(&i))
                }
                // fstat of a file unlinked while open here: meta forgot it, its handles did not.
                Err(e) if e.code == StatusCode::NotFound && fs.handles.is_unlinked(ino.0) => {
                    match fs.unlinked_attr(ino.0).await {
                        Some(a) => reply.attr(&fs.attr_ttl, &a),
                        None => reply.error(fail("getattr", &e)),
                    }
                }
                Err(e) => reply.error(fail("getattr", &e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let user = self.user(req);
        self.spawn("setattr", tracing::debug_span!("setattr", ino = ino.0, ?size), |fs| async move {
            match fs.setattr(&user, ino.0, mode, uid, gid, size, atime, mtime).await {
                Ok(i) => {
                    fs.dir_attrs.clear();
                    reply.attr(&fs.attr_ttl, &fs.attr(&i))
                }
                Err(e) => {
                    fs.dir_attrs.clear();
                    reply.error(fail("setattr", &e))
                }
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("mknod", parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn("mknod", span, |fs| async move {
            match fs.client.create(&user, InodeId(parent.0), &name, mode & !umask, true).await {
                Ok(i) => {
                    fs.dir_attrs.touched(parent.0, i.ctime_ns);
                    reply.entry_with_ttls(&fs.attr_ttl, &fs.entry_ttl, &fs.attr(&i), Generation(0))
                }
                Err(e) => {
                    fs.dir_attrs.clear();
                    reply.error(fail("mknod", &e))
                }
            }
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("mkdir", parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn("mkdir", span, |fs| async move {
            match fs.client.mkdir(&user, InodeId(parent.0), &name, mode & !umask).await {
                Ok(i) => {
                    fs.dir_attrs.clear();
                    reply.entry_with_ttls(&fs.attr_ttl, &fs.entry_ttl, &fs.attr(&i), Generation(0))
                }
                Err(e) => {
                    fs.dir_attrs.clear();
                    reply.error(fail("mkdir", &e))
                }
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, true, reply);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &std::path::Path, reply: ReplyEntry) {
        self.symlink_op(req, parent, name, target, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.rename_op(req, parent, name, newparent, newname, flags, reply);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.link_op(req, ino, newparent, newname, reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.readlink_op(req, ino, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let user = self.user(req);
        self.spawn("open", tracing::debug_span!("open", ino = ino.0), |fs| async move {
            match fs.client.getattr(&user, InodeId(ino.0)).await {
                Ok(i) if i.inode_type == InodeType::Directory as i32 => reply.error(Errno::from_i32(libc::EISDIR)),
                Ok(i) if !may_access(&i, &user, open_mask(flags)) => reply.error(Errno::from_i32(libc::EACCES)),
                Ok(i) if flags.acc_mode() == OpenAccMode::O_RDONLY => {
                    fs.kernel.forget_attrs(ino.0);
                    let fh = fs.handles.open_file(i, false);
                    reply.opened(FileHandle(fh), fs.open_flags(fh, flags.0));
                }
                Ok(_) => {
                    // Open for write: meta checks write permission and records a write session, so
                    // the file is not garbage-collected while this handle is open.
                    match fs.client.open(&user, InodeId(ino.0), true, false).await {
                        Ok((i, session)) => {
                            fs.kernel.forget_attrs(ino.0);
                            let fh = fs.handles.open_file(i, true);
                            if let Some(f) = fs.handles.file(fh) {
                                f.lock().await.session = session;
                            }
                            reply.opened(FileHandle(fh), fs.open_flags(fh, flags.0));
                        }
                        Err(e) => reply.error(fail("open", &e)),
                    }
                }
                Err(e) => reply.error(fail("open", &e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match check_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let user = self.user(req);
        let span = tracing::debug_span!("create", parent = parent.0, name = %String::from_utf8_lossy(&name));
        self.spawn("create", span, |fs| async move {
            match fs.create(&user, parent.0, &name, mode & !umask, flags).await {
                Ok((i, fh)) => {
                    // Only an exclusive create surely made a new file (else it may have opened one).
                    if flags & libc::O_EXCL != 0 {
                        fs.dir_attrs.touched(parent.0, i.ctime_ns);
                    } else {
                        fs.dir_attrs.clear();
                    }
                    let attr = fs.attr(&i);
                    reply.created(&fs.entry_ttl, &attr, Generation(0), FileHandle(fh), fs.open_flags(fh, flags))
                }
                Err(e) => {
                    fs.dir_attrs.clear();
                    reply.error(fail("create", &e))
                }
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.inner.handles.file(fh.0) else { return reply.error(Errno::EBADF) };
        self.spawn("read", tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size), |fs| async move {
            match fs.read(fh.0, f, offset, size).await {
                Ok(data) => {
                    crate::metrics::metrics().read_bytes.inc_by(data.len() as u64);
                    reply.data(&data)
                }
                Err(e) => reply.error(fail("read", &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        let Some(f) = self.inner.handles.file(fh.0) else { return reply.error(Errno::EBADF) };
        let data = data.to_vec();
        let direct = self.inner.prefetch.is_direct(fh.0);
        self.spawn("write", tracing::debug_span!("write", ino = ino.0, fh = fh.0, offset, len), |fs| async move {
            match fs.write(f, offset, &data, direct).await {
                Ok(()) => {
                    crate::metrics::metrics().written_bytes.inc_by(u64::from(len));
                    reply.written(len)
                }
                Err(e) => reply.error(fail("write", &e)),
            }
        });
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.sync_then(req, ino, fh, "flush", Some(lock_owner), reply);
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync_then(req, ino, fh, "fsync", None, reply);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let user = self.user(req);
        self.spawn("release", tracing::debug_span!("release", ino = ino.0, fh = fh.0), |fs| async move {
            // FUSE_RELEASE_FLOCK_UNLOCK: the flock of this open file description goes with it.
            if let Some(owner) = lock_owner {
                fs.release_locks(ino.0, owner.0).await;
            }
            let Some(f) = fs.handles.file(fh.0) else { return reply.ok() };
            let res = {
                let mut g = f.lock().await;
                fs.sync_handle(&user, &mut g, true).await
            };
            fs.prefetch.release(fh.0);
            if let Some(hold) = fs.handles.release_file(fh.0) {
                // The last handle of a file unlinked while open here: meta's GC may take it now.
                if let Err(e) = fs.client.close_session(&UserInfo::root(), InodeId(ino.0), hold, 0, false).await {
                    tracing::warn!(error = %e, "ending the hold of an unlinked file failed; meta prunes it with the client session");
                }
            }
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("release", &e)),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let user = self.user(req);
        self.spawn("opendir", tracing::debug_span!("opendir", ino = ino.0), |fs| async move {
            match fs.opendir(&user, ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(fail("opendir", &e)),
            }
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        // Served from the listing taken at opendir: `offset` is an index into it, so a directory
        // changing underneath never makes the kernel skip or repeat entries of this stream.
        let Some(items) = self.inner.handles.dir(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in items.iter().enumerate().skip(start) {
            if reply.add(INodeNo(item.ino), (i + 1) as u64, item.kind, &item.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: fuser::ReplyDirectoryPlus) {
        self.readdirplus_op(req, ino, fh, offset, reply);
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.handles.release_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        // Nothing to flush: meta commits every namespace change (create, mkdir, rename, unlink, ...)
        // durably before it answers, and the kernel only sends those after they were answered. The
        // reply still goes through `spawn` so the op is counted like any other. (A kernel answered
        // ENOSYS would stop asking and let fsync on directories succeed silently.)
        let span = tracing::debug_span!("fsyncdir", ino = ino.0, fh = fh.0, datasync);
        self.spawn("fsyncdir", span, |_fs| async move { reply.ok() });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let user = self.user(req);
        self.spawn("statfs", tracing::debug_span!("statfs"), |fs| async move {
            match fs.client.statfs(&user).await {
                Ok(s) => {
                    let blocks = s.capacity_bytes / STATFS_BSIZE;
                    // Free space as storage reports it (replicas and chunk overheads included);
                    // capacity less the file lengths only while it does not.
                    let free = s.free_bytes.unwrap_or(s.capacity_bytes.saturating_sub(s.used_bytes)) / STATFS_BSIZE;
                    let files = u64::from(u32::MAX).max(s.inodes);
                    reply.statfs(
                        blocks,
                        free,
                        free,
                        files,
                        files - s.inodes,
                        STATFS_BSIZE as u32,
                        t3fs_common::names::NAME_MAX as u32,
                        STATFS_BSIZE as u32,
                    )
                }
                Err(e) => reply.error(fail("statfs", &e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        self.setxattr_op(req, ino, name, value, flags, position, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.getxattr_op(req, ino, name, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.listxattr_op(req, ino, size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.removexattr_op(req, ino, name, reply);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        self.access_op(req, ino, mask, reply);
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        self.getlk_op(req, ino, lock_owner, start, end, typ, pid, reply);
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.setlk_op(req, ino, fh, lock_owner, start, end, typ, pid, sleep, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.fallocate_op(req, ino, fh, offset, length, mode, reply);
    }

    fn lseek(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        self.lseek_op(req, ino, fh, offset, whence, reply);
    }
}

impl T3Fs {
    /// Writes out the handle's buffer; with `unlock` (flush, i.e. close) then drops that lock
    /// owner's POSIX locks on the file ([`crate::locks`]).
    fn sync_then(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        op: &'static str,
        unlock: Option<LockOwner>,
        reply: ReplyEmpty,
    ) {
        let user = self.user(req);
        self.spawn(op, tracing::debug_span!("sync", op, ino = ino.0, fh = fh.0), |fs| async move {
            // Data first, then the locks: the next holder must see what was written under them.
            let res = match fs.handles.file(fh.0) {
                Some(f) => Some(fs.sync_handle(&user, &mut *f.lock().await, false).await),
                None => None,
            };
            if let Some(owner) = unlock {
                fs.release_locks(ino.0, owner.0).await;
            }
            let Some(res) = res else { return reply.error(Errno::EBADF) };
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail(op, &e)),
            }
        });
    }
}
