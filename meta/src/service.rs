//! The `Meta` gRPC service: a thin adapter from wire messages onto [`MetaStore`].
//!
//! Each handler checks the cluster token, runs in a tracing span carrying the request id and the
//! inode/parent id, calls one namespace function and maps errors with `Error::to_tonic()` (the
//! stable status code travels in the `t3fs-code` metadata entry).
use std::sync::Arc;

use t3fs_common::auth;
use t3fs_common::proto::{self, meta_server::Meta};
use t3fs_common::{Error, InodeId};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::namespace::{Caller, MetaStore, SetAttr};

/// The gRPC service over one namespace.
pub struct MetaService {
    store: Arc<MetaStore>,
    token: String,
}

impl MetaService {
    /// `token`: the cluster token requests must carry; empty disables the check.
    pub fn new(store: Arc<MetaStore>, token: String) -> Self {
        Self { store, token }
    }

    /// The tonic server wrapper, ready for `Server::builder().add_service`.
    pub fn into_server(self) -> proto::meta_server::MetaServer<Self> {
        proto::meta_server::MetaServer::new(self)
    }

    /// Checks the token and returns the caller's identity.
    fn auth(&self, header: Option<&proto::RequestHeader>) -> Result<Caller, Status> {
        let (token, caller) = match header {
            Some(h) => (h.token.as_str(), Caller { uid: h.uid, gid: h.gid, gids: h.gids.clone() }),
            None => ("", Caller::default()),
        };
        auth::check_token(&self.token, token)?;
        Ok(caller)
    }
}

fn request_id(header: &Option<proto::RequestHeader>) -> &str {
    auth::request_id(header.as_ref())
}

/// Runs a handler body in `span`, logging failures at debug level and mapping them onto tonic.
async fn traced<T>(span: tracing::Span, fut: impl Future<Output = Result<T, Error>>) -> Result<Response<T>, Status> {
    async move {
        match fut.await {
            Ok(v) => Ok(Response::new(v)),
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                Err(e.to_tonic())
            }
        }
    }
    .instrument(span)
    .await
}

fn inode_rsp(inode: proto::Inode) -> proto::InodeRsp {
    proto::InodeRsp { inode: Some(inode) }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn lookup(&self, req: Request<proto::LookupReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.lookup", req = request_id(&r.header), parent = r.parent);
        traced(span, async { self.store.lookup(InodeId(r.parent), &r.name).await.map(inode_rsp) }).await
    }

    async fn get_attr(&self, req: Request<proto::GetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.getattr", req = request_id(&r.header), inode = r.inode);
        traced(span, async { self.store.getattr(InodeId(r.inode)).await.map(inode_rsp) }).await
    }

    async fn mkdir(&self, req: Request<proto::MkdirReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.mkdir", req = request_id(&r.header), parent = r.parent);
        traced(span, async { self.store.mkdir(&caller, InodeId(r.parent), &r.name, r.mode).await.map(inode_rsp) }).await
    }

    async fn create(&self, req: Request<proto::CreateReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        let caller = self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.create", req = request_id(&r.header), parent = r.parent);
        traced(span, async {
            self.store.create(&caller, InodeId(r.parent), &r.name, r.mode, r.exclusive).await.map(inode_rsp)
        })
        .await
    }

    async fn remove(&self, req: Request<proto::RemoveReq>) -> Result<Response<proto::RemoveRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.remove", req = request_id(&r.header), parent = r.parent);
        traced(span, async {
            self.store.remove(InodeId(r.parent), &r.name, r.is_dir).await.map(|i| proto::RemoveRsp { inode: Some(i) })
        })
        .await
    }

    async fn read_dir(&self, req: Request<proto::ReadDirReq>) -> Result<Response<proto::ReadDirRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.readdir", req = request_id(&r.header), inode = r.inode);
        traced(span, async {
            let page = self.store.readdir(InodeId(r.inode), &r.start_after, r.limit).await?;
            Ok(proto::ReadDirRsp { entries: page.entries, more: page.more })
        })
        .await
    }

    async fn set_attr(&self, req: Request<proto::SetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.setattr", req = request_id(&r.header), inode = r.inode);
        let attrs = SetAttr {
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            length: r.length,
            atime_ns: r.atime_ns,
            mtime_ns: r.mtime_ns,
        };
        traced(span, async { self.store.setattr(InodeId(r.inode), attrs).await.map(inode_rsp) }).await
    }

    async fn close(&self, req: Request<proto::CloseReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.close", req = request_id(&r.header), inode = r.inode);
        traced(span, async { self.store.close(InodeId(r.inode), r.length_hint, r.wrote).await.map(inode_rsp) }).await
    }

    async fn stat_fs(&self, req: Request<proto::StatFsReq>) -> Result<Response<proto::StatFsRsp>, Status> {
        let r = req.into_inner();
        self.auth(r.header.as_ref())?;
        let span = tracing::debug_span!("meta.statfs", req = request_id(&r.header));
        traced(span, async {
            let s = self.store.statfs().await?;
            Ok(proto::StatFsRsp { capacity_bytes: s.capacity_bytes, used_bytes: s.used_bytes, inodes: s.inodes })
        })
        .await
    }
}
