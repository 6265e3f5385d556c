//! The in-memory cluster model and its (pure) transitions.
//!
//! [`ClusterState`] holds every node, target, chain and chain table plus the routing version. It
//! never changes in place from a request: each operation first *plans* a [`Delta`] (the records it
//! would replace) against the current state, the caller persists the delta if it is visible, and
//! only then [`ClusterState::apply`]s it. So memory never runs ahead of the KV store, and a failed
//! write or a rejected request changes nothing.
//!
//! Invariants:
//! - The routing version increases by one with every visible change (node status or addresses,
//!   a new target, a target's public state, a new chain table). Heartbeat timestamps, local states
//!   and used bytes are refreshed in memory without a version bump (they are not persisted until
//!   the next visible change touches the record).
//! - A target's public state is the skeleton rule [`public_state`]; a chain's entries mirror the
//!   public states of its targets.
//! - Chain versions are NOT bumped for public-state changes in the skeleton: storage checks the
//!   chain version on every write, and without the real state machine (issue 3: SYNCING, WAITING,
//!   LASTSRV, chain reordering) a bump would only make in-flight writes fail without making
//!   anything safer.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use t3fs_common::Error;
use t3fs_common::proto::{
    ChainInfo, ChainTable, ChainTarget, HeartbeatReq, LocalTargetState, NodeInfo, NodeStatus, NodeType,
    PublicTargetState, RegisterNodeReq, RoutingInfo, TargetInfo,
};

use crate::placement;
use crate::store::{self, Loaded, Write};

/// Chain ids of table `t` are `t * CHAIN_ID_STRIDE + i + 1` for its `i`-th chain.
pub const CHAIN_ID_STRIDE: u32 = 100_000;
/// Longest address or hostname a node may register.
const MAX_ADDR_LEN: usize = 256;
/// Longest chain table description.
const MAX_DESC_LEN: usize = 4096;

/// The skeleton's public-state rule: SERVING when the node is alive and the target not locally
/// OFFLINE, otherwise OFFLINE. (The 3FS state machine replaces this in issue 3.)
pub fn public_state(node_alive: bool, local_state: i32) -> PublicTargetState {
    if node_alive && local_state != LocalTargetState::Offline as i32 {
        PublicTargetState::Serving
    } else {
        PublicTargetState::Offline
    }
}

/// Records an operation replaces, planned against the current state.
#[derive(Debug, Default)]
pub struct Delta {
    pub nodes: Vec<NodeInfo>,
    pub targets: Vec<TargetInfo>,
    pub chains: Vec<ChainInfo>,
    pub tables: Vec<ChainTable>,
    /// Liveness timestamps to record (memory only).
    pub seen: Vec<(u32, Instant)>,
    /// Something routing-visible changed: persist the records and bump the version.
    pub visible: bool,
}

impl Delta {
    /// The KV writes that make this delta durable at routing version `version`.
    pub fn writes(&self, version: u64) -> Vec<Write> {
        let mut w: Vec<Write> = Vec::new();
        w.extend(self.nodes.iter().map(store::node_write));
        w.extend(self.targets.iter().map(store::target_write));
        w.extend(self.chains.iter().map(store::chain_write));
        w.extend(self.tables.iter().map(store::table_write));
        w.push(store::version_write(version));
        w
    }
}

/// The result of planning `CreateChainTable`.
#[derive(Debug)]
pub enum TablePlan {
    /// The table already exists with the requested replica count: return it unchanged.
    Existing(ChainTable),
    /// A new table and the chains and target assignments that come with it.
    New(Delta, ChainTable),
}

/// The whole cluster as mgmtd knows it.
#[derive(Debug, Default)]
pub struct ClusterState {
    version: u64,
    nodes: BTreeMap<u32, NodeInfo>,
    targets: BTreeMap<u64, TargetInfo>,
    chains: BTreeMap<u32, ChainInfo>,
    tables: BTreeMap<(u32, u32), ChainTable>,
    /// Last heartbeat (or registration, or mgmtd start) per node, on the monotonic clock.
    seen: HashMap<u32, Instant>,
}

impl ClusterState {
    /// Builds the state from what was loaded. Every node counts as just seen (a grace period, so a
    /// restarted mgmtd does not fail the whole cluster before it has had a chance to heartbeat).
    pub fn from_loaded(loaded: Loaded, version: u64, now: Instant) -> Self {
        let nodes: BTreeMap<u32, NodeInfo> = loaded.nodes.into_iter().map(|n| (n.node_id, n)).collect();
        let seen = nodes.keys().map(|&id| (id, now)).collect();
        Self {
            version,
            nodes,
            targets: loaded.targets.into_iter().map(|t| (t.target_id, t)).collect(),
            chains: loaded.chains.into_iter().map(|c| (c.chain_id, c)).collect(),
            tables: loaded.tables.into_iter().map(|t| ((t.table_id, t.version), t)).collect(),
            seen,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Installs a planned delta; `version` is the new routing version when the delta was visible.
    pub fn apply(&mut self, delta: Delta, version: Option<u64>) {
        if let Some(v) = version {
            self.version = v;
        }
        self.nodes.extend(delta.nodes.into_iter().map(|n| (n.node_id, n)));
        self.targets.extend(delta.targets.into_iter().map(|t| (t.target_id, t)));
        self.chains.extend(delta.chains.into_iter().map(|c| (c.chain_id, c)));
        self.tables.extend(delta.tables.into_iter().map(|t| ((t.table_id, t.version), t)));
        self.seen.extend(delta.seen);
    }

    /// The full routing info, with `mgmtd` (this process) first.
    pub fn routing_info(&self, mgmtd: &NodeInfo) -> RoutingInfo {
        let mut nodes = Vec::with_capacity(self.nodes.len() + 1);
        nodes.push(mgmtd.clone());
        nodes.extend(self.nodes.values().filter(|n| n.node_id != mgmtd.node_id).cloned());
        RoutingInfo {
            version: self.version,
            bootstrapping: false,
            nodes,
            tables: self.tables.values().cloned().collect(),
            chains: self.chains.values().cloned().collect(),
            targets: self.targets.values().cloned().collect(),
        }
    }

    pub fn node(&self, id: u32) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    fn targets_of(&self, node_id: u32) -> impl Iterator<Item = &TargetInfo> {
        self.targets.values().filter(move |t| t.node_id == node_id)
    }

    /// `RegisterNode`: upsert the node as connected. Always visible (addresses may have changed).
    pub fn plan_register(
        &self,
        req: &RegisterNodeReq,
        mgmtd_id: u32,
        now: Instant,
        now_ms: u64,
    ) -> Result<Delta, Error> {
        let ty = NodeType::try_from(req.node_type)
            .map_err(|_| Error::invalid(format!("unknown node type {}", req.node_type)))?;
        match ty {
            NodeType::Meta | NodeType::Storage | NodeType::Client | NodeType::Fuse => {}
            NodeType::Mgmtd => return Err(Error::invalid("mgmtd standbys are not supported yet")),
            NodeType::Unspecified => return Err(Error::invalid("node type is required")),
        }
        if req.node_id == 0 {
            return Err(Error::invalid("node id 0 is reserved"));
        }
        if req.node_id == mgmtd_id {
            return Err(Error::invalid(format!("node id {} is this mgmtd's own id", req.node_id)));
        }
        for (what, s) in [("grpc_addr", &req.grpc_addr), ("bulk_addr", &req.bulk_addr), ("hostname", &req.hostname)] {
            if s.len() > MAX_ADDR_LEN {
                return Err(Error::invalid(format!("{what} is longer than {MAX_ADDR_LEN} bytes")));
            }
        }
        if let Some(old) = self.nodes.get(&req.node_id)
            && old.node_type != req.node_type
        {
            return Err(Error::new(
                t3fs_common::StatusCode::AlreadyExists,
                format!("node {} is already registered as {:?}", req.node_id, NodeType::try_from(old.node_type)),
            ));
        }
        let node = NodeInfo {
            node_id: req.node_id,
            node_type: req.node_type,
            status: NodeStatus::HeartbeatConnected as i32,
            grpc_addr: req.grpc_addr.clone(),
            bulk_addr: req.bulk_addr.clone(),
            hostname: req.hostname.clone(),
            last_heartbeat_ms: now_ms,
        };
        // A failed node coming back: its targets are re-evaluated with it.
        let targets = self.targets_of(req.node_id).cloned().collect();
        Ok(self.finish(vec![node], targets, vec![(req.node_id, now)], true))
    }

    /// `Heartbeat`: refresh liveness; storage nodes report their targets. A storage target the node
    /// no longer reports counts as locally OFFLINE.
    pub fn plan_heartbeat(&self, req: &HeartbeatReq, now: Instant, now_ms: u64) -> Result<Delta, Error> {
        let old = self
            .nodes
            .get(&req.node_id)
            .ok_or_else(|| Error::not_found(format!("node {} is not registered; register first", req.node_id)))?;
        if old.node_type != req.node_type {
            return Err(Error::invalid(format!(
                "node {} is registered as {:?}, heartbeat says {:?}",
                req.node_id,
                NodeType::try_from(old.node_type),
                NodeType::try_from(req.node_type)
            )));
        }
        let mut node = old.clone();
        node.last_heartbeat_ms = now_ms;
        if node.status == NodeStatus::HeartbeatFailed as i32 {
            node.status = NodeStatus::HeartbeatConnected as i32;
        }
        let mut targets: BTreeMap<u64, TargetInfo> = BTreeMap::new();
        if req.node_type == NodeType::Storage as i32 {
            for lt in &req.targets {
                if lt.target_id == 0 {
                    return Err(Error::invalid("target id 0 is reserved"));
                }
                if LocalTargetState::try_from(lt.local_state).is_err() {
                    return Err(Error::invalid(format!(
                        "target {}: unknown local state {}",
                        lt.target_id, lt.local_state
                    )));
                }
                let mut t = match self.targets.get(&lt.target_id) {
                    Some(t) if t.node_id != req.node_id => {
                        return Err(Error::invalid(format!(
                            "target {} belongs to node {}, not {}",
                            lt.target_id, t.node_id, req.node_id
                        )));
                    }
                    Some(t) => *t,
                    None => TargetInfo { target_id: lt.target_id, node_id: req.node_id, ..Default::default() },
                };
                t.local_state = lt.local_state;
                t.used_bytes = lt.used_bytes;
                if targets.insert(lt.target_id, t).is_some() {
                    return Err(Error::invalid(format!("target {} reported twice", lt.target_id)));
                }
            }
            for t in self.targets_of(req.node_id) {
                if !targets.contains_key(&t.target_id) {
                    let mut t = *t;
                    t.local_state = LocalTargetState::Offline as i32;
                    targets.insert(t.target_id, t);
                }
            }
        }
        Ok(self.finish(vec![node], targets.into_values().collect(), vec![(req.node_id, now)], false))
    }

    /// The liveness check: connected nodes (mgmtd itself is not in `nodes`) unseen for longer than
    /// `timeout` become HEARTBEAT_FAILED, their targets OFFLINE.
    pub fn plan_check(&self, now: Instant, timeout: Duration) -> Delta {
        let mut nodes = Vec::new();
        let mut targets = Vec::new();
        for n in self.nodes.values() {
            let seen = self.seen.get(&n.node_id).copied().unwrap_or(now);
            if n.status == NodeStatus::HeartbeatConnected as i32 && now.saturating_duration_since(seen) > timeout {
                let mut n = n.clone();
                n.status = NodeStatus::HeartbeatFailed as i32;
                targets.extend(self.targets_of(n.node_id).cloned());
                nodes.push(n);
            }
        }
        self.finish(nodes, targets, Vec::new(), false)
    }

    /// Completes a delta: recomputes the proposed targets' public states, mirrors changes into their
    /// chains, and decides visibility. `nodes` are proposed node records (their status decides
    /// liveness for their targets).
    fn finish(
        &self,
        nodes: Vec<NodeInfo>,
        mut targets: Vec<TargetInfo>,
        seen: Vec<(u32, Instant)>,
        mut visible: bool,
    ) -> Delta {
        for n in &nodes {
            let changed = self.nodes.get(&n.node_id).is_none_or(|old| {
                let mut old = old.clone();
                old.last_heartbeat_ms = n.last_heartbeat_ms;
                old != *n
            });
            visible |= changed;
        }
        let status_of =
            |id: u32| nodes.iter().find(|n| n.node_id == id).or_else(|| self.nodes.get(&id)).map(|n| n.status);
        let mut chains: BTreeMap<u32, ChainInfo> = BTreeMap::new();
        for t in &mut targets {
            let alive = status_of(t.node_id) == Some(NodeStatus::HeartbeatConnected as i32);
            t.public_state = public_state(alive, t.local_state) as i32;
            let changed = self.targets.get(&t.target_id).is_none_or(|old| old.public_state != t.public_state);
            if !changed {
                continue;
            }
            visible = true;
            if t.chain_id == 0 {
                continue;
            }
            let Some(base) = self.chains.get(&t.chain_id) else {
                tracing::warn!(target_id = t.target_id, chain_id = t.chain_id, "target names an unknown chain");
                continue;
            };
            let chain = chains.entry(t.chain_id).or_insert_with(|| base.clone());
            for entry in chain.targets.iter_mut().filter(|e| e.target_id == t.target_id) {
                entry.public_state = t.public_state;
            }
        }
        Delta { nodes, targets, chains: chains.into_values().collect(), tables: Vec::new(), seen, visible }
    }

    /// `CreateChainTable`: place all free targets (those in no chain) of storage nodes into chains of
    /// `replicas` targets on distinct nodes. If the table already exists it is returned unchanged
    /// when its chains have `replicas` targets (an idempotent retry), else AlreadyExists.
    pub fn plan_create_table(&self, table_id: u32, replicas: u32, desc: &str) -> Result<TablePlan, Error> {
        if table_id == 0 {
            return Err(Error::invalid("chain table id 0 is reserved"));
        }
        if replicas == 0 {
            return Err(Error::invalid("replicas must be at least 1"));
        }
        if desc.len() > MAX_DESC_LEN {
            return Err(Error::invalid(format!("description is longer than {MAX_DESC_LEN} bytes")));
        }
        if let Some(existing) = self.tables.range((table_id, 0)..=(table_id, u32::MAX)).next_back().map(|(_, t)| t) {
            let same = existing
                .chains
                .iter()
                .all(|c| self.chains.get(c).is_some_and(|c| c.targets.len() == replicas as usize));
            if same {
                return Ok(TablePlan::Existing(existing.clone()));
            }
            return Err(Error::new(
                t3fs_common::StatusCode::AlreadyExists,
                format!("chain table {table_id} already exists with a different replica count"),
            ));
        }
        let free: Vec<(u32, u64)> = self
            .targets
            .values()
            .filter(|t| t.chain_id == 0)
            .filter(|t| self.nodes.get(&t.node_id).is_some_and(|n| n.node_type == NodeType::Storage as i32))
            .map(|t| (t.node_id, t.target_id))
            .collect();
        let placed = placement::build_chains(&free, replicas as usize)?;
        if placed.len() >= CHAIN_ID_STRIDE as usize {
            return Err(Error::invalid(format!("a chain table holds at most {} chains", CHAIN_ID_STRIDE - 1)));
        }
        // Chain ids base + 1 ..= base + len must fit in u32.
        let base = table_id
            .checked_mul(CHAIN_ID_STRIDE)
            .filter(|base| base.checked_add(placed.len() as u32).is_some())
            .ok_or_else(|| Error::invalid(format!("chain table id {table_id} is too large for chain ids")))?;

        let mut delta = Delta { visible: true, ..Default::default() };
        let mut table =
            ChainTable { table_id, version: 1, chains: Vec::with_capacity(placed.len()), desc: desc.to_string() };
        for (i, members) in placed.into_iter().enumerate() {
            let chain_id = base + i as u32 + 1;
            let mut chain = ChainInfo { chain_id, chain_version: 1, targets: Vec::with_capacity(members.len()) };
            for target_id in members {
                let mut t = self.targets.get(&target_id).cloned().expect("placement only returns known targets");
                t.chain_id = chain_id;
                chain.targets.push(ChainTarget { target_id, public_state: t.public_state });
                delta.targets.push(t);
            }
            table.chains.push(chain_id);
            delta.chains.push(chain);
        }
        delta.tables.push(table.clone());
        Ok(TablePlan::New(delta, table))
    }
}

#[cfg(test)]
mod tests {
    use t3fs_common::proto::LocalTarget;

    use super::*;

    fn register(s: &mut ClusterState, id: u32, ty: NodeType, now: Instant) {
        let req =
            RegisterNodeReq { node_id: id, node_type: ty as i32, grpc_addr: format!("h:{id}"), ..Default::default() };
        let d = s.plan_register(&req, 1, now, 0).unwrap();
        assert!(d.visible);
        let v = s.version() + 1;
        s.apply(d, Some(v));
    }

    fn heartbeat(s: &mut ClusterState, id: u32, targets: &[u64], now: Instant) -> bool {
        let req = HeartbeatReq {
            node_id: id,
            node_type: NodeType::Storage as i32,
            targets: targets
                .iter()
                .map(|&t| LocalTarget {
                    target_id: t,
                    local_state: LocalTargetState::Uptodate as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let d = s.plan_heartbeat(&req, now, 0).unwrap();
        let visible = d.visible;
        let v = visible.then(|| s.version() + 1);
        s.apply(d, v);
        visible
    }

    fn cluster(now: Instant) -> ClusterState {
        let mut s = ClusterState::default();
        for n in [10, 20, 30] {
            register(&mut s, n, NodeType::Storage, now);
            assert!(heartbeat(&mut s, n, &[u64::from(n) + 1, u64::from(n) + 2], now));
        }
        s
    }

    #[test]
    fn heartbeats_add_targets_then_go_quiet() {
        let now = Instant::now();
        let mut s = cluster(now);
        assert_eq!(s.version(), 6);
        assert!(!heartbeat(&mut s, 10, &[11, 12], now));
        assert_eq!(s.targets.len(), 6);
        assert_eq!(s.targets[&11].public_state, PublicTargetState::Serving as i32);
        // A target the node stops reporting goes OFFLINE (visible).
        assert!(heartbeat(&mut s, 10, &[11], now));
        assert_eq!(s.targets[&12].public_state, PublicTargetState::Offline as i32);
    }

    #[test]
    fn heartbeat_rejects_bad_input_without_changes() {
        let now = Instant::now();
        let s = cluster(now);
        let mut req = HeartbeatReq { node_id: 99, node_type: NodeType::Storage as i32, ..Default::default() };
        assert_eq!(s.plan_heartbeat(&req, now, 0).unwrap_err().code, t3fs_common::StatusCode::NotFound);
        req.node_id = 20;
        req.targets = vec![LocalTarget { target_id: 11, ..Default::default() }];
        assert!(s.plan_heartbeat(&req, now, 0).is_err(), "target of another node");
        req.targets = vec![LocalTarget { target_id: 21, ..Default::default() }; 2];
        assert!(s.plan_heartbeat(&req, now, 0).is_err(), "duplicate target");
        req.targets = vec![LocalTarget { target_id: 21, local_state: 3, ..Default::default() }];
        assert!(s.plan_heartbeat(&req, now, 0).is_err(), "unknown local state");
        req.node_type = NodeType::Meta as i32;
        req.targets.clear();
        assert!(s.plan_heartbeat(&req, now, 0).is_err(), "type mismatch");
    }

    #[test]
    fn register_validates() {
        let now = Instant::now();
        let s = cluster(now);
        let mut req = RegisterNodeReq { node_id: 1, node_type: NodeType::Meta as i32, ..Default::default() };
        assert!(s.plan_register(&req, 1, now, 0).is_err(), "mgmtd's own id");
        req.node_id = 0;
        assert!(s.plan_register(&req, 1, now, 0).is_err());
        req.node_id = 10;
        assert_eq!(s.plan_register(&req, 1, now, 0).unwrap_err().code, t3fs_common::StatusCode::AlreadyExists);
        req.node_id = 100;
        req.node_type = 42;
        assert!(s.plan_register(&req, 1, now, 0).is_err());
        req.node_type = NodeType::Mgmtd as i32;
        assert!(s.plan_register(&req, 1, now, 0).is_err());
    }

    #[test]
    fn chain_table_placement_and_failure_propagation() {
        let now = Instant::now();
        let mut s = cluster(now);
        let TablePlan::New(d, table) = s.plan_create_table(1, 3, "t").unwrap() else { panic!("expected new table") };
        assert_eq!(table.chains, vec![100_001, 100_002]);
        let v = s.version() + 1;
        s.apply(d, Some(v));
        assert_eq!(s.targets[&11].chain_id, 100_001);
        assert_eq!(s.chains[&100_002].targets.iter().map(|t| t.target_id).collect::<Vec<_>>(), vec![22, 32, 12]);
        // Idempotent retry; different replica count refused; no free targets left for another table.
        assert!(matches!(s.plan_create_table(1, 3, "t").unwrap(), TablePlan::Existing(_)));
        assert!(s.plan_create_table(1, 2, "t").is_err());
        assert!(s.plan_create_table(2, 1, "t").is_err());

        // Node 20 goes silent: failed, its targets OFFLINE in TargetInfo and in chains; version of
        // chains unchanged.
        let later = now + Duration::from_secs(10);
        heartbeat(&mut s, 10, &[11, 12], later);
        heartbeat(&mut s, 30, &[31, 32], later);
        let d = s.plan_check(later, Duration::from_secs(5));
        assert!(d.visible);
        assert_eq!(d.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![20]);
        s.apply(d, Some(100));
        assert_eq!(s.nodes[&20].status, NodeStatus::HeartbeatFailed as i32);
        assert_eq!(s.targets[&21].public_state, PublicTargetState::Offline as i32);
        let c1 = &s.chains[&100_001];
        assert_eq!(c1.chain_version, 1);
        assert_eq!(c1.targets[1], ChainTarget { target_id: 21, public_state: PublicTargetState::Offline as i32 });
        assert_eq!(c1.targets[0].public_state, PublicTargetState::Serving as i32);
        // A second check changes nothing.
        assert!(!s.plan_check(later, Duration::from_secs(5)).visible);
        // It comes back.
        assert!(heartbeat(&mut s, 20, &[21, 22], later));
        assert_eq!(s.nodes[&20].status, NodeStatus::HeartbeatConnected as i32);
        assert_eq!(s.chains[&100_001].targets[1].public_state, PublicTargetState::Serving as i32);
    }

    #[test]
    fn table_ids_are_validated() {
        let s = cluster(Instant::now());
        assert!(s.plan_create_table(0, 3, "").is_err());
        assert!(s.plan_create_table(1, 0, "").is_err());
        assert!(s.plan_create_table(1, 4, "").is_err());
        assert!(s.plan_create_table(u32::MAX, 3, "").is_err());
        assert!(s.plan_create_table(1, 3, &"x".repeat(MAX_DESC_LEN + 1)).is_err());
    }

    #[test]
    fn routing_info_lists_mgmtd_first() {
        let s = cluster(Instant::now());
        let me = NodeInfo { node_id: 1, status: NodeStatus::PrimaryMgmtd as i32, ..Default::default() };
        let info = s.routing_info(&me);
        assert_eq!(info.version, s.version());
        assert_eq!(info.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![1, 10, 20, 30]);
        assert_eq!(info.targets.len(), 6);
    }
}
