//! The generated configuration of a local cluster: node ids, ports, paths, token.
//!
//! `cluster.toml` is written once and then only read, so restarting `t3fs local up` on the same
//! directory reuses the same mgmtd address, node ids, token and storage paths (and so every file).
//! Daemons other than mgmtd bind port 0 and register their actual address with mgmtd.
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{STORAGE_NODES, TARGETS_PER_NODE};

/// The persistent identity of a local cluster (`DIR/cluster.toml`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Where mgmtd listens (`host:port`). Chosen on first `up`.
    pub mgmtd_addr: String,
    /// The cluster token every request carries.
    pub token: String,
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
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let cf_path = dir.join("cluster.toml");
        let mut cluster: ClusterFile = if cf_path.exists() {
            t3fs_common::config::load(&cf_path)?
        } else {
            let addr = match fixed_mgmtd_addr {
                Some(a) => a.to_string(),
                None => free_loopback_addr()?,
            };
            let cf = ClusterFile { mgmtd_addr: addr, token: format!("{:032x}", rand::random::<u128>()) };
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
        meta.metrics_listen = Some("127.0.0.1:0".into());
        let storage = (0..STORAGE_NODES)
            .map(|i| {
                let node_id = FIRST_STORAGE_NODE_ID + i;
                let sdir = dir.join(format!("storage-{}", i + 1));
                let targets = (1..=TARGETS_PER_NODE)
                    .map(|t| t3fs_storage::TargetConfig {
                        id: target_id(node_id, t),
                        path: sdir.join(format!("target-{t}")),
                        // Modelled as one disk per target slot, so placement spreads chains as on real hosts.
                        disk: Some(t - 1),
                    })
                    .collect();
                let mut s = t3fs_storage::Config::new(node_id, cluster.mgmtd_addr.clone(), targets);
                s.listen = "127.0.0.1:0".into();
                s.bulk_listen = "127.0.0.1:0".into();
                s.token = cluster.token.clone();
                s.metrics_listen = Some("127.0.0.1:0".into());
                s
            })
            .collect();
        let fuse = t3fs_fuse::MountConfig {
            mgmtd_addr: cluster.mgmtd_addr.clone(),
            token: cluster.token.clone(),
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
