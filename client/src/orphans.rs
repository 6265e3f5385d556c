//! Chunk updates addressed by chain, not by a file's layout: for tools that clean up the chunks of
//! files that no longer exist (`t3fs admin gc-orphans`), whose layout is gone with the inode.
//!
//! Only REMOVE and PURGE are sent this way. Both need no update channel: a retried REMOVE of a
//! removed chunk, or a retried PURGE, changes nothing. PURGE needs an admin or the cluster token
//! (storage `service/purge.rs`).
use bytes::Bytes;
use t3fs_common::proto::{self, UpdateType, bulk_request};
use t3fs_common::{ChainId, ChunkId, Error, Result, StatusCode};

use crate::Client;
use crate::data::bulk_addr;

impl Client {
    /// Sends a REMOVE or PURGE of `chunk` to the head of `chain`, retrying through chain changes.
    /// Returns the chunk's record on the head afterwards (after a PURGE, version 0 means no record is
    /// left; after a REMOVE it is the tombstone's version).
    pub async fn chain_update(&self, chain: ChainId, chunk: ChunkId, ty: UpdateType) -> Result<proto::ChunkMeta> {
        if !matches!(ty, UpdateType::Remove | UpdateType::Purge) {
            return Err(Error::invalid(format!("{ty:?} is not sent by chain: only REMOVE and PURGE")));
        }
        let chunk_bytes = Bytes::copy_from_slice(&chunk.to_bytes());
        let request_id = t3fs_common::new_request_id();
        let (request_id, chunk_bytes) = (&request_id, &chunk_bytes);
        self.retrying("chain update", move || async move {
            let routing = self.routing.get();
            let info = routing.chain(chain)?;
            let head = routing.write_head(info)?;
            let req = proto::BulkRequest {
                request_id: request_id.clone(),
                token: self.cfg.token.clone(),
                op: Some(bulk_request::Op::Update(proto::UpdateChunk {
                    chain_id: info.chain_id,
                    chain_version: info.chain_version,
                    target_id: head.0,
                    chunk_id: chunk_bytes.clone(),
                    update_type: ty as i32,
                    chunk_size: t3fs_common::layout::MAX_CHUNK_SIZE,
                    ..Default::default()
                })),
            };
            match self.bulk.call(&bulk_addr(&routing, head)?, &req, &[]).await {
                Ok((rsp, _)) => Ok(rsp.meta.unwrap_or_default()),
                Err(e) if e.code == StatusCode::ChunkNotFound => Ok(proto::ChunkMeta::default()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::new(e.code, format!("{ty:?} chunk {chunk} on chain {}: {}", chain.0, e.message)))
    }
}
