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
//!   a new target, a target's public state, a chain, a new chain table). Heartbeat timestamps,
//!   local states and used bytes are refreshed in memory without a version bump (they are not
//!   persisted until the next visible change touches the record).
//! - Public states of targets in a chain change only through the state machine
//!   ([`crate::chain_update::next_chain`]), run by the checker ([`ClusterState::plan_check`]); every
//!   chain change bumps that chain's version, and the chain's targets' `TargetInfo.public_state`
//!   mirrors the chain entry. Heartbeats and registrations never change a chained target's public
//!   state directly.
//! - Targets in no chain hold no data; their public state is [`unplaced_public_state`].
//! - Local states are trusted only from heartbeats received by this process: a target whose node
//!   has not heartbeated since mgmtd started (the stored local state may be stale), whose node is
//!   not heartbeat-connected, or which its node's latest heartbeat did not list, is OFFLINE to the
//!   state machine.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use t3fs_common::Error;
use t3fs_common::proto::{
    ChainInfo, ChainTable, ChainTarget, HeartbeatReq, LocalTargetState, NodeInfo, NodeStatus, NodeType,
    PublicTargetState, RegisterNodeReq, RoutingInfo, TargetInfo,
};

use crate::chain_update;
use crate::placement;
use crate::store::{self, Loaded, Write};

/// Chain ids of table `t` are `t * CHAIN_ID_STRIDE + i + 1` for its `i`-th chain.
pub const CHAIN_ID_STRIDE: u32 = 100_000;
/// Longest address or hostname a node may register.
const MAX_ADDR_LEN: usize = 256;
/// Longest chain table description.
const MAX_DESC_LEN: usize = 4096;

/// The public state of a target that is in no chain (so holds no data and serves nothing): SERVING
/// when its node is alive and it is not locally OFFLINE, otherwise OFFLINE. Only informational;
/// a new chain starts from all-SERVING and the state machine takes over (see
/// [`ClusterState::plan_create_table`]).
pub fn unplaced_public_state(node_alive: bool, local_state: i32) -> PublicTargetState {
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
    /// Nodes that sent a heartbeat (memory only): their reported local states are current.
    pub reported: Vec<u32>,
    /// Something routing-visible changed: persist the records and bump the version.
    pub visible: bool,
    /// Node records to delete, with their liveness bookkeeping (`UnregisterNode`).
    pub removed_nodes: Vec<u32>,
    /// Target records to delete.
    pub removed_targets: Vec<u64>,
    /// Other keys to delete that the in-memory state does not hold (a stale mgmtd's record).
    pub deletes: Vec<Vec<u8>>,
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

    /// The keys this delta deletes.
    pub fn delete_keys(&self) -> Vec<Vec<u8>> {
        let mut d: Vec<Vec<u8>> = self.removed_nodes.iter().map(|&id| crate::keys::node(id)).collect();
        d.extend(self.removed_targets.iter().map(|&id| crate::keys::target(id)));
        d.extend(self.deletes.iter().cloned());
        d
    }
}

/// The result of planning `CreateChainTable`.
// Built once per request and consumed at once: boxing the delta would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Nodes that have heartbeated since this process started (their targets' local states are
    /// from a live report, not from the store).
    reported: HashSet<u32>,
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
            reported: HashSet::new(),
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
        self.reported.extend(delta.reported);
        for id in delta.removed_nodes {
            self.nodes.remove(&id);
            self.seen.remove(&id);
            self.reported.remove(&id);
        }
        for id in delta.removed_targets {
            self.targets.remove(&id);
        }
    }

    /// The full routing info, with `mgmtd` (this process) first, then the other mgmtd (`peers`).
    pub fn routing_info(&self, mgmtd: &NodeInfo, peers: &[NodeInfo], bootstrapping: bool) -> RoutingInfo {
        let mut nodes = Vec::with_capacity(self.nodes.len() + 1 + peers.len());
        nodes.push(mgmtd.clone());
        nodes.extend(peers.iter().filter(|n| n.node_id != mgmtd.node_id).cloned());
        nodes.extend(self.nodes.values().filter(|n| n.node_id != mgmtd.node_id).cloned());
        RoutingInfo {
            version: self.version,
            bootstrapping,
            nodes,
            tables: self.tables.values().cloned().collect(),
            chains: self.chains.values().cloned().collect(),
            targets: self.targets.values().cloned().collect(),
        }
    }

    /// Every registered node (for metrics).
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// Every target (for metrics).
    pub fn targets(&self) -> impl Iterator<Item = &TargetInfo> {
        self.targets.values()
    }

    /// How many chains exist.
    pub fn chain_count(&self) -> usize {
        self.chains.len()
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
            NodeType::Mgmtd => {
                return Err(Error::invalid("mgmtd nodes do not register; they coordinate through the lease"));
            }
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
        // A disabled node stays disabled across restarts (only EnableNode brings it back).
        let disabled = self.nodes.get(&req.node_id).is_some_and(|n| n.status == NodeStatus::Disabled as i32);
        let status = if disabled { NodeStatus::Disabled } else { NodeStatus::HeartbeatConnected };
        let node = NodeInfo {
            node_id: req.node_id,
            node_type: req.node_type,
            status: status as i32,
            grpc_addr: req.grpc_addr.clone(),
            bulk_addr: req.bulk_addr.clone(),
            hostname: req.hostname.clone(),
            last_heartbeat_ms: now_ms,
            // A (re)starting node has applied no pushed config yet; its heartbeats report it.
            config_version: 0,
            // Tags are admin-set (SetNodeTags): a restart keeps them.
            tags: self.nodes.get(&req.node_id).map(|n| n.tags.clone()).unwrap_or_default(),
        };
        // A failed node coming back: its unplaced targets follow it (chained ones wait for the checker).
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
        node.config_version = req.config_version;
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
                t.disk_index = lt.disk_index;
                t.free_bytes = lt.free_bytes;
                t.capacity_bytes = lt.capacity_bytes;
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
        let mut delta = self.finish(vec![node], targets.into_values().collect(), vec![(req.node_id, now)], false);
        delta.reported.push(req.node_id);
        Ok(delta)
    }

    /// The periodic check. (1) Connected nodes (mgmtd itself is not in `nodes`) unseen for longer
    /// than `timeout` become HEARTBEAT_FAILED. (2) Unless `update_chains` is false (bootstrapping),
    /// every chain goes through the state machine with the local states as they stand after (1);
    /// each changed chain (its version bumped) and its targets' new public states join the delta.
    pub fn plan_check(&self, now: Instant, timeout: Duration, update_chains: bool) -> Delta {
        let mut nodes = Vec::new();
        let mut targets = Vec::new();
        for n in self.nodes.values() {
            let seen = self.seen.get(&n.node_id).copied().unwrap_or(now);
            if n.status == NodeStatus::HeartbeatConnected as i32 && now.saturating_duration_since(seen) > timeout {
                let mut n = n.clone();
                n.status = NodeStatus::HeartbeatFailed as i32;
                // A failed node's targets are locally OFFLINE until it heartbeats again (what operators see).
                targets.extend(
                    self.targets_of(n.node_id)
                        .map(|t| TargetInfo { local_state: LocalTargetState::Offline as i32, ..*t }),
                );
                nodes.push(n);
            }
        }
        let mut delta = self.finish(nodes, targets, Vec::new(), false);
        if !update_chains {
            return delta;
        }
        let failing: HashSet<u32> = delta.nodes.iter().map(|n| n.node_id).collect();
        let mut targets: BTreeMap<u64, TargetInfo> = delta.targets.drain(..).map(|t| (t.target_id, t)).collect();
        for chain in self.chains.values() {
            let Some(next) = chain_update::next_chain(chain, |id| self.local_state(id, &failing)) else {
                continue;
            };
            for entry in &next.targets {
                let Some(base) = targets.get(&entry.target_id).or_else(|| self.targets.get(&entry.target_id)) else {
                    tracing::warn!(
                        chain_id = chain.chain_id,
                        target_id = entry.target_id,
                        "chain names an unknown target"
                    );
                    continue;
                };
                if base.public_state != entry.public_state {
                    let mut t = *base;
                    t.public_state = entry.public_state;
                    targets.insert(t.target_id, t);
                }
            }
            delta.chains.push(next);
            delta.visible = true;
        }
        delta.targets = targets.into_values().collect();
        delta
    }

    /// The local state the state machine uses for target `id`: OFFLINE unless the target is known,
    /// not taken offline by an admin (`OfflineTarget`), its node is heartbeat-connected (and not in
    /// `failing`, the nodes this check is failing) and has heartbeated since this process started;
    /// then what the node's latest heartbeat said.
    fn local_state(&self, id: u64, failing: &HashSet<u32>) -> LocalTargetState {
        let Some(t) = self.targets.get(&id) else {
            return LocalTargetState::Offline;
        };
        let connected = self.nodes.get(&t.node_id).is_some_and(|n| n.status == NodeStatus::HeartbeatConnected as i32);
        if !connected || failing.contains(&t.node_id) || !self.reported.contains(&t.node_id) || t.admin_offline {
            return LocalTargetState::Offline;
        }
        LocalTargetState::try_from(t.local_state).unwrap_or(LocalTargetState::Offline)
    }

    /// Completes a delta: recomputes the public states of proposed targets that are in no chain
    /// (chained targets change only through [`Self::plan_check`]) and decides visibility. `nodes`
    /// are proposed node records (their status decides liveness for their targets).
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
        for t in &mut targets {
            if t.chain_id == 0 {
                let alive = status_of(t.node_id) == Some(NodeStatus::HeartbeatConnected as i32);
                t.public_state = unplaced_public_state(alive && !t.admin_offline, t.local_state) as i32;
            }
            visible |= self.targets.get(&t.target_id).is_none_or(|old| old.public_state != t.public_state);
        }
        Delta { nodes, targets, seen, visible, ..Default::default() }
    }

    /// `CreateChainTable`: place all free targets (those in no chain) of storage nodes into chains of
    /// `replicas` targets on distinct nodes. If the table already exists it is returned unchanged
    /// when its chains have `replicas` targets (an idempotent retry), else AlreadyExists.
    ///
    /// A new chain starts with every target SERVING (its replicas are all empty, hence equal) at
    /// chain version 1. With `settle` (not bootstrapping) the state machine is applied right away,
    /// still at version 1 since nobody has seen the chain yet, so a target that is down is
    /// published OFFLINE (or LASTSRV) from the start; while bootstrapping the checker does it once
    /// bootstrapping ends.
    ///
    /// `explicit`: the chains (targets head first) to create instead of placing every free target
    /// automatically; see [`Self::check_explicit`].
    pub fn plan_create_table(
        &self,
        table_id: u32,
        replicas: u32,
        desc: &str,
        settle: bool,
        explicit: &[Vec<u64>],
    ) -> Result<TablePlan, Error> {
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
        let placed = if explicit.is_empty() {
            let free: Vec<placement::FreeTarget> = self
                .targets
                .values()
                .filter(|t| t.chain_id == 0)
                .filter(|t| self.nodes.get(&t.node_id).is_some_and(|n| n.node_type == NodeType::Storage as i32))
                .map(|t| placement::FreeTarget { node: t.node_id, disk: t.disk_index, target: t.target_id })
                .collect();
            placement::build_chains(&free, replicas as usize)?
        } else {
            self.check_explicit(explicit, replicas)?;
            explicit.to_vec()
        };
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
            let mut chain = ChainInfo {
                chain_id,
                chain_version: 1,
                targets: Vec::with_capacity(members.len()),
                preferred_order: Vec::new(),
            };
            for &target_id in &members {
                chain.targets.push(ChainTarget { target_id, public_state: PublicTargetState::Serving as i32 });
            }
            if settle && let Some(next) = chain_update::next_chain(&chain, |id| self.local_state(id, &HashSet::new())) {
                chain.targets = next.targets;
            }
            for entry in &chain.targets {
                let mut t = *self.targets.get(&entry.target_id).expect("placement only returns known targets");
                t.chain_id = chain_id;
                t.public_state = entry.public_state;
                delta.targets.push(t);
            }
            table.chains.push(chain_id);
            delta.chains.push(chain);
        }
        delta.tables.push(table.clone());
        Ok(TablePlan::New(delta, table))
    }
}

impl ClusterState {
    /// Checks an explicit placement: every chain has `replicas` targets on distinct storage nodes,
    /// every target exists, is in no chain and appears once.
    pub fn check_explicit(&self, chains: &[Vec<u64>], replicas: u32) -> Result<(), Error> {
        let mut seen = HashSet::new();
        for (i, members) in chains.iter().enumerate() {
            if members.len() != replicas as usize {
                return Err(Error::invalid(format!(
                    "chain {} of the placement has {} targets, not {replicas}",
                    i + 1,
                    members.len()
                )));
            }
            let mut nodes = HashSet::new();
            for &id in members {
                let t = self.targets.get(&id).ok_or_else(|| Error::not_found(format!("no target {id}")))?;
                if t.chain_id != 0 {
                    return Err(Error::new(
                        t3fs_common::StatusCode::AlreadyExists,
                        format!("target {id} is already in chain {}", t.chain_id),
                    ));
                }
                if self.nodes.get(&t.node_id).is_none_or(|n| n.node_type != NodeType::Storage as i32) {
                    return Err(Error::invalid(format!("target {id} is not on a storage node")));
                }
                if !seen.insert(id) {
                    return Err(Error::invalid(format!("target {id} appears twice in the placement")));
                }
                if !nodes.insert(t.node_id) {
                    return Err(Error::invalid(format!(
                        "chain {} of the placement has two targets on node {}",
                        i + 1,
                        t.node_id
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Admin chain operations (update-chain, rotate-lastsrv).
#[path = "chain_admin.rs"]
mod chain_admin;
pub use chain_admin::ChainEdit;

/// Admin node operations (disable, enable, unregister).
#[path = "node_admin.rs"]
mod node_admin;

/// Preferred chain order, head rotation, chain-table versions.
#[path = "layout_admin.rs"]
mod layout_admin;

/// Node tags and admin target offlining.
#[path = "target_admin.rs"]
mod target_admin;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
