//! Per-node batching of chunk reads for [`crate::batch`]: many `(chunk, offset, len)` reads for one
//! storage node travel in one `BatchReadChunks` bulk request (3FS's `batchRead`).
//!
//! Each storage node (bulk address) has a queue of chunk reads waiting to be sent, and a limit of
//! [`crate::BatchConfig::max_ops_per_node`] batch requests on the wire at once (the reader's per-node
//! semaphore). A read joins its node's queue and kicks the pump: while a slot is free and reads are
//! queued, the pump takes up to `max_reads_per_batch` reads whose lengths add up to at most
//! `max_bytes_per_batch` (always at least one) and sends them as one request. No timer: under light
//! load a read goes out alone at once; under load, reads pile up while the node's slots are busy and
//! leave together, so batches grow with the load. A finishing request releases its slot and pumps
//! again, so nothing is left queued while a slot is free.
//!
//! Each read gets its own result: the response lists per-read status, length and CRC32C, and the
//! payload is the successful reads' bytes in order. A read's bytes are checked against its CRC
//! exactly like a single read ([`crate::Client::read_from`]); a failed request fails every read in
//! it (each then fails over like a single read would).
//!
//! [`NodeLimits`] holds the per-node state replica choice uses: the in-flight semaphore and whether
//! the node failed a read in the last second.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use t3fs_common::proto::{self, bulk_request};
use t3fs_common::{ChunkId, Error, Result, StatusCode, TargetId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::Client;

/// How long a storage node that failed a read is tried last (after the healthy replicas).
const SUSPECT_FOR: Duration = Duration::from_secs(1);

/// Per storage node (keyed by bulk address): the limit on batch requests in flight, and whether it
/// failed recently.
pub(crate) struct NodeLimits {
    per_node: usize,
    nodes: Mutex<HashMap<String, NodeState>>,
}

struct NodeState {
    ops: Arc<Semaphore>,
    suspect_until: Option<Instant>,
}

impl NodeLimits {
    pub fn new(per_node: usize) -> Self {
        Self { per_node, nodes: Mutex::default() }
    }

    fn with<T>(&self, addr: &str, f: impl FnOnce(&mut NodeState) -> T) -> T {
        let mut g = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let st = g
            .entry(addr.to_string())
            .or_insert_with(|| NodeState { ops: Arc::new(Semaphore::new(self.per_node)), suspect_until: None });
        f(st)
    }

    pub fn ops(&self, addr: &str) -> Arc<Semaphore> {
        self.with(addr, |s| s.ops.clone())
    }

    /// Sort key for replica choice: recently failed nodes last, then fewest chunk reads in flight.
    pub fn rank(&self, addr: &str) -> (bool, usize) {
        let now = Instant::now();
        self.with(addr, |s| (s.suspect_until.is_some_and(|t| t > now), self.per_node - s.ops.available_permits()))
    }

    pub fn mark_failed(&self, addr: &str) {
        self.with(addr, |s| s.suspect_until = Some(Instant::now() + SUSPECT_FOR));
    }
}

/// One queued chunk read.
struct Item {
    read: proto::ReadChunk,
    tx: oneshot::Sender<Result<(u32, Bytes)>>,
}

/// Batching state of one [`crate::BatchReader`].
pub(crate) struct Batcher {
    client: Arc<Client>,
    /// The per-node limit the reader's node semaphores were made with.
    per_node: usize,
    max_reads: usize,
    max_bytes: u64,
    queues: Mutex<HashMap<String, VecDeque<Item>>>,
    /// Most batch requests ever in flight to one node.
    pub max_load: AtomicUsize,
    /// Batch requests sent, and chunk reads they carried.
    pub batches: AtomicU64,
    pub reads: AtomicU64,
    /// Chunk reads sent alone as plain reads ([`Batcher::try_direct`]).
    pub direct: AtomicU64,
}

impl Batcher {
    pub fn new(client: Arc<Client>, per_node: usize, max_reads: usize, max_bytes: u32) -> Self {
        Self {
            client,
            per_node,
            max_reads: max_reads.max(1),
            max_bytes: u64::from(max_bytes.max(1)),
            queues: Mutex::default(),
            max_load: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            direct: AtomicU64::new(0),
        }
    }

    /// A slot for a read to go to `addr` alone, outside any batch, when nothing is queued for the
    /// node and a slot is free (exactly when the pump would send it as a batch of one). The caller
    /// sends it, drops the slot and calls [`Batcher::pump`] so reads queued meanwhile go out.
    pub fn try_direct(&self, addr: &str, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if queues.get(addr).is_some_and(|q| !q.is_empty()) {
            return None;
        }
        let slot = slots.clone().try_acquire_owned().ok()?;
        drop(queues);
        self.direct.fetch_add(1, Ordering::Relaxed);
        self.max_load.fetch_max(self.max_reads_in_flight(slots), Ordering::SeqCst);
        Some(slot)
    }

    /// Reads `len` bytes at `offset` of `chunk` on `target` (at `addr`, whose in-flight limit is
    /// `slots`) as part of a batch. Same result and checks as a single read: the bytes (shorter than
    /// `len` where the rest is a hole) or the read's error.
    pub async fn read(
        self: &Arc<Self>,
        addr: &str,
        slots: &Arc<Semaphore>,
        target: TargetId,
        chunk: ChunkId,
        offset: u32,
        len: u32,
    ) -> Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        let read = proto::ReadChunk {
            target_id: target.0,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset,
            length: len,
            relaxed: false,
        };
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_default()
            .push_back(Item { read, tx });
        self.pump(addr, slots);
        let (crc, data) = rx.await.map_err(|_| Error::internal("batch read dropped"))??;
        if data.len() > len as usize {
            return Err(Error::internal(format!(
                "target {target} returned {} bytes for a {len}-byte read",
                data.len()
            )));
        }
        let got = crc32c::crc32c(&data);
        if got != crc {
            return Err(Error::new(
                StatusCode::ChecksumMismatch,
                format!("chunk {chunk} from target {target}: crc {got:#010x}, header says {crc:#010x}"),
            ));
        }
        Ok(data)
    }

    /// Sends queued reads to `addr` while it has free slots (module note).
    pub fn pump(self: &Arc<Self>, addr: &str, slots: &Arc<Semaphore>) {
        loop {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                return; // a request in flight pumps again when it finishes
            };
            let batch = self.take_batch(addr);
            if batch.is_empty() {
                return;
            }
            let load = self.max_reads_in_flight(slots);
            self.max_load.fetch_max(load, Ordering::SeqCst);
            let (me, addr, slots) = (self.clone(), addr.to_string(), slots.clone());
            tokio::spawn(async move {
                me.send(&addr, batch).await;
                drop(slot);
                me.pump(&addr, &slots);
            });
        }
    }

    /// Batch requests in flight to the node whose slots these are.
    fn max_reads_in_flight(&self, slots: &Semaphore) -> usize {
        self.per_node.saturating_sub(slots.available_permits())
    }

    fn take_batch(&self, addr: &str) -> Vec<Item> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = queues.get_mut(addr) else { return Vec::new() };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while let Some(next) = q.front() {
            let len = u64::from(next.read.length);
            if !out.is_empty() && (out.len() >= self.max_reads || bytes + len > self.max_bytes) {
                break;
            }
            bytes += len;
            out.push(q.pop_front().expect("front exists"));
        }
        if q.is_empty() {
            queues.remove(addr);
        }
        out
    }

    async fn send(&self, addr: &str, batch: Vec<Item>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (reads, txs): (Vec<_>, Vec<_>) = batch.into_iter().map(|i| (i.read, i.tx)).unzip();
        let req = proto::BulkRequest {
            request_id: t3fs_common::new_request_id(),
            token: self.client.cfg.token.clone(),
            op: Some(bulk_request::Op::BatchRead(proto::BatchReadChunks { reads })),
        };
        let res =
            self.client.bulk.call(addr, &req, &[]).await.and_then(|(rsp, payload)| split(rsp, payload, txs.len()));
        match res {
            Ok(results) => {
                for (tx, r) in txs.into_iter().zip(results) {
                    let _ = tx.send(r);
                }
            }
            Err(e) => {
                for tx in txs {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Splits a batch response into per-read results (CRC from the header, bytes).
fn split(rsp: proto::BulkResponse, payload: Bytes, n: usize) -> Result<Vec<Result<(u32, Bytes)>>> {
    if rsp.results.len() != n {
        return Err(Error::internal(format!("batch of {n} reads got {} results", rsp.results.len())));
    }
    let total = rsp.results.iter().filter(|r| r.code == 0).map(|r| r.length as usize).sum::<usize>();
    if total != payload.len() {
        return Err(Error::internal(format!("batch results say {total} bytes, payload has {}", payload.len())));
    }
    let mut at = 0;
    Ok(rsp
        .results
        .into_iter()
        .map(|r| {
            if r.code != StatusCode::Ok as u32 {
                return Err(Error::new(StatusCode::from_u32(r.code), r.message));
            }
            let data = payload.slice(at..at + r.length as usize);
            at += r.length as usize;
            Ok((r.crc32c, data))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_checks_counts_and_lengths() {
        let ok = |len: u32, crc: u32| proto::ReadResult { length: len, crc32c: crc, ..Default::default() };
        let bad = proto::ReadResult { code: StatusCode::ChunkNotFound as u32, ..Default::default() };
        let rsp = proto::BulkResponse { results: vec![ok(2, 1), bad.clone(), ok(3, 2)], ..Default::default() };
        let out = split(rsp.clone(), Bytes::from_static(b"abcde"), 3).unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &(1, Bytes::from_static(b"ab")));
        assert_eq!(out[1].as_ref().unwrap_err().code, StatusCode::ChunkNotFound);
        assert_eq!(out[2].as_ref().unwrap(), &(2, Bytes::from_static(b"cde")));
        assert!(split(rsp.clone(), Bytes::from_static(b"abcd"), 3).is_err());
        assert!(split(rsp, Bytes::from_static(b"abcde"), 2).is_err());
    }
}
