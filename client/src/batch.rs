//! Batch reads for data loaders: the role of 3FS's USRBIO, as a safe Rust API.
//!
//! A loader submits many `(file, offset, len)` reads, each into a buffer it owns, and takes the
//! completions back in whatever order they finish:
//!
//! - [`BufferPool`] is the "registered memory" seam. It allocates `count` buffers of `buf_size`
//!   bytes once, up front, and hands them out as [`PooledBuf`]s that return themselves on drop; it
//!   is bounded (acquire waits while every buffer is out). Today the TCP bulk plane receives a chunk
//!   into a frame buffer and the batch reader copies it into the read's buffer (pooled, owned or
//!   external), so that copy is the only one between the socket and the caller's memory. An RDMA
//!   transport registers the pool's memory once (one memory region per pool, or per block like
//!   USRBIO's `block_size`) and lets storage write straight into it; GPU memory plugs in the same
//!   way. The API does not change when that happens: callers already read into pool buffers.
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
use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use t3fs_common::proto;
use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::Client;
use crate::batch_wire::{Batcher, NodeLimits};
use crate::data::{ChunkPiece, bulk_addr, chain_for, clamp_read, file_layout, readable_targets, split_range};

/// A bounded pool of equally sized read buffers, allocated once (see the module note).
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    buf_size: usize,
    count: usize,
    /// Invariant: holds at least as many buffers as `permits` has available permits (a buffer is
    /// pushed back before its permit is released).
    free: Mutex<Vec<Box<[u8]>>>,
    permits: Arc<Semaphore>,
}

impl BufferPool {
    /// Allocates `count` zeroed buffers of `buf_size` bytes each.
    pub fn new(buf_size: usize, count: usize) -> BufferPool {
        let free = (0..count).map(|_| vec![0u8; buf_size].into_boxed_slice()).collect();
        BufferPool {
            inner: Arc::new(PoolInner {
                buf_size,
                count,
                free: Mutex::new(free),
                permits: Arc::new(Semaphore::new(count)),
            }),
        }
    }

    /// Takes a buffer, waiting while all are in use.
    pub async fn acquire(&self) -> PooledBuf {
        let permit = self.inner.permits.clone().acquire_owned().await.expect("the pool semaphore is never closed");
        self.take(permit)
    }

    /// Takes a buffer if one is free now.
    pub fn try_acquire(&self) -> Option<PooledBuf> {
        self.inner.permits.clone().try_acquire_owned().ok().map(|p| self.take(p))
    }

    fn take(&self, permit: OwnedSemaphorePermit) -> PooledBuf {
        let buf = self.inner.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        PooledBuf {
            buf: Some(buf.expect("a permit guarantees a free buffer")),
            pool: self.inner.clone(),
            _permit: permit,
        }
    }

    /// Size of every buffer, in bytes.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Number of buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.inner.count
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.inner.permits.available_permits()
    }
}

/// A buffer on loan from a [`BufferPool`]; derefs to all `buf_size` bytes and goes back to the
/// pool when dropped. Contents are not cleared between loans.
pub struct PooledBuf {
    buf: Option<Box<[u8]>>,
    pool: Arc<PoolInner>,
    /// Released after `Drop::drop` has put the buffer back (fields drop after `drop` runs).
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().expect("present until drop")
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().expect("present until drop")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(b);
        }
    }
}

/// `len` bytes of caller-owned memory at `ptr`, kept alive by `owner` (see the module note): the
/// destination of a read that must land in place, e.g. one sample's range of a pinned batch
/// buffer. Derefs to exactly those `len` bytes.
pub struct ExternalBuf {
    ptr: *mut u8,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: an ExternalBuf is the only handle to its range (the contract of `new`), like a
// `Box<[u8]>` that some `owner` frees; moving it to another thread moves that exclusive access
// with it, and `owner` is itself Send + Sync.
unsafe impl Send for ExternalBuf {}
// SAFETY: `&ExternalBuf` only gives `&[u8]` (reads); writes need `&mut`. No one else writes the
// range while the ExternalBuf lives (the contract of `new`), so shared reads from several threads
// do not race. (Keeps `ReadBuf`, `ReadReq` and `Completion` Sync, as they were before.)
unsafe impl Sync for ExternalBuf {}

impl ExternalBuf {
    /// A read destination over `len` bytes at `ptr`, kept alive by `owner`. A zero `len` needs no
    /// valid pointer (it may be null).
    ///
    /// # Safety
    /// - `ptr..ptr + len` is one allocation (or part of one), valid for reads and writes of `len`
    ///   bytes for as long as `owner` (any clone of it) is alive, and `len <= isize::MAX`. Dropping
    ///   the last clone of `owner` may free it; nothing else may.
    /// - Nothing else reads, writes or borrows that range from this call until the `ExternalBuf`
    ///   is dropped (ranges handed to different `ExternalBuf`s must be disjoint).
    /// - The bytes are initialized (any values: every bit pattern is a valid `u8`), since the
    ///   `ExternalBuf` derefs to slices over them (e.g. zero a fresh pinned allocation first).
    pub unsafe fn new(ptr: *mut u8, len: usize, owner: Arc<dyn Any + Send + Sync>) -> ExternalBuf {
        // `from_raw_parts` needs a non-null, aligned pointer even for an empty slice.
        let ptr = if len == 0 { std::ptr::NonNull::dangling().as_ptr() } else { ptr };
        ExternalBuf { ptr, len, owner }
    }

    /// The handle that keeps the memory alive (the one given to [`ExternalBuf::new`]).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }
}

impl Deref for ExternalBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `new`'s contract: `ptr..ptr + len` is valid while `owner` lives (we hold a
        // clone, so at least as long as `self`) and no one else writes it; `ptr` is non-null (a
        // dangling, aligned pointer when `len == 0`) and u8 needs no alignment.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for ExternalBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; the range is exclusively ours (`new`'s contract) and `&mut self`
        // makes this the only borrow of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for ExternalBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalBuf").field("ptr", &self.ptr).field("len", &self.len).finish_non_exhaustive()
    }
}

/// Where a read lands: a pooled (registered) buffer, a plain `Vec` (its current length is the
/// room available; it is never resized), or caller-owned external memory.
pub enum ReadBuf {
    Pooled(PooledBuf),
    Owned(Vec<u8>),
    External(ExternalBuf),
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Pooled(b) => b,
            ReadBuf::Owned(v) => v,
            ReadBuf::External(e) => e,
        }
    }
}

impl DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ReadBuf::Pooled(b) => b,
            ReadBuf::Owned(v) => v,
            ReadBuf::External(e) => e,
        }
    }
}

impl From<ExternalBuf> for ReadBuf {
    fn from(b: ExternalBuf) -> Self {
        ReadBuf::External(b)
    }
}

impl From<PooledBuf> for ReadBuf {
    fn from(b: PooledBuf) -> Self {
        ReadBuf::Pooled(b)
    }
}

impl From<Vec<u8>> for ReadBuf {
    fn from(v: Vec<u8>) -> Self {
        ReadBuf::Owned(v)
    }
}

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
        let result = shared.read_into(&inode, offset, len, &mut buf).await;
        shared.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        shared.counters.completed.fetch_add(1, Ordering::SeqCst);
        drop(permit);
        // Fails only when the reader is gone; the buffer then goes back to its pool.
        let _ = shared.tx.send(Completion { user_data, result, buf });
    });
}

impl Shared {
    /// Reads `len` bytes at `offset` into `buf[..len]`; returns the bytes read (clamped at EOF).
    async fn read_into(&self, inode: &proto::Inode, offset: u64, len: u32, buf: &mut [u8]) -> Result<usize> {
        if len as usize > buf.len() {
            return Err(Error::invalid(format!("a {len}-byte read into a {}-byte buffer", buf.len())));
        }
        let l = file_layout(inode)?;
        let (n, pieces) = plan_read(offset, len, inode.length, l.chunk_size, self.cfg.max_bytes_per_op)?;
        let id = InodeId(inode.id);
        let mut reads: FuturesUnordered<_> =
            pieces.into_iter().map(|p| async move { self.read_piece(l, id, p).await.map(|d| (p, d)) }).collect();
        while let Some(r) = reads.next().await {
            let (p, data) = r?;
            place(buf, &p, &data)?;
        }
        Ok(n)
    }

    /// Reads one piece from the least loaded serving replica, failing over to the others, and
    /// retrying the whole round with backoff. A short result means the rest is a hole.
    async fn read_piece(&self, l: &proto::Layout, inode: InodeId, p: ChunkPiece) -> Result<Bytes> {
        let client = &self.client;
        let chunk = ChunkId::new(inode, p.index);
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
                    match self.wire.read(&addr, &sem, target, chunk, p.offset, p.len).await {
                        Ok(data) => return Ok(data),
                        Err(e) if e.code == StatusCode::ChunkNotFound => return Ok(Bytes::new()),
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
}

impl Client {
    /// An empty batch read queue on this client (see [`crate::batch`]).
    pub fn batch_reader(self: &Arc<Self>, cfg: BatchConfig) -> BatchReader {
        BatchReader::new(self.clone(), cfg)
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

    #[tokio::test]
    async fn buffer_pool_is_bounded_and_buffers_return_on_drop() {
        let pool = BufferPool::new(1024, 2);
        assert_eq!((pool.buf_size(), pool.capacity(), pool.available()), (1024, 2, 2));
        let mut a = pool.acquire().await;
        a[0] = 7;
        let b = pool.try_acquire().unwrap();
        assert_eq!(b.len(), 1024);
        assert!(pool.try_acquire().is_none());
        assert_eq!(pool.available(), 0);
        // A waiter is woken when a buffer comes back.
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.acquire().await.len() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), 1024);
        drop(b);
        assert_eq!(pool.available(), 2);
        // Buffers are reused, not reallocated: a written byte is still there on the next loan.
        let seen: Vec<u8> = vec![pool.acquire().await[0], pool.acquire().await[0]];
        assert!(seen.contains(&7));
        let rb: ReadBuf = pool.acquire().await.into();
        assert_eq!(rb.len(), 1024);
        let rb: ReadBuf = vec![0u8; 3].into();
        assert_eq!(rb.len(), 3);
    }

    /// An Arc-owned buffer and the base pointer of its bytes, taken once through exclusive access
    /// (the way a loader lends a batch buffer).
    fn owned(len: usize, fill: u8) -> (Arc<Mutex<Vec<u8>>>, *mut u8) {
        let mut owner = Arc::new(Mutex::new(vec![fill; len]));
        let v = Arc::get_mut(&mut owner).unwrap().get_mut().unwrap();
        let ptr = v.as_mut_ptr();
        (owner, ptr)
    }

    #[test]
    fn external_bufs_deref_to_exactly_their_range_and_keep_the_owner_alive() {
        let (owner, base) = owned(32, 0xEE);
        // Two disjoint ranges with a gap between them: [4, 12) and [20, 30).
        let erased: Arc<dyn Any + Send + Sync> = owner.clone();
        // SAFETY: both ranges lie inside the 32-byte Vec that `owner` keeps alive, are disjoint,
        // and nothing touches the Vec until both ExternalBufs are gone (the try_unwrap below).
        let (mut a, mut b) =
            unsafe { (ExternalBuf::new(base.add(4), 8, erased.clone()), ExternalBuf::new(base.add(20), 10, erased)) };
        assert_eq!((a.len(), b.len()), (8, 10));
        assert!(a.iter().chain(b.iter()).all(|&x| x == 0xEE), "they see the owner's bytes");
        a.fill(1);
        b.copy_from_slice(&[2; 10]);
        let mut rb: ReadBuf = b.into();
        rb[9] = 3;
        assert_eq!(Arc::strong_count(&owner), 3, "each ExternalBuf holds a clone of the owner");
        assert!(Arc::ptr_eq(a.owner(), &(owner.clone() as Arc<dyn Any + Send + Sync>)));
        // Dropping our handle does not free the memory while an ExternalBuf holds the owner.
        let weak = Arc::downgrade(&owner);
        drop(owner);
        assert_eq!(&a[..], &[1; 8]);
        drop((a, rb));
        assert!(weak.upgrade().is_none(), "the last ExternalBuf freed the buffer");

        // Writes stayed inside the two ranges.
        let (owner, base) = owned(16, 0);
        // SAFETY: [8, 16) of the Vec `owner` keeps alive; untouched until the ExternalBuf is gone.
        let mut e = unsafe { ExternalBuf::new(base.add(8), 8, owner.clone()) };
        e.fill(9);
        drop(e);
        let v = Arc::try_unwrap(owner).unwrap().into_inner().unwrap();
        assert_eq!(v, [[0u8; 8], [9u8; 8]].concat());

        // Zero length: a null pointer is fine and derefs to an empty slice.
        // SAFETY: zero bytes are never accessed.
        let mut z = unsafe { ExternalBuf::new(std::ptr::null_mut(), 0, Arc::new(())) };
        assert!(z.is_empty() && z.deref_mut().is_empty());
        let z: ReadBuf = z.into();
        assert!(z.is_empty());
    }
}
