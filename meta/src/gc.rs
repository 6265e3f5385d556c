//! Garbage collection of unlinked files, and pruning of write sessions whose client died.
//!
//! Unlinking a file's last link (remove, or a rename over it) puts it in the GC queue
//! (`namespace::gc_queue`); its inode stays, with nlink 0. Every meta server runs a [`spawn`]ed
//! worker that, every `gc_interval_ms`, takes the files unlinked more than `gc_delay_ms` ago,
//! oldest first, and for each:
//! 1. skips it (moving it to the back of the queue) while a write session holds it;
//! 2. removes its chunks on storage: a REMOVE update to the head of each chunk's chain, for every
//!    chunk storage lists for the file with data or a pending update (`LengthProbe::chunk_records`;
//!    without a probe, every index its length covers), 16 at a time, retried a few times; then a
//!    PURGE of every listed chunk, which drops the tombstones the removals left and those earlier
//!    truncates left (best effort: a tombstone that stays is logged and costs one record; storage
//!    `service/purge.rs` says why this is safe);
//! 3. deletes the inode, its xattrs and the queue entry in one transaction, unless a write session
//!    appeared meanwhile.
//!
//! Any failure leaves the entry queued for the next pass, so GC is idempotent and survives meta
//! restarts; several meta servers may work the same queue (the final step runs once). With
//! several, each takes the files it owns (`t3fs_common::owner` over the live meta nodes), so a
//! file's chunks are removed once, not once per server. Chunks
//! written past the length meta knows (a writer that crashed before reporting its length) are in
//! storage's listing like any other.
//!
//! Session pruning, every `session_prune_interval_ms`: write sessions whose client no longer has a
//! client session at mgmtd (`ListClientSessions`), and that are older than one prune interval (so
//! a client that just started is not pruned before mgmtd lists it), are deleted. Without an answer
//! from mgmtd nothing is pruned. The file locks of such clients (`LOCK` records,
//! `crate::namespace` locks) are released in the same pass, under the same rules. With several meta
//! servers one prunes at a time: the owner of a fixed key among the live meta nodes.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use t3fs_common::bulk::BulkClient;
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::owner;
use t3fs_common::periodic::{First, spawn_every};
use t3fs_common::proto::{self, InodeType, UpdateType, bulk_request};
use t3fs_common::routing::RoutingCache;
use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode, now_ns};
use tokio_util::sync::CancellationToken;

use crate::namespace::{Finish, MetaStore};

/// Most chunk removals in flight per file.
const CHUNKS_IN_FLIGHT: usize = 16;
/// Tries per chunk removal within one pass.
const TRIES: u32 = 5;
/// Files looked at per pass.
const BATCH: usize = 256;
/// With several meta servers, due entries scanned per pass: `BATCH` per server, up to this many
/// servers' worth (the pass keeps the ones this server owns).
const MAX_SCAN_SHARE: usize = 16;
/// The key whose owner among the live meta nodes prunes sessions and locks of dead clients.
const PRUNER_KEY: u64 = u64::MAX;

/// What the GC worker needs.
#[derive(Clone)]
pub struct Gc {
    pub store: Arc<MetaStore>,
    pub routing: RoutingCache,
    pub bulk: BulkClient,
    /// The cluster token, for storage and mgmtd.
    pub token: String,
    pub delay: Duration,
    /// Finds chunks past the length meta has (a writer that died before its close reported it).
    pub probe: Option<Arc<crate::length::LengthProbe>>,
    /// This server's node id: with several meta servers each collects the files it owns.
    pub node_id: u32,
    pub metrics: Arc<crate::metrics::MetaMetrics>,
}

/// Counts of one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub collected: usize,
    pub held: usize,
    pub failed: usize,
    pub chunks_removed: u64,
}

impl Gc {
    /// One pass over the due part of the queue.
    pub async fn run_once(&self) -> Result<Pass> {
        let now = u64::try_from(now_ns()).unwrap_or(0);
        let before = now.saturating_sub(u64::try_from(self.delay.as_nanos()).unwrap_or(u64::MAX));
        let mut pass = Pass::default();
        // Several meta servers share the queue: each takes the files it owns (rendezvous hashing
        // over the live meta nodes), so they do not remove the same chunks twice and conflict on
        // the same entries. Without itself in routing (not registered yet, or dropped), it takes
        // every due file: the final step still runs once per file.
        let metas = owner::meta_nodes(&self.routing.get());
        let shared = metas.len() > 1 && metas.contains(&self.node_id);
        let scan = if shared { BATCH * metas.len().min(MAX_SCAN_SHARE) } else { BATCH };
        let mine = |id: InodeId| !shared || owner::owner(id.0, &metas) == Some(self.node_id);
        let due: Vec<_> =
            self.store.gc_due(before, scan).await?.into_iter().filter(|(_, id)| mine(*id)).take(BATCH).collect();
        for (unlinked, id) in due {
            if !self.store.sessions_of(id).await?.is_empty() {
                self.store.gc_requeue(unlinked, id, now).await?;
                pass.held += 1;
                continue;
            }
            if let Some(inode) = self.store.gc_inode(id).await? {
                match self.remove_chunks(&inode).await {
                    Ok(n) => {
                        pass.chunks_removed += n;
                        self.metrics.gc_chunk_removals(n);
                    }
                    Err(e) => {
                        tracing::warn!(inode = id.0, error = %e, "GC: removing chunks failed; retrying next pass");
                        pass.failed += 1;
                        continue;
                    }
                }
            }
            match self.store.gc_finish(unlinked, id).await? {
                Finish::Collected => {
                    tracing::debug!(inode = id.0, "GC: collected");
                    self.metrics.gc_collected();
                    pass.collected += 1;
                }
                Finish::Held => {
                    self.store.gc_requeue(unlinked, id, now).await?;
                    pass.held += 1;
                }
                Finish::Gone => {}
            }
        }
        Ok(pass)
    }

    /// Removes the file's chunks, then purges their tombstones; returns how many removals were sent.
    /// Which chunks: with storage to ask (`probe`), those storage lists for the file on each chain
    /// of its stripe, so the work follows the data, not the length: a sparse file of 1 PB holding a
    /// few chunks costs a few removals, where removing every index its length covers would take a
    /// billion and hold up every other file's collection meanwhile. A chunk listed as a tombstone
    /// only (cut away by an earlier truncate or punch) is purged without another removal.
    /// Without a probe (tests of meta alone): every index up to the length.
    async fn remove_chunks(&self, inode: &proto::Inode) -> Result<u64> {
        if inode.inode_type != InodeType::File as i32 {
            return Ok(0);
        }
        let Some(layout) = inode.layout.as_ref() else { return Ok(0) };
        if layout.chunk_size == 0 {
            return Err(Error::internal(format!("inode {} has chunk size 0", inode.id)));
        }
        let records: Vec<(u32, bool)> = match &self.probe {
            Some(probe) => probe.chunk_records(inode).await?,
            None => {
                let count = inode.length.div_ceil(u64::from(layout.chunk_size));
                let count = u32::try_from(count)
                    .map_err(|_| Error::internal(format!("inode {}: too many chunks", inode.id)))?;
                (0..count).map(|i| (i, true)).collect()
            }
        };
        let id = InodeId(inode.id);
        let live: Vec<u32> = records.iter().filter(|(_, live)| *live).map(|(i, _)| *i).collect();
        let mut runs = futures::stream::iter(live.iter().copied())
            .map(|index| self.chunk_update(layout, id, index, UpdateType::Remove))
            .buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some(r) = runs.next().await {
            r?;
        }
        let all: Vec<u32> = records.iter().map(|(i, _)| *i).collect();
        self.purge_chunks(layout, id, &all).await;
        Ok(live.len() as u64)
    }

    /// Drops the tombstones the removals left (storage `service/purge.rs`): the file is gone and its
    /// chunk ids are never used again. Best effort: a tombstone left behind (a failed or refused
    /// purge) costs one record and is logged, so it does not hold up the collection.
    async fn purge_chunks(&self, layout: &proto::Layout, id: InodeId, indexes: &[u32]) {
        let (mut purged, mut kept, mut failed) = (0u32, 0u32, 0u32);
        let mut runs = futures::stream::iter(indexes.iter().copied())
            .map(|index| self.chunk_update(layout, id, index, UpdateType::Purge))
            .buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some(r) = runs.next().await {
            match r {
                Ok(Some(m)) if m.version != 0 => kept += 1,
                Ok(_) => purged += 1,
                Err(e) => {
                    failed += 1;
                    tracing::debug!(inode = id.0, error = %e, "GC: purging a tombstone failed");
                }
            }
        }
        if kept + failed > 0 {
            tracing::warn!(inode = id.0, purged, kept, failed, "GC: some tombstones of a removed file stay");
        }
    }

    /// One update (REMOVE or PURGE) to the head of the chunk's chain, retried on retryable errors;
    /// returns the chunk's metadata on the head afterwards (`None`: the chunk was not found).
    async fn chunk_update(
        &self,
        layout: &proto::Layout,
        inode: InodeId,
        index: u32,
        ty: UpdateType,
    ) -> Result<Option<proto::ChunkMeta>> {
        let chunk = ChunkId::new(inode, index);
        let request_id = t3fs_common::new_request_id();
        let mut backoff = Duration::from_millis(20);
        let mut tries = 0;
        loop {
            tries += 1;
            let res = async {
                let routing = self.routing.get();
                let chain = routing.chunk_chain(layout, index)?;
                let head = routing.write_head(chain)?;
                let addr = routing.bulk_addr(head)?;
                let req = proto::BulkRequest {
                    request_id: request_id.clone(),
                    token: self.token.clone(),
                    op: Some(bulk_request::Op::Update(proto::UpdateChunk {
                        chain_id: chain.chain_id,
                        chain_version: chain.chain_version,
                        target_id: head.0,
                        chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
                        update_type: ty as i32,
                        offset: 0,
                        chunk_size: layout.chunk_size,
                        payload_crc32c: 0,
                        update_version: 0,
                        sync: false,
                        ..Default::default()
                    })),
                };
                self.bulk.call(&addr, &req, &[]).await.map(|(rsp, _)| rsp.meta)
            }
            .await;
            match res {
                Ok(meta) => return Ok(meta),
                Err(e) if e.code == StatusCode::ChunkNotFound => return Ok(None),
                Err(e) if e.is_retryable() && tries < TRIES => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => return Err(Error::new(e.code, format!("{ty:?} of chunk {chunk}: {}", e.message))),
            }
        }
    }
}

/// Runs GC passes every `interval` until `cancel` fires.
pub fn spawn(gc: Gc, interval: Duration, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    let gc = Arc::new(gc);
    spawn_every(
        First::AfterInterval,
        move || interval,
        cancel,
        move || {
            let gc = gc.clone();
            async move {
                match gc.run_once().await {
                    Ok(p) if p != Pass::default() => tracing::info!(?p, "GC pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "GC pass failed; retrying"),
                }
            }
        },
    )
}

/// The client ids mgmtd lists as alive.
pub async fn live_clients(conn: &MgmtdConn, token: &str) -> Result<HashSet<String>> {
    let rsp = conn
        .call(|mut c| {
            let header = proto::RequestHeader {
                request_id: t3fs_common::new_request_id(),
                token: token.to_string(),
                ..Default::default()
            };
            async move { c.list_client_sessions(proto::ListClientSessionsReq { header: Some(header) }).await }
        })
        .await?
        .into_inner();
    Ok(rsp.sessions.into_iter().map(|s| s.client_id).collect())
}

/// Whether meta node `node_id` prunes this time: with several live meta nodes, only the owner of
/// [`PRUNER_KEY`] does (the others would read the same records and race to delete them); when it
/// leaves routing another takes over. A node not in routing yet prunes (as when alone).
fn prunes_here(routing: &t3fs_common::routing::Routing, node_id: u32) -> bool {
    let metas = owner::meta_nodes(routing);
    !metas.contains(&node_id) || owner::owner(PRUNER_KEY, &metas) == Some(node_id)
}

/// Prunes write sessions and file locks of dead clients every `interval` until `cancel` fires, on
/// one meta node of the cluster at a time ([`prunes_here`]).
pub fn spawn_session_pruner(
    store: Arc<MetaStore>,
    (routing, node_id): (RoutingCache, u32),
    conn: MgmtdConn,
    token: String,
    interval: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_every(
        First::AfterInterval,
        move || interval,
        cancel,
        move || {
            let (store, conn, token) = (store.clone(), conn.clone(), token.clone());
            let here = prunes_here(&routing.get(), node_id);
            async move {
                if !here {
                    return;
                }
                let live = match live_clients(&conn, &token).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "session pruning: mgmtd did not answer; nothing pruned");
                        return;
                    }
                };
                let older_than = now_ns().saturating_sub(i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX));
                match store.prune_sessions(&live, older_than).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "write sessions of dead clients pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning write sessions failed"),
                }
                match store.prune_locks(&live, older_than).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "file locks of dead clients released"),
                    Err(e) => tracing::warn!(error = %e, "pruning file locks failed"),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_meta_node_prunes_at_a_time() {
        let node = |node_id: u32, node_type: proto::NodeType| proto::NodeInfo {
            node_id,
            node_type: node_type as i32,
            status: proto::NodeStatus::HeartbeatConnected as i32,
            ..Default::default()
        };
        let routing = |ids: &[u32]| {
            let mut nodes: Vec<_> = ids.iter().map(|&i| node(i, proto::NodeType::Meta)).collect();
            nodes.push(node(1, proto::NodeType::Mgmtd));
            t3fs_common::routing::Routing::new(proto::RoutingInfo { nodes, ..Default::default() })
        };
        let three = routing(&[100, 101, 102]);
        let pruners: Vec<u32> = [100, 101, 102].into_iter().filter(|&n| prunes_here(&three, n)).collect();
        assert_eq!(pruners.len(), 1, "{pruners:?}");
        // The pruner leaves: exactly one of the others takes over.
        let left: Vec<u32> = [100, 101, 102].into_iter().filter(|n| *n != pruners[0]).collect();
        let two = routing(&left);
        assert_eq!(left.iter().filter(|&&n| prunes_here(&two, n)).count(), 1);
        assert!(prunes_here(&routing(&[100]), 100), "alone");
        assert!(prunes_here(&three, 103), "not in routing yet: prunes as if alone");
    }
}
