//! Batch reads for data loaders: the role of 3FS's USRBIO, as a safe Rust API.
//!
//! A loader submits many `(file, offset, len)` reads, each into a buffer it owns, and takes the
//! completions back in whatever order they finish:
//!
//! - [`BufferPool`] (in `batch_buf.rs`) allocates `count` buffers of `buf_size` bytes once, up
//!   front, and hands them out as [`PooledBuf`]s that return themselves on drop; it is bounded
//!   (acquire waits while every buffer is out). [`BufferPool::registered`] (or
//!   [`Client::buffer_pool`]) registers each buffer once with the bulk transport for the pool's
//!   life: a no-op handle over TCP, an RDMA memory region over RDMA.
//! - [`ExternalBuf`] lets a read land in memory the caller owns and the reader does not allocate:
//!   a range of a pinned host buffer, or one sample's slot inside a whole batch buffer, so a loader
//!   needs no copy of its own. It is a raw `(ptr, len)` plus an `owner` handle (any `Arc`) that
//!   keeps the memory alive: the read (which runs as its own task, see [`BatchReader`]) holds the
//!   `ExternalBuf`, so even a caller that gives up on the read cannot free the memory under it.
//!   Its constructor is `unsafe`: the caller promises that `owner` keeps `ptr..ptr+len` valid and
//!   that nothing else touches that range while the `ExternalBuf` lives.
//! - [`BatchReader`] is the submit/complete queue (USRBIO's Ior): [`BatchReader::submit`] waits for
//!   a free slot, so at most [`BatchConfig::max_in_flight_requests`] reads run at once (the queue
//!   depth); [`BatchReader::next`] yields [`Completion`]s in completion order. It is also a
//!   `futures::Stream`. [`Client::batch_read`] submits a whole `Vec` and returns the reader.
//!
//! Each read is clamped to the file length and split by chunk (and into pieces of at most
//! [`BatchConfig::max_bytes_per_op`]); the pieces run concurrently and are reassembled in the
//! caller's buffer. Holes read as zeros: the result is exactly what [`Client::read`] returns. Every
//! piece picks the replica whose storage node has the fewest batch reads in flight (ties rotate;
//! a node that failed a read in the last second goes last), fails over to the next replica on error, and the whole piece retries retryable errors with
//! backoff until the client's `retry_timeout_ms` (re-reading the chain from routing each try).
//!
//! Where bytes land: a chunk read that would go out alone anyway (its node has nothing queued and
//! a free slot) is sent as a plain read through `BulkClient::call_into` into its own disjoint part
//! of the read's buffer: over TCP the payload goes from the socket straight into it (no frame
//! buffer, no copy); over RDMA with a registered pool buffer the storage node RDMA-WRITEs into it
//! (untested on hardware). The CRC is checked on the destination bytes. Reads that travel in a
//! batch-read request arrive in one frame buffer and are copied into place (one copy each).
//!
//! Per-node grouping ([`crate::batch_wire`]): as 3FS packs up to 128 reads into one `BatchReadReq`
//! per storage node, chunk reads bound for one node queue up and leave together in one batch-read
//! request (at most [`BatchConfig::max_reads_per_batch`] reads and
//! [`BatchConfig::max_bytes_per_batch`] bytes), with at most [`BatchConfig::max_ops_per_node`]
//! such requests on the wire per node; each read on the wire is at most `max_bytes_per_op`.
//!
//! Invariants: a completion is delivered exactly once per submitted read, with its buffer; a read
//! never writes outside `buf[..len]` (for an [`ExternalBuf`], outside the range it was made over);
//! a read holds its buffer, and so an `ExternalBuf`'s `owner`, until its completion is sent or
//! dropped; the in-flight count never exceeds the configured depth.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, StreamExt};
use t3fs_common::bulk::Registration;
use t3fs_common::proto;
use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode, TargetId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::Client;
pub use crate::batch_buf::{BufferPool, ExternalBuf, PooledBuf, ReadBuf};
use crate::batch_wire::{Batcher, NodeLimits};
use crate::data::{
    ChunkPiece, bulk_addr, chain_for, check_read, clamp_read, file_layout, readable_targets, split_range,
};

/// One read: `len` bytes at `offset` of `inode` into `buf[..len]` (`buf` must hold `len` bytes).
pub struct ReadReq {
    /// The file (as returned by open/stat/close); its `length` is where reads are clamped.
    pub inode: Arc<proto::Inode>,
    pub offset: u64,
    pub len: u32,
    pub buf: ReadBuf,
    /// Returned untouched in the completion.
    pub user_data: u64,
}

/// A finished read. On success `buf[..n]` holds the `n` bytes read (`n < len` only at end of file).
pub struct Completion {
    pub user_data: u64,
    pub result: Result<usize>,
    pub buf: ReadBuf,
}

/// Queue depth and per-node limits of a [`BatchReader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Reads (submitted [`ReadReq`]s) in flight at once: the queue depth. `submit` waits above it.
    pub max_in_flight_requests: usize,
    /// Batch-read requests on the wire to one storage node at once (each on its own pooled
    /// connection; the bulk client keeps up to 64 per node).
    pub max_ops_per_node: usize,
    /// Largest single chunk read on the wire, in bytes; longer chunk pieces are split (3FS: 4 MiB).
    pub max_bytes_per_op: u32,
    /// Chunk reads one batch request to a node carries at most ([`crate::batch_wire`]; 3FS: 128).
    pub max_reads_per_batch: usize,
    /// Bytes one batch request asks for at most (a single larger read still goes alone).
    pub max_bytes_per_batch: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight_requests: 128,
            max_ops_per_node: 16,
            max_bytes_per_op: 4 << 20,
            max_reads_per_batch: 128,
            max_bytes_per_batch: 8 << 20,
        }
    }
}

/// Counters of one [`BatchReader`], for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub submitted: u64,
    pub completed: u64,
    /// Reads in flight now.
    pub in_flight: usize,
    /// Most reads ever in flight at once (never above `max_in_flight_requests`).
    pub max_in_flight: usize,
    /// Most batch requests ever in flight to one storage node (never above `max_ops_per_node`).
    pub max_node_ops: usize,
    /// Chunk reads that failed on one replica and moved on to another (or to a retry).
    pub failovers: u64,
    /// Batch requests sent, and the chunk reads they carried (`wire_reads / wire_batches` is the
    /// mean batch size).
    pub wire_batches: u64,
    pub wire_reads: u64,
    /// Chunk reads sent alone as a plain read whose bytes land straight in the read's buffer (the
    /// node had nothing queued and a free slot); not counted in `wire_batches`/`wire_reads`.
    pub direct_reads: u64,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    completed: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    failovers: AtomicU64,
}

/// The chunk reads that serve `len` bytes at `offset` of a file of `file_len` bytes: the number of
/// bytes the read returns (clamped at end of file) and its pieces, in file order, each inside one
/// chunk and at most `max_bytes` long. `buf_offset` is where a piece lands in the caller's buffer.
pub fn plan_read(
    offset: u64,
    len: u32,
    file_len: u64,
    chunk_size: u32,
    max_bytes: u32,
) -> Result<(usize, Vec<ChunkPiece>)> {
    let n = clamp_read(offset, u64::from(len), file_len);
    let max = max_bytes.max(1);
    let mut out = Vec::new();
    for p in split_range(offset, n, chunk_size)? {
        let mut done = 0;
        while done < p.len {
            let take = (p.len - done).min(max);
            out.push(ChunkPiece {
                index: p.index,
                offset: p.offset + done,
                len: take,
                buf_offset: p.buf_offset + done as usize,
            });
            done += take;
        }
    }
    Ok((n as usize, out))
}

/// Puts one piece's data into the read's buffer; the part of the piece the data does not cover
/// is a hole and becomes zeros (pool buffers are reused, so stale bytes must not show through).
pub fn place(buf: &mut [u8], p: &ChunkPiece, data: &[u8]) -> Result<()> {
    let end = p.buf_offset + p.len as usize;
    if data.len() > p.len as usize || end > buf.len() {
        return Err(Error::internal(format!("{} bytes for a {}-byte piece at {}", data.len(), p.len, p.buf_offset)));
    }
    let (filled, hole) = buf[p.buf_offset..end].split_at_mut(data.len());
    filled.copy_from_slice(data);
    hole.fill(0);
    Ok(())
}

/// State shared by a reader and its running reads.
struct Shared {
    client: Arc<Client>,
    wire: Arc<Batcher>,
    cfg: BatchConfig,
    slots: Arc<Semaphore>,
    nodes: NodeLimits,
    counters: Counters,
    /// Submitted reads whose completion the reader has not yet returned.
    pending: AtomicUsize,
    tx: mpsc::UnboundedSender<Completion>,
}

/// A submit/complete queue of reads against one client (see the module note). Reads run as tokio
/// tasks on the current runtime (`tokio::spawn`), so they use every worker thread, and they run to
/// the end whether or not anyone polls the reader. Dropping the reader abandons the completions
/// still to come: their reads still finish, then drop their buffers (a pooled buffer goes back to
/// its pool; an [`ExternalBuf`] releases its `owner` clone only then). So a read may write into its
/// buffer after the reader, and the future that submitted it, are gone: memory handed to a read
/// must be owned by the read (that is what `ExternalBuf::owner` is for), never merely borrowed.
pub struct BatchReader {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Completion>,
}

impl BatchReader {
    /// An empty queue. Zero limits in `cfg` are taken as 1.
    pub fn new(client: Arc<Client>, cfg: BatchConfig) -> BatchReader {
        let cfg = BatchConfig {
            max_in_flight_requests: cfg.max_in_flight_requests.max(1),
            max_ops_per_node: cfg.max_ops_per_node.max(1),
            max_bytes_per_op: cfg.max_bytes_per_op.max(1),
            max_reads_per_batch: cfg.max_reads_per_batch.max(1),
            max_bytes_per_batch: cfg.max_bytes_per_batch.max(1),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let wire = Arc::new(Batcher::new(
            client.clone(),
            cfg.max_ops_per_node,
            cfg.max_reads_per_batch,
            cfg.max_bytes_per_batch,
        ));
        let shared = Arc::new(Shared {
            client,
            wire,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight_requests)),
            nodes: NodeLimits::new(cfg.max_ops_per_node),
            counters: Counters::default(),
            pending: AtomicUsize::new(0),
            cfg,
            tx,
        });
        BatchReader { shared, rx }
    }

    pub fn config(&self) -> BatchConfig {
        self.shared.cfg
    }

    /// Starts a read, first waiting for a free slot if `max_in_flight_requests` are in flight.
    pub async fn submit(&self, req: ReadReq) {
        let permit = self.shared.slots.clone().acquire_owned().await.expect("the slot semaphore is never closed");
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        launch(&self.shared, req, permit);
    }

    /// Starts a read if a slot is free now; gives the request back if the queue is full.
    pub fn try_submit(&self, req: ReadReq) -> std::result::Result<(), ReadReq> {
        match self.shared.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.shared.pending.fetch_add(1, Ordering::SeqCst);
                launch(&self.shared, req, permit);
                Ok(())
            }
            Err(_) => Err(req),
        }
    }

    /// Submits every request from a background task (each waits for a slot in turn) and returns at
    /// once; their completions count as pending from now on.
    pub fn submit_all(&self, reqs: Vec<ReadReq>) {
        self.shared.pending.fetch_add(reqs.len(), Ordering::SeqCst);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for req in reqs {
                let permit = shared.slots.clone().acquire_owned().await.expect("the slot semaphore is never closed");
                launch(&shared, req, permit);
            }
        });
    }

    /// Reads submitted whose completion has not been returned yet.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// The next completion, in completion order; `None` once nothing is pending.
    pub async fn next(&mut self) -> Option<Completion> {
        std::future::poll_fn(|cx| self.poll_completion(cx)).await
    }

    fn poll_completion(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        if self.shared.pending.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(c)) => {
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                Poll::Ready(Some(c))
            }
            // The reader holds a sender (in `shared`), so the channel never closes first.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    pub fn stats(&self) -> BatchStats {
        let c = &self.shared.counters;
        BatchStats {
            submitted: c.submitted.load(Ordering::SeqCst),
            completed: c.completed.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            max_in_flight: c.max_in_flight.load(Ordering::SeqCst),
            max_node_ops: self.shared.wire.max_load.load(Ordering::SeqCst),
            failovers: c.failovers.load(Ordering::SeqCst),
            wire_batches: self.shared.wire.batches.load(Ordering::Relaxed),
            wire_reads: self.shared.wire.reads.load(Ordering::Relaxed),
            direct_reads: self.shared.wire.direct.load(Ordering::Relaxed),
        }
    }
}

impl futures::Stream for BatchReader {
    type Item = Completion;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        self.get_mut().poll_completion(cx)
    }
}

/// Runs one read as a task; `permit` (its queue slot) is held until it completes.
fn launch(shared: &Arc<Shared>, req: ReadReq, permit: OwnedSemaphorePermit) {
    let c = &shared.counters;
    c.submitted.fetch_add(1, Ordering::SeqCst);
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    c.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let shared = shared.clone();
    tokio::spawn(async move {
        let ReadReq { inode, offset, len, mut buf, user_data } = req;
        let (dst, reg) = buf.parts();
        let result = shared.read_into(&inode, offset, len, dst, reg).await;
        shared.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        shared.counters.completed.fetch_add(1, Ordering::SeqCst);
        drop(permit);
        // Fails only when the reader is gone; the buffer then goes back to its pool.
        let _ = shared.tx.send(Completion { user_data, result, buf });
    });
}

impl Shared {
    /// Reads `len` bytes at `offset` into `buf[..len]`; returns the bytes read (clamped at EOF).
    /// `reg` is `buf`'s transport registration, if any. Each piece owns its own disjoint part of
    /// `buf` (pieces tile `buf[..n]` in order), so pieces land in place concurrently.
    async fn read_into(
        &self,
        inode: &proto::Inode,
        offset: u64,
        len: u32,
        buf: &mut [u8],
        reg: Option<&Registration>,
    ) -> Result<usize> {
        if len as usize > buf.len() {
            return Err(Error::invalid(format!("a {len}-byte read into a {}-byte buffer", buf.len())));
        }
        let l = file_layout(inode)?;
        let (n, pieces) = plan_read(offset, len, inode.length, l.chunk_size, self.cfg.max_bytes_per_op)?;
        let id = InodeId(inode.id);
        let mut rest = &mut buf[..n];
        let mut at = 0;
        let mut reads = FuturesUnordered::new();
        for p in pieces {
            if p.buf_offset != at || p.len as usize > rest.len() {
                return Err(Error::internal(format!("piece at {} of {} bytes breaks the tiling", p.buf_offset, p.len)));
            }
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(p.len as usize);
            rest = tail;
            at += p.len as usize;
            reads.push(self.read_piece(l, id, p, dst, reg));
        }
        while let Some(r) = reads.next().await {
            r?;
        }
        Ok(n)
    }

    /// Reads one piece into `dst` (exactly the piece's bytes) from the least loaded serving
    /// replica, failing over to the others, and retrying the whole round with backoff. What the
    /// chunk does not hold is a hole: zeros.
    async fn read_piece(
        &self,
        l: &proto::Layout,
        inode: InodeId,
        p: ChunkPiece,
        dst: &mut [u8],
        reg: Option<&Registration>,
    ) -> Result<()> {
        let client = &self.client;
        let chunk = ChunkId::new(inode, p.index);
        // Each try borrows `dst` in turn (tries never overlap).
        let dst = tokio::sync::Mutex::new(dst);
        let dst = &dst;
        client
            .retrying("batch read chunk", move || async move {
                let routing = client.routing.get();
                let targets = readable_targets(chain_for(&routing, l, p.index)?)?;
                let rot = client.next_rr() % targets.len();
                let mut last = None;
                let mut cands = Vec::with_capacity(targets.len());
                for (i, t) in targets.iter().enumerate() {
                    match bulk_addr(&routing, *t) {
                        Ok(addr) => {
                            cands.push((self.nodes.rank(&addr), (i + targets.len() - rot) % targets.len(), *t, addr))
                        }
                        Err(e) => last = Some(e),
                    }
                }
                cands.sort_by_key(|c| (c.0, c.1));
                for (_, _, target, addr) in cands {
                    let sem = self.nodes.ops(&addr);
                    let mut d = dst.lock().await;
                    let r = match self.wire.try_direct(&addr, &sem) {
                        // Nothing queued for the node and a slot free: this read would go out
                        // alone anyway, so send it as a plain read that lands in place.
                        Some(slot) => {
                            let r = self.read_direct(&addr, target, chunk, p, &mut d, reg).await;
                            drop(slot);
                            self.wire.pump(&addr, &sem);
                            r
                        }
                        None => match self.wire.read(&addr, &sem, target, chunk, p.offset, p.len).await {
                            Ok(data) => place(&mut d, &ChunkPiece { buf_offset: 0, ..p }, &data),
                            Err(e) => Err(e),
                        },
                    };
                    match r {
                        Ok(()) => return Ok(()),
                        Err(e) if e.code == StatusCode::ChunkNotFound => {
                            d.fill(0);
                            return Ok(());
                        }
                        Err(e) => {
                            self.counters.failovers.fetch_add(1, Ordering::SeqCst);
                            self.nodes.mark_failed(&addr);
                            tracing::debug!(%chunk, %target, error = %e, "batch chunk read failed; next replica");
                            last = Some(e);
                        }
                    }
                }
                Err(last.unwrap_or_else(|| Error::internal("no replica tried")))
            })
            .await
    }

    /// One plain chunk read whose payload the transport puts straight into `dst` (TCP: from the
    /// socket; RDMA with `reg`: written by the storage node). The CRC is checked on the bytes in
    /// `dst`; the rest of `dst` past them is a hole and is zeroed.
    async fn read_direct(
        &self,
        addr: &str,
        target: TargetId,
        chunk: ChunkId,
        p: ChunkPiece,
        dst: &mut [u8],
        reg: Option<&Registration>,
    ) -> Result<()> {
        let req = self.client.read_request(target, chunk, p, &t3fs_common::new_request_id());
        let (rsp, n) = self.client.bulk.call_into(addr, &req, &[], dst, reg).await?;
        let (filled, hole) = dst
            .split_at_mut_checked(n)
            .ok_or_else(|| Error::internal(format!("target {target} returned {n} bytes for a {}-byte read", p.len)))?;
        check_read(filled, p, target, chunk, rsp.payload_crc32c)?;
        hole.fill(0);
        Ok(())
    }
}

impl Client {
    /// An empty batch read queue on this client (see [`crate::batch`]).
    pub fn batch_reader(self: &Arc<Self>, cfg: BatchConfig) -> BatchReader {
        BatchReader::new(self.clone(), cfg)
    }

    /// A [`BufferPool`] whose buffers are registered with this client's bulk transport (see
    /// [`BufferPool::registered`]): over RDMA, batch reads into them are written by the storage
    /// node straight into the buffer.
    pub fn buffer_pool(&self, buf_size: usize, count: usize) -> Result<BufferPool> {
        BufferPool::registered(buf_size, count, &self.bulk)
    }

    /// Submits `reqs` (default [`BatchConfig`]) and returns the reader their completions come from,
    /// in completion order: `while let Some(c) = reader.next().await { ... }`.
    pub fn batch_read(self: &Arc<Self>, reqs: Vec<ReadReq>) -> BatchReader {
        let r = self.batch_reader(BatchConfig::default());
        r.submit_all(reqs);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reassembles a read from its plan, with `stored` as the chunk contents on storage (a chunk
    /// returns only what it holds: bytes past `stored.len()` are holes).
    fn simulate(stored: &[u8], offset: u64, len: u32, file_len: u64, cs: u32, max: u32, buf: &mut [u8]) -> usize {
        let (n, pieces) = plan_read(offset, len, file_len, cs, max).unwrap();
        // Complete pieces in reverse order: reassembly must not depend on completion order.
        for p in pieces.iter().rev() {
            let start = (u64::from(p.index) * u64::from(cs) + u64::from(p.offset)) as usize;
            let end = (start + p.len as usize).min(stored.len()).max(start.min(stored.len()));
            let data = &stored[start.min(stored.len())..end];
            place(buf, p, data).unwrap();
        }
        n
    }

    #[test]
    fn plan_splits_by_chunk_and_op_size_and_clamps() {
        let (n, pieces) = plan_read(4000, 10_000, 1 << 20, 4096, 4096).unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(pieces.len(), 4);
        // Op size smaller than the chunk: chunk pieces split again, still tiling the range.
        let (n, pieces) = plan_read(100, 10_000, 1 << 20, 4096, 1000).unwrap();
        assert_eq!(n, 10_000);
        let mut pos = 100u64;
        for p in &pieces {
            assert!(p.len <= 1000 && p.offset + p.len <= 4096);
            assert_eq!(u64::from(p.index) * 4096 + u64::from(p.offset), pos);
            assert_eq!(p.buf_offset as u64, pos - 100);
            pos += u64::from(p.len);
        }
        assert_eq!(pos, 10_100);
        // Clamped at EOF, empty past it and for zero length.
        assert_eq!(plan_read(900, 500, 1000, 4096, 4096).unwrap().0, 100);
        assert_eq!(plan_read(1000, 500, 1000, 4096, 4096).unwrap(), (0, vec![]));
        assert_eq!(plan_read(0, 0, 1000, 4096, 4096).unwrap(), (0, vec![]));
        assert!(plan_read(0, 1, 10, 0, 4096).is_err());
    }

    #[test]
    fn reassembly_matches_the_file_with_holes_as_zeros() {
        let cs = 4096u32;
        let file_len = 5 * 4096 + 123;
        // Stored data covers only part of the file: the tail of the file is a hole.
        let stored: Vec<u8> = (0..3 * 4096 + 500).map(|i| (i % 251) as u8 + 1).collect();
        let mut expect = stored.clone();
        expect.resize(file_len, 0);
        let mut rng = t3fs_common::layout::SplitMix64::new(9);
        for _ in 0..500 {
            let offset = rng.next_u64() % (file_len as u64 + 2000);
            let len = (rng.next_u64() % 20_000) as u32;
            let max = [1u32, 777, 4096, 1 << 20][(rng.next_u64() % 4) as usize];
            let mut buf = vec![0xAAu8; len as usize];
            let n = simulate(&stored, offset, len, file_len as u64, cs, max, &mut buf);
            let o = (offset as usize).min(file_len);
            assert_eq!(n, (file_len - o).min(len as usize));
            assert_eq!(&buf[..n], &expect[o..o + n], "offset {offset} len {len} max {max}");
            assert!(buf[n..].iter().all(|&b| b == 0xAA), "bytes past the result are untouched");
        }
    }

    #[test]
    fn place_rejects_oversized_data() {
        let p = ChunkPiece { index: 0, offset: 0, len: 4, buf_offset: 2 };
        assert!(place(&mut [0u8; 8], &p, &[1; 5]).is_err());
        assert!(place(&mut [0u8; 5], &p, &[1; 4]).is_err());
        let mut b = [9u8; 8];
        place(&mut b, &p, &[1, 2]).unwrap();
        assert_eq!(b, [9, 9, 1, 2, 0, 0, 9, 9]);
    }
}
