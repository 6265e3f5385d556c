//! Lazy length: a file's exact length from storage.
//!
//! Clients write chunks straight to storage and tell meta only a length hint (the end of their
//! highest write) at close/fsync. Meta then asks storage for the truth: for every chain the file's
//! chunks may live on (its stripe), one SERVING target's last live chunk of the file
//! (`QueryLastChunk` on the storage node's admin service); the file ends where the highest such
//! chunk ends. Chain replication acknowledges a write only once every replica applied it, so any
//! SERVING target has every acknowledged chunk.
//!
//! A probe that cannot finish (no SERVING target, a node unreachable, `PROBE_TIMEOUT`) fails as a
//! whole; callers fall back to the hint (close) or to the length meta has (GC).
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use t3fs_common::proto::{self, InodeType, storage_admin_client::StorageAdminClient};
use t3fs_common::routing::{RoutingCache, is_readable};
use t3fs_common::{ChainId, ChunkId, Error, Result, StatusCode, TargetId};
use tonic::transport::Channel;

/// How long one probe (all chains together) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks storage where files end. Cheap to share; connections to storage nodes are cached.
pub struct LengthProbe {
    routing: RoutingCache,
    token: String,
    clients: Mutex<HashMap<String, StorageAdminClient<Channel>>>,
}

impl LengthProbe {
    /// `token`: the cluster token (storage's admin service takes only it).
    pub fn new(routing: RoutingCache, token: String) -> Self {
        Self { routing, token, clients: Mutex::new(HashMap::new()) }
    }

    async fn client(&self, addr: &str) -> Result<StorageAdminClient<Channel>> {
        if let Some(c) = self.clients.lock().unwrap_or_else(|p| p.into_inner()).get(addr) {
            return Ok(c.clone());
        }
        let channel = t3fs_common::routing::connect_channel(addr).await?;
        let c = StorageAdminClient::new(channel);
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The end of the file's data on storage: max over its chains of (last chunk index x chunk
    /// size + that chunk's length); 0 when no chunk exists.
    pub async fn exact_length(&self, inode: &proto::Inode) -> Result<u64> {
        tokio::time::timeout(PROBE_TIMEOUT, self.probe(inode))
            .await
            .map_err(|_| Error::new(StatusCode::Timeout, format!("length probe of inode {} timed out", inode.id)))?
    }

    /// The chains of the file's stripe, each once, with a SERVING target and its node's address.
    fn serving_targets(&self, inode: &proto::Inode) -> Result<Vec<(TargetId, String)>> {
        if inode.inode_type != InodeType::File as i32 {
            return Err(Error::invalid(format!("inode {} is not a file", inode.id)));
        }
        let layout =
            inode.layout.as_ref().ok_or_else(|| Error::internal(format!("file {} has no layout", inode.id)))?;
        let routing = self.routing.get();
        let mut asks: Vec<(TargetId, String)> = Vec::new();
        let mut seen: HashSet<ChainId> = HashSet::new();
        for i in 0..layout.stripe.max(1) {
            let chain = routing.chunk_chain(layout, i)?;
            if !seen.insert(ChainId(chain.chain_id)) {
                continue;
            }
            let target = chain.targets.iter().find(|t| is_readable(t.public_state)).ok_or_else(|| {
                Error::new(StatusCode::TargetNotServing, format!("chain {} has no serving target", chain.chain_id))
            })?;
            let node = routing.node_of_target(TargetId(target.target_id))?;
            asks.push((TargetId(target.target_id), node.grpc_addr.clone()));
        }
        Ok(asks)
    }

    /// Every chunk record (track 0) of the file on storage, in index order, as (index, whether it
    /// holds data or a pending update; else it is a tombstone only): one paged `ListChunks` of the
    /// file on a SERVING target of each chain of its stripe. What GC removes and purges: the work
    /// follows the data, not the file's length (a sparse file of 1 PB would otherwise be a billion
    /// removals).
    pub async fn chunk_records(&self, inode: &proto::Inode) -> Result<Vec<(u32, bool)>> {
        let id = t3fs_common::InodeId(inode.id);
        let lists = self.serving_targets(inode)?.into_iter().map(|(target, addr)| async move {
            let mut c = self.client(&addr).await?;
            let header = || proto::RequestHeader {
                request_id: t3fs_common::new_request_id(),
                token: self.token.clone(),
                ..Default::default()
            };
            t3fs_common::chunk_list::list_file_chunks(&mut c, header, target, id, 0, true).await
        });
        let mut listed = Vec::new();
        for list in futures::future::join_all(lists).await {
            listed.extend(list?);
        }
        merge_records(&listed)
    }

    async fn probe(&self, inode: &proto::Inode) -> Result<u64> {
        let asks = self.serving_targets(inode)?;
        let layout =
            inode.layout.as_ref().ok_or_else(|| Error::internal(format!("file {} has no layout", inode.id)))?;
        let queries = asks.into_iter().map(|(target, addr)| async move {
            let mut c = self.client(&addr).await?;
            let req = proto::QueryLastChunkReq {
                header: Some(proto::RequestHeader {
                    request_id: t3fs_common::new_request_id(),
                    token: self.token.clone(),
                    ..Default::default()
                }),
                target_id: target.0,
                inode: inode.id,
            };
            let rsp = c.query_last_chunk(req).await.map_err(|s| Error::from_tonic(&s))?.into_inner();
            Ok::<_, Error>(rsp.meta.filter(|_| rsp.found))
        });
        let mut end = 0u64;
        for found in futures::future::join_all(queries).await {
            if let Some(meta) = found? {
                let chunk = ChunkId::from_bytes(&meta.chunk_id)?;
                let this = u64::from(chunk.index) * u64::from(layout.chunk_size) + u64::from(meta.length);
                end = end.max(this);
            }
        }
        Ok(end)
    }
}

/// The chunk records (track 0) of one file in `listed` (the listings of every chain of its
/// stripe), by index: whether any of them holds data or a pending update (a removal is due) or
/// only tombstones (nothing to remove, only a tombstone to purge).
fn merge_records(listed: &[proto::ChunkMeta]) -> Result<Vec<(u32, bool)>> {
    let mut records = std::collections::BTreeMap::new();
    for m in listed {
        let chunk = ChunkId::from_bytes(&m.chunk_id)?;
        if chunk.track == 0 {
            *records.entry(chunk.index).or_insert(false) |= t3fs_common::chunk_list::needs_removal(m);
        }
    }
    Ok(records.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_purged_but_not_removed_again() {
        let meta = |index: u32, track: u16, removed: bool, pending_version: u64| proto::ChunkMeta {
            chunk_id: ChunkId { track, ..ChunkId::new(t3fs_common::InodeId(9), index) }.to_bytes().to_vec().into(),
            removed,
            pending_version,
            ..Default::default()
        };
        let listed = [
            meta(5, 0, true, 0),  // a tombstone only
            meta(0, 0, false, 0), // live
            meta(3, 0, true, 4),  // a tombstone with a pending update: may become data
            meta(5, 0, true, 0),  // listed by a second chain of the stripe as well
            meta(7, 1, false, 0), // another track: not the file's data chunks
        ];
        assert_eq!(merge_records(&listed).unwrap(), vec![(0, true), (3, true), (5, false)]);
        assert!(merge_records(&[proto::ChunkMeta { chunk_id: vec![1, 2].into(), ..Default::default() }]).is_err());
    }
}
