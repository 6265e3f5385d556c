//! Read-ahead for sequential readers, bounded by one memory budget for the whole mount.
//!
//! Each open file handle has a [`Stream`]: where its last read ended, its current window, and the
//! segments it fetched ahead (each one `Client::read` of `min_window` bytes, running in the
//! background). A read is **sequential** when it starts inside a fetched segment or within
//! [`SEQ_TOLERANCE`] (or the read's own size) of where the previous read ended; the first read of
//! a handle counts from offset 0. After each sequential read the handle keeps `window` bytes
//! fetched ahead of it, in segments of `min_window` bytes fetched concurrently; every read that
//! starts new segments doubles the window, from `min_window` up to `max_window`. So a long
//! sequential reader gets up to `max_window / min_window` storage reads in flight, and its reads
//! wait for one segment at most. A **random** read (anywhere else) drops the handle's
//! segments, resets its window and goes straight to storage, as do reads of handles opened with
//! `O_DIRECT` and every read while prefetch is disabled.
//!
//! Memory: every segment reserves its bytes from the mount-wide [`Budget`] before it is fetched
//! and returns them when it is dropped (read past, reset, invalidated, or the handle released).
//! When the budget is spent no segment is started and reads go straight through; so thousands of
//! open files never hold more than `memory_limit` bytes of prefetched data together.
//!
//! Consistency: a write or truncate through this mount bumps the inode's generation
//! ([`Prefetcher::invalidate`]); a handle whose segments are of an older generation drops them
//! before serving its next read, so no read returns bytes older than a write this mount finished
//! before the read began. Writes by other clients are seen at the next open (close-to-open), as
//! without prefetch: segments live no longer than their handle.
//!
//! Metrics ([`crate::metrics`]): reads served from fetched segments (hits), sequential reads that
//! had to go to storage (misses), reads sent straight through (random or O_DIRECT), bytes fetched
//! ahead, segments refused by the budget, and the bytes reserved now.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use t3fs_common::Result;
use tokio::sync::OnceCell;

/// A sequential reader may jump this far around where its last read ended (the kernel issues
/// read-ahead requests concurrently, so they can arrive slightly out of order).
pub const SEQ_TOLERANCE: u64 = 256 << 10;

/// Prefetch settings of a mount (see `MountConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefetchConfig {
    /// Off: every read goes straight to storage.
    pub enabled: bool,
    /// First window of a sequential reader, and the size of every segment (bytes).
    pub min_window: u64,
    /// Largest window: how far ahead of a sequential reader data is fetched (bytes).
    pub max_window: u64,
    /// Bytes all handles together may hold in prefetched segments.
    pub memory_limit: u64,
}

impl PrefetchConfig {
    /// Clamps the settings into a usable shape (4 KiB <= min <= max <= 1 GiB, min <= 64 MiB).
    pub fn normalized(self) -> Self {
        let max_window = self.max_window.clamp(4096, 1 << 30);
        let min_window = self.min_window.clamp(4096, max_window.min(64 << 20));
        Self { min_window, max_window, ..self }
    }

    /// Most segments one handle holds: the largest window plus the one being read.
    pub fn max_segments(&self) -> usize {
        usize::try_from(self.max_window.div_ceil(self.min_window)).unwrap_or(usize::MAX).saturating_add(1)
    }
}

/// The mount-wide memory budget of prefetched data.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicU64::new(0) })
    }

    /// Reserves `n` bytes, or `None` when that would exceed the limit.
    pub fn try_reserve(self: &Arc<Self>, n: u64) -> Option<Reservation> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|&v| v <= self.limit)?;
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    crate::metrics::metrics().prefetch_memory.set(next as i64);
                    return Some(Reservation { budget: self.clone(), bytes: n });
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes held from a [`Budget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        crate::metrics::metrics().prefetch_memory.set(before.saturating_sub(self.bytes) as i64);
    }
}

/// Reads `len` bytes at an offset of the file (clamped at its end, like `Client::read`).
pub type Fetch = Arc<dyn Fn(u64, u32) -> BoxFuture<'static, Result<Vec<u8>>> + Send + Sync>;

/// What a segment's fetch produced: the bytes, or `None` when it failed (the read then goes
/// straight to storage, which reports the error if it persists).
type Fetched = Option<Arc<Vec<u8>>>;

/// One range fetched ahead.
#[derive(Debug)]
struct Segment {
    start: u64,
    len: u64,
    data: Arc<OnceCell<Fetched>>,
    _reservation: Reservation,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The read-ahead state of one handle (pure bookkeeping; fetching is [`Prefetcher`]'s).
#[derive(Debug)]
pub struct Stream {
    /// Where the previous read ended.
    last_end: u64,
    /// Size of the next segment.
    window: u64,
    /// Inode generation the segments belong to.
    generation: u64,
    segments: VecDeque<Segment>,
}

/// What a read does, decided under the stream's lock.
#[derive(Debug, Default)]
pub struct Plan {
    /// Sequential (prefetch applies) or random.
    pub sequential: bool,
    /// The segments covering the whole read, in order; empty: read straight from storage.
    serve_from: Vec<(u64, u64, Arc<OnceCell<Fetched>>)>,
    /// New segments to start fetching: (start, len, cell).
    pub start: Vec<(u64, u64, Arc<OnceCell<Fetched>>)>,
    /// Segments refused by the budget.
    pub denied: u32,
}

impl Plan {
    /// Whether the read is served from fetched segments.
    pub fn hit(&self) -> bool {
        !self.serve_from.is_empty()
    }
}

impl Stream {
    pub fn new(min_window: u64) -> Self {
        Self { last_end: 0, window: min_window, generation: 0, segments: VecDeque::new() }
    }

    /// The current window (how far ahead data is fetched).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes held in segments.
    pub fn held(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn reset(&mut self, min_window: u64) {
        self.segments.clear();
        self.window = min_window;
    }

    fn is_sequential(&self, offset: u64, size: u64) -> bool {
        if self.segments.iter().any(|s| s.start <= offset && offset < s.end()) {
            return true;
        }
        let tol = size.max(SEQ_TOLERANCE);
        offset.saturating_add(tol) >= self.last_end && offset <= self.last_end.saturating_add(tol)
    }

    /// Plans a read of `size` bytes at `offset` of a file of `file_len` bytes whose inode is at
    /// `generation`: which segments serve it and which new ones to start (reserved from `budget`).
    pub fn plan(
        &mut self,
        cfg: &PrefetchConfig,
        budget: &Arc<Budget>,
        generation: u64,
        offset: u64,
        size: u64,
        file_len: u64,
    ) -> Plan {
        if generation != self.generation {
            self.segments.clear();
            self.generation = generation;
        }
        let read_end = offset.saturating_add(size).min(file_len);
        if !self.is_sequential(offset, size) {
            self.reset(cfg.min_window);
            self.last_end = offset.saturating_add(size);
            return Plan::default();
        }
        self.last_end = self.last_end.max(offset.saturating_add(size));
        // Segments wholly behind the read are done with.
        while self.segments.front().is_some_and(|s| s.end() <= offset) {
            self.segments.pop_front();
        }
        let mut plan = Plan { sequential: true, ..Plan::default() };
        // Served from segments when they cover [offset, read_end) without a gap.
        let mut pos = offset;
        let mut cover = Vec::new();
        for s in &self.segments {
            if pos >= read_end || s.start > pos {
                break;
            }
            if s.end() > pos {
                cover.push((s.start, s.len, s.data.clone()));
                pos = s.end();
            }
        }
        if offset < read_end && pos >= read_end {
            plan.serve_from = cover;
        } else if self.segments.back().is_none_or(|s| s.end() < read_end) {
            // Not covered and the segments do not reach past this read: start over from its end.
            self.segments.clear();
        }
        // Keep `window` bytes fetched ahead of the read, in segments of `min_window`; a read
        // that starts segments widens the window for the next one.
        let mut tail = self.segments.back().map_or(read_end, |s| s.end().max(read_end));
        let target = read_end.saturating_add(self.window).min(file_len);
        let cap = cfg.max_segments();
        while tail < target && self.segments.len() < cap {
            let len = cfg.min_window.min(file_len - tail);
            let Some(reservation) = budget.try_reserve(len) else {
                plan.denied += 1;
                break;
            };
            let data = Arc::new(OnceCell::new());
            plan.start.push((tail, len, data.clone()));
            self.segments.push_back(Segment { start: tail, len, data, _reservation: reservation });
            tail += len;
        }
        if !plan.start.is_empty() {
            self.window = (self.window * 2).min(cfg.max_window);
        }
        plan
    }
}

/// Fetches `[start, start + len)` into `cell` unless it is already there or being fetched.
async fn fill(cell: &OnceCell<Fetched>, fetch: &Fetch, start: u64, len: u64) -> Fetched {
    let fetch = fetch.clone();
    cell.get_or_init(|| async move {
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        match fetch(start, n).await {
            Ok(data) => Some(Arc::new(data)),
            Err(e) => {
                tracing::debug!(start, len, error = %e, "prefetch read failed; reading straight through");
                None
            }
        }
    })
    .await
    .clone()
}

/// A handle's stream, locked while a read plans.
type StreamRef = Arc<tokio::sync::Mutex<Stream>>;

/// The read-ahead of one mount: a [`Stream`] per handle and the shared [`Budget`].
pub struct Prefetcher {
    cfg: PrefetchConfig,
    budget: Arc<Budget>,
    /// fh -> (inode, stream).
    streams: Mutex<HashMap<u64, (u64, StreamRef)>>,
    /// Handles opened with O_DIRECT.
    direct: Mutex<HashSet<u64>>,
    /// Inodes with a stream: (streams, generation). The generation is bumped by writes and
    /// truncates through this mount; an inode leaves the map with its last stream, so the map
    /// holds only inodes being read through this mount.
    generations: Mutex<HashMap<u64, (usize, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Prefetcher {
    pub fn new(cfg: PrefetchConfig) -> Self {
        let cfg = cfg.normalized();
        Self {
            budget: Budget::new(cfg.memory_limit),
            cfg,
            streams: Mutex::default(),
            direct: Mutex::default(),
            generations: Mutex::default(),
        }
    }

    pub fn config(&self) -> &PrefetchConfig {
        &self.cfg
    }

    /// Bytes held in prefetched segments by every handle now.
    pub fn memory_used(&self) -> u64 {
        self.budget.used()
    }

    /// Records a handle opened with O_DIRECT: its reads bypass prefetch.
    pub fn set_direct(&self, fh: u64) {
        lock(&self.direct).insert(fh);
    }

    pub fn is_direct(&self, fh: u64) -> bool {
        lock(&self.direct).contains(&fh)
    }

    /// Forgets a handle (release): its segments and their memory go.
    pub fn release(&self, fh: u64) {
        lock(&self.direct).remove(&fh);
        let Some((ino, _)) = lock(&self.streams).remove(&fh) else { return };
        let mut gens = lock(&self.generations);
        if let Some(e) = gens.get_mut(&ino) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                gens.remove(&ino);
            }
        }
    }

    /// Data of `ino` changed through this mount (write, truncate): prefetched bytes of it are stale.
    pub fn invalidate(&self, ino: u64) {
        if let Some(e) = lock(&self.generations).get_mut(&ino) {
            e.1 += 1;
        }
    }

    fn generation(&self, ino: u64) -> u64 {
        lock(&self.generations).get(&ino).map_or(0, |e| e.1)
    }

    /// Inodes with read-ahead state now (for tests).
    pub fn tracked_inodes(&self) -> usize {
        lock(&self.generations).len()
    }

    /// The stream of handle `fh` (of inode `ino`), created at its first read.
    fn stream(&self, fh: u64, ino: u64) -> StreamRef {
        let mut streams = lock(&self.streams);
        if let Some((_, s)) = streams.get(&fh) {
            return s.clone();
        }
        let s = Arc::new(tokio::sync::Mutex::new(Stream::new(self.cfg.min_window)));
        streams.insert(fh, (ino, s.clone()));
        lock(&self.generations).entry(ino).or_insert((0, 0)).0 += 1;
        s
    }

    /// Reads `size` bytes at `offset` through handle `fh` of inode `ino` (a file of `file_len`
    /// bytes), from prefetched segments when the read is sequential and they hold it, else with
    /// `fetch` straight from storage.
    pub async fn read(
        &self,
        fh: u64,
        ino: u64,
        file_len: u64,
        offset: u64,
        size: u32,
        fetch: Fetch,
    ) -> Result<Vec<u8>> {
        let m = crate::metrics::metrics();
        if !self.cfg.enabled || self.is_direct(fh) || offset >= file_len {
            m.prefetch_bypass.inc();
            return fetch(offset, size).await;
        }
        let stream = self.stream(fh, ino);
        let generation = self.generation(ino);
        let plan = stream.lock().await.plan(&self.cfg, &self.budget, generation, offset, u64::from(size), file_len);
        if plan.denied > 0 {
            m.prefetch_denied.inc_by(u64::from(plan.denied));
        }
        for (start, len, cell) in &plan.start {
            m.prefetch_bytes.inc_by(*len);
            let (fetch, start, len, cell) = (fetch.clone(), *start, *len, cell.clone());
            tokio::spawn(async move {
                fill(&cell, &fetch, start, len).await;
            });
        }
        if !plan.sequential {
            m.prefetch_bypass.inc();
            return fetch(offset, size).await;
        }
        if plan.hit() {
            let read_end = offset.saturating_add(u64::from(size)).min(file_len);
            let mut out = Vec::with_capacity((read_end - offset) as usize);
            let mut pos = offset;
            for (start, len, cell) in &plan.serve_from {
                // Usually ready; else its fetch is in flight (or not started yet: then this runs it).
                let Some(data) = fill(cell, &fetch, *start, *len).await else { break };
                let data_end = start + data.len() as u64;
                if pos < *start || pos >= data_end {
                    break; // a segment came back short (the file shrank meanwhile)
                }
                let to = read_end.min(data_end);
                out.extend_from_slice(&data[(pos - start) as usize..(to - start) as usize]);
                pos = to;
                if pos >= read_end {
                    break;
                }
            }
            if pos >= read_end {
                m.prefetch_hits.inc();
                return Ok(out);
            }
        }
        m.prefetch_misses.inc();
        fetch(offset, size).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    fn cfg(memory_limit: u64) -> PrefetchConfig {
        PrefetchConfig { enabled: true, min_window: MIB, max_window: 8 * MIB, memory_limit }
    }

    #[test]
    fn budget_reserves_up_to_its_limit_and_gives_back_on_drop() {
        let b = Budget::new(10);
        let a = b.try_reserve(6).unwrap();
        assert!(b.try_reserve(5).is_none());
        let c = b.try_reserve(4).unwrap();
        assert_eq!(b.used(), 10);
        assert!(b.try_reserve(1).is_none());
        drop(a);
        assert_eq!(b.used(), 4);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.try_reserve(11).is_none() && b.try_reserve(u64::MAX).is_none());
    }

    #[test]
    fn config_is_clamped() {
        let c = PrefetchConfig { enabled: true, min_window: 0, max_window: 1 << 40, memory_limit: 0 }.normalized();
        assert_eq!((c.min_window, c.max_window), (4096, 1 << 30));
        let c = PrefetchConfig { enabled: true, min_window: 32 * MIB, max_window: MIB, memory_limit: 0 }.normalized();
        assert_eq!((c.min_window, c.max_window, c.max_segments()), (MIB, MIB, 2));
        let c = PrefetchConfig { enabled: true, min_window: MIB, max_window: 16 * MIB, memory_limit: 0 };
        assert_eq!(c.max_segments(), 17);
    }

    #[test]
    fn sequential_reads_grow_the_window_up_to_its_maximum() {
        let (cfg, budget) = (cfg(1 << 40), Budget::new(1 << 40));
        let mut s = Stream::new(cfg.min_window);
        let file = 1 << 30;
        // First read at 0: sequential, not served yet, one window (one segment) started ahead.
        let p = s.plan(&cfg, &budget, 0, 0, 128 * KIB, file);
        assert!(p.sequential && !p.hit());
        let starts: Vec<(u64, u64)> = p.start.iter().map(|(o, l, _)| (*o, *l)).collect();
        assert_eq!(starts, vec![(128 * KIB, MIB)], "one window ahead of the read");
        assert_eq!(s.window(), 2 * MIB);
        // Reading on: served from segments; the window doubles up to 8 MiB, always in 1 MiB segments.
        let mut off = 128 * KIB;
        let mut windows = vec![s.window()];
        while off < 256 * MIB {
            let p = s.plan(&cfg, &budget, 0, off, 128 * KIB, file);
            assert!(p.sequential && p.hit(), "read at {off} not served from prefetched data");
            assert!(p.start.iter().all(|(_, l, _)| *l == MIB));
            if windows.last() != Some(&s.window()) {
                windows.push(s.window());
            }
            // Fetched ahead: at least what was asked, at most the window plus one segment.
            let ahead = s.segments.back().unwrap().end() - (off + 128 * KIB);
            assert!(ahead <= s.window() + MIB, "{ahead} ahead at {off}");
            assert!(s.segments.len() <= cfg.max_segments());
            off += 128 * KIB;
        }
        assert_eq!(windows, vec![2 * MIB, 4 * MIB, 8 * MIB]);
        assert!(s.held() >= 7 * MIB && s.held() <= 9 * MIB, "{}", s.held());
        assert_eq!(budget.used(), s.held());
    }

    #[test]
    fn random_reads_go_straight_through_and_reset_the_window() {
        let (cfg, budget) = (cfg(1 << 40), Budget::new(1 << 40));
        let mut s = Stream::new(cfg.min_window);
        let file = 1 << 30;
        for i in 0..20 {
            s.plan(&cfg, &budget, 0, i * 128 * KIB, 128 * KIB, file);
        }
        assert!(s.window() > cfg.min_window && budget.used() > 0);
        let p = s.plan(&cfg, &budget, 0, 700 * MIB, 4 * KIB, file);
        assert!(!p.sequential && !p.hit() && p.start.is_empty());
        assert_eq!((s.window(), s.held(), budget.used()), (cfg.min_window, 0, 0));
        // More random 4 KiB reads: never a segment.
        for off in [3 * MIB, 500 * MIB, 17 * MIB, 900 * MIB] {
            let p = s.plan(&cfg, &budget, 0, off, 4 * KIB, file);
            assert!(!p.sequential && p.start.is_empty(), "{off}");
        }
        // Continuing right after the last one is sequential again.
        let p = s.plan(&cfg, &budget, 0, 900 * MIB + 4 * KIB, 4 * KIB, file);
        assert!(p.sequential && !p.start.is_empty());
        // Small jumps within the tolerance (out-of-order kernel read-ahead) stay sequential.
        let p = s.plan(&cfg, &budget, 0, 900 * MIB + 8 * KIB + 64 * KIB, 4 * KIB, file);
        assert!(p.sequential);
    }

    #[test]
    fn nothing_is_fetched_past_the_end_of_the_file() {
        let (cfg, budget) = (cfg(1 << 40), Budget::new(1 << 40));
        let mut s = Stream::new(cfg.min_window);
        let p = s.plan(&cfg, &budget, 0, 0, 128 * KIB, 300 * KIB);
        let starts: Vec<(u64, u64)> = p.start.iter().map(|(o, l, _)| (*o, *l)).collect();
        assert_eq!(starts, vec![(128 * KIB, 172 * KIB)]);
        let p = s.plan(&cfg, &budget, 0, 128 * KIB, 128 * KIB, 300 * KIB);
        assert!(p.hit() && p.start.is_empty());
        // A small file read whole in one go: nothing to prefetch.
        let mut s = Stream::new(cfg.min_window);
        assert!(s.plan(&cfg, &budget, 0, 0, 128 * KIB, 100 * KIB).start.is_empty());
    }

    #[test]
    fn thousands_of_streams_stay_within_the_memory_limit() {
        let limit = 64 * MIB;
        let (cfg, budget) = (cfg(limit), Budget::new(limit));
        let mut streams: Vec<Stream> = (0..5000).map(|_| Stream::new(cfg.min_window)).collect();
        let mut denied = 0;
        for round in 0..8u64 {
            for s in &mut streams {
                let p = s.plan(&cfg, &budget, 0, round * 128 * KIB, 128 * KIB, 1 << 30);
                assert!(p.sequential);
                denied += p.denied;
                assert!(budget.used() <= limit);
            }
        }
        assert!(denied > 0, "the budget must have refused segments");
        assert_eq!(budget.used(), streams.iter().map(Stream::held).sum::<u64>());
        streams.clear();
        assert_eq!(budget.used(), 0, "dropped streams give their memory back");
    }

    #[test]
    fn a_new_generation_drops_segments() {
        let (cfg, budget) = (cfg(1 << 40), Budget::new(1 << 40));
        let mut s = Stream::new(cfg.min_window);
        s.plan(&cfg, &budget, 0, 0, 128 * KIB, 1 << 30);
        assert!(s.plan(&cfg, &budget, 0, 128 * KIB, 128 * KIB, 1 << 30).hit());
        // Written meanwhile: the next read is not served from the old segments.
        let p = s.plan(&cfg, &budget, 1, 256 * KIB, 128 * KIB, 1 << 30);
        assert!(p.sequential && !p.hit());
        assert!(p.start.iter().all(|(o, _, _)| *o >= 384 * KIB));
    }

    /// An in-memory file and a fetch that counts its calls.
    fn fake_file(data: Arc<Mutex<Vec<u8>>>, calls: Arc<AtomicUsize>) -> Fetch {
        Arc::new(move |off, n| {
            let (data, calls) = (data.clone(), calls.clone());
            Box::pin(async move {
                calls.fetch_add(1, Ordering::Relaxed);
                let d = lock(&data);
                let start = (off as usize).min(d.len());
                let end = (start + n as usize).min(d.len());
                Ok(d[start..end].to_vec())
            })
        })
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_return_the_right_bytes_with_far_fewer_fetches() {
        let len = 20 * MIB as usize + 12345;
        let data = Arc::new(Mutex::new(pattern(len)));
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Prefetcher::new(cfg(256 * MIB));
        let fetch = fake_file(data.clone(), calls.clone());
        let (mut off, mut reads) = (0u64, 0);
        while off < len as u64 {
            let got = p.read(1, 7, len as u64, off, 128 * KIB as u32, fetch.clone()).await.unwrap();
            let end = (off as usize + 128 * KIB as usize).min(len);
            assert_eq!(got, lock(&data)[off as usize..end], "at {off}");
            off += got.len() as u64;
            reads += 1;
        }
        let fetches = calls.load(Ordering::Relaxed);
        assert!(fetches * 5 < reads, "{fetches} fetches for {reads} reads");
        // Past the end: empty, straight through.
        assert!(p.read(1, 7, len as u64, len as u64, 4096, fetch.clone()).await.unwrap().is_empty());

        // A write through this mount (invalidate) is seen by the next read of a prefetching handle.
        let p = Prefetcher::new(cfg(256 * MIB));
        p.read(2, 7, len as u64, 0, 128 * KIB as u32, fetch.clone()).await.unwrap();
        p.read(2, 7, len as u64, 128 * KIB, 128 * KIB as u32, fetch.clone()).await.unwrap();
        tokio::task::yield_now().await;
        lock(&data)[300 * KIB as usize..310 * KIB as usize].fill(0xEE);
        p.invalidate(7);
        let got = p.read(2, 7, len as u64, 256 * KIB, 128 * KIB as u32, fetch.clone()).await.unwrap();
        assert_eq!(got, lock(&data)[256 * KIB as usize..384 * KIB as usize]);
        p.release(2);
        assert_eq!(p.memory_used(), 0, "released handles hold nothing");
        assert_eq!(p.tracked_inodes(), 0, "no per-inode state outlives its handles");
        p.invalidate(7); // nothing open: nothing to do, nothing kept
        assert_eq!(p.tracked_inodes(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_and_random_reads_fetch_exactly_what_is_asked() {
        let len = 8 * MIB as usize;
        let data = Arc::new(Mutex::new(pattern(len)));
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Prefetcher::new(cfg(256 * MIB));
        let fetch = fake_file(data.clone(), calls.clone());
        p.set_direct(5);
        for i in 0..16u64 {
            let got = p.read(5, 9, len as u64, i * 64 * KIB, 64 * KIB as u32, fetch.clone()).await.unwrap();
            assert_eq!(got, lock(&data)[(i * 64 * KIB) as usize..((i + 1) * 64 * KIB) as usize]);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 16, "O_DIRECT: one fetch per read, nothing ahead");
        assert_eq!(p.memory_used(), 0);
        p.release(5);
        assert!(!p.is_direct(5));
        // Random 4 KiB reads on a normal handle: one fetch each (the first, at 0, may start one
        // segment ahead since it looks sequential).
        calls.store(0, Ordering::Relaxed);
        let offsets = [5 * MIB, MIB + 4096, 7 * MIB, 3 * MIB + 12_288, 6 * MIB, 2 * MIB];
        for &off in &offsets {
            let got = p.read(6, 9, len as u64, off, 4096, fetch.clone()).await.unwrap();
            assert_eq!(got, lock(&data)[off as usize..off as usize + 4096]);
        }
        assert_eq!(calls.load(Ordering::Relaxed), offsets.len());
        assert_eq!(p.memory_used(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_open_handles_share_the_budget() {
        let len = 4 * MIB as usize;
        let data = Arc::new(Mutex::new(pattern(len)));
        let calls = Arc::new(AtomicUsize::new(0));
        let limit = 16 * MIB;
        let p = Arc::new(Prefetcher::new(cfg(limit)));
        let fetch = fake_file(data.clone(), calls.clone());
        let mut tasks = Vec::new();
        for fh in 0..2000u64 {
            let (p, fetch, data) = (p.clone(), fetch.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..3u64 {
                    let off = i * 128 * KIB;
                    let got = p.read(fh, 11, len as u64, off, 128 * KIB as u32, fetch.clone()).await.unwrap();
                    assert_eq!(got, lock(&data)[off as usize..(off + 128 * KIB) as usize]);
                    assert!(p.memory_used() <= limit);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(p.memory_used() <= limit);
        for fh in 0..2000 {
            p.release(fh);
        }
        assert_eq!(p.memory_used(), 0);
        assert_eq!(p.tracked_inodes(), 0);
    }
}
