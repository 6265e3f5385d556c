//! Namespace operations against the meta service.
//!
//! Every call validates names locally first (bad input never reaches the wire), builds one
//! `RequestHeader` (fresh request id, token, caller identity) and sends it to the current meta node,
//! retrying retryable errors (the same request id on every try). A transport failure drops the
//! connection so the next try picks another meta node.
//!
//! Storage side effects the client owns (meta only edits the namespace):
//! - `remove` of a file's last link deletes its chunks (best effort; leftover chunks are for GC).
//! - `truncate` cuts/deletes chunks on storage first, then sets the new length in meta, so a reader
//!   never sees stale bytes inside the new length.
use t3fs_common::names::validate_name;
use t3fs_common::proto::{self, InodeType};
use t3fs_common::{Error, InodeId, Result, StatusCode};

use crate::{Client, MetaClient, UserInfo};

/// Attribute changes for [`Client::setattr`]; `None` leaves a field unchanged. (Length changes go
/// through [`Client::truncate`], which also fixes the chunks on storage.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
    /// Set atime / mtime to meta's current time (UTIME_NOW; allowed to writers, not only the owner).
    pub atime_now: bool,
    pub mtime_now: bool,
}

impl SetAttr {
    pub fn is_empty(&self) -> bool {
        *self == SetAttr::default()
    }
}

/// Readdir page size.
const READDIR_LIMIT: u32 = 1024;

pub(crate) fn inode_of(rsp: proto::InodeRsp) -> Result<proto::Inode> {
    rsp.inode.ok_or_else(|| Error::internal("meta returned no inode"))
}

impl Client {
    /// Sends one meta RPC with retries and meta-node failover. `call` builds and sends the request
    /// on the given connection; it runs once per try.
    pub(crate) async fn meta_call<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(MetaClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.meta_call_to(None, what, call).await
    }

    /// [`meta_call`](Self::meta_call) sent to the owner of directory `dir` when given (creates,
    /// mkdirs and removes in `dir`, so one meta node batches them; see `meta_route`).
    pub(crate) async fn meta_call_to<T, F, Fut>(&self, dir: Option<InodeId>, what: &str, call: F) -> Result<T>
    where
        F: Fn(MetaClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let call = &call;
        self.retrying(what, move || async move {
            let conn = self.meta_conn(dir).await?;
            match call(conn.client).await {
                Ok(rsp) => Ok(rsp.into_inner()),
                Err(st) => {
                    let e = Error::from_tonic(&st);
                    if matches!(e.code, StatusCode::Unavailable | StatusCode::Timeout) {
                        self.forget_meta(conn.node_id);
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.0, name = %String::from_utf8_lossy(name)))]
    pub async fn lookup(&self, user: &UserInfo, parent: InodeId, name: &[u8]) -> Result<proto::Inode> {
        validate_name(name)?;
        let req = proto::LookupReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            parent: parent.0,
            name: name.to_vec().into(),
        };
        inode_of(
            self.meta_call("lookup", |mut c| {
                let r = req.clone();
                async move { c.lookup(r).await }
            })
            .await?,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0))]
    pub async fn getattr(&self, user: &UserInfo, inode: InodeId) -> Result<proto::Inode> {
        let req = proto::GetAttrReq { header: Some(self.header(user, &t3fs_common::new_request_id())), inode: inode.0 };
        inode_of(
            self.meta_call("getattr", |mut c| {
                let r = req.clone();
                async move { c.get_attr(r).await }
            })
            .await?,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.0, name = %String::from_utf8_lossy(name)))]
    pub async fn mkdir(&self, user: &UserInfo, parent: InodeId, name: &[u8], mode: u32) -> Result<proto::Inode> {
        validate_name(name)?;
        let req = proto::MkdirReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            parent: parent.0,
            name: name.to_vec().into(),
            mode: mode & 0o7777,
        };
        inode_of(
            self.meta_call_to(Some(parent), "mkdir", |mut c| {
                let r = req.clone();
                async move { c.mkdir(r).await }
            })
            .await?,
        )
    }

    /// Creates a regular file, or returns the existing one unless `exclusive`.
    pub async fn create(
        &self,
        user: &UserInfo,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> Result<proto::Inode> {
        self.create_with(user, parent, name, mode, exclusive, None).await
    }

    /// [`create`](Self::create) that also opens the file for write: meta records a write session
    /// (the file is not garbage-collected while it is open, even if unlinked). Returns the session
    /// id to pass to [`close_session`](Self::close_session).
    pub async fn create_for_write(
        &self,
        user: &UserInfo,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> Result<(proto::Inode, u64)> {
        let session = self.new_session();
        let inode = self.create_with(user, parent, name, mode, exclusive, Some(session.clone())).await?;
        Ok((inode, session.session_id))
    }

    /// Opens an existing regular file: meta checks read (and with `write` also write) permission.
    /// With `hold` (or `write`) meta records a session that keeps the file from GC until
    /// [`close_session`](Self::close_session) with the returned id (0 when none was recorded).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, write, hold))]
    pub async fn open(&self, user: &UserInfo, inode: InodeId, write: bool, hold: bool) -> Result<(proto::Inode, u64)> {
        let session = (write || hold).then(|| self.new_session());
        let req = proto::OpenReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            write,
            session: session.clone(),
        };
        let rsp = self
            .meta_call("open", |mut c| {
                let r = req.clone();
                async move { c.open(r).await }
            })
            .await?;
        Ok((inode_of(rsp)?, session.map_or(0, |s| s.session_id)))
    }

    fn new_session(&self) -> proto::OpenSession {
        proto::OpenSession { client_id: self.client_id().to_string(), session_id: rand::random::<u64>().max(1) }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.0, name = %String::from_utf8_lossy(name)))]
    async fn create_with(
        &self,
        user: &UserInfo,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        exclusive: bool,
        session: Option<proto::OpenSession>,
    ) -> Result<proto::Inode> {
        validate_name(name)?;
        let req = proto::CreateReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            parent: parent.0,
            name: name.to_vec().into(),
            mode: mode & 0o7777,
            exclusive,
            session,
        };
        inode_of(
            self.meta_call_to(Some(parent), "create", |mut c| {
                let r = req.clone();
                async move { c.create(r).await }
            })
            .await?,
        )
    }

    /// Removes a directory entry (`is_dir`: rmdir semantics, else unlink). When a file's last link
    /// goes (the returned inode has `nlink == 0`), meta garbage-collects it (chunks, then inode)
    /// after its `gc_delay_ms`, once no write session holds it.
    pub async fn remove(&self, user: &UserInfo, parent: InodeId, name: &[u8], is_dir: bool) -> Result<proto::Inode> {
        self.remove_entry(user, &t3fs_common::new_request_id(), parent, name, is_dir).await
    }

    /// [`remove`](Self::remove) with the caller's request id. Retries reuse `request_id`, and so does a caller
    /// retrying the whole call: meta answers a repeated request id with the first outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(req = request_id, parent = parent.0, name = %String::from_utf8_lossy(name)))]
    pub async fn remove_entry(
        &self,
        user: &UserInfo,
        request_id: &str,
        parent: InodeId,
        name: &[u8],
        is_dir: bool,
    ) -> Result<proto::Inode> {
        validate_name(name)?;
        let req = proto::RemoveReq {
            header: Some(self.header(user, request_id)),
            parent: parent.0,
            name: name.to_vec().into(),
            is_dir,
        };
        let rsp = self
            .meta_call_to(Some(parent), "remove", |mut c| {
                let r = req.clone();
                async move { c.remove(r).await }
            })
            .await?;
        rsp.inode.ok_or_else(|| Error::internal("meta returned no inode"))
    }

    /// All entries of a directory (pages through `more`), sorted by name as meta returns them.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0))]
    pub async fn readdir(&self, user: &UserInfo, inode: InodeId) -> Result<Vec<proto::DirEntry>> {
        let mut out: Vec<proto::DirEntry> = Vec::new();
        loop {
            let req = proto::ReadDirReq {
                header: Some(self.header(user, &t3fs_common::new_request_id())),
                inode: inode.0,
                start_after: out.last().map(|e| e.name.clone()).unwrap_or_default(),
                limit: READDIR_LIMIT,
            };
            let rsp = self
                .meta_call("readdir", |mut c| {
                    let r = req.clone();
                    async move { c.read_dir(r).await }
                })
                .await?;
            let got = rsp.entries.len();
            out.extend(rsp.entries);
            if !rsp.more {
                return Ok(out);
            }
            if got == 0 {
                return Err(Error::internal("meta readdir: 'more' set on an empty page"));
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0))]
    pub async fn setattr(&self, user: &UserInfo, inode: InodeId, attr: SetAttr) -> Result<proto::Inode> {
        let req = proto::SetAttrReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            mode: attr.mode.map(|m| m & 0o7777),
            uid: attr.uid,
            gid: attr.gid,
            length: None,
            atime_ns: attr.atime_ns,
            mtime_ns: attr.mtime_ns,
            atime_now: attr.atime_now,
            mtime_now: attr.mtime_now,
        };
        inode_of(
            self.meta_call("setattr", |mut c| {
                let r = req.clone();
                async move { c.set_attr(r).await }
            })
            .await?,
        )
    }

    /// Sets a file's length: shrinking cuts the chunk holding the new end and deletes the chunks past
    /// it (up to the old length as meta knows it) before meta records the new length.
    pub async fn truncate(&self, user: &UserInfo, inode: InodeId, new_len: u64) -> Result<proto::Inode> {
        self.truncate_from(user, inode, new_len, 0).await
    }

    /// [`truncate`](Self::truncate) where the caller knows data may exist up to `known_len` (e.g. its
    /// own writes not yet reported to meta): chunks up to `max(meta length, known_len)` are fixed.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, new_len))]
    pub async fn truncate_from(
        &self,
        user: &UserInfo,
        inode: InodeId,
        new_len: u64,
        known_len: u64,
    ) -> Result<proto::Inode> {
        let current = self.getattr(user, inode).await?;
        match InodeType::try_from(current.inode_type) {
            Ok(InodeType::File) => {}
            Ok(InodeType::Directory) => return Err(Error::new(StatusCode::IsDirectory, "truncate of a directory")),
            _ => return Err(Error::invalid("truncate of a non-regular file")),
        }
        let old_len = current.length.max(known_len);
        self.remove_chunks(&current, new_len, old_len).await?;
        let req = proto::SetAttrReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            length: Some(new_len),
            ..Default::default()
        };
        inode_of(
            self.meta_call("truncate", |mut c| {
                let r = req.clone();
                async move { c.set_attr(r).await }
            })
            .await?,
        )
    }

    /// Cuts the file's chunks from `old_len` down to `new_len`, 16 at a time: [`crate::data::truncate_plan`], or
    /// for a large cut the chunks storage lists past the new end ([`crate::shrink`]). Meta is not
    /// told (truncate does that; chunks of unlinked files are meta's GC's to remove).
    pub async fn remove_chunks(&self, inode: &proto::Inode, new_len: u64, old_len: u64) -> Result<()> {
        let layout = crate::data::file_layout(inode)?;
        let plan = self.shrink_plan(layout, InodeId(inode.id), old_len, new_len).await?;
        self.apply_chunk_ops(layout, InodeId(inode.id), &plan).await
    }

    /// Tells meta this client is done writing (for now): meta extends the length to `length_hint`
    /// (the highest byte this client wrote + 1) and updates mtime when `wrote`.
    pub async fn close(&self, user: &UserInfo, inode: InodeId, length_hint: u64, wrote: bool) -> Result<proto::Inode> {
        self.close_session(user, inode, 0, length_hint, wrote).await
    }

    /// [`close`](Self::close) that also ends the session `session_id` from
    /// [`create_for_write`](Self::create_for_write) or [`open`](Self::open) (0: none).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, session_id, length_hint, wrote))]
    pub async fn close_session(
        &self,
        user: &UserInfo,
        inode: InodeId,
        session_id: u64,
        length_hint: u64,
        wrote: bool,
    ) -> Result<proto::Inode> {
        let req = proto::CloseReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            length_hint,
            wrote,
            session_id,
            // Not tracked: meta takes the exact length from storage (or this hint as is).
            truncate_version: 0,
        };
        inode_of(
            self.meta_call("close", |mut c| {
                let r = req.clone();
                async move { c.close(r).await }
            })
            .await?,
        )
    }

    pub async fn statfs(&self, user: &UserInfo) -> Result<proto::StatFsRsp> {
        let req = proto::StatFsReq { header: Some(self.header(user, &t3fs_common::new_request_id())) };
        self.meta_call("statfs", |mut c| {
            let r = req.clone();
            async move { c.stat_fs(r).await }
        })
        .await
    }

    /// Resolves an absolute path (`/a/b/c`; `.` and `..` allowed, empty components ignored).
    pub async fn resolve_path(&self, user: &UserInfo, path: &str) -> Result<proto::Inode> {
        if !path.starts_with('/') {
            return Err(Error::invalid(format!("path {path:?} is not absolute")));
        }
        let mut cur = self.getattr(user, InodeId::ROOT).await?;
        for comp in path.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if cur.id != InodeId::ROOT.0 {
                        let parent = if cur.parent == 0 { InodeId::ROOT.0 } else { cur.parent };
                        cur = self.getattr(user, InodeId(parent)).await?;
                    }
                }
                name => {
                    if cur.inode_type != InodeType::Directory as i32 {
                        return Err(Error::new(
                            StatusCode::NotDirectory,
                            format!("{path}: a component is not a directory"),
                        ));
                    }
                    cur = self.lookup(user, InodeId(cur.id), name.as_bytes()).await?;
                }
            }
        }
        Ok(cur)
    }
}
