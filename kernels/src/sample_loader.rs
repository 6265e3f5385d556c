//! The training-sample loader: epochs over a set of record files ([`crate::records`]), shuffled
//! per epoch, each batch fetched with random reads through the client's batch-read API into one
//! contiguous buffer the caller supplies, with a bounded number of batches read ahead.
//!
//! - Sample space: the concatenation of the files' samples, in the order the paths were given.
//!   Global sample `g` is local sample `g - starts[f]` of the file `f` whose range holds it. Global
//!   ids are `u32` (at most `u32::MAX` samples per loader).
//! - Order: [`epoch_order`] is a Fisher–Yates shuffle driven by rand's `StdRng` seeded from
//!   `(seed, epoch)`: the same for a given (seed, epoch) and crate version (and `Cargo.lock`,
//!   which pins rand), different across epochs and seeds. Batch `b` is `order[b·bs .. (b+1)·bs]`;
//!   the short last batch is dropped when `drop_last`.
//! - Buffers: a batch lands in ONE buffer from [`BatchBuffers::acquire`] (plain `Vec`s with
//!   [`VecBuffers`]; pinned host memory for the GPU path), sample `i` at
//!   `buf[offsets[i]..offsets[i+1]]`. Every sample is read straight into its range of that buffer
//!   (a `ReadBuf::External` per sample, see below): no per-sample buffer, no copy in the loader.
//! - Lending, and why the buffer is owned, not borrowed: the client runs each read as its own
//!   tokio task, which keeps running when the code that submitted it is dropped. So the batch
//!   buffer is moved into an `Arc` (`LentBuf`) and every read's `ExternalBuf` holds a clone of
//!   it as its `owner`; the producer takes the buffer back (`Arc::try_unwrap`) only after it has
//!   received every completion of the batch and dropped its `ReadBuf`. If the producer is aborted
//!   (the [`EpochStream`] dropped) or the batch fails while reads are in flight, the producer's
//!   clone goes away but the reads' clones keep the buffer alive until the last read finishes,
//!   and that read's task frees it (for a pooled buffer: returns it to its pool). No read can
//!   write into freed memory, whatever is cancelled when. Ranges are lent in increasing order and
//!   never overlap, so two reads never share a byte.
//! - Prefetch: [`SampleLoader::epoch`] spawns a producer task. It takes a slot in a bounded channel
//!   of `prefetch_batches` before it starts reading a batch, so at most `prefetch_batches` batches
//!   are read or being read ahead of the consumer (plus the ones the consumer holds): memory is
//!   bounded by `prefetch_batches + held` batch buffers. Dropping the [`EpochStream`] aborts the
//!   producer; a batch buffer that reads still use stays alive (and counts) until they finish.
//! - Integrity: every sample's length and CRC32C is checked against the file's index, reading the
//!   sample's range of the batch buffer as its read completes. A mismatch
//!   ends the epoch with [`KernelError::Format`] naming the file, the sample and its global id; a
//!   read error ends it with [`KernelError::Client`] (message prefixed the same way). After an error
//!   the stream yields `None`.
use std::any::Any;
use std::ops::{DerefMut, Range};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use t3fs_client::{BatchConfig, BatchReader, Client, Completion, ExternalBuf, ReadReq};
use t3fs_common::layout::SplitMix64;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::ensure;
use crate::records::{RecordFile, client_err};
use crate::{KernelError, Result};

/// How a [`SampleLoader`] walks and reads its samples.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch (≥ 1).
    pub batch_size: usize,
    /// Shuffle seed; the order of an epoch depends only on (seed, epoch).
    pub seed: u64,
    /// Shuffle each epoch; `false` reads samples in file order.
    pub shuffle: bool,
    /// Drop the last batch when it would be short.
    pub drop_last: bool,
    /// Batches read ahead of the consumer at most (≥ 1). 2 keeps the reader busy while the consumer
    /// works on one batch and another waits.
    pub prefetch_batches: usize,
    /// Queue depth and per-node limits of the batch reader that fetches the samples.
    pub read: BatchConfig,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            seed: 0,
            shuffle: true,
            drop_last: false,
            prefetch_batches: 2,
            read: BatchConfig::default(),
        }
    }
}

/// Mixes (seed, epoch) into one RNG seed, so nearby pairs give unrelated orders.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    SplitMix64::new(seed ^ SplitMix64::new(epoch).next_u64()).next_u64()
}

/// The sample order of one epoch: a permutation of `0..num_samples`, deterministic per
/// (seed, epoch) for a given crate version (Fisher–Yates over rand's `StdRng`), or the identity
/// when `!shuffle`.
///
/// # Panics
/// If `num_samples > u32::MAX` (sample ids are `u32`; [`SampleLoader::new`] rejects such sets).
pub fn epoch_order(num_samples: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<u32> {
    let n = u32::try_from(num_samples).expect("epoch_order: at most u32::MAX samples");
    let mut order: Vec<u32> = (0..n).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(epoch_seed(seed, epoch));
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
    }
    order
}

/// Batches in an epoch of `num_samples` (`batch_size` ≥ 1).
pub fn num_batches(num_samples: usize, batch_size: usize, drop_last: bool) -> usize {
    let bs = batch_size.max(1);
    if drop_last { num_samples / bs } else { num_samples.div_ceil(bs) }
}

/// Positions in the epoch order that batch `b` covers; `None` past the last batch.
pub fn batch_range(num_samples: usize, batch_size: usize, drop_last: bool, b: usize) -> Option<Range<usize>> {
    let bs = batch_size.max(1);
    (b < num_batches(num_samples, bs, drop_last)).then(|| b * bs..((b + 1) * bs).min(num_samples))
}

/// Where batches land: the caller hands out one buffer of at least `len` bytes per batch. The
/// GPU loader implements it over pinned host memory; [`VecBuffers`] allocates plain `Vec`s.
pub trait BatchBuffers: Send + Sync + 'static {
    type Buf: DerefMut<Target = [u8]> + Send + 'static;
    /// A buffer of at least `len` bytes (may wait, e.g. for a pooled buffer to come back).
    fn acquire(&self, len: usize) -> impl Future<Output = Result<Self::Buf>> + Send;
}

/// [`BatchBuffers`] in ordinary host memory: a fresh zeroed `Vec` per batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct VecBuffers;

impl BatchBuffers for VecBuffers {
    type Buf = Vec<u8>;
    async fn acquire(&self, len: usize) -> Result<Vec<u8>> {
        Ok(vec![0u8; len])
    }
}

/// One batch: `samples[i]` (a global id) occupies `buf[offsets[i]..offsets[i + 1]]`.
#[derive(Debug)]
pub struct Batch<B> {
    pub epoch: u64,
    /// Batch number in the epoch.
    pub index: u64,
    /// Global sample ids, in epoch order.
    pub samples: Vec<u32>,
    /// `samples.len() + 1` offsets into `buf`, starting at 0.
    pub offsets: Vec<usize>,
    pub buf: B,
}

impl<B: std::ops::Deref<Target = [u8]>> Batch<B> {
    /// The bytes of the batch's `i`-th sample.
    pub fn sample(&self, i: usize) -> &[u8] {
        &self.buf[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// A caller's buffer lent out to reads, range by range, as [`ExternalBuf`]s (see the module note):
/// the buffer lives in an `Arc` that every lent range holds as its `owner`, so it outlives every
/// read that writes into it, and it comes back ([`LentBuf::reclaim`]) only when no range is out.
pub(crate) struct LentBuf<B> {
    holder: Arc<Mutex<B>>,
    /// The buffer's bytes, taken once through exclusive access when it was moved into `holder`.
    base: *mut u8,
    len: usize,
    /// Ranges are lent in increasing order: the next one starts at or after this.
    next: usize,
}

// SAFETY: `base` is only an address of bytes owned by the `B` in `holder` (B: Send); a LentBuf
// never reads or writes through it, it only hands out disjoint sub-ranges as ExternalBufs, which
// are Send themselves.
unsafe impl<B: Send> Send for LentBuf<B> {}

impl<B: DerefMut<Target = [u8]> + Send + 'static> LentBuf<B> {
    pub(crate) fn new(buf: B) -> Self {
        // Moved into the Arc first, then addressed: the bytes' address is taken where B will
        // stay until `reclaim` (right even for a B that stores its bytes inline).
        let mut holder = Arc::new(Mutex::new(buf));
        let bytes = Arc::get_mut(&mut holder)
            .expect("a fresh Arc has one owner")
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .deref_mut();
        let (base, len) = (bytes.as_mut_ptr(), bytes.len());
        LentBuf { holder, base, len, next: 0 }
    }

    /// An [`ExternalBuf`] over `buf[range]`.
    ///
    /// # Panics
    /// If `range` is out of bounds or starts before the end of a range lent earlier (callers lend
    /// ranges they computed as disjoint and in order; this check is what keeps lending safe).
    pub(crate) fn lend(&mut self, range: Range<usize>) -> ExternalBuf {
        assert!(
            self.next <= range.start && range.start <= range.end && range.end <= self.len,
            "lending {range:?} of a {}-byte buffer after [0, {})",
            self.len,
            self.next
        );
        self.next = range.end;
        let owner: Arc<dyn Any + Send + Sync> = self.holder.clone();
        // SAFETY: `base..base + len` are the bytes of the B inside `holder` (taken through
        // exclusive access in `new`, and B stays where it is until `reclaim` moves it out, which
        // needs every owner clone gone). `owner` is a clone of `holder`, so the bytes stay
        // allocated while it lives; B's DerefMut hands out memory B owns or exclusively holds for
        // as long as it lives (what any safe DerefMut does: the slice borrows from B). The range
        // is in bounds and disjoint from every range lent before (checked above), and nothing
        // else touches B's bytes: LentBuf never derefs B again, and `reclaim` gives B back only
        // when no ExternalBuf is left. `base.add` stays inside the allocation (start <= len).
        unsafe { ExternalBuf::new(self.base.add(range.start), range.len(), owner) }
    }

    /// The buffer back if no lent range is alive any more; otherwise `self`, unchanged.
    pub(crate) fn reclaim(self) -> std::result::Result<B, Self> {
        let LentBuf { holder, base, len, next } = self;
        match Arc::try_unwrap(holder) {
            Ok(m) => Ok(m.into_inner().unwrap_or_else(PoisonError::into_inner)),
            Err(holder) => Err(LentBuf { holder, base, len, next }),
        }
    }
}

/// Runs `reqs` through `reader` (which must have nothing pending), keeping it full, and hands
/// every completion to `done` as it arrives. Stops at the first error `done` returns. At most
/// `max_in_flight_requests` requests (and their buffers) are out at once.
pub(crate) async fn run_reads(
    reader: &mut BatchReader,
    reqs: impl IntoIterator<Item = ReadReq>,
    mut done: impl FnMut(Completion) -> Result<()>,
) -> Result<()> {
    let depth = reader.config().max_in_flight_requests;
    let mut reqs = reqs.into_iter();
    loop {
        while reader.pending() < depth {
            match reqs.next() {
                Some(r) => reader.submit(r).await,
                None => break,
            }
        }
        match reader.next().await {
            Some(c) => done(c)?,
            None => return Ok(()),
        }
    }
}

struct Inner<P> {
    client: Arc<Client>,
    files: Vec<RecordFile>,
    /// `starts[f]` is the global id of file `f`'s first sample; `starts[files.len()]` the total.
    starts: Vec<usize>,
    cfg: LoaderConfig,
    buffers: P,
}

impl<P: BatchBuffers> Inner<P> {
    fn locate(&self, global: u32) -> (usize, usize) {
        let g = global as usize;
        let f = self.starts.partition_point(|&s| s <= g) - 1;
        (f, g - self.starts[f])
    }

    /// Reads the samples `ids` into one buffer and checks each against its file's index.
    async fn read_batch(&self, reader: &mut BatchReader, epoch: u64, index: u64, ids: &[u32]) -> Result<Batch<P::Buf>> {
        let mut offsets = Vec::with_capacity(ids.len() + 1);
        offsets.push(0usize);
        let mut locs = Vec::with_capacity(ids.len());
        for &g in ids {
            let (f, l) = self.locate(g);
            let e = self.files[f].index().entry(l).expect("locate stays inside the file's index");
            offsets.push(offsets[offsets.len() - 1] + e.len as usize);
            locs.push((f, l, e));
        }
        let total = offsets[ids.len()];
        let buf = self.buffers.acquire(total).await?;
        ensure(buf.len() >= total, || format!("a {}-byte batch buffer for a {total}-byte batch", buf.len()))?;
        let sample_err = |i: usize, e: KernelError| {
            let (f, l, _) = locs[i];
            let name = format!("{}: sample {l} (global {})", self.files[f].path(), ids[i]);
            match e {
                KernelError::Format(m) => KernelError::Format(format!("{name}: {m}")),
                KernelError::Client(e) => client_err(&name, e),
                e => e,
            }
        };
        // Empty samples need no read, only their (empty) CRC checked.
        for (i, &(f, l, e)) in locs.iter().enumerate() {
            if e.len == 0 {
                self.files[f].index().verify(l, &[]).map_err(|e| sample_err(i, e))?;
            }
        }
        // Every read lands in its sample's range of the batch buffer, which the reads co-own
        // until they finish (module note): if this future is dropped or fails while reads are in
        // flight, they keep the buffer alive, never write into freed memory.
        let mut lent = LentBuf::new(buf);
        // Built lazily (indices, not borrowed items, keep the future Send); ranges are lent in
        // sample order, so in increasing, disjoint order.
        let (locs_ref, offsets_ref, lent_ref) = (&locs, &offsets, &mut lent);
        let reqs = (0..locs.len()).filter_map(move |i| {
            let (f, _, e) = locs_ref[i];
            (e.len > 0).then(|| ReadReq {
                inode: self.files[f].inode().clone(),
                offset: e.offset,
                len: e.len,
                buf: lent_ref.lend(offsets_ref[i]..offsets_ref[i + 1]).into(),
                user_data: i as u64,
            })
        });
        run_reads(reader, reqs, |c| {
            let i = c.user_data as usize;
            let n = c.result.map_err(|e| sample_err(i, e.into()))?;
            let (f, l, _) = locs[i];
            // The sample's own range of the batch buffer: checked in place, nothing copied.
            self.files[f].index().verify(l, &c.buf[..n]).map_err(|e| sample_err(i, e))?;
            Ok(())
        })
        .await?;
        // run_reads returned Ok, so it received every completion of the batch (the reader has
        // nothing pending) and dropped each with its ExternalBuf: no read holds the buffer now.
        let buf = lent.reclaim().ok().expect("every read of the batch completed and released its range");
        Ok(Batch { epoch, index, samples: ids.to_vec(), offsets, buf })
    }
}

/// Epochs of batches over a set of record files (see the module note).
pub struct SampleLoader<P: BatchBuffers> {
    inner: Arc<Inner<P>>,
}

impl<P: BatchBuffers> SampleLoader<P> {
    /// Opens every record file (concurrently) and checks the configuration.
    pub async fn new(client: Arc<Client>, paths: &[String], cfg: LoaderConfig, buffers: P) -> Result<Self> {
        ensure(cfg.batch_size >= 1, || "batch_size must be at least 1".into())?;
        ensure(cfg.prefetch_batches >= 1, || "prefetch_batches must be at least 1".into())?;
        let mut opens = JoinSet::new();
        for (i, p) in paths.iter().enumerate() {
            let (client, p) = (client.clone(), p.clone());
            opens.spawn(async move { (i, RecordFile::open(&client, &p).await) });
        }
        let mut files: Vec<Option<RecordFile>> = vec![None; paths.len()];
        while let Some(r) = opens.join_next().await {
            let (i, f) = match r {
                Ok(r) => r,
                // Never cancelled; a panic in the client is passed on as it is.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            files[i] = Some(f?);
        }
        let files: Vec<RecordFile> = files.into_iter().map(|f| f.expect("every open task reported")).collect();
        let mut starts = vec![0usize];
        for f in &files {
            starts.push(starts[starts.len() - 1] + f.len());
        }
        let total = starts[files.len()];
        ensure(u32::try_from(total).is_ok(), || format!("{total} samples; a loader takes at most {}", u32::MAX))?;
        Ok(SampleLoader { inner: Arc::new(Inner { client, files, starts, cfg, buffers }) })
    }

    /// Samples in one epoch (before `drop_last`).
    pub fn num_samples(&self) -> usize {
        self.inner.starts[self.inner.files.len()]
    }

    /// Batches in one epoch.
    pub fn num_batches(&self) -> usize {
        num_batches(self.num_samples(), self.inner.cfg.batch_size, self.inner.cfg.drop_last)
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// The opened files, in the order of the paths.
    pub fn files(&self) -> &[RecordFile] {
        &self.inner.files
    }

    /// (file, local index) of a global sample id; `None` past the end.
    pub fn locate(&self, global: u32) -> Option<(usize, usize)> {
        ((global as usize) < self.num_samples()).then(|| self.inner.locate(global))
    }

    /// Starts epoch `epoch`: a producer task (on the current tokio runtime) reads its batches in
    /// order, at most `prefetch_batches` ahead of the consumer.
    pub fn epoch(&self, epoch: u64) -> EpochStream<P::Buf> {
        let cfg = &self.inner.cfg;
        let (tx, rx) = mpsc::channel(cfg.prefetch_batches);
        let counters = Arc::new(StreamCounters::default());
        let task = tokio::spawn(produce(self.inner.clone(), epoch, tx, counters.clone()));
        EpochStream { rx, task, counters }
    }
}

#[derive(Default)]
struct StreamCounters {
    /// Most channel slots ever taken at once (batches being read, or read and not yet taken).
    max_ahead: AtomicUsize,
    produced: AtomicU64,
}

/// The producer of one epoch: for each batch, wait for a slot, read the batch, hand it over.
async fn produce<P: BatchBuffers>(
    inner: Arc<Inner<P>>,
    epoch: u64,
    tx: mpsc::Sender<Result<Batch<P::Buf>>>,
    counters: Arc<StreamCounters>,
) {
    let cfg = &inner.cfg;
    let n = inner.starts[inner.files.len()];
    let order = epoch_order(n, cfg.seed, epoch, cfg.shuffle);
    let mut reader = inner.client.batch_reader(cfg.read);
    let mut b = 0;
    while let Some(range) = batch_range(n, cfg.batch_size, cfg.drop_last, b) {
        // The slot is taken before reading, so batches being read count against the bound too.
        let Ok(permit) = tx.reserve().await else { return };
        // The channel's own count (queued plus reserved), so no race with the consumer.
        counters.max_ahead.fetch_max(tx.max_capacity() - tx.capacity(), Ordering::SeqCst);
        let r = inner.read_batch(&mut reader, epoch, b as u64, &order[range]).await;
        let failed = r.is_err();
        if let Err(e) = &r {
            tracing::debug!(epoch, batch = b, error = %e, "sample loader: epoch ends with an error");
        }
        permit.send(r);
        counters.produced.fetch_add(1, Ordering::SeqCst);
        if failed {
            return;
        }
        b += 1;
    }
}

/// The batches of one epoch, in order; `None` after the last (or after an error). Dropping it
/// stops the producer.
pub struct EpochStream<B> {
    rx: mpsc::Receiver<Result<Batch<B>>>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<StreamCounters>,
}

impl<B> EpochStream<B> {
    /// The next batch, waiting for it if it is not read yet.
    pub async fn next(&mut self) -> Option<Result<Batch<B>>> {
        self.rx.recv().await
    }

    /// Most batches ever read or being read ahead of the consumer (never above `prefetch_batches`).
    pub fn max_ahead(&self) -> usize {
        self.counters.max_ahead.load(Ordering::SeqCst)
    }

    /// Batches read ahead now (finished or in progress, not yet taken by [`Self::next`]).
    pub fn ahead(&self) -> usize {
        self.rx.max_capacity() - self.rx.capacity()
    }

    /// Batches the producer has finished so far (including one that ended in an error).
    pub fn produced(&self) -> u64 {
        self.counters.produced.load(Ordering::SeqCst)
    }
}

impl<B> Drop for EpochStream<B> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[u32], n: usize) -> bool {
        let mut seen = vec![false; n];
        order.len() == n && order.iter().all(|&i| (i as usize) < n && !std::mem::replace(&mut seen[i as usize], true))
    }

    #[test]
    fn epoch_order_is_a_deterministic_permutation_that_changes_per_epoch_and_seed() {
        let n = 1000;
        let a = epoch_order(n, 7, 0, true);
        assert!(is_permutation(&a, n));
        assert_eq!(a, epoch_order(n, 7, 0, true), "same (seed, epoch), same order");
        let b = epoch_order(n, 7, 1, true);
        let c = epoch_order(n, 8, 0, true);
        assert!(is_permutation(&b, n) && is_permutation(&c, n));
        for other in [&b, &c] {
            let same = a.iter().zip(other.iter()).filter(|(x, y)| x == y).count();
            // Two independent permutations share about one position; a broken mix shares many.
            assert!(same < 20, "{same} positions agree");
        }
        // Really shuffled: few fixed points (expected 1), first half not mostly small ids.
        assert!(a.iter().enumerate().filter(|&(i, &v)| i as u32 == v).count() < 20);
        let small_in_first_half = a[..n / 2].iter().filter(|&&v| (v as usize) < n / 2).count();
        assert!((200..300).contains(&small_in_first_half), "{small_in_first_half}");
        // (seed, epoch) pairs that a naive xor/add would collide.
        assert_ne!(epoch_order(n, 1, 0, true), epoch_order(n, 0, 1, true));
        assert_ne!(epoch_order(n, 3, 1, true), epoch_order(n, 2, 2, true));
        // No shuffle: identity, whatever the seed and epoch.
        assert_eq!(epoch_order(5, 9, 3, false), vec![0, 1, 2, 3, 4]);
        assert!(epoch_order(0, 1, 1, true).is_empty());
        assert_eq!(epoch_order(1, 1, 1, true), vec![0]);
    }

    #[test]
    fn batching_arithmetic_with_and_without_drop_last() {
        assert_eq!(num_batches(10, 4, false), 3);
        assert_eq!(num_batches(10, 4, true), 2);
        assert_eq!(num_batches(12, 4, true), 3);
        assert_eq!(num_batches(12, 4, false), 3);
        assert_eq!(num_batches(3, 4, true), 0);
        assert_eq!(num_batches(0, 4, false), 0);
        assert_eq!(batch_range(10, 4, false, 2), Some(8..10));
        assert_eq!(batch_range(10, 4, true, 2), None);
        assert_eq!(batch_range(10, 4, true, 1), Some(4..8));
        assert_eq!(batch_range(10, 4, false, 3), None);
        // The ranges tile [0, n) (or [0, n - n % bs) with drop_last), in order.
        for (n, bs, drop) in [(10, 4, false), (10, 4, true), (1, 1, false), (97, 10, true), (97, 10, false)] {
            let mut next = 0;
            let mut b = 0;
            while let Some(r) = batch_range(n, bs, drop, b) {
                assert_eq!(r.start, next);
                assert!(r.len() == bs || (!drop && r.end == n));
                next = r.end;
                b += 1;
            }
            assert_eq!(b, num_batches(n, bs, drop));
            assert_eq!(next, if drop { n - n % bs } else { n });
        }
    }

    #[test]
    fn batch_sample_slices_follow_offsets() {
        let batch =
            Batch { epoch: 0, index: 0, samples: vec![4, 1, 2], offsets: vec![0, 2, 2, 5], buf: b"abcde".to_vec() };
        assert_eq!(batch.sample(0), b"ab");
        assert_eq!(batch.sample(1), b"");
        assert_eq!(batch.sample(2), b"cde");
    }

    /// A buffer that counts its drops and stores its bytes inline (so moving it moves them).
    struct Inline {
        bytes: [u8; 16],
        drops: Arc<AtomicUsize>,
    }

    impl std::ops::Deref for Inline {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl DerefMut for Inline {
        fn deref_mut(&mut self) -> &mut [u8] {
            &mut self.bytes
        }
    }

    impl Drop for Inline {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn lent_ranges_write_in_place_and_the_buffer_comes_back_only_when_none_is_out() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut lent = LentBuf::new(Inline { bytes: [0xEE; 16], drops: drops.clone() });
        let mut a = lent.lend(2..6);
        let mut empty = lent.lend(6..6);
        let mut b = lent.lend(10..16);
        assert_eq!((a.len(), empty.len(), b.len()), (4, 0, 6));
        a.copy_from_slice(b"abcd");
        b.fill(b'z');
        empty.fill(1);
        // A range still out: the buffer does not come back.
        drop((a, empty));
        let lent = lent.reclaim().err().expect("b is still out");
        drop(b);
        let buf = lent.reclaim().ok().expect("nothing is out");
        assert_eq!(&buf[..], b"\xEE\xEEabcd\xEE\xEE\xEE\xEEzzzzzz");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(buf);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        // Abandoned: the lender goes first, the last lent range frees the buffer.
        let mut lent = LentBuf::new(Inline { bytes: [0; 16], drops: drops.clone() });
        let mut a = lent.lend(0..16);
        drop(lent);
        a.fill(7);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "a lent range keeps the buffer alive");
        assert!(a.iter().all(|&x| x == 7));
        drop(a);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn lent_ranges_are_written_from_other_threads_while_the_lender_comes_and_goes() {
        // As the loader runs: each range goes to its own thread (a read task) that fills it and
        // drops it. Once the lender waits and takes the buffer back; once it is dropped first.
        for abandon in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let mut lent = LentBuf::new(Inline { bytes: [0; 16], drops: drops.clone() });
            let threads: Vec<_> = (0..4u8)
                .map(|t| {
                    let mut r = lent.lend(usize::from(t) * 4..usize::from(t) * 4 + 4);
                    std::thread::spawn(move || r.fill(t + 1))
                })
                .collect();
            if abandon {
                drop(lent);
                for t in threads {
                    t.join().unwrap();
                }
                assert_eq!(drops.load(Ordering::SeqCst), 1, "the last range freed the buffer");
            } else {
                for t in threads {
                    t.join().unwrap();
                }
                let buf = lent.reclaim().ok().expect("every range was dropped");
                assert_eq!(&buf[..], &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]);
                assert_eq!(drops.load(Ordering::SeqCst), 0);
            }
        }
    }

    #[test]
    fn lending_out_of_order_overlapping_or_out_of_bounds_panics() {
        // Lends (start, end) ranges of an 8-byte buffer in turn, holding them all; true if it panicked.
        let attempt = |ranges: &'static [(usize, usize)]| {
            std::panic::catch_unwind(move || {
                let mut lent = LentBuf::new(vec![0u8; 8]);
                let _held: Vec<ExternalBuf> = ranges.iter().map(|&(a, b)| lent.lend(a..b)).collect();
            })
            .is_err()
        };
        assert!(!attempt(&[(0, 4), (4, 4), (4, 8)]));
        assert!(attempt(&[(0, 4), (3, 8)]), "overlap");
        assert!(attempt(&[(4, 8), (0, 4)]), "out of order");
        assert!(attempt(&[(4, 9)]), "past the end");
        assert!(attempt(&[(5, 3)]), "reversed");
    }
}
