//! Tests of the cluster model: heartbeats, placement, and the state machine as the checker runs it.
use t3fs_common::StatusCode;
use t3fs_common::proto::LocalTarget;

use super::*;

fn register(s: &mut ClusterState, id: u32, ty: NodeType, now: Instant) {
    let req = RegisterNodeReq { node_id: id, node_type: ty as i32, grpc_addr: format!("h:{id}"), ..Default::default() };
    let d = s.plan_register(&req, 1, now, 0).unwrap();
    assert!(d.visible);
    let v = s.version() + 1;
    s.apply(d, Some(v));
}

fn heartbeat(s: &mut ClusterState, id: u32, targets: &[u64], now: Instant) -> bool {
    let targets: Vec<(u64, LocalTargetState)> = targets.iter().map(|&t| (t, LocalTargetState::Uptodate)).collect();
    heartbeat_with(s, id, &targets, now)
}

fn heartbeat_with(s: &mut ClusterState, id: u32, targets: &[(u64, LocalTargetState)], now: Instant) -> bool {
    let req = HeartbeatReq {
        node_id: id,
        node_type: NodeType::Storage as i32,
        targets: targets
            .iter()
            .map(|&(t, l)| LocalTarget { target_id: t, local_state: l as i32, ..Default::default() })
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

/// Applies a check with chain updates; returns whether it was visible.
fn check(s: &mut ClusterState, now: Instant) -> bool {
    let d = s.plan_check(now, Duration::from_secs(5), true);
    let visible = d.visible;
    let v = visible.then(|| s.version() + 1);
    s.apply(d, v);
    visible
}

fn chain_of(s: &ClusterState, id: u32) -> (u32, Vec<(u64, PublicTargetState)>) {
    let c = &s.chains[&id];
    let targets = c.targets.iter().map(|t| (t.target_id, chain_update::public_of(t.public_state))).collect();
    (c.chain_version, targets)
}

/// Every chained target's `TargetInfo.public_state` equals its chain entry.
fn assert_mirrored(s: &ClusterState) {
    for c in s.chains.values() {
        for e in &c.targets {
            assert_eq!(s.targets[&e.target_id].public_state, e.public_state, "target {}", e.target_id);
            assert_eq!(s.targets[&e.target_id].chain_id, c.chain_id);
        }
    }
}

fn with_table(now: Instant) -> ClusterState {
    let mut s = cluster(now);
    let TablePlan::New(d, table) = s.plan_create_table(1, 3, "t", true, &[]).unwrap() else {
        panic!("expected new table")
    };
    assert_eq!(table.chains, vec![100_001, 100_002]);
    let v = s.version() + 1;
    s.apply(d, Some(v));
    s
}

use PublicTargetState::{Lastsrv, Offline, Serving, Syncing, Waiting};
const OFFLINE_L: LocalTargetState = LocalTargetState::Offline;
const ONLINE: LocalTargetState = LocalTargetState::Online;
const UPTODATE: LocalTargetState = LocalTargetState::Uptodate;

#[test]
fn chain_table_placement_and_state_machine() {
    let now = Instant::now();
    let mut s = with_table(now);
    assert_eq!(s.targets[&11].chain_id, 100_001);
    assert_eq!(chain_of(&s, 100_001), (1, vec![(11, Serving), (21, Serving), (31, Serving)]));
    assert_eq!(chain_of(&s, 100_002), (1, vec![(22, Serving), (32, Serving), (12, Serving)]));
    assert_mirrored(&s);
    // Idempotent retry; different replica count refused; no free targets left for another table.
    assert!(matches!(s.plan_create_table(1, 3, "t", true, &[]).unwrap(), TablePlan::Existing(_)));
    assert!(s.plan_create_table(1, 2, "t", true, &[]).is_err());
    assert!(s.plan_create_table(2, 1, "t", true, &[]).is_err());
    // Everyone heartbeats: a check changes nothing.
    assert!(!check(&mut s, now));

    // Node 20 goes silent. While bootstrapping only the node fails; chains stay as they are.
    let later = now + Duration::from_secs(10);
    heartbeat(&mut s, 10, &[11, 12], later);
    heartbeat(&mut s, 30, &[31, 32], later);
    let d = s.plan_check(later, Duration::from_secs(5), false);
    assert!(d.visible);
    assert_eq!(d.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![20]);
    assert!(d.chains.is_empty());
    assert!(d.targets.iter().all(|t| t.public_state == Serving as i32));
    // With chain updates: failed, its targets OFFLINE at the tails, chain versions bumped.
    assert!(check(&mut s, later));
    assert_eq!(s.nodes[&20].status, NodeStatus::HeartbeatFailed as i32);
    assert_eq!(chain_of(&s, 100_001), (2, vec![(11, Serving), (31, Serving), (21, Offline)]));
    assert_eq!(chain_of(&s, 100_002), (2, vec![(32, Serving), (12, Serving), (22, Offline)]));
    assert_mirrored(&s);
    assert!(!check(&mut s, later), "a second check changes nothing");

    // It comes back (ONLINE: it must resync): connected now, chains move on the next check.
    assert!(heartbeat_with(&mut s, 20, &[(21, ONLINE), (22, ONLINE)], later));
    assert_eq!(s.nodes[&20].status, NodeStatus::HeartbeatConnected as i32);
    assert_eq!(chain_of(&s, 100_001).0, 2);
    assert!(check(&mut s, later));
    assert_eq!(chain_of(&s, 100_001), (3, vec![(11, Serving), (31, Serving), (21, Syncing)]));
    assert_eq!(chain_of(&s, 100_002), (3, vec![(32, Serving), (12, Serving), (22, Syncing)]));
    assert_mirrored(&s);
    // Target 21's sync completes: SERVING; chain 100_002 is untouched.
    assert!(!heartbeat_with(&mut s, 20, &[(21, UPTODATE), (22, ONLINE)], later));
    assert!(check(&mut s, later));
    assert_eq!(chain_of(&s, 100_001), (4, vec![(11, Serving), (31, Serving), (21, Serving)]));
    assert_eq!(chain_of(&s, 100_002).0, 3);
    assert_mirrored(&s);
}

#[test]
fn one_sync_at_a_time_and_the_last_server() {
    let now = Instant::now();
    let mut s = with_table(now);
    // Nodes 20 and 30 fail.
    let t1 = now + Duration::from_secs(10);
    heartbeat(&mut s, 10, &[11, 12], t1);
    assert!(check(&mut s, t1));
    assert_eq!(chain_of(&s, 100_001), (2, vec![(11, Serving), (21, Offline), (31, Offline)]));
    // Both return ONLINE: only one target of the chain syncs.
    heartbeat_with(&mut s, 20, &[(21, ONLINE), (22, ONLINE)], t1);
    heartbeat_with(&mut s, 30, &[(31, ONLINE), (32, ONLINE)], t1);
    assert!(check(&mut s, t1));
    assert_eq!(chain_of(&s, 100_001), (3, vec![(11, Serving), (21, Syncing), (31, Waiting)]));
    heartbeat_with(&mut s, 20, &[(21, UPTODATE), (22, ONLINE)], t1);
    assert!(check(&mut s, t1));
    assert_eq!(chain_of(&s, 100_001), (4, vec![(11, Serving), (21, Serving), (31, Syncing)]));

    // Node 10 (the head of chain 100_001) fails too, then 20: 21 was the last to serve.
    let t2 = t1 + Duration::from_secs(10);
    heartbeat_with(&mut s, 20, &[(21, UPTODATE), (22, ONLINE)], t2);
    heartbeat_with(&mut s, 30, &[(31, ONLINE), (32, ONLINE)], t2);
    assert!(check(&mut s, t2));
    assert_eq!(chain_of(&s, 100_001), (5, vec![(21, Serving), (31, Syncing), (11, Offline)]));
    let t3 = t2 + Duration::from_secs(10);
    heartbeat_with(&mut s, 30, &[(31, ONLINE), (32, ONLINE)], t3);
    assert!(check(&mut s, t3));
    assert_eq!(chain_of(&s, 100_001), (6, vec![(21, Lastsrv), (31, Waiting), (11, Offline)]));
    assert_mirrored(&s);
    // 10 returns first: it must not serve (21 has newer data); it waits with 31.
    heartbeat_with(&mut s, 10, &[(11, UPTODATE), (12, ONLINE)], t3);
    assert!(check(&mut s, t3));
    assert_eq!(chain_of(&s, 100_001), (7, vec![(21, Lastsrv), (31, Waiting), (11, Waiting)]));
    // 21 returns: it serves again and one of the others syncs.
    heartbeat_with(&mut s, 20, &[(21, ONLINE), (22, ONLINE)], t3);
    assert!(check(&mut s, t3));
    assert_eq!(chain_of(&s, 100_001), (8, vec![(21, Serving), (31, Syncing), (11, Waiting)]));
    assert_mirrored(&s);
}

#[test]
fn stored_local_states_are_not_trusted_after_restart() {
    let now = Instant::now();
    let mut s = with_table(now);
    // Chain 100_001 becomes [11 SERVING, 21 SERVING, 31 SYNCING].
    heartbeat_with(&mut s, 20, &[(21, ONLINE), (22, UPTODATE)], now);
    heartbeat_with(&mut s, 30, &[(31, OFFLINE_L), (32, UPTODATE)], now);
    assert!(check(&mut s, now));
    heartbeat_with(&mut s, 30, &[(31, ONLINE), (32, UPTODATE)], now);
    assert!(check(&mut s, now));
    assert_eq!(chain_of(&s, 100_001).1, vec![(11, Serving), (21, Serving), (31, Syncing)]);
    // The store says every target is UPTODATE (e.g. 31 finished syncing just before a crash
    // that lost the report, or the record is simply old).
    let mut stored: Vec<TargetInfo> = s.targets.values().copied().collect();
    for t in &mut stored {
        t.local_state = UPTODATE as i32;
    }
    let loaded = Loaded {
        version: s.version(),
        nodes: s.nodes.values().cloned().collect(),
        targets: stored,
        chains: s.chains.values().cloned().collect(),
        tables: s.tables.values().cloned().collect(),
        configs: Vec::new(),
    };
    let mut r = ClusterState::from_loaded(loaded, s.version() + 1, now);
    // Nothing heard yet: every target counts as OFFLINE, so 31 cannot be promoted on the
    // strength of a stale stored UPTODATE (this is what bootstrapping waits out).
    let d = r.plan_check(now, Duration::from_secs(5), true);
    let c = d.chains.iter().find(|c| c.chain_id == 100_001).unwrap();
    assert!(c.targets.iter().all(|t| t.public_state != Serving as i32 || t.target_id != 31));
    // Once the nodes have reported, their reports count: 31 still ONLINE keeps syncing.
    for (n, t) in [(10, [(11, UPTODATE), (12, UPTODATE)]), (20, [(21, UPTODATE), (22, UPTODATE)])] {
        heartbeat_with(&mut r, n, &t, now);
    }
    heartbeat_with(&mut r, 30, &[(31, ONLINE), (32, UPTODATE)], now);
    assert!(!check(&mut r, now));
    assert_eq!(chain_of(&r, 100_001).1, vec![(11, Serving), (21, Serving), (31, Syncing)]);
}

#[test]
fn new_chains_settle_unless_bootstrapping() {
    let now = Instant::now();
    let mut s = cluster(now);
    // Node 30's targets are locally OFFLINE (e.g. a failed disk).
    heartbeat_with(&mut s, 30, &[(31, OFFLINE_L), (32, OFFLINE_L)], now);
    let TablePlan::New(d, _) = s.plan_create_table(1, 3, "t", false, &[]).unwrap() else { panic!() };
    assert!(d.chains.iter().flat_map(|c| &c.targets).all(|t| t.public_state == Serving as i32));
    assert!(d.targets.iter().all(|t| t.public_state == Serving as i32));
    let TablePlan::New(d, _) = s.plan_create_table(1, 3, "t", true, &[]).unwrap() else { panic!() };
    assert!(d.chains.iter().all(|c| c.chain_version == 1));
    let v = s.version() + 1;
    s.apply(d, Some(v));
    assert_eq!(chain_of(&s, 100_001), (1, vec![(11, Serving), (21, Serving), (31, Offline)]));
    assert_mirrored(&s);
    assert!(!check(&mut s, now), "a settled chain is a fixed point");
}

#[test]
fn table_ids_are_validated() {
    let s = cluster(Instant::now());
    assert!(s.plan_create_table(0, 3, "", true, &[]).is_err());
    assert!(s.plan_create_table(1, 0, "", true, &[]).is_err());
    assert!(s.plan_create_table(1, 4, "", true, &[]).is_err());
    assert!(s.plan_create_table(u32::MAX, 3, "", true, &[]).is_err());
    assert!(s.plan_create_table(1, 3, &"x".repeat(MAX_DESC_LEN + 1), true, &[]).is_err());
}

#[test]
fn routing_info_lists_mgmtd_first() {
    let s = cluster(Instant::now());
    let me = NodeInfo { node_id: 1, status: NodeStatus::PrimaryMgmtd as i32, ..Default::default() };
    let info = s.routing_info(&me, &[], true);
    assert!(info.bootstrapping);
    assert_eq!(info.version, s.version());
    assert_eq!(info.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![1, 10, 20, 30]);
    assert_eq!(info.targets.len(), 6);
}

#[test]
fn explicit_placement_builds_the_given_chains_and_refuses_bad_ones() {
    let now = Instant::now();
    let s = cluster(now);
    let code = |r: Result<TablePlan, Error>| r.err().map(|e| e.code);
    // Refusals: wrong length, unknown target, a target twice, two targets of one node in a chain.
    assert_eq!(code(s.plan_create_table(1, 3, "", true, &[vec![11, 21]])), Some(StatusCode::InvalidArgument));
    assert_eq!(code(s.plan_create_table(1, 2, "", true, &[vec![11, 99]])), Some(StatusCode::NotFound));
    assert_eq!(
        code(s.plan_create_table(1, 2, "", true, &[vec![11, 21], vec![11, 31]])),
        Some(StatusCode::InvalidArgument)
    );
    assert_eq!(code(s.plan_create_table(1, 2, "", true, &[vec![11, 12]])), Some(StatusCode::InvalidArgument));
    // Two chains in the given order, heads first; the other targets stay free.
    let explicit = [vec![31, 11], vec![22, 32]];
    let TablePlan::New(d, table) = s.plan_create_table(1, 2, "x", true, &explicit).unwrap() else {
        panic!("new table")
    };
    assert_eq!(table.chains, vec![100_001, 100_002]);
    let mut s = s;
    let v = s.version() + 1;
    s.apply(d, Some(v));
    assert_eq!(chain_of(&s, 100_001), (1, vec![(31, Serving), (11, Serving)]));
    assert_eq!(chain_of(&s, 100_002), (1, vec![(22, Serving), (32, Serving)]));
    assert_eq!((s.targets[&12].chain_id, s.targets[&21].chain_id), (0, 0));
    assert_mirrored(&s);
    // A target already placed is refused for another table.
    assert_eq!(code(s.plan_create_table(2, 2, "", true, &[vec![12, 31]])), Some(StatusCode::AlreadyExists));
}
