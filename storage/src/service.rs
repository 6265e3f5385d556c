//! The bulk-plane handler: chunk reads and CRAQ-style chain-replicated updates.
//!
//! Write path (skeleton of 3FS's CRAQ, research/3fs.md §4): a client sends `UpdateChunk` with
//! `update_version = 0` to the chain's head (its first writable target). Every hop checks the request's
//! chain version against its routing snapshot, takes the per-chunk lock, applies the update locally (the
//! head assigns `update_version = local version + 1`), forwards the same update with the version set to
//! its successor (`Routing::successor`), waits for the successor's ack and only then acks. The lock is
//! held across apply + forward, so updates of one chunk reach every replica in the same order. A replica
//! whose local version is already >= the update's version treats it as a duplicate (acks, changes
//! nothing, still forwards so a successor that missed it catches up).
//!
//! Not yet (issue 4): two-phase pending/commit versions (a reader can see a version the tail does not have
//! yet if a forward fails), exactly-once update channels, resync of returning targets, and the storage-side
//! rules of research/3fs.md §2 (exit on LASTSRV/OFFLINE, no heartbeats after restart until OFFLINE).
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use t3fs_common::bulk::{self, BulkClient, BulkHandler};
use t3fs_common::proto::{self, BulkRequest, BulkResponse, bulk_request};
use t3fs_common::routing::{RoutingCache, is_readable, is_writable};
use t3fs_common::{ChainId, ChunkId, Error, StatusCode, TargetId};
use tracing::Instrument;

use crate::chunk_store::{ChunkStore, Update};

/// Serves the bulk plane of one storage node.
pub struct StorageService {
    token: String,
    targets: Arc<HashMap<TargetId, ChunkStore>>,
    routing: RoutingCache,
    peers: BulkClient,
}

impl StorageService {
    pub fn new(token: String, targets: Arc<HashMap<TargetId, ChunkStore>>, routing: RoutingCache) -> Self {
        Self { token, targets, routing, peers: BulkClient::default() }
    }

    fn store(&self, target: u64) -> Result<&ChunkStore, Error> {
        self.targets
            .get(&TargetId(target))
            .ok_or_else(|| Error::new(StatusCode::TargetNotServing, format!("target {target} is not on this node")))
    }

    async fn read(&self, r: proto::ReadChunk) -> Result<(BulkResponse, Bytes), Error> {
        let chunk = ChunkId::from_bytes(&r.chunk_id)?;
        let store = self.store(r.target_id)?;
        // Refuse reads only when routing positively says the target is not readable (e.g. syncing).
        if let Ok(t) = self.routing.get().target(TargetId(r.target_id))
            && !is_readable(t.public_state)
        {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("target {} is not serving reads", r.target_id),
            ));
        }
        let (data, meta) = store.read(chunk, r.offset, r.length).await?;
        let rsp = BulkResponse {
            meta: Some(meta.to_proto(chunk)),
            payload_crc32c: crc32c::crc32c(&data),
            ..Default::default()
        };
        Ok((rsp, data))
    }

    /// Checks the request against the current routing snapshot; returns the snapshot's successor of the
    /// target (if any) and its bulk address.
    fn check_chain(&self, u: &proto::UpdateChunk, client_write: bool) -> Result<Option<(TargetId, String)>, Error> {
        let routing = self.routing.get();
        let chain = routing.chain(ChainId(u.chain_id))?;
        if u.chain_version != chain.chain_version {
            return Err(Error::new(
                StatusCode::ChainVersionMismatch,
                format!("chain {} is at version {}, request has {}", u.chain_id, chain.chain_version, u.chain_version),
            ));
        }
        let me = chain.targets.iter().find(|t| t.target_id == u.target_id).ok_or_else(|| {
            Error::new(StatusCode::TargetNotServing, format!("target {} is not in chain {}", u.target_id, u.chain_id))
        })?;
        if !is_writable(me.public_state) {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("target {} does not take writes", u.target_id),
            ));
        }
        if client_write {
            let head = chain.targets.iter().find(|t| is_writable(t.public_state)).map(|t| t.target_id);
            if head != Some(u.target_id) {
                return Err(Error::new(
                    StatusCode::NotHead,
                    format!("target {} is not the head of chain {} (head: {head:?})", u.target_id, u.chain_id),
                ));
            }
        }
        let Some(succ) = routing.successor(chain, TargetId(u.target_id)) else {
            return Ok(None);
        };
        let node = routing.node_of_target(succ)?;
        if node.bulk_addr.is_empty() {
            return Err(Error::new(StatusCode::RoutingNotReady, format!("node {} has no bulk address", node.node_id)));
        }
        Ok(Some((succ, node.bulk_addr.clone())))
    }

    async fn update(
        &self,
        request_id: &str,
        u: proto::UpdateChunk,
        payload: Bytes,
    ) -> Result<(BulkResponse, Bytes), Error> {
        let chunk = ChunkId::from_bytes(&u.chunk_id)?;
        let store = self.store(u.target_id)?;
        let update = match proto::UpdateType::try_from(u.update_type) {
            Ok(proto::UpdateType::Write) => Update::Write {
                offset: u.offset,
                data: payload.clone(),
                payload_crc32c: u.payload_crc32c,
                chunk_size: u.chunk_size,
            },
            Ok(proto::UpdateType::Truncate) => Update::Truncate { length: u.offset, chunk_size: u.chunk_size },
            Ok(proto::UpdateType::Remove) => Update::Remove,
            _ => return Err(Error::invalid(format!("bad update type {}", u.update_type))),
        };
        let client_write = u.update_version == 0;
        // Cheap early refusal before waiting for the lock; re-checked under the lock (routing may change).
        self.check_chain(&u, client_write)?;
        let guard = store.lock(chunk).await;
        let successor = self.check_chain(&u, client_write)?;
        let version = if client_write { store.version(&guard)? + 1 } else { u.update_version };
        let applied = store.apply(&guard, version, u.chain_version, update).await?;
        tracing::debug!(version, duplicate = applied.duplicate, "applied locally");
        if let Some((succ, addr)) = successor {
            let fwd = BulkRequest {
                request_id: request_id.to_string(),
                token: self.token.clone(),
                op: Some(bulk_request::Op::Update(proto::UpdateChunk {
                    target_id: succ.0,
                    update_version: version,
                    ..u.clone()
                })),
            };
            let (rsp, _) = self.peers.call(&addr, &fwd, &payload).await.map_err(|e| {
                tracing::warn!(successor = %succ, %addr, error = %e, "forwarding update failed");
                e
            })?;
            if let Some(m) = rsp.meta.as_ref()
                && !applied.duplicate
                && (m.version != applied.meta.version || m.crc32c != applied.meta.crc32c)
            {
                // Replicas diverged (possible without resync after a missed update); resync will fix it.
                tracing::error!(successor = %succ, ?m, local = ?applied.meta, "replica differs from successor");
            }
        }
        drop(guard);
        Ok((BulkResponse { meta: Some(applied.meta.to_proto(chunk)), ..Default::default() }, Bytes::new()))
    }
}

impl BulkHandler for StorageService {
    async fn handle(&self, req: BulkRequest, payload: Bytes) -> (BulkResponse, Bytes) {
        if !self.token.is_empty() && req.token != self.token {
            return (bulk::error_response(&Error::new(StatusCode::Unauthenticated, "bad cluster token")), Bytes::new());
        }
        let res = match req.op {
            Some(bulk_request::Op::Read(r)) => {
                let chunk = hex::encode(&r.chunk_id);
                let span = tracing::info_span!("read_chunk", req = %req.request_id, target_id = r.target_id, %chunk);
                self.read(r).instrument(span).await
            }
            Some(bulk_request::Op::Update(u)) => {
                let span = tracing::info_span!(
                    "update_chunk",
                    req = %req.request_id,
                    target_id = u.target_id,
                    chunk = %hex::encode(&u.chunk_id),
                    update_version = u.update_version,
                );
                self.update(&req.request_id, u, payload).instrument(span).await
            }
            None => Err(Error::invalid("bulk request without an op")),
        };
        match res {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(req = %req.request_id, error = %e, "bulk request failed");
                (bulk::error_response(&e), Bytes::new())
            }
        }
    }
}
