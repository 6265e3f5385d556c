//! The meta server's Prometheus metrics: every name is defined here (a public interface for
//! dashboards, see docs/metrics.md; do not rename).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `t3fs_meta_ops_total` | counter | `op`, `code` | gRPC operations answered, by operation (`mkdir`, `lookup`, ...) and outcome status code (`Ok`, `NotFound`, ...) |
//! | `t3fs_meta_op_duration_seconds` | histogram | `op` | time from the handler's start to its answer |
//! | `t3fs_meta_lock_conflicts_total` | counter | | lock requests (F_GETLK, F_SETLK) that found a conflicting lock of another owner; lock requests themselves count in `t3fs_meta_ops_total{op="lock"}` |
//! | `t3fs_meta_kv_transactions_total` | counter | | KV transaction attempts begun (a retried transaction counts once per attempt) |
//! | `t3fs_meta_kv_conflicts_total` | counter | | KV transaction attempts that failed with a retryable error (conflict, too old); the retry loop starts them over unless its attempts are used up |
//! | `t3fs_meta_gc_files_collected_total` | counter | | unlinked files this server's GC collected (chunks removed, inode deleted); with several meta servers each collects the files it owns (`gc.rs`) |
//! | `t3fs_meta_gc_chunk_removals_total` | counter | | chunk REMOVE updates GC sent to storage for the files it collected (chunks with data or a pending update; tombstones are only purged) |
//! | `t3fs_meta_dir_batch_ops` | histogram | | operations (create, mkdir, remove) per per-directory batch transaction (`namespace/dir_batch.rs`); 1 when a directory is idle |
//!
//! Requests refused before the handler runs (a bad cluster token) are not counted in the op
//! metrics. KV attempts are counted by a [`KvEngine`] decorator ([`MetaMetrics::wrap_kv`]) around
//! the store the namespace uses, so every `t3fs_kv::run` call site is covered without hooks in it.
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use t3fs_common::StatusCode;
use t3fs_common::metrics::{Registry, latency_histogram};
use t3fs_kv::{Db, KeyValue, KvEngine, RangeOpts, Transaction};

pub use t3fs_common::metrics::Code;

/// Labels of `t3fs_meta_ops_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpCode {
    pub op: &'static str,
    pub code: Code,
}

/// Labels of `t3fs_meta_op_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The meta server's metric handles (cheap to share; updates are atomic).
#[derive(Debug)]
pub struct MetaMetrics {
    ops: Family<OpCode, Counter>,
    op_duration: HistogramFamily<Op>,
    kv_transactions: Counter,
    kv_conflicts: Counter,
    lock_conflicts: Counter,
    dir_batch_ops: Histogram,
    gc_collected: Counter,
    gc_chunk_removals: Counter,
}

impl Default for MetaMetrics {
    /// Handles registered nowhere (for services built without an endpoint, e.g. in tests).
    fn default() -> Self {
        Self {
            ops: Family::default(),
            op_duration: Family::new_with_constructor(latency_histogram),
            kv_transactions: Counter::default(),
            kv_conflicts: Counter::default(),
            lock_conflicts: Counter::default(),
            dir_batch_ops: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 8)),
            gc_collected: Counter::default(),
            gc_chunk_removals: Counter::default(),
        }
    }
}

impl MetaMetrics {
    /// Creates the handles and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("t3fs_meta_ops", "Meta operations answered, by operation and status code", m.ops.clone());
        registry.register(
            "t3fs_meta_op_duration_seconds",
            "Meta operation latency, by operation",
            m.op_duration.clone(),
        );
        registry.register(
            "t3fs_meta_kv_transactions",
            "KV transaction attempts begun (retries count again)",
            m.kv_transactions.clone(),
        );
        registry.register(
            "t3fs_meta_kv_conflicts",
            "KV transaction attempts that failed with a retryable error (conflict, too old)",
            m.kv_conflicts.clone(),
        );
        registry.register(
            "t3fs_meta_dir_batch_ops",
            "Operations per per-directory batch transaction",
            m.dir_batch_ops.clone(),
        );
        registry.register(
            "t3fs_meta_gc_files_collected",
            "Unlinked files this server's GC collected",
            m.gc_collected.clone(),
        );
        registry.register(
            "t3fs_meta_gc_chunk_removals",
            "Chunk REMOVE updates GC sent to storage",
            m.gc_chunk_removals.clone(),
        );
        registry.register(
            "t3fs_meta_lock_conflicts",
            "Lock requests that found a conflicting lock of another owner",
            m.lock_conflicts.clone(),
        );
        m
    }

    /// Records one per-directory batch of `ops` operations.
    pub fn dir_batch(&self, ops: usize) {
        self.dir_batch_ops.observe(ops as f64);
    }

    /// KV transaction attempts begun and attempts that failed retryably, so far.
    pub fn kv_counts(&self) -> (u64, u64) {
        (self.kv_transactions.get(), self.kv_conflicts.get())
    }

    /// Counts one file collected by GC.
    pub fn gc_collected(&self) {
        self.gc_collected.inc();
    }

    /// Files this server's GC collected so far.
    pub fn gc_collected_count(&self) -> u64 {
        self.gc_collected.get()
    }

    /// Counts `n` chunk removals GC sent.
    pub fn gc_chunk_removals(&self, n: u64) {
        self.gc_chunk_removals.inc_by(n);
    }

    /// Chunk removals this server's GC sent so far.
    pub fn gc_chunk_removals_count(&self) -> u64 {
        self.gc_chunk_removals.get()
    }

    /// Operations `op` answered with `Ok` so far.
    pub fn ok_ops(&self, op: &'static str) -> u64 {
        self.ops.get_or_create(&OpCode { op, code: Code(StatusCode::Ok) }).get()
    }

    /// Counts one lock request that met a conflicting lock.
    pub fn lock_conflict(&self) {
        self.lock_conflicts.inc();
    }

    /// Records one answered operation that started at `started`.
    pub fn observe(&self, op: &'static str, started: Instant, code: StatusCode) {
        self.ops.get_or_create(&OpCode { op, code: Code(code) }).inc();
        self.op_duration.get_or_create(&Op { op }).observe(started.elapsed().as_secs_f64());
    }

    /// `db` with every transaction attempt and retryable failure counted.
    pub fn wrap_kv(self: &Arc<Self>, db: Db) -> Db {
        Arc::new(CountingKv { inner: db, metrics: self.clone() })
    }
}

/// A [`KvEngine`] that counts transactions and their retryable failures (module doc).
struct CountingKv {
    inner: Db,
    metrics: Arc<MetaMetrics>,
}

struct CountingTxn {
    inner: Box<dyn Transaction>,
    metrics: Arc<MetaMetrics>,
    /// A retryable failure was counted already (one per attempt).
    counted: bool,
}

impl CountingTxn {
    fn note<T>(&mut self, r: t3fs_kv::Result<T>) -> t3fs_kv::Result<T> {
        if let Err(e) = &r
            && e.is_retryable()
            && !self.counted
        {
            self.counted = true;
            self.metrics.kv_conflicts.inc();
        }
        r
    }
}

#[async_trait::async_trait]
impl KvEngine for CountingKv {
    async fn begin(&self) -> t3fs_kv::Result<Box<dyn Transaction>> {
        let inner = self.inner.begin().await?;
        self.metrics.kv_transactions.inc();
        Ok(Box::new(CountingTxn { inner, metrics: self.metrics.clone(), counted: false }))
    }

    fn space(&self) -> Option<(u64, u64)> {
        self.inner.space()
    }
}

#[async_trait::async_trait]
impl Transaction for CountingTxn {
    async fn get(&mut self, key: &[u8], snapshot: bool) -> t3fs_kv::Result<Option<Vec<u8>>> {
        let r = self.inner.get(key, snapshot).await;
        self.note(r)
    }
    async fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOpts) -> t3fs_kv::Result<Vec<KeyValue>> {
        let r = self.inner.get_range(begin, end, opts).await;
        self.note(r)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.inner.set(key, value)
    }
    fn clear(&mut self, key: &[u8]) {
        self.inner.clear(key)
    }
    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.inner.clear_range(begin, end)
    }
    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.inner.add_read_conflict_range(begin, end)
    }
    fn add_write_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.inner.add_write_conflict_range(begin, end)
    }
    fn read_version(&self) -> u64 {
        self.inner.read_version()
    }
    async fn commit(self: Box<Self>) -> t3fs_kv::Result<()> {
        let CountingTxn { inner, metrics, counted } = *self;
        let r = inner.commit().await;
        if let Err(e) = &r
            && e.is_retryable()
            && !counted
        {
            metrics.kv_conflicts.inc();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conflicting_commits_are_counted() {
        let m = Arc::new(MetaMetrics::default());
        let db = m.wrap_kv(t3fs_kv::mem::MemKv::new());
        let mut a = db.begin().await.unwrap();
        let mut b = db.begin().await.unwrap();
        assert_eq!(a.get(b"k", false).await.unwrap(), None);
        a.set(b"k", b"a");
        b.set(b"k", b"b");
        b.commit().await.unwrap();
        let err = a.commit().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(m.kv_transactions.get(), 2);
        assert_eq!(m.kv_conflicts.get(), 1);
        // The retry loop: one more attempt, which succeeds.
        let mut first = true;
        t3fs_kv::run(&*db, |txn| {
            let conflict = std::mem::take(&mut first);
            Box::pin(async move {
                txn.set(b"k", b"c");
                if conflict { Err(t3fs_kv::KvError::Conflict) } else { Ok(()) }
            })
        })
        .await
        .unwrap();
        assert_eq!(m.kv_transactions.get(), 4);
        // The closure's own retryable error is not the store's: only the store's errors count.
        assert_eq!(m.kv_conflicts.get(), 1);
    }

    #[test]
    fn ops_render_with_code_names() {
        let mut reg = Registry::default();
        let m = MetaMetrics::register(&mut reg);
        m.observe("mkdir", Instant::now(), StatusCode::Ok);
        m.observe("mkdir", Instant::now(), StatusCode::AlreadyExists);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("t3fs_meta_ops_total{op=\"mkdir\",code=\"Ok\"} 1"), "{out}");
        assert!(out.contains("t3fs_meta_ops_total{op=\"mkdir\",code=\"AlreadyExists\"} 1"), "{out}");
        assert!(out.contains("t3fs_meta_op_duration_seconds_count{op=\"mkdir\"} 2"), "{out}");
    }
}
