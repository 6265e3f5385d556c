//! Resync: bringing a returning (SYNCING) replica up to date from its SERVING predecessor
//! (research/3fs.md §4, adapted to our metadata).
//!
//! A worker on every node looks at routing every [`SCAN_INTERVAL`]. For every local target T that is
//! SERVING and whose successor S (`Routing::successor`) is SYNCING, it runs one sync T -> S per
//! (chain, chain version), unless one is running or done:
//! 1. waits out every update T accepted under an older routing snapshot ([`ChunkStore::update_barrier`]):
//!    updates checked from now on see S SYNCING and forward to it as sync updates (service.rs);
//! 2. lists S's chunks and tombstones (`ListChunks(include_removed)` on S's node) and T's own;
//! 3. diffs them ([`diff`]) and, for every chunk to fix, takes T's chunk lock (ordering the transfer with
//!    concurrent writes), reads T's current state and sends it as a sync update;
//! 4. sends `SyncDone(S, chain, chain version)`; S then reports UPTODATE and mgmtd makes it SERVING.
//!
//! Transfers run [`TRANSFER_PARALLEL`] chunks at a time: each still happens under T's lock of its own
//! chunk, so the per-chunk ordering argument below is unchanged. Progress (chunks to fix, done, bytes,
//! ETA) is kept on a [`progress::SyncBoard`], listed by the admin service (`t3fs admin list-syncs`).
//!
//! If the chain version changes, T stops being SERVING or S stops being SYNCING, the sync aborts and a
//! later round starts over for the new chain version. Failed syncs are retried after [`RETRY_AFTER`].
//!
//! **T is authoritative.** S may be behind T, but also *ahead* of it or different at the same version: an
//! old head that applied a write it never managed to forward, then crashed, returns with a version no
//! client was ever acknowledged for. Versions alone cannot fix that (a replacement "if newer" would be a
//! duplicate there, and a later write at T's next version would be acked while S keeps other bytes), so
//! every update T sends to a SYNCING S — resync transfers and forwarded writes alike — is a *sync* update
//! (`UpdateChunk.sync`): S takes exactly T's version and content, whatever it holds
//! ([`ChunkStore::apply_sync`]). The rules, per chunk, with T's state read under T's chunk lock:
//! - T has a live chunk at version v: sync REPLACE with the whole content at v;
//! - T has a tombstone at v: sync REMOVE at v (S keeps a tombstone at exactly v);
//! - T has no record: sync REMOVE at version 0, "absent": S drops its record altogether
//!   ([`ChunkStore::forget`]). Neither a tombstone at S's version nor one at S's version + 1 would do: T's
//!   head starts the chunk again at version 1, and once S is SERVING it would take that plain write as a
//!   duplicate of its higher tombstone and keep nothing. With no record, S's version is 0 like T's. (While
//!   S is still SYNCING such a write reaches it as a sync REPLACE at v1 anyway.)
//!
//! [`diff`] decides which chunks need a transfer: every chunk whose state on S differs from T's in version,
//! removal, length or CRC or that has a pending (uncommitted) version on S, and every record (live or
//! tombstone) only S has. T sends its *committed* state (a pending version on T is a forward that has not
//! completed; the next update of the chunk resolves it, see service.rs). Equal chunks and equal
//! tombstones are skipped. Since every transfer and every forwarded write to S leaves T under T's chunk lock
//! and is acknowledged before the lock is released, S sees them in T's order, and S ends with T's exact
//! state for every chunk; a sync update S refuses or answers with another version fails the sync (retried).
//! Only then is `SyncDone` sent.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use t3fs_common::bulk::BulkClient;
use t3fs_common::chunk_list;
use t3fs_common::proto::storage_admin_client::StorageAdminClient;
use t3fs_common::proto::{self, BulkRequest, PublicTargetState, bulk_request};
use t3fs_common::routing::{Routing, RoutingCache, connect_channel};
use t3fs_common::{ChainId, ChunkId, Error, StatusCode, TargetId};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chunk_store::{ChunkStore, ListedChunk};
use crate::local_state::Fence;
use crate::metrics::StorageMetrics;

/// How often the worker looks for SYNCING successors.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// How long a failed sync waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Chunks one sync transfers concurrently.
pub const TRANSFER_PARALLEL: usize = 8;

pub mod progress;

/// One sync to run: `from` (local, SERVING) -> `to` (its SYNCING successor) at `chain_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncJob {
    pub chain: ChainId,
    pub chain_version: u32,
    pub from: TargetId,
    pub to: TargetId,
}

fn state_in_chain(chain: &proto::ChainInfo, target: TargetId) -> Option<i32> {
    chain.targets.iter().find(|t| t.target_id == target.0).map(|t| t.public_state)
}

/// The syncs `routing` asks of the local targets `local`.
pub fn sync_jobs(routing: &Routing, local: impl IntoIterator<Item = TargetId>) -> Vec<SyncJob> {
    let mut jobs: Vec<SyncJob> = local
        .into_iter()
        .filter_map(|from| {
            let chain = routing.chain(ChainId(routing.target(from).ok()?.chain_id)).ok()?;
            if state_in_chain(chain, from)? != PublicTargetState::Serving as i32 {
                return None;
            }
            let to = routing.successor(chain, from)?;
            (state_in_chain(chain, to)? == PublicTargetState::Syncing as i32).then_some(SyncJob {
                chain: ChainId(chain.chain_id),
                chain_version: chain.chain_version,
                from,
                to,
            })
        })
        .collect();
    jobs.sort_by_key(|j| (j.chain.0, j.from.0));
    jobs
}

/// A chunk as the remote listing shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub version: u64,
    pub length: u32,
    pub crc32c: u32,
    pub removed: bool,
    /// S holds a pending (uncommitted) version of the chunk: always sent, so S ends with T's committed
    /// state and no pending version (a sync update drops it).
    pub pending: bool,
}

/// What the sync does with one chunk (both send T's state as read under T's chunk lock then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// T has a record that S lacks or holds differently: send it (sync REPLACE or REMOVE at T's version).
    Send(ChunkId),
    /// Only S has a record (live or tombstone): have S drop it (sync REMOVE at version 0).
    Forget(ChunkId),
}

/// Diffs the local listing against the remote one (module doc): chunks equal on both sides (version,
/// removal, and for live chunks length and CRC) need nothing, every other record on either side is fixed.
pub fn diff(local: &[ListedChunk], remote: &HashMap<ChunkId, Remote>) -> Vec<Action> {
    let mut out = Vec::new();
    for l in local {
        let same = remote.get(&l.chunk).is_some_and(|r| {
            !r.pending
                && r.version == l.meta.version
                && r.removed == l.removed
                && (l.removed || (r.length == l.meta.length && r.crc32c == l.meta.crc32c))
        });
        if !same {
            out.push(Action::Send(l.chunk));
        }
    }
    let known: HashSet<ChunkId> = local.iter().map(|l| l.chunk).collect();
    let mut remote_only: Vec<_> = remote.keys().filter(|c| !known.contains(c)).copied().collect();
    remote_only.sort();
    out.extend(remote_only.into_iter().map(Action::Forget));
    out
}

/// What the sync worker needs.
pub struct SyncCtx {
    pub token: String,
    pub stores: Arc<HashMap<TargetId, ChunkStore>>,
    pub routing: RoutingCache,
    pub fence: Arc<Fence>,
    pub peers: BulkClient,
    pub metrics: Arc<StorageMetrics>,
    pub board: Arc<progress::SyncBoard>,
}

#[derive(Debug, Default)]
struct Stats {
    sent: usize,
    removed: usize,
    forgotten: usize,
    bytes: u64,
}

impl Stats {
    fn count(&mut self, sent: &Sent) {
        match (sent.ty, sent.version) {
            (proto::UpdateType::Remove, 0) => self.forgotten += 1,
            (proto::UpdateType::Remove, _) => self.removed += 1,
            _ => {
                self.sent += 1;
                self.bytes += sent.bytes;
            }
        }
    }
}

/// What one chunk transfer sent.
struct Sent {
    ty: proto::UpdateType,
    version: u64,
    bytes: u64,
}

/// Runs the resync worker until `cancel` fires.
pub fn spawn_sync_worker(ctx: SyncCtx, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::new(ctx);
    tokio::spawn(async move {
        let mut running: JoinSet<bool> = JoinSet::new();
        let mut jobs_of: HashMap<tokio::task::Id, SyncJob> = HashMap::new();
        let mut done: HashSet<SyncJob> = HashSet::new();
        let mut retry_at: HashMap<SyncJob, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    running.shutdown().await;
                    return;
                }
                _ = tokio::time::sleep(SCAN_INTERVAL) => {}
            }
            while let Some(res) = running.try_join_next_with_id() {
                let (id, ok) = match res {
                    Ok((id, ok)) => (id, ok),
                    Err(e) => {
                        tracing::error!(error = %e, "resync task failed");
                        (e.id(), false)
                    }
                };
                let Some(job) = jobs_of.remove(&id) else { continue };
                if ok {
                    done.insert(job);
                } else {
                    retry_at.insert(job, Instant::now() + RETRY_AFTER);
                }
            }
            if ctx.fence.check().is_err() {
                continue;
            }
            let jobs = sync_jobs(&ctx.routing.get(), ctx.stores.keys().copied());
            // Forget syncs routing no longer asks for (their chain version is gone for good).
            done.retain(|j| jobs.contains(j));
            retry_at.retain(|j, _| jobs.contains(j));
            let now = Instant::now();
            for job in jobs {
                let busy = jobs_of.values().any(|j| *j == job);
                if busy || done.contains(&job) || retry_at.get(&job).is_some_and(|t| *t > now) {
                    continue;
                }
                let ctx = ctx.clone();
                let span = tracing::info_span!(
                    "resync",
                    chain_id = job.chain.0,
                    chain_version = job.chain_version,
                    from = job.from.0,
                    to = job.to.0,
                );
                let task = async move {
                    ctx.board.start(job);
                    let res = run_sync(&ctx, job).await;
                    ctx.board.finish(job, res.as_ref().err().map(|e| e.to_string()));
                    ctx.metrics.resync_remaining_chunks.set(ctx.board.remaining_chunks() as i64);
                    match res {
                        Ok(()) => {
                            ctx.metrics.syncs_completed.inc();
                            true
                        }
                        Err(e) => {
                            ctx.metrics.syncs_failed.inc();
                            tracing::warn!(error = %e, "resync failed; will retry");
                            false
                        }
                    }
                };
                let handle = running.spawn(task.instrument(span));
                jobs_of.insert(handle.id(), job);
            }
        }
    })
}

/// Fails unless routing still asks for `job`.
fn still_current(ctx: &SyncCtx, job: &SyncJob) -> Result<(), Error> {
    ctx.fence.check()?;
    if sync_jobs(&ctx.routing.get(), [job.from]).contains(job) {
        Ok(())
    } else {
        Err(Error::new(StatusCode::ChainVersionMismatch, "routing changed during resync; starting over"))
    }
}

fn header(token: &str) -> proto::RequestHeader {
    proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: token.to_string(), ..Default::default() }
}

async fn run_sync(ctx: &SyncCtx, job: SyncJob) -> Result<(), Error> {
    let started = Instant::now();
    let store = ctx.stores.get(&job.from).cloned().ok_or_else(|| Error::internal("sync source is not local"))?;
    let (grpc_addr, bulk_addr) = {
        let routing = ctx.routing.get();
        let node = routing.node_of_target(job.to)?;
        (node.grpc_addr.clone(), node.bulk_addr.clone())
    };
    tracing::info!("resync started");
    store.update_barrier().await;
    still_current(ctx, &job)?;
    let mut admin = StorageAdminClient::new(connect_channel(&grpc_addr).await?);
    let listed = chunk_list::list_chunks(&mut admin, || header(&ctx.token), job.to, true, 0).await?;
    let mut remote = HashMap::with_capacity(listed.len());
    for m in listed {
        let r = Remote {
            version: m.version,
            length: m.length,
            crc32c: m.crc32c,
            removed: m.removed,
            pending: m.pending_version != 0,
        };
        remote.insert(ChunkId::from_bytes(&m.chunk_id)?, r);
    }
    let local = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.list_all())
            .await
            .map_err(|e| Error::internal(format!("list task failed: {e}")))??
    };
    let actions = diff(&local, &remote);
    tracing::info!(local = local.len(), remote = remote.len(), to_fix = actions.len(), "resync diffed");
    ctx.board.planned(job, actions.len() as u64);
    ctx.metrics.resync_remaining_chunks.set(ctx.board.remaining_chunks() as i64);
    let mut stats = Stats::default();
    let (store, bulk_addr) = (&store, bulk_addr.as_str());
    let mut transfers = futures::stream::iter(actions)
        .map(|action| {
            let (Action::Send(chunk) | Action::Forget(chunk)) = action;
            send_chunk(ctx, store, &job, bulk_addr, chunk)
        })
        .buffer_unordered(TRANSFER_PARALLEL);
    // The first failure ends the sync; dropping the stream cancels the other transfers (each is
    // retried as a whole by the next attempt, which diffs again).
    while let Some(sent) = transfers.next().await {
        let sent = sent?;
        stats.count(&sent);
        ctx.board.chunk_done(job, sent.bytes);
        ctx.metrics.resync_remaining_chunks.set(ctx.board.remaining_chunks() as i64);
    }
    drop(transfers);
    let ms = started.elapsed().as_millis() as u64;
    still_current(ctx, &job)?;
    let req = proto::SyncDoneReq {
        header: Some(header(&ctx.token)),
        target_id: job.to.0,
        chain_id: job.chain.0,
        chain_version: job.chain_version,
    };
    admin.sync_done(req).await.map_err(|st| Error::from_tonic(&st))?;
    tracing::info!(
        chunks = stats.sent,
        removed = stats.removed,
        forgotten = stats.forgotten,
        bytes = stats.bytes,
        duration_ms = ms,
        "resync done; SyncDone sent"
    );
    Ok(())
}

/// Sends the local state of `chunk`, read under its lock, as a sync update (module doc); fails unless S
/// ends at exactly that version.
async fn send_chunk(
    ctx: &SyncCtx,
    store: &ChunkStore,
    job: &SyncJob,
    bulk_addr: &str,
    chunk: ChunkId,
) -> Result<Sent, Error> {
    let guard = store.lock(chunk).await;
    still_current(ctx, job)?;
    let (ty, version, data) = match store.snapshot(&guard).await? {
        Some((meta, Some(data))) => (proto::UpdateType::Replace, meta.version, data),
        Some((meta, None)) => (proto::UpdateType::Remove, meta.version, Bytes::new()),
        // No record: "absent", S drops its record.
        None => (proto::UpdateType::Remove, 0, Bytes::new()),
    };
    let req = BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: ctx.token.clone(),
        op: Some(bulk_request::Op::Update(proto::UpdateChunk {
            chain_id: job.chain.0,
            chain_version: job.chain_version,
            target_id: job.to.0,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            update_type: ty as i32,
            offset: 0,
            chunk_size: t3fs_common::layout::MAX_CHUNK_SIZE,
            payload_crc32c: crc32c::crc32c(&data),
            update_version: version,
            sync: true,
            ..Default::default()
        })),
    };
    let (rsp, _) = ctx.peers.call(bulk_addr, &req, &data).await?;
    drop(guard);
    let got = rsp.meta.as_ref().map_or(0, |m| m.version);
    if got != version {
        return Err(Error::internal(format!("chunk {chunk}: replica answered version {got}, sent {version}")));
    }
    ctx.metrics.resync_chunks.inc();
    ctx.metrics.resync_bytes.inc_by(data.len() as u64);
    Ok(Sent { ty, version, bytes: data.len() as u64 })
}

#[cfg(test)]
mod tests;
