//! The generated configuration of a local cluster: node ids, ports, paths, token.
//!
//! `cluster.toml` is written once and then only read, so restarting `t3fs local up` on the same
//! directory reuses the same mgmtd address, node ids, token and storage paths (and so every file).
//! Daemons other than mgmtd bind port 0 and register their actual address with mgmtd.
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How long a local cluster's meta waits before garbage-collecting an unlinked file.
pub const LOCAL_GC_DELAY_MS: u64 = 1000;
/// The free space a local cluster's storage and meta leave on their file system for removals and
/// recovery (`reserved_space_bytes`; production default: 2% of the disk, at least 256 MiB). A dev
/// cluster shares the machine's disk with everything else, so it keeps the floor only.
pub const LOCAL_RESERVED_SPACE: u64 = 256 << 20;

/// The persistent identity of a local cluster (`DIR/cluster.toml`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Where mgmtd listens (`host:port`). Chosen on first `up`.
    pub mgmtd_addr: String,
    /// The cluster token every request carries.
    pub token: String,
    /// Servers, targets, replicas and chunk size (fixed at creation: files depend on them).
    #[serde(default)]
    pub shape: Shape,
}

/// The size of a local cluster. Directories created before this existed get the defaults, which
/// is what they were created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shape {
    /// Storage servers (each a separate process under `t3fs local up`).
    pub storage_servers: u32,
    /// Targets per storage server (each a directory, modelled as its own disk).
    pub targets_per_server: u32,
    /// Replicas per chain (at most `storage_servers`: no two replicas of a chain on one server).
    pub replicas: u32,
    /// File chunk size in bytes (a power of two, see meta's `chunk_size`).
    pub chunk_size: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape { storage_servers: 3, targets_per_server: 2, replicas: 3, chunk_size: 1 << 20 }
    }
}

impl Shape {
    /// Rejects shapes mgmtd could not place or meta would refuse.
    pub fn validate(&self) -> anyhow::Result<()> {
        let s = self;
        if !(1..=64).contains(&s.storage_servers) {
            anyhow::bail!("--storage-servers must be 1..=64 (got {})", s.storage_servers);
        }
        if !(1..=16).contains(&s.targets_per_server) {
            anyhow::bail!("--targets-per-server must be 1..=16 (got {})", s.targets_per_server);
        }
        if s.replicas == 0 || s.replicas > s.storage_servers {
            anyhow::bail!(
                "--replicas must be 1..={} (one replica per storage server at most; got {})",
                s.storage_servers,
                s.replicas
            );
        }
        let mut meta = t3fs_meta::Config::new("127.0.0.1:1".to_string(), t3fs_kv::KvConfig::Mem);
        meta.chunk_size = s.chunk_size;
        meta.validate().map_err(|e| anyhow::anyhow!("--chunk-size: {e}"))?;
        Ok(())
    }

    /// Storage targets in the cluster.
    pub fn targets(&self) -> u32 {
        self.storage_servers * self.targets_per_server
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} storage server{} × {} target{}, {}-replica chains, {} KiB chunks",
            self.storage_servers,
            plural(self.storage_servers),
            self.targets_per_server,
            plural(self.targets_per_server),
            self.replicas,
            self.chunk_size / 1024
        )
    }
}

/// What `t3fs local up` was asked for; `None` keeps the directory's (or the default) value.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShapeArgs {
    pub storage_servers: Option<u32>,
    pub targets_per_server: Option<u32>,
    pub replicas: Option<u32>,
    pub chunk_size: Option<u32>,
    pub mgmtd_port: Option<u16>,
}

impl ShapeArgs {
    fn apply(&self, mut s: Shape) -> Shape {
        s.storage_servers = self.storage_servers.unwrap_or(s.storage_servers);
        s.targets_per_server = self.targets_per_server.unwrap_or(s.targets_per_server);
        s.replicas = self.replicas.unwrap_or(s.replicas);
        s.chunk_size = self.chunk_size.unwrap_or(s.chunk_size);
        s
    }
}

/// Every daemon's config for one local cluster.
pub struct Plan {
    pub dir: PathBuf,
    pub cluster: ClusterFile,
    pub mgmtd: t3fs_mgmtd::Config,
    pub meta: t3fs_meta::Config,
    pub storage: Vec<t3fs_storage::Config>,
    pub fuse: t3fs_fuse::MountConfig,
}

pub const MGMTD_NODE_ID: u32 = 1;
pub const META_NODE_ID: u32 = 100;
pub const FIRST_STORAGE_NODE_ID: u32 = 10001;

/// Target id of target `t` (1-based) on storage node `node_id`.
pub fn target_id(node_id: u32, t: u32) -> u64 {
    node_id as u64 * 100 + t as u64
}

impl Plan {
    /// Loads `DIR/cluster.toml`, creating it (with a free loopback port for mgmtd and a random
    /// token) if missing. `fixed_mgmtd_addr` overrides the address (tests pass "127.0.0.1:0").
    pub fn load_or_create(dir: &Path, fixed_mgmtd_addr: Option<&str>) -> anyhow::Result<Plan> {
        Self::load_or_create_shaped(dir, fixed_mgmtd_addr, ShapeArgs::default())
    }

    /// Like [`Plan::load_or_create`]; a new directory gets `args`' shape and mgmtd port, an
    /// existing one must not be asked for a different shape (its files depend on it).
    pub fn load_or_create_shaped(dir: &Path, fixed_mgmtd_addr: Option<&str>, args: ShapeArgs) -> anyhow::Result<Plan> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let cf_path = dir.join("cluster.toml");
        let mut cluster: ClusterFile = if cf_path.exists() {
            let cf: ClusterFile = t3fs_common::config::load(&cf_path)?;
            let asked = args.apply(cf.shape);
            if asked != cf.shape {
                anyhow::bail!(
                    "{} was created with {}; a local cluster's shape cannot change (use a new --data-dir)",
                    dir.display(),
                    cf.shape
                );
            }
            if let Some(p) = args.mgmtd_port
                && !cf.mgmtd_addr.ends_with(&format!(":{p}"))
            {
                anyhow::bail!("{} was created with mgmtd at {}; its port cannot change", dir.display(), cf.mgmtd_addr);
            }
            cf
        } else {
            let shape = args.apply(Shape::default());
            shape.validate()?;
            let addr = match (fixed_mgmtd_addr, args.mgmtd_port) {
                (Some(a), _) => a.to_string(),
                (None, Some(p)) => format!("127.0.0.1:{p}"),
                (None, None) => free_loopback_addr()?,
            };
            let cf = ClusterFile { mgmtd_addr: addr, token: format!("{:032x}", rand::random::<u128>()), shape };
            std::fs::write(&cf_path, t3fs_common::config::to_toml(&cf)?)
                .with_context(|| format!("writing {}", cf_path.display()))?;
            cf
        };
        if let Some(a) = fixed_mgmtd_addr {
            cluster.mgmtd_addr = a.to_string();
        }
        Ok(Self::build(dir, cluster))
    }

    fn build(dir: PathBuf, cluster: ClusterFile) -> Plan {
        let mut mgmtd = t3fs_mgmtd::Config::new(
            MGMTD_NODE_ID,
            cluster.mgmtd_addr.clone(),
            t3fs_kv::KvConfig::Embedded { path: dir.join("mgmtd").join("kv") },
        );
        mgmtd.token = cluster.token.clone();
        mgmtd.metrics_listen = Some("127.0.0.1:0".into());
        let mut meta = t3fs_meta::Config::new(
            cluster.mgmtd_addr.clone(),
            t3fs_kv::KvConfig::Embedded { path: dir.join("meta").join("kv") },
        );
        meta.node_id = META_NODE_ID;
        meta.listen = "127.0.0.1:0".into();
        meta.token = cluster.token.clone();
        meta.chain_table_id = super::CHAIN_TABLE_ID;
        meta.chunk_size = cluster.shape.chunk_size;
        meta.metrics_listen = Some("127.0.0.1:0".into());
        // A dev cluster frees the space of deleted files quickly (production default: 60 s).
        meta.gc_delay_ms = LOCAL_GC_DELAY_MS;
        meta.gc_interval_ms = 200;
        meta.reserved_space_bytes = Some(LOCAL_RESERVED_SPACE);
        let storage = (0..cluster.shape.storage_servers)
            .map(|i| {
                let node_id = FIRST_STORAGE_NODE_ID + i;
                let sdir = dir.join(format!("storage-{}", i + 1));
                let targets = (1..=cluster.shape.targets_per_server)
                    .map(|t| t3fs_storage::TargetConfig {
                        id: target_id(node_id, t),
                        path: sdir.join(format!("target-{t}")),
                        // Modelled as one disk per target slot, so placement spreads chains as on real hosts.
                        disk: Some(t - 1),
                    })
                    .collect();
                let mut s = t3fs_storage::Config::new(node_id, cluster.mgmtd_addr.clone(), targets);
                // Each disk slot has a (per-disk) chunk engine of its own, so local clusters run the
                // shared-engine path; target directories created before keep their private engines.
                s.disks = (1..=cluster.shape.targets_per_server)
                    .map(|t| t3fs_storage::DiskConfig { index: t - 1, path: sdir.join(format!("disk-{t}")) })
                    .collect();
                s.listen = "127.0.0.1:0".into();
                s.bulk_listen = "127.0.0.1:0".into();
                s.token = cluster.token.clone();
                s.metrics_listen = Some("127.0.0.1:0".into());
                s.reserved_space_bytes = Some(LOCAL_RESERVED_SPACE);
                s
            })
            .collect();
        let fuse = t3fs_fuse::MountConfig {
            mgmtd_addr: cluster.mgmtd_addr.clone(),
            token: cluster.token.clone(),
            metrics_listen: Some("127.0.0.1:0".into()),
            ..t3fs_fuse::MountConfig::default()
        };
        Plan { dir, cluster, mgmtd, meta, storage, fuse }
    }

    /// Config file of a daemon.
    pub fn conf_path(&self, name: &str) -> PathBuf {
        self.dir.join("conf").join(format!("{name}.toml"))
    }

    /// Names of the daemons, in start order.
    pub fn daemon_names(&self) -> Vec<String> {
        let mut v = vec!["mgmtd".to_string(), "meta".to_string()];
        v.extend((1..=self.storage.len()).map(|i| format!("storage-{i}")));
        v
    }

    /// Writes every config under `DIR/conf/`.
    pub fn write_configs(&self) -> anyhow::Result<()> {
        use t3fs_common::config::to_toml;
        std::fs::create_dir_all(self.dir.join("conf"))?;
        let mut files = vec![("mgmtd".to_string(), to_toml(&self.mgmtd)?), ("meta".to_string(), to_toml(&self.meta)?)];
        for (i, s) in self.storage.iter().enumerate() {
            files.push((format!("storage-{}", i + 1), to_toml(s)?));
        }
        files.push(("fuse".to_string(), to_toml(&self.fuse)?));
        for (name, text) in files {
            let p = self.conf_path(&name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_loopback_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.to_string())
}
