//! The `StorageAdmin` gRPC service: chunk metadata queries for tools, tests, meta's file-length queries
//! and resync (listings with tombstones, and `SyncDone`, which a SYNCING target's predecessor sends when
//! every chunk has been transferred; `ListSyncs`, the progress of the syncs this node sends). Data never rides gRPC; this only returns chunk metadata.
use std::collections::HashMap;
use std::sync::Arc;

use t3fs_common::auth::{check_header, request_id};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, PublicTargetState, storage_admin_server::StorageAdmin};
use t3fs_common::routing::RoutingCache;
use t3fs_common::{ChainId, ChunkId, Error, InodeId, StatusCode, TargetId};

use crate::chunk_store::ChunkStore;
use crate::local_state::TargetStates;
use crate::sync::progress::SyncBoard;

/// Most chunks in one `ListChunks` page. A page must stay under tonic's default 4 MiB message limit
/// (a whole target's listing in one message failed beyond about 120,000 chunks, which broke resync of
/// any real disk): 16384 entries of at most [`MAX_LISTED_CHUNK_LEN`] bytes are about 1.3 MiB.
pub const LIST_PAGE: u32 = 16_384;
/// Most records one page looks at (tombstones skipped when a listing leaves them out count too).
pub const LIST_MAX_SCAN: u32 = 4 * LIST_PAGE;
/// Upper bound of one encoded `ChunkMeta` in a `ListChunksRsp`, field tags and lengths included
/// (checked by a test against a meta with every field at its maximum).
pub const MAX_LISTED_CHUNK_LEN: usize = 80;

pub struct AdminService {
    token: String,
    targets: Arc<HashMap<TargetId, ChunkStore>>,
    routing: RoutingCache,
    states: Arc<TargetStates>,
    mgmtd: MgmtdConn,
    syncs: Arc<SyncBoard>,
}

impl AdminService {
    pub fn new(
        token: String,
        targets: Arc<HashMap<TargetId, ChunkStore>>,
        routing: RoutingCache,
        states: Arc<TargetStates>,
        mgmtd: MgmtdConn,
        syncs: Arc<SyncBoard>,
    ) -> Self {
        Self { token, targets, routing, states, mgmtd, syncs }
    }

    /// Fetches routing from mgmtd now (the poller may lag behind the caller).
    async fn refresh_routing(&self) -> Result<(), Error> {
        self.routing.refresh_via(&self.mgmtd, &self.token).await.map(|_| ())
    }

    /// The chain version routing shows for `chain` (0 if unknown).
    fn known_chain_version(&self, chain: ChainId) -> u32 {
        self.routing.get().chain(chain).map_or(0, |c| c.chain_version)
    }

    fn check(&self, header: Option<&proto::RequestHeader>, target: u64) -> Result<ChunkStore, Error> {
        check_header(&self.token, header)?;
        self.targets
            .get(&TargetId(target))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("target {target} is not on this node")))
    }
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
        inode = req.get_ref().inode,
    ))]
    async fn query_last_chunk(
        &self,
        req: tonic::Request<proto::QueryLastChunkReq>,
    ) -> Result<tonic::Response<proto::QueryLastChunkRsp>, tonic::Status> {
        let r = req.into_inner();
        let store = self.check(r.header.as_ref(), r.target_id)?;
        let inode = t3fs_common::InodeId(r.inode);
        let last = tokio::task::spawn_blocking(move || store.last_chunk(inode))
            .await
            .map_err(|e| Error::internal(format!("query task failed: {e}")))??;
        Ok(tonic::Response::new(proto::QueryLastChunkRsp {
            found: last.is_some(),
            meta: last.map(|(chunk, meta)| meta.to_proto(chunk)),
        }))
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
        let start_after = match r.start_after.is_empty() {
            true => None,
            false => Some(ChunkId::from_bytes(&r.start_after)?),
        };
        let limit = match r.limit {
            0 => LIST_PAGE,
            n => n.min(LIST_PAGE),
        } as usize;
        let (include_removed, inode) = (r.include_removed, r.inode.map(InodeId));
        let (list, next) = tokio::task::spawn_blocking(move || {
            store.list_page(start_after, inode, limit, LIST_MAX_SCAN as usize, include_removed)
        })
        .await
        .map_err(|e| Error::internal(format!("list task failed: {e}")))??;
        let chunks = list.iter().map(|c| c.to_proto()).collect();
        let next_start_after = next.map_or_else(Vec::new, |c| c.to_bytes().to_vec());
        Ok(tonic::Response::new(proto::ListChunksRsp { chunks, next_start_after: next_start_after.into() }))
    }

    #[tracing::instrument(skip_all, fields(
        req = %request_id(req.get_ref().header.as_ref()),
        target_id = req.get_ref().target_id,
        chain_id = req.get_ref().chain_id,
        chain_version = req.get_ref().chain_version,
    ))]
    async fn sync_done(
        &self,
        req: tonic::Request<proto::SyncDoneReq>,
    ) -> Result<tonic::Response<proto::SyncDoneRsp>, tonic::Status> {
        let r = req.into_inner();
        self.check(r.header.as_ref(), r.target_id)?;
        let (target, chain_id) = (TargetId(r.target_id), ChainId(r.chain_id));
        if self.known_chain_version(chain_id) < r.chain_version {
            self.refresh_routing().await?;
        }
        let routing = self.routing.get();
        let chain = routing.chain(chain_id)?;
        let me = chain.targets.iter().find(|t| t.target_id == target.0).ok_or_else(|| {
            Error::new(StatusCode::TargetNotServing, format!("target {target} is not in chain {chain_id}"))
        })?;
        if chain.chain_version != r.chain_version {
            return Err(Error::new(
                StatusCode::ChainVersionMismatch,
                format!("chain {chain_id} is at version {}, SyncDone is for {}", chain.chain_version, r.chain_version),
            )
            .to_tonic());
        }
        if me.public_state != PublicTargetState::Syncing as i32 {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("target {target} is not SYNCING (state {})", me.public_state),
            )
            .to_tonic());
        }
        self.states.set_synced(target, r.chain_version);
        tracing::info!("resync done: target is up to date");
        Ok(tonic::Response::new(proto::SyncDoneRsp {}))
    }

    #[tracing::instrument(skip_all, fields(req = %request_id(req.get_ref().header.as_ref())))]
    async fn list_syncs(
        &self,
        req: tonic::Request<proto::ListSyncsReq>,
    ) -> Result<tonic::Response<proto::ListSyncsRsp>, tonic::Status> {
        check_header(&self.token, req.get_ref().header.as_ref())?;
        Ok(tonic::Response::new(proto::ListSyncsRsp { syncs: self.syncs.list() }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_full_listing_page_fits_in_one_grpc_message() {
        let widest = proto::ChunkMeta {
            chunk_id: vec![0xff; ChunkId::ENCODED_LEN].into(),
            version: u64::MAX,
            length: u32::MAX,
            crc32c: u32::MAX,
            chain_version: u32::MAX,
            removed: true,
            pending_version: u64::MAX,
        };
        let page = proto::ListChunksRsp {
            chunks: vec![widest.clone(); LIST_PAGE as usize],
            next_start_after: vec![0xff; ChunkId::ENCODED_LEN].into(),
        };
        // One entry in the repeated field: its tag, its length and the message.
        assert!(1 + 1 + widest.encoded_len() <= MAX_LISTED_CHUNK_LEN);
        assert!(page.encoded_len() <= LIST_PAGE as usize * MAX_LISTED_CHUNK_LEN + 64);
        // tonic's default decoding limit on every client.
        assert!(page.encoded_len() < 4 * 1024 * 1024 / 2, "{} bytes", page.encoded_len());
    }
}
