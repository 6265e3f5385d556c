//! The bulk-plane handler: chunk reads and CRAQ chain-replicated updates, two-phase as 3FS runs them.
//!
//! Write path (research/3fs.md §4): a client sends `UpdateChunk` with `update_version = 0` to the chain's
//! head (its first writable target). Every hop checks the request's chain version against its routing
//! snapshot, takes the per-chunk lock and re-checks. The head assigns `update_version = committed + 1`.
//! A hop with a successor applies the update as the chunk's *pending* version
//! ([`ChunkStore::prepare`]), forwards it, and when the successor acks commits it
//! ([`ChunkStore::commit`]) and acks in turn; the tail commits at once ([`ChunkStore::apply`]). The lock is
//! held from apply to ack, so updates of one chunk reach every replica in the same order and at most one
//! version per chunk is pending. A replica whose committed version is already >= the update's treats it
//! as a duplicate (acks, changes nothing, still forwards so a successor that missed it catches up).
//!
//! Reads (any readable replica) return the committed version; while a version is pending they fail with
//! `ChunkNotCommitted` (the client tries another replica, then retries with backoff) unless the request
//! sets `relaxed`, which reads the pending version. A read returns the part of its range inside the chunk
//! (possibly nothing); a range whose end overflows u32 is refused (InvalidArgument).
//!
//! **A failed forward** leaves the update pending on every hop up to the failure, and the client gets the
//! error and retries. The rule that resolves it (3FS's): the predecessor is authoritative for its
//! successor. On a non-head hop the next update from the predecessor at the pending version replaces the
//! pending content, and one at a higher version means the predecessor committed the pending one, so it is
//! committed first (`chunk_store/apply.rs`). The head, before assigning a version to a new client update,
//! completes its own pending version: forwards its content again as a REPLACE at that version and commits
//! it once acked ([`StorageService::resolve_pending`]). Resync sends committed state and drops the
//! receiver's pending versions; a restarted target keeps its pending versions until one of these resolves
//! them (reads of such a chunk return `ChunkNotCommitted` until then).
//!
//! A SYNCING successor (a returning replica being resynced, [`crate::sync`]) may lack earlier versions, or
//! hold writes that were never acknowledged, so it gets every update as a *sync* update (`sync = true`): after
//! preparing locally, the hop reads the chunk's whole new (pending) content under the chunk lock and forwards
//! `UPDATE_TYPE_REPLACE` (or `REMOVE` for a removed chunk) at exactly the local version, which the
//! successor takes even over a higher or different local state ([`ChunkStore::apply_sync`]). A sync update
//! is refused (TargetNotServing) unless routing shows the receiving target SYNCING — a SERVING replica is
//! never lowered — and must be REPLACE at a version > 0 or REMOVE (InvalidArgument otherwise); a sync REMOVE
//! at version 0 means the predecessor has no record of the chunk, and the target drops its record
//! ([`ChunkStore::forget`]). Clients may not send REPLACE.
//!
//! Fencing ([`crate::local_state::Fence`]): while the node has had no heartbeat reply from mgmtd for
//! `fence_after_ms`, every read and update is refused with TargetNotServing.
//!
//! Exactly-once client updates ([`channels`]), batch reads ([`batch_read`]) and replica repair
//! ([`repair`]) live in submodules.
//!
//! Not yet (issue 4): exiting on LASTSRV/OFFLINE (research/3fs.md §2; fencing and the local-state rule
//! cover the safety part).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use t3fs_common::bulk::{self, BulkClient, BulkHandler};
use t3fs_common::proto::{self, BulkRequest, BulkResponse, bulk_request};
use t3fs_common::routing::{RoutingCache, is_readable, is_writable};
use t3fs_common::users::{Authenticator, Principal, UserCache};
use t3fs_common::{ChainId, ChunkId, Error, StatusCode, TargetId};
use tracing::Instrument;

use crate::chunk_store::{ChunkGuard, ChunkStore, Update};
use crate::local_state::Fence;
use crate::metrics::{Outcome, StorageMetrics};

mod batch_read;
pub mod channels;
mod purge;
mod repair;
pub mod scrub;

use channels::{Admit, UpdateChannels};

/// The next writable target after this one, as routing shows it.
struct Successor {
    target: TargetId,
    bulk_addr: String,
    /// SYNCING: gets full replacements.
    syncing: bool,
}

/// Serves the bulk plane of one storage node.
pub struct StorageService {
    /// The cluster token, sent to successors with forwarded updates.
    token: String,
    /// Admits the cluster token and user tokens (any user may read and write chunks; meta checks
    /// file permissions).
    auth: Authenticator,
    targets: Arc<HashMap<TargetId, ChunkStore>>,
    routing: RoutingCache,
    fence: Arc<Fence>,
    peers: BulkClient,
    metrics: Arc<StorageMetrics>,
    channels: UpdateChannels,
}

impl StorageService {
    pub fn new(
        token: String,
        targets: Arc<HashMap<TargetId, ChunkStore>>,
        routing: RoutingCache,
        fence: Arc<Fence>,
    ) -> Self {
        let auth = Authenticator::new(&token);
        Self {
            token,
            auth,
            targets,
            routing,
            fence,
            peers: BulkClient::default(),
            metrics: Arc::default(),
            channels: UpdateChannels::default(),
        }
    }

    /// Also admits the user tokens of `users` (mgmtd's user table).
    pub fn with_users(mut self, users: UserCache) -> Self {
        self.auth = self.auth.with_users(users);
        self
    }

    /// Sends forwarded updates through `peers` (default: TCP).
    pub fn with_peers(mut self, peers: BulkClient) -> Self {
        self.peers = peers;
        self
    }

    /// Counts and times requests in `metrics` (default: handles registered nowhere).
    pub fn with_metrics(mut self, metrics: Arc<StorageMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn store(&self, target: u64) -> Result<&ChunkStore, Error> {
        self.targets
            .get(&TargetId(target))
            .ok_or_else(|| Error::new(StatusCode::TargetNotServing, format!("target {target} is not on this node")))
    }

    async fn read(&self, r: proto::ReadChunk) -> Result<(BulkResponse, Bytes), Error> {
        let chunk = ChunkId::from_bytes(&r.chunk_id)?;
        if r.offset.checked_add(r.length).is_none() {
            return Err(Error::invalid(format!(
                "read range: offset {} + length {} overflows a chunk offset",
                r.offset, r.length
            )));
        }
        let store = self.store(r.target_id)?;
        self.fence.check()?;
        // Refuse reads only when routing positively says the target is not readable (e.g. syncing).
        if let Ok(t) = self.routing.get().target(TargetId(r.target_id))
            && !is_readable(t.public_state)
        {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("target {} is not serving reads", r.target_id),
            ));
        }
        let (data, meta) = store.read_with(chunk, r.offset, r.length, r.relaxed).await?;
        let rsp = BulkResponse {
            meta: Some(meta.to_proto(chunk)),
            payload_crc32c: crc32c::crc32c(&data),
            ..Default::default()
        };
        Ok((rsp, data))
    }

    /// Checks the request against the current routing snapshot; returns the snapshot's successor of the
    /// target (if any) and its bulk address.
    fn check_chain(&self, u: &proto::UpdateChunk, client_write: bool) -> Result<Option<Successor>, Error> {
        self.fence.check()?;
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
        // A sync update may lower a replica's version: never a SERVING one.
        if u.sync && me.public_state != proto::PublicTargetState::Syncing as i32 {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("target {} is not SYNCING: it takes no sync updates", u.target_id),
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
        let syncing = chain
            .targets
            .iter()
            .any(|t| t.target_id == succ.0 && t.public_state == proto::PublicTargetState::Syncing as i32);
        Ok(Some(Successor { target: succ, bulk_addr: node.bulk_addr.clone(), syncing }))
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
            Ok(proto::UpdateType::Write | proto::UpdateType::Truncate) if u.sync => {
                return Err(Error::invalid("a sync update must be REPLACE or REMOVE"));
            }
            Ok(proto::UpdateType::Write) => Update::Write {
                offset: u.offset,
                data: payload.clone(),
                payload_crc32c: u.payload_crc32c,
                chunk_size: u.chunk_size,
            },
            Ok(proto::UpdateType::Truncate) => Update::Truncate { length: u.offset, chunk_size: u.chunk_size },
            Ok(proto::UpdateType::Remove) => Update::Remove,
            Ok(proto::UpdateType::Replace) if u.update_version == 0 => {
                return Err(Error::invalid("REPLACE is only for chain forwarding and resync, not for clients"));
            }
            Ok(proto::UpdateType::Replace) => {
                Update::Replace { data: payload.clone(), payload_crc32c: u.payload_crc32c }
            }
            _ => return Err(Error::invalid(format!("bad update type {}", u.update_type))),
        };
        let client_write = u.update_version == 0 && !u.sync;
        // Cheap early refusal before waiting for the lock; re-checked under the lock (routing may change).
        self.check_chain(&u, client_write)?;
        // Held until acknowledged, so resync can wait out updates checked against older routing.
        let _permit = store.update_permit().await;
        let guard = store.lock(chunk).await;
        let successor = self.check_chain(&u, client_write)?;
        if client_write {
            self.resolve_pending(request_id, store, &guard, &u, successor.as_ref()).await?;
        }
        let version = if client_write { store.version(&guard)? + 1 } else { u.update_version };
        let applied = match (u.sync, version, &successor) {
            // Sync REMOVE at version 0 (REPLACE at 0 was refused above): the predecessor has no record.
            (true, 0, _) => store.forget(&guard).await?,
            (true, _, _) => store.apply_sync(&guard, version, u.chain_version, update).await?,
            // The tail commits at once; every other hop keeps the update pending until its successor acks.
            (false, _, None) => store.apply(&guard, version, u.chain_version, update).await?,
            (false, _, Some(_)) => store.prepare(&guard, version, u.chain_version, update).await?,
        };
        tracing::debug!(version, duplicate = applied.duplicate, "applied locally");
        if let Some(succ) = &successor {
            let fwd = proto::UpdateChunk { update_version: version, ..u.clone() };
            let rsp = self.forward(request_id, store, &guard, succ, fwd, payload).await?;
            if let Some(m) = rsp.meta.as_ref()
                && !applied.duplicate
                && (m.version != applied.meta.version || m.crc32c != applied.meta.crc32c)
            {
                // Replicas diverged (possible without resync after a missed update); resync will fix it.
                tracing::error!(successor = %succ.target, ?m, local = ?applied.meta, "replica differs from successor");
            }
            if !u.sync && !applied.duplicate {
                store.commit(&guard, version).await?;
            }
        }
        drop(guard);
        let rsp = BulkResponse { meta: Some(applied.meta.to_proto(chunk)), ..Default::default() };
        if !client_write && !u.sync && !applied.duplicate {
            // Committed here (and below): a retry that reaches this node as a new head is replayed.
            self.channels.record_forwarded(&u, &rsp);
        }
        Ok((rsp, Bytes::new()))
    }

    /// At the head, before a client update: a pending version left by an earlier update whose forward
    /// failed is completed first — its content is forwarded again as a REPLACE (REMOVE for a pending
    /// removal) at its version, and committed once the successor acks — so the new update builds on it
    /// and no replica keeps another content at that version. Fails (the client retries) if the forward
    /// fails again.
    async fn resolve_pending(
        &self,
        request_id: &str,
        store: &ChunkStore,
        guard: &ChunkGuard,
        u: &proto::UpdateChunk,
        successor: Option<&Successor>,
    ) -> Result<(), Error> {
        let Some(pending) = store.pending_version(guard)? else {
            return Ok(());
        };
        tracing::info!(pending, "completing the pending version of an earlier update");
        if let Some(succ) = successor {
            let (ty, data) = match store.snapshot_latest(guard).await? {
                Some((_, Some(d))) => (proto::UpdateType::Replace, d),
                _ => (proto::UpdateType::Remove, Bytes::new()),
            };
            let fwd = proto::UpdateChunk {
                update_type: ty as i32,
                offset: 0,
                chunk_size: t3fs_common::layout::MAX_CHUNK_SIZE,
                payload_crc32c: crc32c::crc32c(&data),
                update_version: pending,
                ..u.clone()
            };
            self.forward(request_id, store, guard, succ, fwd, data).await?;
        }
        store.commit(guard, pending).await?;
        Ok(())
    }

    /// Forwards an update applied here (at `u.update_version`) to the successor and returns its answer.
    /// A SYNCING successor gets the chunk's whole latest local content (the pending version, or the
    /// committed one after a sync update) as a sync update instead.
    async fn forward(
        &self,
        request_id: &str,
        store: &ChunkStore,
        guard: &ChunkGuard,
        succ: &Successor,
        u: proto::UpdateChunk,
        payload: Bytes,
    ) -> Result<BulkResponse, Error> {
        let (fwd_update, fwd_payload) = if succ.syncing {
            // The successor may lack earlier versions or hold unacknowledged ones: send the whole
            // current chunk at exactly its version, as a sync update.
            let (ty, version, data) = match store.snapshot_latest(guard).await? {
                Some((meta, Some(d))) => (proto::UpdateType::Replace, meta.version, d),
                Some((meta, None)) => (proto::UpdateType::Remove, meta.version, Bytes::new()),
                None => (proto::UpdateType::Remove, 0, Bytes::new()),
            };
            let fwd = proto::UpdateChunk {
                target_id: succ.target.0,
                update_type: ty as i32,
                offset: 0,
                payload_crc32c: crc32c::crc32c(&data),
                update_version: version,
                sync: true,
                ..u
            };
            (fwd, data)
        } else {
            // A sync update stays one (a SERVING successor refuses it: it may not be lowered).
            (proto::UpdateChunk { target_id: succ.target.0, ..u }, payload)
        };
        let fwd = BulkRequest {
            request_id: request_id.to_string(),
            token: self.token.clone(),
            op: Some(bulk_request::Op::Update(fwd_update)),
        };
        let (rsp, _) = self.peers.call(&succ.bulk_addr, &fwd, &fwd_payload).await.map_err(|e| {
            self.metrics.forward_failures.inc();
            tracing::warn!(successor = %succ.target, addr = %succ.bulk_addr, error = %e, "forwarding update failed");
            e
        })?;
        self.metrics.forwarded_updates.inc();
        Ok(rsp)
    }
}

/// Who may send which update: clients (any valid token) send plain writes, truncates and removals to a
/// head (`update_version = 0`); chain-internal updates (forwarded at a version, sync replacements and
/// removals) come only from storage nodes, which carry the cluster token; a repair of a damaged replica
/// (checked against that replica's own record, see `repair.rs`) needs an admin, and so does a PURGE
/// sent to a head (meta's GC sends it with the cluster token; `purge.rs`). Without this, a user
/// token could write straight to a middle or tail and make replicas differ.
fn may_send(principal: &Principal, u: &proto::UpdateChunk) -> Result<(), Error> {
    let purge = u.update_type == proto::UpdateType::Purge as i32;
    if u.repair || (purge && u.update_version == 0 && !u.sync) {
        principal.require_admin()
    } else if u.sync || u.update_version > 0 {
        principal.require_cluster()
    } else {
        Ok(())
    }
}

impl BulkHandler for StorageService {
    async fn handle(&self, req: BulkRequest, payload: Bytes) -> (BulkResponse, Bytes) {
        let principal = match self.auth.authenticate_token(&req.token).await {
            Ok(p) => p,
            Err(e) => return (bulk::error_response(&e), Bytes::new()),
        };
        if let Some(bulk_request::Op::Update(u)) = &req.op
            && let Err(e) = may_send(&principal, u)
        {
            return (bulk::error_response(&e), Bytes::new());
        }
        let started = Instant::now();
        let (op, target, res) = match req.op {
            Some(bulk_request::Op::Read(r)) => {
                let chunk = hex::encode(&r.chunk_id);
                let span = tracing::info_span!("read_chunk", req = %req.request_id, target_id = r.target_id, %chunk);
                let target = r.target_id;
                let res = self.read(r).instrument(span).await;
                (
                    "read",
                    target,
                    res.map(|(rsp, data)| {
                        let n = data.len();
                        (rsp, data, n)
                    }),
                )
            }
            Some(bulk_request::Op::Update(u)) => {
                let span = tracing::info_span!(
                    "update_chunk",
                    req = %req.request_id,
                    target_id = u.target_id,
                    chunk = %hex::encode(&u.chunk_id),
                    update_version = u.update_version,
                    sync = u.sync,
                );
                let (target, len) = (u.target_id, payload.len());
                // Updates report the payload they carried, not the (empty) response payload.
                // A purge is idempotent and takes no update channel.
                let res = if u.update_type == proto::UpdateType::Purge as i32 {
                    self.purge(&req.request_id, u).instrument(span).await
                } else {
                    match self.channels.admit(&u) {
                        Err(e) => Err(e),
                        Ok(Admit::Replay(rsp)) => {
                            self.metrics.replayed_updates.inc();
                            Ok((rsp, Bytes::new()))
                        }
                        Ok(_) if u.repair => self.repair(u, payload).instrument(span).await,
                        Ok(Admit::Untracked) => self.update(&req.request_id, u, payload).instrument(span).await,
                        Ok(Admit::Fresh(ticket)) => {
                            let res = self.update(&req.request_id, u, payload).instrument(span).await;
                            ticket.finish(&res);
                            res
                        }
                    }
                };
                ("update", target, res.map(|(rsp, data)| (rsp, data, len)))
            }
            Some(bulk_request::Op::BatchRead(b)) => {
                let span = tracing::info_span!("batch_read", req = %req.request_id, reads = b.reads.len());
                let res = self.batch_read(&req.request_id, b).instrument(span).await;
                // Items are counted one by one inside; this is the batch's own latency and status.
                ("batch_read", 0, res.map(|(rsp, data)| (rsp, data, 0)))
            }
            None => ("none", 0, Err(Error::invalid("bulk request without an op"))),
        };
        let outcome = Outcome {
            op,
            target,
            code: res.as_ref().map_or_else(|e| e.code, |_| StatusCode::Ok),
            bytes: res.as_ref().map_or(0, |(_, _, n)| *n as u64),
        };
        self.metrics.observe(started, outcome, self.targets.contains_key(&TargetId(target)));
        match res {
            Ok((rsp, data, _)) => (rsp, data),
            Err(e) => {
                tracing::debug!(req = %req.request_id, error = %e, "bulk request failed");
                (bulk::error_response(&e), Bytes::new())
            }
        }
    }
}
