//! The meta daemon's typed config (the `t3fs meta --config F` TOML file).
//!
//! Every field has a default except `mgmtd_addr` and `kv`. [`Config::validate`] runs at start and
//! refuses values the namespace cannot work with (a chunk size the layout rules reject, a zero
//! stripe or interval), so a bad config fails loudly instead of producing unreadable files.
use serde::{Deserialize, Serialize};
use t3fs_common::layout::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use t3fs_common::{Error, Result};
use t3fs_kv::KvConfig;

/// Configuration of one meta server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This server's node id in the cluster (3FS deployments use 100 for the first meta server).
    #[serde(default = "default_node_id")]
    pub node_id: u32,
    /// gRPC listen address (`host:port`; port 0 picks a free port). The actual bound address is
    /// registered with mgmtd unless `advertise` is set; an unspecified host (0.0.0.0) would be
    /// registered as 127.0.0.1, so multi-host deployments listening on 0.0.0.0 set `advertise`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The `host:port` clients reach this server at, registered with mgmtd instead of the bound
    /// address (e.g. "meta-1.example:8001" behind 0.0.0.0 or NAT).
    #[serde(default)]
    pub advertise: Option<String>,
    /// mgmtd's gRPC address (`host:port`).
    pub mgmtd_addr: String,
    /// Cluster token: requests whose header token differs are refused. Empty disables the check.
    #[serde(default)]
    pub token: String,
    /// Where inodes and dentries live (`backend = "mem" | "embedded" | "fdb"`).
    pub kv: KvConfig,
    /// Chunk size of new files in bytes (power of two, 4 KiB ..= 64 MiB). Default 1 MiB as 3FS deploys.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
    /// Chains a new file is striped over; capped by the chain table's chain count. Default 16 as 3FS.
    #[serde(default = "default_stripe")]
    pub stripe: u32,
    /// Chain table new files are placed on (its newest version).
    #[serde(default = "default_chain_table_id")]
    pub chain_table_id: u32,
    /// Inode id counter shards set up when a store first uses sharded allocation (1 ..= 1024,
    /// default 32 as 3FS); a store keeps the count it was set up with (see docs/meta.md).
    #[serde(default = "default_inode_alloc_shards")]
    pub inode_alloc_shards: u32,
    /// Free space, in bytes, kept on the disk of an embedded metadata store (`kv.backend =
    /// "embedded"`; FoundationDB manages its own): below it, creates, mkdirs, symlinks, links and
    /// xattr writes get NoSpace (ENOSPC), while removals, renames, attribute changes and closes go
    /// on (docs/meta.md "Full disk"). Unset: 2% of the disk, at least 256 MiB. 0: no reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_space_bytes: Option<u64>,
    /// How long statfs reuses its count of inodes and file bytes, in milliseconds (a scan of every
    /// inode: about 0.6 µs each); it is reused for ten times the scan's duration if that is longer.
    /// Free and total space are always current. 0: scan on every statfs.
    #[serde(default = "default_statfs_cache_ms")]
    pub statfs_cache_ms: u64,
    /// How often the server heartbeats to mgmtd, in milliseconds.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// How often routing info (and the user table, for user tokens) is polled from mgmtd, in
    /// milliseconds.
    #[serde(default = "default_routing_refresh_ms")]
    pub routing_refresh_ms: u64,
    /// How long a remove/rename result is kept for retries of the same request id, in milliseconds
    /// (3FS: 30 min).
    #[serde(default = "default_idempotency_ttl_ms")]
    pub idempotency_ttl_ms: u64,
    /// How often expired idempotency records are deleted, in milliseconds.
    #[serde(default = "default_idempotency_clean_interval_ms")]
    pub idempotency_clean_interval_ms: u64,
    /// Owner uid of the root directory when a fresh store creates it (ignored afterwards).
    #[serde(default)]
    pub root_uid: u32,
    /// Owner gid of the root directory when a fresh store creates it.
    #[serde(default)]
    pub root_gid: u32,
    /// Mode of the root directory when a fresh store creates it. Default 0o1777 (like /tmp: every
    /// user may create top-level entries, only owners remove them); use 0o755 where an admin
    /// creates per-user directories.
    #[serde(default = "default_root_mode")]
    pub root_mode: u32,
    /// A file whose last link went is garbage-collected (its chunks removed on storage, then its
    /// inode) this long after the unlink, in milliseconds, once no write session holds it.
    #[serde(default = "default_gc_delay_ms")]
    pub gc_delay_ms: u64,
    /// How often the GC worker looks for due files, in milliseconds.
    #[serde(default = "default_gc_interval_ms")]
    pub gc_interval_ms: u64,
    /// How often write sessions of clients whose mgmtd session expired are pruned, in milliseconds.
    #[serde(default = "default_session_prune_interval_ms")]
    pub session_prune_interval_ms: u64,
    /// Prometheus endpoint listen address (`host:port`; port 0 picks a free port): `GET /metrics`
    /// serves the metrics listed in docs/metrics.md. Unset: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

fn default_node_id() -> u32 {
    100
}
fn default_listen() -> String {
    "127.0.0.1:0".to_string()
}
fn default_chunk_size() -> u32 {
    1 << 20
}
fn default_stripe() -> u32 {
    16
}
fn default_chain_table_id() -> u32 {
    1
}
fn default_statfs_cache_ms() -> u64 {
    crate::namespace::DEFAULT_STATFS_CACHE.as_millis() as u64
}

fn default_inode_alloc_shards() -> u32 {
    crate::alloc::DEFAULT_SHARDS
}
fn default_heartbeat_interval_ms() -> u64 {
    1000
}
fn default_routing_refresh_ms() -> u64 {
    500
}
fn default_root_mode() -> u32 {
    0o1777
}
fn default_idempotency_ttl_ms() -> u64 {
    30 * 60 * 1000
}
fn default_idempotency_clean_interval_ms() -> u64 {
    60 * 1000
}
fn default_gc_delay_ms() -> u64 {
    60 * 1000
}
fn default_gc_interval_ms() -> u64 {
    1000
}
fn default_session_prune_interval_ms() -> u64 {
    30 * 1000
}

impl Config {
    /// A config with every default, talking to `mgmtd_addr` and storing metadata in `kv`.
    pub fn new(mgmtd_addr: impl Into<String>, kv: KvConfig) -> Self {
        Self {
            node_id: default_node_id(),
            listen: default_listen(),
            advertise: None,
            mgmtd_addr: mgmtd_addr.into(),
            token: String::new(),
            kv,
            chunk_size: default_chunk_size(),
            stripe: default_stripe(),
            chain_table_id: default_chain_table_id(),
            inode_alloc_shards: default_inode_alloc_shards(),
            reserved_space_bytes: None,
            statfs_cache_ms: default_statfs_cache_ms(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            routing_refresh_ms: default_routing_refresh_ms(),
            idempotency_ttl_ms: default_idempotency_ttl_ms(),
            idempotency_clean_interval_ms: default_idempotency_clean_interval_ms(),
            root_uid: 0,
            root_gid: 0,
            root_mode: default_root_mode(),
            gc_delay_ms: default_gc_delay_ms(),
            gc_interval_ms: default_gc_interval_ms(),
            session_prune_interval_ms: default_session_prune_interval_ms(),
            metrics_listen: None,
        }
    }

    /// The root directory's attributes for a fresh store.
    pub fn root_attrs(&self) -> crate::RootAttrs {
        crate::RootAttrs { uid: self.root_uid, gid: self.root_gid, mode: self.root_mode }
    }

    /// Options the store opens with (root directory and id counter shards when it is fresh; the
    /// space reserve).
    pub fn open_options(&self) -> crate::OpenOptions {
        crate::OpenOptions {
            root: self.root_attrs(),
            id_shards: self.inode_alloc_shards,
            reserved_space: self.reserved_space_bytes,
            statfs_cache: std::time::Duration::from_millis(self.statfs_cache_ms),
        }
    }

    /// Checks values the server cannot run with.
    pub fn validate(&self) -> Result<()> {
        let cs = self.chunk_size;
        if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
            return Err(Error::invalid(format!(
                "chunk_size {cs} must be a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"
            )));
        }
        if self.stripe == 0 {
            return Err(Error::invalid("stripe must be > 0"));
        }
        if !(1..=crate::alloc::MAX_SHARDS).contains(&self.inode_alloc_shards) {
            return Err(Error::invalid(format!(
                "inode_alloc_shards {} must be in 1..={}",
                self.inode_alloc_shards,
                crate::alloc::MAX_SHARDS
            )));
        }
        t3fs_common::config::check_advertise("advertise", self.advertise.as_deref())?;
        if self.heartbeat_interval_ms == 0 || self.routing_refresh_ms == 0 || self.idempotency_clean_interval_ms == 0 {
            return Err(Error::invalid(
                "heartbeat_interval_ms, routing_refresh_ms and idempotency_clean_interval_ms must be > 0",
            ));
        }
        if self.gc_interval_ms == 0 || self.session_prune_interval_ms == 0 {
            return Err(Error::invalid("gc_interval_ms and session_prune_interval_ms must be > 0"));
        }
        if self.root_mode > 0o7777 {
            return Err(Error::invalid(format!("root_mode {:o} has bits beyond 0o7777", self.root_mode)));
        }
        if self.mgmtd_addr.is_empty() {
            return Err(Error::invalid("mgmtd_addr must be set"));
        }
        if self.metrics_listen.as_deref().is_some_and(str::is_empty) {
            return Err(Error::invalid("metrics_listen must not be empty when set"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let c: Config =
            t3fs_common::config::parse("mgmtd_addr = \"127.0.0.1:9000\"\n[kv]\nbackend = \"mem\"\n").unwrap();
        assert_eq!(c, Config::new("127.0.0.1:9000", KvConfig::Mem));
        assert_eq!(c.chunk_size, 1 << 20);
        assert_eq!(c.stripe, 16);
        assert_eq!(c.idempotency_ttl_ms, 1_800_000);
        c.validate().unwrap();
        let text = t3fs_common::config::to_toml(&c).unwrap();
        assert_eq!(t3fs_common::config::parse::<Config>(&text).unwrap(), c);
        let with_metrics = Config { metrics_listen: Some("127.0.0.1:9100".into()), ..c.clone() };
        let text = t3fs_common::config::to_toml(&with_metrics).unwrap();
        assert_eq!(t3fs_common::config::parse::<Config>(&text).unwrap(), with_metrics);
        let bad = "mgmtd_addr = \"x:1\"\nbogus = 1\n[kv]\nbackend = \"mem\"\n";
        assert!(t3fs_common::config::parse::<Config>(bad).is_err());
    }

    #[test]
    fn validation() {
        let mut c = Config::new("127.0.0.1:9000", KvConfig::Mem);
        c.chunk_size = 3000;
        assert!(c.validate().is_err());
        c.chunk_size = 1 << 20;
        c.stripe = 0;
        assert!(c.validate().is_err());
        c.stripe = 1;
        c.inode_alloc_shards = 0;
        assert!(c.validate().is_err());
        c.inode_alloc_shards = 1025;
        assert!(c.validate().is_err());
        c.inode_alloc_shards = 1;
        c.heartbeat_interval_ms = 0;
        assert!(c.validate().is_err());
        c.heartbeat_interval_ms = 1;
        c.idempotency_clean_interval_ms = 0;
        assert!(c.validate().is_err());
    }
}
