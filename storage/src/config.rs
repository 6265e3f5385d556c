//! The storage daemon's typed config (TOML, `deny_unknown_fields`).
//!
//! One storage process serves several *targets*; each target is one directory holding its chunk-metadata
//! store. Chunk data lives in the shared chunk engine of the target's disk when `disk` names an entry of
//! `[[disks]]` (`crate::disk`), else in a private engine in the target's directory. Target ids are
//! assigned by the operator and must match the chain tables mgmtd builds.
use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use t3fs_common::Error;

/// Storage daemon configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster (3FS convention: storage nodes are 10001, 10002, ...).
    pub node_id: u32,
    /// gRPC listen address of the `StorageAdmin` service, e.g. "127.0.0.1:0" (port 0: pick a free port).
    pub listen: String,
    /// Listen address of the bulk data plane (framed TCP), e.g. "127.0.0.1:0".
    pub bulk_listen: String,
    /// The `host:port` peers reach the admin gRPC service at, registered with mgmtd instead of the
    /// bound address. Needed when `listen` is 0.0.0.0 (which would be registered as 127.0.0.1).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Likewise for the bulk data plane (`bulk_listen`).
    #[serde(default)]
    pub bulk_advertise: Option<String>,
    /// mgmtd gRPC address, `host:port`, or a comma-separated list of every mgmtd (requests follow the primary).
    pub mgmtd_addr: String,
    /// Cluster token: when non-empty, requests carrying a different token are refused (Unauthenticated),
    /// and this token is sent to mgmtd and to chain successors.
    #[serde(default)]
    pub token: String,
    /// The targets this node serves.
    pub targets: Vec<TargetConfig>,
    /// Disks with a shared chunk engine: every target whose `disk` is one of these indexes keeps its
    /// chunk data in `<path>/engine` (docs/storage.md "Per-disk engines"). Empty: every target has a
    /// private engine in its own directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// Interval between heartbeats to mgmtd, in milliseconds (3FS default: 1 s; mgmtd fails a node after
    /// many missed heartbeats, so this is not latency critical).
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Interval between routing-info (and user table) polls, in milliseconds. Short, because a stale chain version makes
    /// writes fail with ChainVersionMismatch until the next refresh.
    #[serde(default = "default_routing_refresh_ms")]
    pub routing_refresh_ms: u64,
    /// How long `start` keeps retrying to register with mgmtd before it gives up, in milliseconds
    /// (mgmtd may start after storage in `t3fs local up`).
    #[serde(default = "default_register_timeout_ms")]
    pub register_timeout_ms: u64,
    /// Fencing, in milliseconds: when no heartbeat has been answered by mgmtd for this long, every read and
    /// update is refused (TargetNotServing) until mgmtd answers again, because the node may be partitioned
    /// and already replaced in its chains. Default 2500 = half of mgmtd's default heartbeat timeout (5000);
    /// keep it below that timeout and above `heartbeat_interval_ms`.
    #[serde(default = "default_fence_after_ms")]
    pub fence_after_ms: u64,
    /// Prometheus endpoint listen address (`host:port`; port 0 picks a free port): `GET /metrics`
    /// serves the metrics listed in docs/metrics.md. Unset: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Reserve the blocks of every new chunk engine group file (about 64 MiB) with `posix_fallocate`
    /// when it is created, instead of leaving it sparse until its slots are written.
    #[serde(default)]
    pub preallocate: bool,
    /// Free space, in bytes, that client writes leave on each engine's file system for removals,
    /// truncates, resync and the chunk metadata store: a write that would eat into it is refused
    /// with NoSpace (ENOSPC at the mount), everything else may use it (docs/storage.md "Full
    /// disks"). Unset: 2% of the file system's size, at least 256 MiB. 0: no reserve (a disk that
    /// fills up then poisons the target's metadata store until the process restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_space_bytes: Option<u64>,
    /// How often, in milliseconds, the chunk engines give the blocks of slots that stayed free since
    /// the previous pass back to the file system (trim; docs/storage.md). 0: never.
    #[serde(default = "default_trim_interval_ms")]
    pub trim_interval_ms: u64,
    /// The background scrub's read rate, in MiB per second per storage server: every live chunk is
    /// read back and checked against its CRCs, and a damaged replica is repaired from a good one
    /// (docs/storage.md). 0: no scrub.
    #[serde(default = "default_scrub_mib_per_sec")]
    pub scrub_mib_per_sec: u64,
    /// The scrub's pause after a full pass over every target, in milliseconds.
    #[serde(default = "default_scrub_pause_ms")]
    pub scrub_pause_ms: u64,
    /// Chunk data I/O with O_DIRECT (aligned buffers, no page cache). Where the file system refuses
    /// O_DIRECT (e.g. tmpfs) the engine logs a warning and uses buffered I/O.
    #[serde(default = "default_true")]
    pub direct_io: bool,
    /// Forward updates and resync to peers over RDMA when this binary is built with feature `rdma`
    /// and the host has an RDMA device (else TCP; see docs/storage.md "Bulk transport"). Serving
    /// RDMA to clients needs no setting: a node built with `rdma` and a device answers RDMA set-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bulk_rdma: bool,
}

/// One storage target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Target id, unique in the cluster (it appears in chain tables).
    pub id: u64,
    /// Directory of this target (created if missing): `engine/` holds the chunk engine's data files, `meta/`
    /// the metadata store (docs/storage.md).
    pub path: PathBuf,
    /// Index of the disk this target lives on (reported to mgmtd, whose placement spreads a node's
    /// chains over its disks). Unset: the target counts as a disk of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u32>,
}

/// A disk with a shared chunk engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The disk index targets name with `disk`.
    pub index: u32,
    /// A directory on the disk (created if missing): `engine/` holds the data files, `DISK` the disk's
    /// id and the targets in its engine.
    pub path: PathBuf,
}

fn default_true() -> bool {
    true
}

fn default_heartbeat_interval_ms() -> u64 {
    1000
}

fn default_routing_refresh_ms() -> u64 {
    500
}

fn default_register_timeout_ms() -> u64 {
    30_000
}

fn default_trim_interval_ms() -> u64 {
    crate::engine::TRIM_INTERVAL.as_millis() as u64
}

fn default_scrub_mib_per_sec() -> u64 {
    16
}

fn default_scrub_pause_ms() -> u64 {
    24 * 3600 * 1000
}

fn default_fence_after_ms() -> u64 {
    2500
}

impl Config {
    /// A config with defaults for every optional field.
    pub fn new(node_id: u32, mgmtd_addr: impl Into<String>, targets: Vec<TargetConfig>) -> Self {
        Self {
            node_id,
            listen: "127.0.0.1:0".into(),
            bulk_listen: "127.0.0.1:0".into(),
            advertise: None,
            bulk_advertise: None,
            mgmtd_addr: mgmtd_addr.into(),
            token: String::new(),
            targets,
            disks: Vec::new(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            routing_refresh_ms: default_routing_refresh_ms(),
            register_timeout_ms: default_register_timeout_ms(),
            fence_after_ms: default_fence_after_ms(),
            trim_interval_ms: default_trim_interval_ms(),
            scrub_mib_per_sec: default_scrub_mib_per_sec(),
            scrub_pause_ms: default_scrub_pause_ms(),
            metrics_listen: None,
            preallocate: false,
            reserved_space_bytes: None,
            direct_io: true,
            bulk_rdma: false,
        }
    }

    /// Checks invariants serde cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        if self.node_id == 0 {
            return Err(Error::invalid("storage config: node_id must be > 0"));
        }
        if self.targets.is_empty() {
            return Err(Error::invalid("storage config: at least one target is required"));
        }
        t3fs_common::config::check_advertise("storage config: advertise", self.advertise.as_deref())?;
        t3fs_common::config::check_advertise("storage config: bulk_advertise", self.bulk_advertise.as_deref())?;
        let mut ids = HashSet::new();
        let mut paths = HashSet::new();
        for t in &self.targets {
            if t.id == 0 {
                return Err(Error::invalid("storage config: target id must be > 0"));
            }
            if !ids.insert(t.id) {
                return Err(Error::invalid(format!("storage config: duplicate target id {}", t.id)));
            }
            if !paths.insert(t.path.clone()) {
                return Err(Error::invalid(format!("storage config: duplicate target path {}", t.path.display())));
            }
        }
        let mut indexes = HashSet::new();
        for d in &self.disks {
            if !indexes.insert(d.index) {
                return Err(Error::invalid(format!("storage config: duplicate disk index {}", d.index)));
            }
            if !paths.insert(d.path.clone()) || paths.contains(&d.path.join("engine")) {
                return Err(Error::invalid(format!(
                    "storage config: disk path {} is also a target or disk path",
                    d.path.display()
                )));
            }
        }
        if self.heartbeat_interval_ms == 0 || self.routing_refresh_ms == 0 {
            return Err(Error::invalid("storage config: intervals must be > 0"));
        }
        if self.fence_after_ms <= self.heartbeat_interval_ms {
            return Err(Error::invalid("storage config: fence_after_ms must be > heartbeat_interval_ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let text = r#"
            node_id = 10001
            listen = "127.0.0.1:0"
            bulk_listen = "127.0.0.1:0"
            mgmtd_addr = "127.0.0.1:9000"
            [[targets]]
            id = 101
            path = "/tmp/t101"
        "#;
        let c: Config = t3fs_common::config::parse(text).unwrap();
        assert_eq!(c.heartbeat_interval_ms, 1000);
        assert_eq!(c.routing_refresh_ms, 500);
        assert_eq!(c.fence_after_ms, 2500);
        assert_eq!(c.token, "");
        assert!(c.direct_io && c.disks.is_empty());
        let with_disks: Config = t3fs_common::config::parse(&format!(
            "direct_io = false\n{text}\n[[disks]]\nindex = 3\npath = \"/data/d3\"\n"
        ))
        .unwrap();
        assert_eq!(with_disks.disks, vec![DiskConfig { index: 3, path: "/data/d3".into() }]);
        assert!(!with_disks.direct_io);
        let round: Config = t3fs_common::config::parse(&t3fs_common::config::to_toml(&with_disks).unwrap()).unwrap();
        assert_eq!(round, with_disks);
        assert_eq!(c.targets, vec![TargetConfig { id: 101, path: "/tmp/t101".into(), disk: None }]);
        c.validate().unwrap();
        let round: Config = t3fs_common::config::parse(&t3fs_common::config::to_toml(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        assert!(t3fs_common::config::parse::<Config>(&format!("{text}\nbogus = 1")).is_err());
        assert_eq!(c.metrics_listen, None);
        let with_metrics = Config { metrics_listen: Some("127.0.0.1:9100".into()), ..c };
        let round: Config = t3fs_common::config::parse(&t3fs_common::config::to_toml(&with_metrics).unwrap()).unwrap();
        assert_eq!(round, with_metrics);
    }

    #[test]
    fn validate_rejects_bad_targets() {
        let t = |id| TargetConfig { id, path: format!("/tmp/t{id}").into(), disk: None };
        assert!(Config::new(1, "m", vec![]).validate().is_err());
        assert!(Config::new(1, "m", vec![t(1), t(1)]).validate().is_err());
        assert!(Config::new(0, "m", vec![t(1)]).validate().is_err());
        let mut dup_path = Config::new(1, "m", vec![t(1), t(2)]);
        dup_path.targets[1].path = dup_path.targets[0].path.clone();
        assert!(dup_path.validate().is_err());
        assert!(Config::new(1, "m", vec![t(1), t(2)]).validate().is_ok());
        let disk = |index, path: &str| DiskConfig { index, path: path.into() };
        let mut disks = Config::new(1, "m", vec![t(1), t(2)]);
        disks.disks = vec![disk(0, "/d0"), disk(1, "/d1")];
        assert!(disks.validate().is_ok());
        disks.disks[1].index = 0;
        assert!(disks.validate().is_err(), "duplicate index");
        disks.disks[1] = disk(1, "/tmp/t1");
        assert!(disks.validate().is_err(), "a target's path");
        disks.disks[1] = disk(1, "/d0");
        assert!(disks.validate().is_err(), "duplicate path");
        let mut fence = Config::new(1, "m", vec![t(1)]);
        fence.fence_after_ms = fence.heartbeat_interval_ms;
        assert!(fence.validate().is_err());
    }
}
