//! Configs per node type: versioned TOML texts mgmtd stores and pushes with heartbeat replies.
//!
//! One record per node type (`CONF` + node type, a `proto::NodeConfig`), loaded with everything
//! else at each takeover. `SetConfig` plans the next record against memory ([`Configs::plan_set`]:
//! the text must be a valid hot config of that node type, see `t3fs_common::hot_config`; version =
//! old + 1; an `expected_version` that differs is refused), writes it in one lease-checked KV
//! transaction, and only then installs it. Configs are not routing-visible: no routing version bump.
//!
//! A heartbeat reply carries the node type's config when the node reports another version than
//! the stored one ([`Configs::for_node`]); nothing when it is current or no config was ever set.
//! "Another" rather than "older": a node ahead of mgmtd (a store restored from an old backup) is
//! brought back to what mgmtd holds, which is the truth.
use std::collections::BTreeMap;

use t3fs_common::proto::{NodeConfig, NodeType};
use t3fs_common::{Error, hot_config};

use super::Cluster;
use crate::store;

/// The stored configs, by node type (`proto::NodeType` value).
#[derive(Debug, Default)]
pub struct Configs {
    by_type: BTreeMap<i32, NodeConfig>,
}

fn parse_node_type(v: i32) -> Result<NodeType, Error> {
    NodeType::try_from(v).map_err(|_| Error::invalid(format!("unknown node type {v}")))
}

impl Configs {
    pub fn from_loaded(configs: Vec<NodeConfig>) -> Self {
        Self { by_type: configs.into_iter().map(|c| (c.node_type, c)).collect() }
    }

    /// The config of `node_type`; version 0 and no text when none was set.
    pub fn get(&self, node_type: NodeType) -> NodeConfig {
        self.by_type.get(&(node_type as i32)).cloned().unwrap_or(NodeConfig {
            node_type: node_type as i32,
            version: 0,
            toml: String::new(),
        })
    }

    /// The stored version for `node_type` (0: none).
    pub fn version(&self, node_type: NodeType) -> u64 {
        self.by_type.get(&(node_type as i32)).map_or(0, |c| c.version)
    }

    /// `SetConfig`: the record to store. Refused (`InvalidArgument`) when the node type takes no
    /// config, the text is not a valid hot config of that type, or `expected` differs from the
    /// stored version.
    pub fn plan_set(&self, node_type_value: i32, toml: &str, expected: Option<u64>) -> Result<NodeConfig, Error> {
        let ty = parse_node_type(node_type_value)?;
        hot_config::validate_for(ty, toml)?;
        let current = self.version(ty);
        if let Some(expected) = expected
            && expected != current
        {
            return Err(Error::invalid(format!(
                "the {} config is at version {current}, not the expected {expected}",
                ty.as_str_name().trim_start_matches("NODE_TYPE_")
            )));
        }
        let version = current.checked_add(1).ok_or_else(|| Error::internal("config version overflow"))?;
        Ok(NodeConfig { node_type: ty as i32, version, toml: toml.to_string() })
    }

    /// Installs a stored record.
    pub fn apply(&mut self, config: NodeConfig) {
        self.by_type.insert(config.node_type, config);
    }

    /// What a heartbeat reply carries for a node of `node_type` that applied version `applied`.
    pub fn for_node(&self, node_type: i32, applied: u64) -> Option<NodeConfig> {
        self.by_type.get(&node_type).filter(|c| c.version != 0 && c.version != applied).cloned()
    }
}

impl Cluster {
    /// `SetConfig`: plan, persist (under the lease), install.
    pub async fn set_config(&self, node_type: i32, toml: &str, expected: Option<u64>) -> Result<NodeConfig, Error> {
        let mut inner = self.lock_primary().await?;
        let config = inner.configs.plan_set(node_type, toml, expected)?;
        self.persist(&mut inner, &[store::config_write(&config)]).await?;
        inner.configs.apply(config.clone());
        self.publish(&inner);
        Ok(config)
    }

    /// `GetConfig`.
    pub async fn get_config(&self, node_type: i32) -> Result<NodeConfig, Error> {
        let ty = parse_node_type(node_type)?;
        Ok(self.lock_primary().await?.configs.get(ty))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use t3fs_common::StatusCode;
    use t3fs_common::proto::{self, NodeInfo};
    use t3fs_kv::Db;

    use super::*;
    use crate::lease::{self, Candidate, Outcome};

    const STORAGE: i32 = NodeType::Storage as i32;
    const META: i32 = NodeType::Meta as i32;

    #[test]
    fn plan_set_versions_and_refusals() {
        let mut c = Configs::default();
        assert_eq!(c.get(NodeType::Storage), NodeConfig { node_type: STORAGE, version: 0, toml: String::new() });
        assert_eq!(c.for_node(STORAGE, 0), None, "nothing set: nothing pushed");
        let one = c.plan_set(STORAGE, "fence_after_ms = 3000", None).unwrap();
        assert_eq!(one.version, 1);
        assert_eq!(c.version(NodeType::Storage), 0, "planning changes nothing");
        c.apply(one.clone());
        assert_eq!(c.for_node(STORAGE, 0), Some(one.clone()));
        assert_eq!(c.for_node(STORAGE, 1), None, "current: no payload");
        assert_eq!(c.for_node(STORAGE, 7), Some(one.clone()), "a node ahead is brought back");
        assert_eq!(c.for_node(META, 0), None);
        assert_eq!(c.plan_set(STORAGE, "", Some(1)).unwrap().version, 2);
        for (ty, toml, expected) in [
            (STORAGE, "fence_after_ms = 3000", Some(0)),
            (STORAGE, "bogus = 1", None),
            (STORAGE, "log = \"info,x=loud\"", None),
            (STORAGE, "idempotency_ttl_ms = 1", None),
            (META, "fence_after_ms = 1", None),
            (NodeType::Client as i32, "", None),
            (NodeType::Mgmtd as i32, "", None),
            (0, "", None),
            (99, "", None),
        ] {
            let e = c.plan_set(ty, toml, expected).unwrap_err();
            assert_eq!(e.code, StatusCode::InvalidArgument, "{ty} {toml:?}: {e}");
        }
        assert_eq!(c.get(NodeType::Storage), one);
        assert_eq!(c.plan_set(META, "idempotency_ttl_ms = 1000", Some(0)).unwrap().version, 1);
    }

    async fn primary(db: &Db, id: u32) -> Cluster {
        let me = NodeInfo { node_id: id, grpc_addr: format!("h{id}:1"), ..Default::default() };
        let cluster = Cluster::new(String::new(), me, db.clone(), Duration::ZERO);
        let cand = Candidate { node_id: id, grpc_addr: format!("h{id}:1") };
        let Outcome::Acquired(l) = lease::acquire(db.as_ref(), &cand, None, 600_000).await.unwrap() else {
            panic!("lease not free")
        };
        cluster.take_over(l.term, Instant::now() + Duration::from_secs(600)).await.unwrap();
        cluster
    }

    fn heartbeat(node_id: u32, config_version: u64) -> proto::HeartbeatReq {
        proto::HeartbeatReq { node_id, node_type: STORAGE, config_version, ..Default::default() }
    }

    #[tokio::test]
    async fn configs_persist_reach_heartbeats_and_survive_a_takeover() {
        let db: Db = t3fs_kv::mem::MemKv::new();
        let one = primary(&db, 1).await;
        let reg = proto::RegisterNodeReq { node_id: 10001, node_type: STORAGE, ..Default::default() };
        one.register(&reg).await.unwrap();
        let routing = one.routing_info(0).await.unwrap().unwrap().version;
        assert_eq!(one.heartbeat(&heartbeat(10001, 0)).await.unwrap().1, None);

        let set = one.set_config(STORAGE, "fence_after_ms = 4000\n", None).await.unwrap();
        assert_eq!(set.version, 1);
        assert!(one.routing_info(routing).await.unwrap().is_none(), "configs are not routing-visible");
        assert_eq!(one.get_config(STORAGE).await.unwrap(), set);
        let (_, pushed) = one.heartbeat(&heartbeat(10001, 0)).await.unwrap();
        assert_eq!(pushed, Some(set.clone()));
        assert_eq!(one.heartbeat(&heartbeat(10001, 1)).await.unwrap().1, None);
        let info = one.routing_info(0).await.unwrap().unwrap();
        assert_eq!(info.nodes.iter().find(|n| n.node_id == 10001).unwrap().config_version, 1);

        // Refusals change nothing, in memory or in the store.
        assert!(one.set_config(STORAGE, "fence_after_ms = 0", None).await.is_err());
        assert!(one.set_config(STORAGE, "", Some(0)).await.is_err());
        assert_eq!(one.get_config(STORAGE).await.unwrap(), set);
        assert_eq!(one.get_config(META).await.unwrap().version, 0);
        let two = one.set_config(STORAGE, "", Some(1)).await.unwrap();
        assert_eq!(two.version, 2);

        // A new primary restores the configs from the store.
        lease::release(db.as_ref(), 1, 1).await.unwrap();
        let other = primary(&db, 2).await;
        assert_eq!(other.get_config(STORAGE).await.unwrap(), two);
        assert_eq!(store::load(db.as_ref()).await.unwrap().configs, vec![two]);
        // The deposed primary cannot write a config.
        let e = one.set_config(STORAGE, "", None).await.unwrap_err();
        assert_eq!(e.code, StatusCode::NotPrimary);
        assert_eq!(other.get_config(STORAGE).await.unwrap().version, 2);
    }
}
