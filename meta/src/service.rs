//! The `Meta` gRPC service: a thin adapter from wire messages onto [`MetaStore`].
//!
//! Each handler checks the token (cluster or user, `t3fs_common::users`), runs in a tracing span carrying the request id and the
//! inode/parent id, calls one namespace function and maps errors with `Error::to_tonic()` (the
//! stable status code travels in the `t3fs-code` metadata entry).
use std::sync::Arc;
use std::time::Instant;

use t3fs_common::auth;
use t3fs_common::proto::{self, meta_server::Meta};
use t3fs_common::users::{Authenticator, UserCache};
use t3fs_common::{Error, InodeId, StatusCode};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::length::LengthProbe;
use crate::metrics::MetaMetrics;
use crate::namespace::{Caller, CloseLength, MetaStore, RenameFlags, SetAttr, XattrFlags};

/// The gRPC service over one namespace.
pub struct MetaService {
    store: Arc<MetaStore>,
    auth: Authenticator,
    metrics: Arc<MetaMetrics>,
    /// Exact file lengths from storage at close; `None`: lengths come from the hints only.
    probe: Option<Arc<LengthProbe>>,
}

impl MetaService {
    /// `token`: the cluster token; empty disables authentication (unless users are added with
    /// [`Self::with_users`], whose tokens are accepted too).
    pub fn new(store: Arc<MetaStore>, token: String) -> Self {
        Self { store, auth: Authenticator::new(&token), metrics: Arc::default(), probe: None }
    }

    /// Computes exact lengths at close with `probe` (lazy length, `crate::length`).
    pub fn with_length_probe(mut self, probe: Arc<LengthProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Also accepts the user tokens of `users` (mgmtd's user table); a user's requests act as
    /// that user whatever uid/gid the header states.
    pub fn with_users(mut self, users: UserCache) -> Self {
        self.auth = self.auth.with_users(users);
        self
    }

    /// Counts and times operations in `metrics` (default: handles registered nowhere).
    pub fn with_metrics(mut self, metrics: Arc<MetaMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The tonic server wrapper, ready for `Server::builder().add_service`.
    pub fn into_server(self) -> proto::meta_server::MetaServer<Self> {
        proto::meta_server::MetaServer::new(self)
    }

    /// Checks the token and returns the caller's identity: a user token's user, or the identity
    /// the header states when the cluster token (a FUSE mount or tool acting for a local user).
    async fn auth(&self, header: Option<&proto::RequestHeader>) -> Result<Caller, Status> {
        let principal = self.auth.authenticate(header).await.map_err(|e| e.to_tonic())?;
        let id = principal.identity(header);
        Ok(Caller { uid: id.uid, gid: id.gid, gids: id.gids })
    }

    /// Runs a handler body in `span`, logging failures at debug level, counting and timing it as
    /// `op` ([`MetaMetrics`]) and mapping errors onto tonic.
    async fn traced<T>(
        &self,
        op: &'static str,
        span: tracing::Span,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let res = async move {
            match fut.await {
                Ok(v) => Ok(Response::new(v)),
                Err(e) => {
                    tracing::debug!(error = %e, "request failed");
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await;
        self.metrics.observe(op, started, res.as_ref().map_or_else(|e| e.code, |_| StatusCode::Ok));
        res.map_err(|e| e.to_tonic())
    }
}

fn request_id(header: &Option<proto::RequestHeader>) -> &str {
    auth::request_id(header.as_ref())
}

fn ids(raw: &[u64]) -> Vec<InodeId> {
    raw.iter().copied().map(InodeId).collect()
}

fn inode_rsp(inode: proto::Inode) -> proto::InodeRsp {
    proto::InodeRsp { inode: Some(inode) }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn rename(&self, req: Request<proto::RenameReq>) -> Result<Response<proto::RenameRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let rid = request_id(&r.header);
        let span = tracing::debug_span!(
            "meta.rename",
            req = rid,
            src_parent = r.src_parent,
            dst_parent = r.dst_parent,
            exchange = r.exchange,
            no_replace = r.no_replace
        );
        let flags = RenameFlags { no_replace: r.no_replace, exchange: r.exchange };
        self.traced("rename", span, async {
            let replaced = self
                .store
                .rename(&caller, InodeId(r.src_parent), &r.src_name, InodeId(r.dst_parent), &r.dst_name, flags, rid)
                .await?;
            Ok(proto::RenameRsp { replaced })
        })
        .await
    }

    async fn link(&self, req: Request<proto::LinkReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span =
            tracing::debug_span!("meta.link", req = request_id(&r.header), inode = r.inode, new_parent = r.new_parent);
        self.traced("link", span, async {
            self.store.link(&caller, InodeId(r.inode), InodeId(r.new_parent), &r.new_name).await.map(inode_rsp)
        })
        .await
    }

    async fn symlink(&self, req: Request<proto::SymlinkReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.symlink", req = request_id(&r.header), parent = r.parent);
        self.traced("symlink", span, async {
            self.store.symlink(&caller, InodeId(r.parent), &r.name, &r.target).await.map(inode_rsp)
        })
        .await
    }

    async fn batch_stat(&self, req: Request<proto::BatchStatReq>) -> Result<Response<proto::BatchStatRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.batch_stat", req = request_id(&r.header), count = r.inodes.len());
        self.traced("batch_stat", span, async {
            let found = self.store.batch_stat(&ids(&r.inodes)).await?;
            let entries =
                found.into_iter().map(|i| proto::BatchStatEntry { found: i.is_some(), inode: i }).collect::<Vec<_>>();
            Ok(proto::BatchStatRsp { entries })
        })
        .await
    }

    async fn set_xattr(&self, req: Request<proto::SetXattrReq>) -> Result<Response<proto::Empty>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.set_xattr", req = request_id(&r.header), inode = r.inode);
        let flags = XattrFlags { create_only: r.create_only, replace_only: r.replace_only };
        self.traced("set_xattr", span, async {
            self.store.set_xattr(&caller, InodeId(r.inode), &r.name, &r.value, flags).await.map(|()| proto::Empty {})
        })
        .await
    }

    async fn get_xattr(&self, req: Request<proto::XattrReq>) -> Result<Response<proto::XattrRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.get_xattr", req = request_id(&r.header), inode = r.inode);
        self.traced("get_xattr", span, async {
            let value = self.store.get_xattr(&caller, InodeId(r.inode), &r.name).await?;
            Ok(proto::XattrRsp { value: value.into() })
        })
        .await
    }

    async fn list_xattr(&self, req: Request<proto::ListXattrReq>) -> Result<Response<proto::ListXattrRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.list_xattr", req = request_id(&r.header), inode = r.inode);
        self.traced("list_xattr", span, async {
            let names = self.store.list_xattr(InodeId(r.inode)).await?;
            Ok(proto::ListXattrRsp { names: names.into_iter().map(Into::into).collect() })
        })
        .await
    }

    async fn remove_xattr(&self, req: Request<proto::XattrReq>) -> Result<Response<proto::Empty>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.remove_xattr", req = request_id(&r.header), inode = r.inode);
        self.traced("remove_xattr", span, async {
            self.store.remove_xattr(&caller, InodeId(r.inode), &r.name).await.map(|()| proto::Empty {})
        })
        .await
    }

    async fn lookup(&self, req: Request<proto::LookupReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.lookup", req = request_id(&r.header), parent = r.parent);
        self.traced("lookup", span, async {
            self.store.lookup(&caller, InodeId(r.parent), &r.name).await.map(inode_rsp)
        })
        .await
    }

    async fn get_attr(&self, req: Request<proto::GetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.getattr", req = request_id(&r.header), inode = r.inode);
        self.traced("getattr", span, async { self.store.getattr(InodeId(r.inode)).await.map(inode_rsp) }).await
    }

    async fn mkdir(&self, req: Request<proto::MkdirReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.mkdir", req = request_id(&r.header), parent = r.parent);
        self.traced("mkdir", span, async {
            self.store.mkdir(&caller, InodeId(r.parent), &r.name, r.mode).await.map(inode_rsp)
        })
        .await
    }

    async fn create(&self, req: Request<proto::CreateReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.create", req = request_id(&r.header), parent = r.parent);
        self.traced("create", span, async {
            let inode = self
                .store
                .create_open(&caller, InodeId(r.parent), &r.name, r.mode, r.exclusive, r.session.clone())
                .await?;
            Ok(inode_rsp(inode))
        })
        .await
    }

    async fn remove(&self, req: Request<proto::RemoveReq>) -> Result<Response<proto::RemoveRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let rid = request_id(&r.header);
        let span = tracing::debug_span!("meta.remove", req = rid, parent = r.parent);
        self.traced("remove", span, async {
            let removed = self.store.remove(&caller, InodeId(r.parent), &r.name, r.is_dir, rid).await?;
            Ok(proto::RemoveRsp { inode: Some(removed) })
        })
        .await
    }

    async fn read_dir(&self, req: Request<proto::ReadDirReq>) -> Result<Response<proto::ReadDirRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.readdir", req = request_id(&r.header), inode = r.inode);
        self.traced("readdir", span, async {
            let page = self.store.readdir(&caller, InodeId(r.inode), &r.start_after, r.limit).await?;
            Ok(proto::ReadDirRsp { entries: page.entries, more: page.more })
        })
        .await
    }

    async fn set_attr(&self, req: Request<proto::SetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.setattr", req = request_id(&r.header), inode = r.inode);
        let attrs = SetAttr {
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            length: r.length,
            atime_ns: r.atime_ns,
            mtime_ns: r.mtime_ns,
            atime_now: r.atime_now,
            mtime_now: r.mtime_now,
        };
        self.traced("setattr", span, async {
            self.store.setattr(&caller, InodeId(r.inode), attrs).await.map(inode_rsp)
        })
        .await
    }

    async fn close(&self, req: Request<proto::CloseReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span =
            tracing::debug_span!("meta.close", req = request_id(&r.header), inode = r.inode, session = r.session_id);
        self.traced("close", span, async {
            let id = InodeId(r.inode);
            let mut len = CloseLength { hint: r.length_hint, hint_truncate_version: r.truncate_version, exact: None };
            if r.wrote
                && let Some(probe) = &self.probe
                && let Ok(current) = self.store.getattr(id).await
                && current.inode_type == proto::InodeType::File as i32
            {
                match probe.exact_length(&current).await {
                    Ok(end) => len.exact = Some((end, current.truncate_version)),
                    Err(e) => tracing::debug!(error = %e, "exact length unknown; using the hint"),
                }
            }
            let inode = self.store.close_session(id, r.wrote, len, r.session_id).await?;
            Ok(inode_rsp(inode))
        })
        .await
    }

    async fn lock(&self, req: Request<proto::LockReq>) -> Result<Response<proto::LockRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let op = proto::LockOp::try_from(r.op).unwrap_or(proto::LockOp::Unspecified);
        let span = tracing::debug_span!("meta.lock", req = request_id(&r.header), inode = r.inode, op = ?op);
        self.traced("lock", span, async {
            let lock = r.lock.clone().ok_or_else(|| Error::invalid("lock request without a lock"))?;
            let rsp = self.store.lock(InodeId(r.inode), op, lock).await?;
            if !rsp.granted {
                self.metrics.lock_conflict();
            }
            Ok(rsp)
        })
        .await
    }

    async fn open(&self, req: Request<proto::OpenReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.open", req = request_id(&r.header), inode = r.inode, write = r.write);
        self.traced("open", span, async {
            self.store.open_file(&caller, InodeId(r.inode), r.write, r.session.clone()).await.map(inode_rsp)
        })
        .await
    }

    async fn stat_fs(&self, req: Request<proto::StatFsReq>) -> Result<Response<proto::StatFsRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.statfs", req = request_id(&r.header));
        self.traced("statfs", span, async {
            let s = self.store.statfs().await?;
            Ok(proto::StatFsRsp {
                capacity_bytes: s.capacity_bytes,
                used_bytes: s.used_bytes,
                inodes: s.inodes,
                free_bytes: s.free_bytes,
            })
        })
        .await
    }

    async fn set_layout(&self, req: Request<proto::SetLayoutReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.set_layout", req = request_id(&r.header), inode = r.inode);
        self.traced("set_layout", span, async {
            let layout = r.layout.as_ref().ok_or_else(|| Error::invalid("set_layout without a layout"))?;
            self.store.set_layout(&caller, InodeId(r.inode), layout).await.map(inode_rsp)
        })
        .await
    }

    async fn mkdirs(&self, req: Request<proto::MkdirsReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.mkdirs", req = request_id(&r.header), parent = r.parent);
        self.traced("mkdirs", span, async {
            self.store.mkdirs(&caller, InodeId(r.parent), &r.path, r.mode).await.map(inode_rsp)
        })
        .await
    }

    async fn real_path(&self, req: Request<proto::RealPathReq>) -> Result<Response<proto::RealPathRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref()).await?;
        let span = tracing::debug_span!("meta.real_path", req = request_id(&r.header), inode = r.inode);
        self.traced("real_path", span, async {
            let path = self.store.real_path(InodeId(r.inode), &r.name).await?;
            Ok(proto::RealPathRsp { path: path.into() })
        })
        .await
    }
}
