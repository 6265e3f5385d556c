//! The FUSE daemon's Prometheus metrics: every name is defined here (a public interface for
//! dashboards, see docs/metrics.md; do not rename).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `t3fs_fuse_ops_total` | counter | `op` | FUSE requests served, by operation (`lookup`, `read`, ...) |
//! | `t3fs_fuse_op_errors_total` | counter | `op`, `code` | requests answered with an error, by operation and t3fs status code |
//! | `t3fs_fuse_op_duration_seconds` | histogram | `op` | time from dispatch to reply |
//! | `t3fs_fuse_read_bytes_total` | counter | | bytes returned by `read` |
//! | `t3fs_fuse_written_bytes_total` | counter | | bytes accepted by `write` (buffered or sent) |
//! | `t3fs_fuse_prefetch_hits_total` | counter | | sequential reads served from prefetched data |
//! | `t3fs_fuse_prefetch_misses_total` | counter | | sequential reads that had to go to storage |
//! | `t3fs_fuse_prefetch_bypass_total` | counter | | reads sent straight to storage: random, O_DIRECT, past EOF or prefetch off |
//! | `t3fs_fuse_prefetch_fetched_bytes_total` | counter | | bytes fetched ahead |
//! | `t3fs_fuse_prefetch_denied_total` | counter | | prefetch segments not started because the memory budget was spent |
//! | `t3fs_fuse_prefetch_memory_bytes` | gauge | | bytes held in prefetched segments now (at most `prefetch_memory_bytes`) |
//! | `t3fs_fuse_write_buffer_memory_bytes` | gauge | | bytes held in handles' write buffers now (past `write_buffer_memory_bytes`, writes go straight out) |
//! | `t3fs_fuse_periodic_flushes_total` | counter | | handles written out and their length reported by the periodic flush (`flush_interval_ms`) |
//! | `t3fs_fuse_lock_conflicts_total` | counter | | lock requests (`getlk`, `setlk`) that met another owner's lock; a blocking `setlk` counts each try it waited; requests themselves count in `t3fs_fuse_ops_total{op="getlk"/"setlk"}` |
//!
//! The handles are process-wide ([`metrics`]): a mount daemon serves one mount, and the FUSE op
//! code reaches them without threading a handle through every reply path. [`register`] adds them
//! to a registry served on `metrics_listen`.
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use t3fs_common::metrics::{Code, Registry, latency_histogram};

/// Labels of the per-op counters and histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

/// Labels of `t3fs_fuse_op_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpCode {
    pub op: &'static str,
    pub code: Code,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The FUSE daemon's metric handles (updates are atomic).
#[derive(Debug)]
pub struct FuseMetrics {
    pub ops: Family<Op, Counter>,
    pub errors: Family<OpCode, Counter>,
    pub op_duration: HistogramFamily<Op>,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub prefetch_hits: Counter,
    pub prefetch_misses: Counter,
    pub prefetch_bypass: Counter,
    pub prefetch_bytes: Counter,
    pub prefetch_denied: Counter,
    pub prefetch_memory: Gauge,
    pub write_buffer_memory: Gauge,
    pub periodic_flushes: Counter,
    pub lock_conflicts: Counter,
}

/// The process-wide handles.
pub fn metrics() -> &'static FuseMetrics {
    static M: OnceLock<FuseMetrics> = OnceLock::new();
    M.get_or_init(|| FuseMetrics {
        ops: Family::default(),
        errors: Family::default(),
        op_duration: Family::new_with_constructor(latency_histogram),
        read_bytes: Counter::default(),
        written_bytes: Counter::default(),
        prefetch_hits: Counter::default(),
        prefetch_misses: Counter::default(),
        prefetch_bypass: Counter::default(),
        prefetch_bytes: Counter::default(),
        prefetch_denied: Counter::default(),
        prefetch_memory: Gauge::default(),
        write_buffer_memory: Gauge::default(),
        periodic_flushes: Counter::default(),
        lock_conflicts: Counter::default(),
    })
}

/// Registers the process-wide handles in `registry` (clones share the same counters).
pub fn register(registry: &mut Registry) {
    let m = metrics();
    registry.register("t3fs_fuse_ops", "FUSE requests served, by operation", m.ops.clone());
    registry.register(
        "t3fs_fuse_op_errors",
        "FUSE requests answered with an error, by operation and status code",
        m.errors.clone(),
    );
    registry.register("t3fs_fuse_op_duration_seconds", "FUSE request latency, by operation", m.op_duration.clone());
    registry.register("t3fs_fuse_read_bytes", "Bytes returned by FUSE reads", m.read_bytes.clone());
    registry.register("t3fs_fuse_written_bytes", "Bytes accepted by FUSE writes", m.written_bytes.clone());
    registry.register(
        "t3fs_fuse_prefetch_hits",
        "Sequential reads served from prefetched data",
        m.prefetch_hits.clone(),
    );
    registry.register(
        "t3fs_fuse_prefetch_misses",
        "Sequential reads that had to go to storage",
        m.prefetch_misses.clone(),
    );
    registry.register(
        "t3fs_fuse_prefetch_bypass",
        "Reads sent straight to storage (random, O_DIRECT, past EOF, prefetch off)",
        m.prefetch_bypass.clone(),
    );
    registry.register("t3fs_fuse_prefetch_fetched_bytes", "Bytes fetched ahead", m.prefetch_bytes.clone());
    registry.register(
        "t3fs_fuse_prefetch_denied",
        "Prefetch segments not started because the memory budget was spent",
        m.prefetch_denied.clone(),
    );
    registry.register(
        "t3fs_fuse_prefetch_memory_bytes",
        "Bytes held in prefetched segments",
        m.prefetch_memory.clone(),
    );
    registry.register(
        "t3fs_fuse_write_buffer_memory_bytes",
        "Bytes held in write buffers",
        m.write_buffer_memory.clone(),
    );
    registry.register(
        "t3fs_fuse_periodic_flushes",
        "Handles written out and their length reported by the periodic flush",
        m.periodic_flushes.clone(),
    );
    registry.register(
        "t3fs_fuse_lock_conflicts",
        "Lock requests that met a conflicting lock of another owner (blocking ones: every try)",
        m.lock_conflicts.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_renders() {
        let reg = t3fs_common::metrics::new_registry();
        register(&mut reg.lock().expect("registry lock"));
        metrics().ops.get_or_create(&Op { op: "lookup" }).inc();
        metrics().errors.get_or_create(&OpCode { op: "lookup", code: Code(t3fs_common::StatusCode::NotFound) }).inc();
        metrics().op_duration.get_or_create(&Op { op: "lookup" }).observe(0.001);
        metrics().read_bytes.inc_by(3);
        let body = t3fs_common::metrics::render(&reg);
        for name in [
            "t3fs_fuse_ops_total",
            "t3fs_fuse_op_errors_total",
            "t3fs_fuse_op_duration_seconds",
            "t3fs_fuse_read_bytes_total",
            "t3fs_fuse_written_bytes_total",
            "t3fs_fuse_prefetch_hits_total",
            "t3fs_fuse_prefetch_misses_total",
            "t3fs_fuse_prefetch_bypass_total",
            "t3fs_fuse_prefetch_fetched_bytes_total",
            "t3fs_fuse_prefetch_denied_total",
            "t3fs_fuse_prefetch_memory_bytes",
            "t3fs_fuse_lock_conflicts_total",
        ] {
            assert!(body.contains(name), "{name} missing:\n{body}");
        }
        assert!(t3fs_common::metrics::sample(&body, "t3fs_fuse_ops_total{op=\"lookup\"}").is_some_and(|v| v >= 1.0));
    }
}
