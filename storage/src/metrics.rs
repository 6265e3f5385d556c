//! The storage daemon's Prometheus metrics: every name is defined here (a public interface for
//! dashboards, see docs/metrics.md; do not rename).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `t3fs_storage_read_ops_total` | counter | `target` | chunk reads served successfully by a local target |
//! | `t3fs_storage_read_bytes_total` | counter | `target` | payload bytes those reads returned |
//! | `t3fs_storage_update_ops_total` | counter | `target` | chunk updates (client writes, forwarded and sync updates) applied successfully |
//! | `t3fs_storage_update_bytes_total` | counter | `target` | payload bytes those updates carried |
//! | `t3fs_storage_op_errors_total` | counter | `op`, `code` | bulk requests answered with an error, by `op` (`read`, `update`, `none`) and status code |
//! | `t3fs_storage_op_duration_seconds` | histogram | `op` | bulk request latency (`read`, `update`; an update includes forwarding down the chain) |
//! | `t3fs_storage_checksum_errors_total` | counter | `target` | requests failed with ChecksumMismatch: stored data not matching its CRC on a read, or a payload not matching its CRC on an update |
//! | `t3fs_storage_forwarded_updates_total` | counter | | updates forwarded to a chain successor and acknowledged |
//! | `t3fs_storage_forward_failures_total` | counter | | updates whose forwarding to the successor failed (the update fails) |
//! | `t3fs_storage_purged_tombstones_total` | counter | | tombstones of deleted files' chunks dropped by PURGE (`service/purge.rs`) |
//! | `t3fs_storage_trimmed_bytes_total` | counter | | bytes of free chunk slots given back to the file system (holes punched by the engine's trim) |
//! | `t3fs_storage_resync_chunks_total` | counter | | chunk states sent to a SYNCING successor by resync (replacements, removals, forgets) |
//! | `t3fs_storage_resync_bytes_total` | counter | | chunk bytes resync sent |
//! | `t3fs_storage_syncs_completed_total` | counter | | resyncs that finished (SyncDone sent) |
//! | `t3fs_storage_syncs_failed_total` | counter | | resyncs that failed (retried later) |
//! | `t3fs_storage_resync_remaining_chunks` | gauge | | chunks the running resyncs still have to transfer (`t3fs admin list-syncs` shows each sync) |
//! | `t3fs_storage_fenced` | gauge | | 1 while the node is fenced (no mgmtd heartbeat answer for `fence_after_ms`), else 0; computed at scrape |
//! | `t3fs_storage_used_bytes` | gauge | `target` | bytes in the target's live chunks; computed at scrape |
//! | `t3fs_storage_free_bytes` | gauge | `target` | free bytes client writes may still use on the file system holding the target's chunk data (its free space less the reserve, `engine/space.rs`; 0: writes get NoSpace); computed at scrape |
//! | `t3fs_storage_capacity_bytes` | gauge | `target` | size of the file system holding the target's chunk data; computed at scrape |
//! | `t3fs_storage_target_failed` | gauge | `target` | 1 once the target's chunk metadata store has failed (poisoned by an I/O error, e.g. a full disk; the target reports OFFLINE until the process restarts), else 0 |
//!
//! Per-target series exist only for the targets this node serves (requests naming other targets are
//! counted in `t3fs_storage_op_errors_total` only), so a client cannot grow the label set.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use t3fs_common::metrics::{Registry, latency_histogram};
use t3fs_common::{StatusCode, TargetId};

use crate::chunk_store::ChunkStore;
use crate::local_state::Fence;

pub use t3fs_common::metrics::Code;

/// Labels of the per-target series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Target {
    pub target: u64,
}

/// Labels of `t3fs_storage_op_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

/// Labels of `t3fs_storage_op_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpCode {
    pub op: &'static str,
    pub code: Code,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The storage daemon's metric handles (cheap to share; updates are atomic).
#[derive(Debug)]
pub struct StorageMetrics {
    pub read_ops: Family<Target, Counter>,
    pub read_bytes: Family<Target, Counter>,
    pub update_ops: Family<Target, Counter>,
    pub update_bytes: Family<Target, Counter>,
    pub op_errors: Family<OpCode, Counter>,
    pub op_duration: HistogramFamily<Op>,
    pub checksum_errors: Family<Target, Counter>,
    pub forwarded_updates: Counter,
    pub forward_failures: Counter,
    pub resync_chunks: Counter,
    pub resync_bytes: Counter,
    pub syncs_completed: Counter,
    pub syncs_failed: Counter,
    pub resync_remaining_chunks: Gauge,
    /// Damaged replicas rewritten from a good one (`t3fs admin fsck --repair`).
    pub repairs: Counter,
    /// Client updates answered from an update channel's record (retries of applied updates).
    pub replayed_updates: Counter,
    /// Tombstones dropped by PURGE.
    pub purged_tombstones: Counter,
    /// Bytes of free slots punched out by the engines' trim.
    pub trimmed_bytes: Counter,
    /// Bytes the background scrub read and found healthy.
    pub scrubbed_bytes: Counter,
    /// Damaged chunk replicas the background scrub found.
    pub scrub_damaged: Counter,
}

impl Default for StorageMetrics {
    /// Handles registered nowhere.
    fn default() -> Self {
        Self {
            read_ops: Family::default(),
            read_bytes: Family::default(),
            update_ops: Family::default(),
            update_bytes: Family::default(),
            op_errors: Family::default(),
            op_duration: Family::new_with_constructor(latency_histogram),
            checksum_errors: Family::default(),
            forwarded_updates: Counter::default(),
            forward_failures: Counter::default(),
            resync_chunks: Counter::default(),
            resync_bytes: Counter::default(),
            syncs_completed: Counter::default(),
            syncs_failed: Counter::default(),
            resync_remaining_chunks: Gauge::default(),
            repairs: Counter::default(),
            replayed_updates: Counter::default(),
            purged_tombstones: Counter::default(),
            trimmed_bytes: Counter::default(),
            scrubbed_bytes: Counter::default(),
            scrub_damaged: Counter::default(),
        }
    }
}

/// What one bulk request did, for [`StorageMetrics::observe`].
pub struct Outcome {
    pub op: &'static str,
    pub target: u64,
    pub code: StatusCode,
    /// Payload bytes read or written (when it succeeded).
    pub bytes: u64,
}

impl StorageMetrics {
    /// Creates the handles and registers them in `registry`, with the scrape-time gauges over
    /// `stores` and `fence`.
    pub fn register(registry: &mut Registry, stores: Arc<HashMap<TargetId, ChunkStore>>, fence: Arc<Fence>) -> Self {
        let m = Self::default();
        let r = registry;
        r.register("t3fs_storage_read_ops", "Chunk reads served, by target", m.read_ops.clone());
        r.register("t3fs_storage_read_bytes", "Bytes returned by chunk reads, by target", m.read_bytes.clone());
        r.register("t3fs_storage_update_ops", "Chunk updates applied, by target", m.update_ops.clone());
        r.register("t3fs_storage_update_bytes", "Payload bytes of applied updates, by target", m.update_bytes.clone());
        r.register("t3fs_storage_op_errors", "Bulk requests failed, by op and status code", m.op_errors.clone());
        r.register("t3fs_storage_op_duration_seconds", "Bulk request latency, by op", m.op_duration.clone());
        r.register("t3fs_storage_checksum_errors", "ChecksumMismatch failures, by target", m.checksum_errors.clone());
        r.register("t3fs_storage_forwarded_updates", "Updates forwarded to a successor", m.forwarded_updates.clone());
        r.register("t3fs_storage_forward_failures", "Updates whose forwarding failed", m.forward_failures.clone());
        r.register("t3fs_storage_resync_chunks", "Chunk states sent by resync", m.resync_chunks.clone());
        r.register("t3fs_storage_resync_bytes", "Chunk bytes sent by resync", m.resync_bytes.clone());
        r.register("t3fs_storage_syncs_completed", "Resyncs completed", m.syncs_completed.clone());
        r.register("t3fs_storage_syncs_failed", "Resyncs failed", m.syncs_failed.clone());
        r.register(
            "t3fs_storage_resync_remaining_chunks",
            "Chunks running resyncs still have to transfer",
            m.resync_remaining_chunks.clone(),
        );
        r.register("t3fs_storage_repairs", "Damaged replicas repaired from a good one", m.repairs.clone());
        r.register(
            "t3fs_storage_replayed_updates",
            "Retried client updates answered from the update channel record",
            m.replayed_updates.clone(),
        );
        r.register("t3fs_storage_purged_tombstones", "Tombstones dropped by PURGE", m.purged_tombstones.clone());
        r.register("t3fs_storage_trimmed_bytes", "Bytes of free slots punched out", m.trimmed_bytes.clone());
        r.register("t3fs_storage_scrubbed_bytes", "Chunk bytes the scrub verified healthy", m.scrubbed_bytes.clone());
        r.register("t3fs_storage_scrub_damaged", "Damaged chunk replicas the scrub found", m.scrub_damaged.clone());
        r.register_collector(Box::new(StateCollector { stores, fence }));
        m
    }

    /// Records one bulk request that started at `started`; `local`: whether its target is served
    /// here (only those get per-target series).
    pub fn observe(&self, started: Instant, o: Outcome, local: bool) {
        let target = Target { target: o.target };
        if o.op != "none" {
            self.op_duration.get_or_create(&Op { op: o.op }).observe(started.elapsed().as_secs_f64());
        }
        match (o.code, local) {
            (StatusCode::Ok, true) => {
                let (ops, bytes) = if o.op == "read" {
                    (&self.read_ops, &self.read_bytes)
                } else {
                    (&self.update_ops, &self.update_bytes)
                };
                ops.get_or_create(&target).inc();
                bytes.get_or_create(&target).inc_by(o.bytes);
            }
            (StatusCode::Ok, false) => {}
            (code, _) => {
                self.op_errors.get_or_create(&OpCode { op: o.op, code: Code(code) }).inc();
                if code == StatusCode::ChecksumMismatch && local {
                    self.checksum_errors.get_or_create(&target).inc();
                }
            }
        }
    }
}

/// Encodes the gauges whose values are read at scrape time.
struct StateCollector {
    stores: Arc<HashMap<TargetId, ChunkStore>>,
    fence: Arc<Fence>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").field("targets", &self.stores.len()).finish()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fenced = Gauge::<i64>::default();
        fenced.set(i64::from(self.fence.check().is_err()));
        let e = encoder.encode_descriptor(
            "t3fs_storage_fenced",
            "1 while the node is fenced (no heartbeat answer from mgmtd for fence_after_ms)",
            None,
            fenced.metric_type(),
        )?;
        fenced.encode(e)?;
        // One statvfs per target for both space gauges.
        let space: HashMap<TargetId, Option<(u64, u64)>> =
            self.stores.iter().map(|(id, store)| (*id, store.engine().client_space())).collect();
        let per_target = |value: &dyn Fn(TargetId, &ChunkStore) -> Option<u64>| {
            let family: Family<Target, Gauge> = Family::default();
            for (id, store) in self.stores.iter() {
                if let Some(v) = value(*id, store) {
                    family.get_or_create(&Target { target: id.0 }).set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
            family
        };
        let gauges: [(&str, &str, Family<Target, Gauge>); 4] = [
            (
                "t3fs_storage_used_bytes",
                "Bytes in the live chunks of each target",
                per_target(&|_, s| Some(s.used_bytes())),
            ),
            (
                "t3fs_storage_free_bytes",
                "Free bytes client writes may still use on the file system of the target's chunk data (less the reserve)",
                per_target(&|id, _| space[&id].map(|(free, _)| free)),
            ),
            (
                "t3fs_storage_capacity_bytes",
                "Size of the file system holding the target's chunk data",
                per_target(&|id, _| space[&id].map(|(_, total)| total)),
            ),
            (
                "t3fs_storage_target_failed",
                "1 once the target's chunk metadata store has failed (OFFLINE until the process restarts)",
                per_target(&|_, s| Some(u64::from(s.failed()))),
            ),
        ];
        for (name, help, family) in gauges {
            let e = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(e)?;
        }
        Ok(())
    }
}
