//! The `StorageAdmin` gRPC service: chunk metadata queries for tools, tests and (later) meta's file-length
//! queries and resync. Data never rides gRPC; this only returns [`crate::chunk_store::ChunkMeta`]s.
use std::collections::HashMap;
use std::sync::Arc;

use t3fs_common::proto::{self, storage_admin_server::StorageAdmin};
use t3fs_common::{ChunkId, Error, StatusCode, TargetId};

use crate::chunk_store::ChunkStore;

pub struct AdminService {
    token: String,
    targets: Arc<HashMap<TargetId, ChunkStore>>,
}

impl AdminService {
    pub fn new(token: String, targets: Arc<HashMap<TargetId, ChunkStore>>) -> Self {
        Self { token, targets }
    }

    fn check(&self, header: Option<&proto::RequestHeader>, target: u64) -> Result<ChunkStore, Error> {
        let token = header.map(|h| h.token.as_str()).unwrap_or_default();
        if !self.token.is_empty() && token != self.token {
            return Err(Error::new(StatusCode::Unauthenticated, "bad cluster token"));
        }
        self.targets
            .get(&TargetId(target))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("target {target} is not on this node")))
    }
}

fn request_id(h: Option<&proto::RequestHeader>) -> &str {
    h.map(|h| h.request_id.as_str()).unwrap_or_default()
}

#[tonic::async_trait]
impl StorageAdmin for AdminService {
    #[tracing::instrument(skip_all, fields(
        req = %request_id(req.get_ref().header.as_ref()),
        target_id = req.get_ref().target_id,
        chunk = %hex::encode(&req.get_ref().chunk_id),
    ))]
    async fn query_chunk(
        &self,
        req: tonic::Request<proto::QueryChunkReq>,
    ) -> Result<tonic::Response<proto::QueryChunkRsp>, tonic::Status> {
        let r = req.into_inner();
        let store = self.check(r.header.as_ref(), r.target_id)?;
        let chunk = ChunkId::from_bytes(&r.chunk_id)?;
        let meta = store.query(chunk)?;
        Ok(tonic::Response::new(proto::QueryChunkRsp { found: meta.is_some(), meta: meta.map(|m| m.to_proto(chunk)) }))
    }

    #[tracing::instrument(skip_all, fields(
        req = %request_id(req.get_ref().header.as_ref()),
        target_id = req.get_ref().target_id,
    ))]
    async fn list_chunks(
        &self,
        req: tonic::Request<proto::ListChunksReq>,
    ) -> Result<tonic::Response<proto::ListChunksRsp>, tonic::Status> {
        let r = req.into_inner();
        let store = self.check(r.header.as_ref(), r.target_id)?;
        let list = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| Error::internal(format!("list task failed: {e}")))??;
        let chunks = list.into_iter().map(|(c, m)| m.to_proto(c)).collect();
        Ok(tonic::Response::new(proto::ListChunksRsp { chunks }))
    }
}
