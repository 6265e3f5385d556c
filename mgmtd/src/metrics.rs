//! mgmtd's Prometheus metrics: every name is defined here (a public interface for dashboards, see
//! docs/metrics.md; do not rename).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `t3fs_mgmtd_nodes` | gauge | `node_type`, `status` | nodes known to this primary, by type (`META`, `STORAGE`, ...) and status (`HEARTBEAT_CONNECTED`, ...); includes this mgmtd as `MGMTD`/`PRIMARY_MGMTD` |
//! | `t3fs_mgmtd_targets_by_public_state` | gauge | `state` | storage targets by public state (`SERVING`, `SYNCING`, `OFFLINE`, ...) |
//! | `t3fs_mgmtd_targets_by_local_state` | gauge | `state` | storage targets by the local state their node last reported (`UPTODATE`, `ONLINE`, `OFFLINE`) |
//! | `t3fs_mgmtd_routing_version` | gauge | | the routing version served |
//! | `t3fs_mgmtd_chains` | gauge | | chains in all chain tables |
//! | `t3fs_mgmtd_chain_changes_total` | counter | | chain updates published by the checker (target state machine) |
//! | `t3fs_mgmtd_is_primary` | gauge | | 1 while this mgmtd holds the primary lease, else 0 |
//! | `t3fs_mgmtd_lease_term` | gauge | | the lease term held as primary (0 as standby) |
//! | `t3fs_mgmtd_config_version` | gauge | `node_type` | the version of the config stored for `STORAGE` / `META` (0: none set; a standby reports 0) |
//! | `t3fs_mgmtd_rpcs_total` | counter | `method`, `code` | RPCs answered, by method (`register_node`, `heartbeat`, `get_routing_info`, `create_chain_table`, `set_config`, `get_config`, ...) and status code (`Ok`, `NotPrimary`, ...) |
//! | `t3fs_mgmtd_rpc_duration_seconds` | histogram | `method` | RPC latency |
//!
//! The state gauges are recomputed from the in-memory state after every change (registration,
//! heartbeat, check, takeover, step-down): a standby reports zeros and its last routing version.
use std::collections::HashMap;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use t3fs_common::StatusCode;
use t3fs_common::metrics::{Registry, latency_histogram};
use t3fs_common::proto::{LocalTargetState, NodeInfo, NodeStatus, NodeType, PublicTargetState, TargetInfo};

pub use t3fs_common::metrics::Code;

/// Labels of `t3fs_mgmtd_nodes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node_type: &'static str,
    pub status: &'static str,
}

/// Labels of the target state gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Labels of `t3fs_mgmtd_config_version`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeTypeLabel {
    pub node_type: &'static str,
}

/// Labels of `t3fs_mgmtd_rpcs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCode {
    pub method: &'static str,
    pub code: Code,
}

/// Labels of `t3fs_mgmtd_rpc_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub method: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

const NODE_TYPES: [NodeType; 5] =
    [NodeType::Mgmtd, NodeType::Meta, NodeType::Storage, NodeType::Client, NodeType::Fuse];
const NODE_STATUSES: [NodeStatus; 4] =
    [NodeStatus::PrimaryMgmtd, NodeStatus::HeartbeatConnected, NodeStatus::HeartbeatFailed, NodeStatus::Disabled];
const PUBLIC_STATES: [PublicTargetState; 5] = [
    PublicTargetState::Serving,
    PublicTargetState::Lastsrv,
    PublicTargetState::Syncing,
    PublicTargetState::Waiting,
    PublicTargetState::Offline,
];
const LOCAL_STATES: [LocalTargetState; 3] =
    [LocalTargetState::Uptodate, LocalTargetState::Online, LocalTargetState::Offline];

/// mgmtd's metric handles (cheap to share; updates are atomic).
#[derive(Debug)]
pub struct MgmtdMetrics {
    nodes: Family<NodeLabels, Gauge>,
    targets_public: Family<StateLabel, Gauge>,
    targets_local: Family<StateLabel, Gauge>,
    routing_version: Gauge,
    chains: Gauge,
    pub chain_changes: Counter,
    is_primary: Gauge,
    lease_term: Gauge,
    config_version: Family<NodeTypeLabel, Gauge>,
    rpcs: Family<MethodCode, Counter>,
    rpc_duration: HistogramFamily<Method>,
}

impl Default for MgmtdMetrics {
    /// Handles registered nowhere.
    fn default() -> Self {
        Self {
            nodes: Family::default(),
            targets_public: Family::default(),
            targets_local: Family::default(),
            routing_version: Gauge::default(),
            chains: Gauge::default(),
            chain_changes: Counter::default(),
            is_primary: Gauge::default(),
            lease_term: Gauge::default(),
            config_version: Family::default(),
            rpcs: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl MgmtdMetrics {
    /// Creates the handles and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register("t3fs_mgmtd_nodes", "Nodes by type and status", m.nodes.clone());
        r.register("t3fs_mgmtd_targets_by_public_state", "Targets by public state", m.targets_public.clone());
        r.register("t3fs_mgmtd_targets_by_local_state", "Targets by reported local state", m.targets_local.clone());
        r.register("t3fs_mgmtd_routing_version", "Routing version served", m.routing_version.clone());
        r.register("t3fs_mgmtd_chains", "Chains in all chain tables", m.chains.clone());
        r.register("t3fs_mgmtd_chain_changes", "Chain updates published by the checker", m.chain_changes.clone());
        r.register("t3fs_mgmtd_is_primary", "1 while this mgmtd is the primary", m.is_primary.clone());
        r.register("t3fs_mgmtd_lease_term", "Primary lease term held (0 as standby)", m.lease_term.clone());
        r.register("t3fs_mgmtd_config_version", "Config version stored, by node type", m.config_version.clone());
        r.register("t3fs_mgmtd_rpcs", "RPCs answered, by method and status code", m.rpcs.clone());
        r.register("t3fs_mgmtd_rpc_duration_seconds", "RPC latency, by method", m.rpc_duration.clone());
        m
    }

    /// Records one RPC answered with `code` that started at `started`.
    pub fn observe_rpc(&self, method: &'static str, started: Instant, code: StatusCode) {
        self.rpcs.get_or_create(&MethodCode { method, code: Code(code) }).inc();
        self.rpc_duration.get_or_create(&Method { method }).observe(started.elapsed().as_secs_f64());
    }

    /// The role: primary in `term`, or standby (`None`).
    pub fn set_role(&self, term: Option<u64>) {
        self.is_primary.set(i64::from(term.is_some()));
        self.lease_term.set(gauge_value(term.unwrap_or(0)));
    }

    /// The config version stored for each node type that takes one (types missing count as 0).
    pub fn config_versions(&self, versions: impl Fn(NodeType) -> u64) {
        for ty in [NodeType::Storage, NodeType::Meta] {
            let labels = NodeTypeLabel { node_type: short(ty.as_str_name()) };
            self.config_version.get_or_create(&labels).set(gauge_value(versions(ty)));
        }
    }

    /// Recomputes the state gauges from a snapshot of the state.
    pub fn census<'a>(
        &self,
        version: u64,
        nodes: impl Iterator<Item = &'a NodeInfo>,
        targets: impl Iterator<Item = &'a TargetInfo>,
        chains: usize,
    ) {
        self.routing_version.set(gauge_value(version));
        self.chains.set(i64::try_from(chains).unwrap_or(i64::MAX));
        let mut by_node: HashMap<(i32, i32), i64> = HashMap::new();
        for n in nodes {
            *by_node.entry((n.node_type, n.status)).or_default() += 1;
        }
        for ty in NODE_TYPES {
            for st in NODE_STATUSES {
                let labels = NodeLabels { node_type: short(ty.as_str_name()), status: short(st.as_str_name()) };
                self.nodes.get_or_create(&labels).set(by_node.get(&(ty as i32, st as i32)).copied().unwrap_or(0));
            }
        }
        let (mut public, mut local): (HashMap<i32, i64>, HashMap<i32, i64>) = Default::default();
        for t in targets {
            *public.entry(t.public_state).or_default() += 1;
            *local.entry(t.local_state).or_default() += 1;
        }
        for st in PUBLIC_STATES {
            let n = public.get(&(st as i32)).copied().unwrap_or(0);
            self.targets_public.get_or_create(&StateLabel { state: short(st.as_str_name()) }).set(n);
        }
        for st in LOCAL_STATES {
            let n = local.get(&(st as i32)).copied().unwrap_or(0);
            self.targets_local.get_or_create(&StateLabel { state: short(st.as_str_name()) }).set(n);
        }
    }
}

/// `NODE_TYPE_STORAGE` -> `STORAGE` (the enum prefixes are noise in labels).
fn short(name: &'static str) -> &'static str {
    ["NODE_TYPE_", "NODE_STATUS_", "PUBLIC_TARGET_STATE_", "LOCAL_TARGET_STATE_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_counts_every_combination() {
        let mut reg = Registry::default();
        let m = MgmtdMetrics::register(&mut reg);
        let nodes = [
            NodeInfo {
                node_type: NodeType::Storage as i32,
                status: NodeStatus::HeartbeatConnected as i32,
                ..Default::default()
            },
            NodeInfo {
                node_type: NodeType::Storage as i32,
                status: NodeStatus::HeartbeatFailed as i32,
                ..Default::default()
            },
        ];
        let targets = [TargetInfo {
            public_state: PublicTargetState::Syncing as i32,
            local_state: LocalTargetState::Online as i32,
            ..Default::default()
        }];
        m.census(7, nodes.iter(), targets.iter(), 3);
        m.set_role(Some(4));
        m.config_versions(|t| if t == NodeType::Storage { 5 } else { 0 });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for line in [
            "t3fs_mgmtd_nodes{node_type=\"STORAGE\",status=\"HEARTBEAT_CONNECTED\"} 1",
            "t3fs_mgmtd_nodes{node_type=\"STORAGE\",status=\"HEARTBEAT_FAILED\"} 1",
            "t3fs_mgmtd_nodes{node_type=\"META\",status=\"HEARTBEAT_CONNECTED\"} 0",
            "t3fs_mgmtd_targets_by_public_state{state=\"SYNCING\"} 1",
            "t3fs_mgmtd_targets_by_public_state{state=\"SERVING\"} 0",
            "t3fs_mgmtd_targets_by_local_state{state=\"ONLINE\"} 1",
            "t3fs_mgmtd_routing_version 7",
            "t3fs_mgmtd_chains 3",
            "t3fs_mgmtd_is_primary 1",
            "t3fs_mgmtd_lease_term 4",
            "t3fs_mgmtd_config_version{node_type=\"STORAGE\"} 5",
            "t3fs_mgmtd_config_version{node_type=\"META\"} 0",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
