//! mgmtd driven through a real tonic client on 127.0.0.1:0.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use t3fs_common::proto::{self, LocalTargetState, NodeStatus, NodeType, PublicTargetState};
use t3fs_common::routing::{MgmtdClient, connect_mgmtd};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::KvConfig;
use t3fs_mgmtd::{Config, Server};
use tokio_util::sync::CancellationToken;

/// A long heartbeat timeout, so tests that count versions are not disturbed by failures on a
/// slow machine; the timeout test shortens it. Bootstrapping lasts as long (the default), so
/// chains do not change unless a test shortens `bootstrap_ms`.
fn config(kv: KvConfig) -> Config {
    let mut cfg = Config::new(1, "127.0.0.1:0", kv);
    cfg.heartbeat_timeout_ms = 30_000;
    cfg.check_interval_ms = 50;
    cfg
}

async fn client(server: &Server) -> MgmtdClient {
    connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap()
}

fn header(token: &str) -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: token.into(), ..Default::default() })
}

fn code(st: tonic::Status) -> StatusCode {
    Error::from_tonic(&st).code
}

async fn register(c: &mut MgmtdClient, id: u32, ty: NodeType) -> u64 {
    let req = proto::RegisterNodeReq {
        header: header(""),
        node_id: id,
        node_type: ty as i32,
        grpc_addr: format!("127.0.0.1:{id}"),
        bulk_addr: format!("127.0.0.1:{}", id + 1),
        hostname: "test".into(),
    };
    c.register_node(req).await.unwrap().into_inner().routing_version
}

async fn heartbeat(c: &mut MgmtdClient, id: u32, targets: &[u64]) -> Result<u64, tonic::Status> {
    heartbeat_with(c, id, targets, LocalTargetState::Uptodate).await
}

async fn heartbeat_with(
    c: &mut MgmtdClient,
    id: u32,
    targets: &[u64],
    local: LocalTargetState,
) -> Result<u64, tonic::Status> {
    let req = proto::HeartbeatReq {
        header: header(""),
        node_id: id,
        node_type: NodeType::Storage as i32,
        targets: targets
            .iter()
            .map(|&t| proto::LocalTarget {
                target_id: t,
                local_state: local as i32,
                used_bytes: 4096,
                chain_version: 0,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Ok(c.heartbeat(req).await?.into_inner().routing_version)
}

async fn routing(c: &mut MgmtdClient, known: u64) -> Option<proto::RoutingInfo> {
    c.get_routing_info(proto::GetRoutingInfoReq { header: header(""), known_version: known })
        .await
        .unwrap()
        .into_inner()
        .info
}

async fn create_table(c: &mut MgmtdClient, id: u32, replicas: u32) -> Result<proto::ChainTable, tonic::Status> {
    let req = proto::CreateChainTableReq {
        header: header(""),
        table_id: id,
        replicas,
        desc: "test".into(),
        ..Default::default()
    };
    Ok(c.create_chain_table(req).await?.into_inner().table.expect("reply carries the table"))
}

/// Three storage nodes (10001..=10003), two targets each (node * 10 + 1, node * 10 + 2).
async fn three_storage_nodes(c: &mut MgmtdClient) {
    for n in 10001..=10003u32 {
        register(c, n, NodeType::Storage).await;
        let t = u64::from(n) * 10;
        heartbeat(c, n, &[t + 1, t + 2]).await.unwrap();
    }
}

fn node(info: &proto::RoutingInfo, id: u32) -> &proto::NodeInfo {
    info.nodes.iter().find(|n| n.node_id == id).expect("node in routing info")
}

#[tokio::test]
async fn register_heartbeat_and_routing_versions() {
    let server = t3fs_mgmtd::start(config(KvConfig::Mem)).await.unwrap();
    let mut c = client(&server).await;

    let info = routing(&mut c, 0).await.expect("known version 0 is never current");
    let v0 = info.version;
    assert!(v0 >= 1);
    assert!(info.bootstrapping, "a fresh mgmtd bootstraps first");
    assert_eq!(info.nodes.len(), 1);
    assert_eq!(info.nodes[0].node_id, 1);
    assert_eq!(info.nodes[0].status, NodeStatus::PrimaryMgmtd as i32);
    assert_eq!(info.nodes[0].grpc_addr, server.grpc_addr().to_string());
    assert!(routing(&mut c, v0).await.is_none(), "current version returns nothing");

    assert_eq!(register(&mut c, 10001, NodeType::Storage).await, v0 + 1);
    // New targets are visible: one bump.
    assert_eq!(heartbeat(&mut c, 10001, &[100011, 100012]).await.unwrap(), v0 + 2);
    // Same report again: nothing visible changed.
    assert_eq!(heartbeat(&mut c, 10001, &[100011, 100012]).await.unwrap(), v0 + 2);
    assert!(routing(&mut c, v0 + 2).await.is_none());

    let info = routing(&mut c, v0).await.unwrap();
    assert_eq!(info.version, v0 + 2);
    let n = node(&info, 10001);
    assert_eq!(n.status, NodeStatus::HeartbeatConnected as i32);
    assert_eq!(n.node_type, NodeType::Storage as i32);
    assert_eq!(n.bulk_addr, "127.0.0.1:10002");
    assert!(n.last_heartbeat_ms > 0);
    assert_eq!(info.targets.len(), 2);
    for t in &info.targets {
        assert_eq!((t.node_id, t.chain_id), (10001, 0));
        assert_eq!(t.public_state, PublicTargetState::Serving as i32);
        assert_eq!(t.used_bytes, 4096);
    }

    // Re-registering bumps (addresses may change); a meta node's heartbeat carries no targets.
    assert_eq!(register(&mut c, 10001, NodeType::Storage).await, v0 + 3);
    assert_eq!(register(&mut c, 100, NodeType::Meta).await, v0 + 4);

    let st = heartbeat(&mut c, 424242, &[]).await.unwrap_err();
    assert_eq!(code(st), StatusCode::NotFound);
    server.shutdown().await;
}

#[tokio::test]
async fn create_chain_table_places_targets_on_distinct_nodes() {
    let server = t3fs_mgmtd::start(config(KvConfig::Mem)).await.unwrap();
    let mut c = client(&server).await;
    three_storage_nodes(&mut c).await;
    let before = routing(&mut c, 0).await.unwrap().version;

    let table = create_table(&mut c, 1, 3).await.unwrap();
    assert_eq!((table.table_id, table.version, table.desc.as_str()), (1, 1, "test"));
    assert_eq!(table.chains, vec![100_001, 100_002]);

    let info = routing(&mut c, before).await.unwrap();
    assert_eq!(info.version, before + 1);
    assert_eq!(info.tables, vec![table.clone()]);
    assert_eq!(info.chains.len(), 2);
    let mut placed = HashSet::new();
    for chain in &info.chains {
        assert_eq!(chain.chain_version, 1);
        assert_eq!(chain.targets.len(), 3);
        let nodes: HashSet<u32> = chain
            .targets
            .iter()
            .map(|ct| {
                assert_eq!(ct.public_state, PublicTargetState::Serving as i32);
                assert!(placed.insert(ct.target_id), "target {} in two chains", ct.target_id);
                let t = info.targets.iter().find(|t| t.target_id == ct.target_id).unwrap();
                assert_eq!(t.chain_id, chain.chain_id);
                t.node_id
            })
            .collect();
        assert_eq!(nodes.len(), 3, "chain {} repeats a node", chain.chain_id);
    }
    assert_eq!(placed.len(), 6);

    // Idempotent retry with the same replica count; a different count is a conflict.
    assert_eq!(create_table(&mut c, 1, 3).await.unwrap(), table);
    assert_eq!(code(create_table(&mut c, 1, 2).await.unwrap_err()), StatusCode::AlreadyExists);
    // Every target is placed, so another table has nothing to use.
    assert_eq!(code(create_table(&mut c, 2, 1).await.unwrap_err()), StatusCode::InvalidArgument);
    assert_eq!(routing(&mut c, 0).await.unwrap().version, before + 1, "refused requests change nothing");
    server.shutdown().await;
}

#[tokio::test]
async fn create_chain_table_needs_enough_nodes() {
    let server = t3fs_mgmtd::start(config(KvConfig::Mem)).await.unwrap();
    let mut c = client(&server).await;
    for n in [10001u32, 10002] {
        register(&mut c, n, NodeType::Storage).await;
        heartbeat(&mut c, n, &[u64::from(n) * 10 + 1, u64::from(n) * 10 + 2]).await.unwrap();
    }
    assert_eq!(code(create_table(&mut c, 1, 3).await.unwrap_err()), StatusCode::InvalidArgument);
    assert_eq!(code(create_table(&mut c, 1, 0).await.unwrap_err()), StatusCode::InvalidArgument);
    assert_eq!(code(create_table(&mut c, 0, 2).await.unwrap_err()), StatusCode::InvalidArgument);
    let info = routing(&mut c, 0).await.unwrap();
    assert!(info.tables.is_empty() && info.chains.is_empty());
    // Two nodes are enough for two replicas.
    assert_eq!(create_table(&mut c, 1, 2).await.unwrap().chains.len(), 2);
    server.shutdown().await;
}

/// Heartbeats every 50 ms for each node in the map, reporting all its targets (`node * 10 + 1`,
/// `+ 2`) in the given local state; a node not in the map is silent.
fn keepalive(c: &MgmtdClient, nodes: Arc<Mutex<HashMap<u32, LocalTargetState>>>, cancel: CancellationToken) {
    let mut c = c.clone();
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            let now: Vec<(u32, LocalTargetState)> = nodes.lock().unwrap().iter().map(|(&n, &l)| (n, l)).collect();
            for (n, local) in now {
                let t = u64::from(n) * 10;
                heartbeat_with(&mut c, n, &[t + 1, t + 2], local).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Polls routing info until `done` holds (10 s at most).
async fn wait_for(c: &mut MgmtdClient, what: &str, done: impl Fn(&proto::RoutingInfo) -> bool) -> proto::RoutingInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = routing(c, 0).await.unwrap();
        if done(&info) {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chain(info: &proto::RoutingInfo, id: u32) -> &proto::ChainInfo {
    info.chains.iter().find(|c| c.chain_id == id).expect("chain in routing info")
}

/// A chain as (version, [(target, state)]) for comparisons.
fn states(info: &proto::RoutingInfo, id: u32) -> (u32, Vec<(u64, PublicTargetState)>) {
    let c = chain(info, id);
    let targets =
        c.targets.iter().map(|t| (t.target_id, PublicTargetState::try_from(t.public_state).unwrap())).collect();
    (c.chain_version, targets)
}

/// Every target's public state in TargetInfo equals its chain entry.
fn assert_mirrored(info: &proto::RoutingInfo) {
    for c in &info.chains {
        for e in &c.targets {
            let t = info.targets.iter().find(|t| t.target_id == e.target_id).unwrap();
            assert_eq!((t.public_state, t.chain_id), (e.public_state, c.chain_id), "target {}", e.target_id);
        }
    }
}

#[tokio::test]
async fn failed_nodes_go_offline_then_resync_one_at_a_time() {
    use PublicTargetState::{Offline, Serving, Syncing, Waiting};
    let (online, uptodate) = (LocalTargetState::Online, LocalTargetState::Uptodate);
    let mut cfg = config(KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 600;
    cfg.bootstrap_ms = Some(0);
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    three_storage_nodes(&mut c).await;
    create_table(&mut c, 1, 3).await.unwrap();
    // Chains: 100001 = [100011, 100021, 100031], 100002 = [100022, 100032, 100012].
    let info = wait_for(&mut c, "bootstrapping to end", |i| !i.bootstrapping).await;
    assert_eq!(states(&info, 100_001), (1, vec![(100_011, Serving), (100_021, Serving), (100_031, Serving)]));

    // Node 10001 keeps heartbeating; 10002 and 10003 go silent.
    let alive = Arc::new(Mutex::new(HashMap::from([(10001u32, uptodate)])));
    let cancel = CancellationToken::new();
    keepalive(&c, alive.clone(), cancel.clone());
    let failed = |i: &proto::RoutingInfo| {
        [10002, 10003].iter().all(|&n| node(i, n).status == NodeStatus::HeartbeatFailed as i32)
            && i.chains.iter().all(|c| c.targets.iter().filter(|t| t.public_state == Offline as i32).count() == 2)
    };
    let info = wait_for(&mut c, "nodes 10002 and 10003 to fail", failed).await;
    assert_eq!(node(&info, 10001).status, NodeStatus::HeartbeatConnected as i32);
    // Their targets are OFFLINE at the tail (stable order), the survivor serves, versions bumped.
    let (v1, chain1) = states(&info, 100_001);
    assert!(v1 >= 2);
    assert_eq!(chain1, vec![(100_011, Serving), (100_021, Offline), (100_031, Offline)]);
    let (v2, chain2) = states(&info, 100_002);
    assert!(v2 >= 2);
    assert_eq!(chain2, vec![(100_012, Serving), (100_022, Offline), (100_032, Offline)]);
    assert_mirrored(&info);

    // 10002 restarts: it reports ONLINE (must resync), so its targets start SYNCING.
    alive.lock().unwrap().insert(10002, online);
    let info = wait_for(&mut c, "10002's targets to sync", |i| {
        chain(i, 100_001).targets[1].public_state == Syncing as i32
            && chain(i, 100_002).targets[1].public_state == Syncing as i32
    })
    .await;
    assert_eq!(node(&info, 10002).status, NodeStatus::HeartbeatConnected as i32);
    assert_eq!(states(&info, 100_001), (v1 + 1, vec![(100_011, Serving), (100_021, Syncing), (100_031, Offline)]));
    assert_eq!(states(&info, 100_002), (v2 + 1, vec![(100_012, Serving), (100_022, Syncing), (100_032, Offline)]));

    // 10003 restarts too: only one target per chain syncs, so its targets wait.
    alive.lock().unwrap().insert(10003, online);
    let info = wait_for(&mut c, "10003's targets to wait", |i| {
        chain(i, 100_001).targets[2].public_state == Waiting as i32
            && chain(i, 100_002).targets[2].public_state == Waiting as i32
    })
    .await;
    assert_eq!(states(&info, 100_001), (v1 + 2, vec![(100_011, Serving), (100_021, Syncing), (100_031, Waiting)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = routing(&mut c, 0).await.unwrap();
    assert_eq!(again.chains, info.chains, "nothing moves while the sync runs");
    assert_mirrored(&again);

    // 10002's sync completes (UPTODATE): it serves, and 10003's target starts syncing.
    alive.lock().unwrap().insert(10002, uptodate);
    let info = wait_for(&mut c, "10002's targets to serve", |i| {
        chain(i, 100_001).targets[1].public_state == Serving as i32
            && chain(i, 100_002).targets[1].public_state == Serving as i32
    })
    .await;
    assert_eq!(states(&info, 100_001), (v1 + 3, vec![(100_011, Serving), (100_021, Serving), (100_031, Syncing)]));
    assert_eq!(states(&info, 100_002), (v2 + 3, vec![(100_012, Serving), (100_022, Serving), (100_032, Syncing)]));

    // And 10003's: the whole cluster serves again.
    alive.lock().unwrap().insert(10003, uptodate);
    let info = wait_for(&mut c, "everything to serve", |i| {
        i.chains.iter().flat_map(|c| &c.targets).all(|t| t.public_state == Serving as i32)
    })
    .await;
    assert_eq!(states(&info, 100_001), (v1 + 4, vec![(100_011, Serving), (100_021, Serving), (100_031, Serving)]));
    assert_eq!(chain(&info, 100_002).chain_version, v2 + 4);
    assert!(info.targets.iter().all(|t| t.public_state == Serving as i32));
    assert!(!info.bootstrapping);

    cancel.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn the_last_serving_target_becomes_lastsrv_and_serves_when_back() {
    use PublicTargetState::{Lastsrv, Offline, Serving, Syncing, Waiting};
    let (online, uptodate) = (LocalTargetState::Online, LocalTargetState::Uptodate);
    let mut cfg = config(KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 600;
    cfg.bootstrap_ms = Some(0);
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    for n in [10001u32, 10002] {
        register(&mut c, n, NodeType::Storage).await;
        heartbeat(&mut c, n, &[u64::from(n) * 10 + 1, u64::from(n) * 10 + 2]).await.unwrap();
    }
    create_table(&mut c, 1, 2).await.unwrap();
    // Chain 100001 = [100011, 100021]. 10002 fails first, then 10001: 10001 was the last server.
    let alive = Arc::new(Mutex::new(HashMap::from([(10001u32, uptodate)])));
    let cancel = CancellationToken::new();
    keepalive(&c, alive.clone(), cancel.clone());
    wait_for(&mut c, "10002 to fail", |i| chain(i, 100_001).targets[1].public_state == Offline as i32).await;
    alive.lock().unwrap().clear();
    let info = wait_for(&mut c, "10001 to fail", |i| node(i, 10001).status == NodeStatus::HeartbeatFailed as i32).await;
    assert_eq!(states(&info, 100_001).1, vec![(100_011, Lastsrv), (100_021, Offline)]);
    // 10002 returns first: it has stale data, so it waits and does not serve.
    alive.lock().unwrap().insert(10002, uptodate);
    let info = wait_for(&mut c, "10002 to wait", |i| chain(i, 100_001).targets[1].public_state == Waiting as i32).await;
    assert_eq!(states(&info, 100_001).1, vec![(100_011, Lastsrv), (100_021, Waiting)]);
    // 10001 returns: it serves again; 10002 (once ONLINE) resyncs from it.
    alive.lock().unwrap().insert(10001, online);
    alive.lock().unwrap().insert(10002, online);
    let info = wait_for(&mut c, "resync", |i| chain(i, 100_001).targets[1].public_state == Syncing as i32).await;
    assert_eq!(states(&info, 100_001).1, vec![(100_011, Serving), (100_021, Syncing)]);
    assert_mirrored(&info);
    cancel.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn admin_update_chain_and_rotate_lastsrv() {
    use PublicTargetState::{Lastsrv, Offline, Serving, Syncing};
    let mut cfg = config(KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 600;
    cfg.bootstrap_ms = Some(0);
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    three_storage_nodes(&mut c).await;
    create_table(&mut c, 1, 3).await.unwrap();
    let update = |add: u64, remove: u64| proto::UpdateChainReq {
        header: header(""),
        chain_id: 100_001,
        add_target: add,
        remove_target: remove,
    };
    let info = routing(&mut c, 0).await.unwrap();
    let (v1, before) = states(&info, 100_001);
    let gone = before[1].0;
    let alive = Arc::new(Mutex::new(HashMap::from([
        (10001u32, LocalTargetState::Uptodate),
        (10002, LocalTargetState::Uptodate),
        (10003, LocalTargetState::Uptodate),
    ])));
    let cancel = CancellationToken::new();
    keepalive(&c, alive.clone(), cancel.clone());

    // Remove: the chain shrinks, its version bumps, the target is free.
    let rsp = c.update_chain(update(0, gone)).await.unwrap().into_inner().chain.unwrap();
    assert_eq!(rsp.chain_version, v1 + 1);
    assert!(rsp.targets.iter().all(|t| t.target_id != gone));
    let info = routing(&mut c, 0).await.unwrap();
    assert_eq!(info.targets.iter().find(|t| t.target_id == gone).unwrap().chain_id, 0);
    assert_mirrored(&info);
    // Refusals: both or neither given, an unknown chain, a target in another chain.
    assert_eq!(code(c.update_chain(update(gone, gone)).await.unwrap_err()), StatusCode::InvalidArgument);
    assert_eq!(code(c.update_chain(update(0, 0)).await.unwrap_err()), StatusCode::InvalidArgument);
    let mut req = update(gone, 0);
    req.chain_id = 7;
    assert_eq!(code(c.update_chain(req).await.unwrap_err()), StatusCode::NotFound);
    let other = chain(&info, 100_002).targets[0].target_id;
    assert_eq!(code(c.update_chain(update(other, 0)).await.unwrap_err()), StatusCode::AlreadyExists);

    // Add it back: OFFLINE at the tail; storage reports ONLINE, it syncs, then UPTODATE serves.
    let rsp = c.update_chain(update(gone, 0)).await.unwrap().into_inner().chain.unwrap();
    assert_eq!(
        (rsp.chain_version, rsp.targets.last().map(|t| (t.target_id, t.public_state))),
        (v1 + 2, Some((gone, Offline as i32)))
    );
    let node_of_gone = (gone / 10) as u32;
    alive.lock().unwrap().insert(node_of_gone, LocalTargetState::Online);
    wait_for(&mut c, "sync", |i| chain(i, 100_001).targets[2].public_state == Syncing as i32).await;
    alive.lock().unwrap().insert(node_of_gone, LocalTargetState::Uptodate);
    let info =
        wait_for(&mut c, "serving", |i| chain(i, 100_001).targets.iter().all(|t| t.public_state == Serving as i32))
            .await;
    assert_mirrored(&info);

    // Rotate-lastsrv: refused while something serves; once every node failed, the LASTSRV head
    // moves to the tail and the next target takes the mark.
    assert_eq!(
        code(c.rotate_last_srv(proto::RotateLastSrvReq { header: header(""), chain_id: 100_001 }).await.unwrap_err()),
        StatusCode::InvalidArgument
    );
    alive.lock().unwrap().clear();
    let info = wait_for(&mut c, "lastsrv", |i| {
        chain(i, 100_001).targets[0].public_state == Lastsrv as i32
            && chain(i, 100_001).targets[1].public_state == Offline as i32
            && chain(i, 100_001).targets[2].public_state == Offline as i32
    })
    .await;
    let (v, old) = states(&info, 100_001);
    let rsp = c
        .rotate_last_srv(proto::RotateLastSrvReq { header: header(""), chain_id: 100_001 })
        .await
        .unwrap()
        .into_inner()
        .chain
        .unwrap();
    assert_eq!(rsp.chain_version, v + 1);
    let now: Vec<(u64, i32)> = rsp.targets.iter().map(|t| (t.target_id, t.public_state)).collect();
    assert_eq!(now, vec![(old[1].0, Lastsrv as i32), (old[2].0, Offline as i32), (old[0].0, Offline as i32)]);
    assert_mirrored(&routing(&mut c, 0).await.unwrap());
    cancel.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn bootstrapping_holds_chains_then_ends_with_a_version_bump() {
    use PublicTargetState::{Offline, Serving};
    let mut cfg = config(KvConfig::Mem);
    cfg.bootstrap_ms = Some(1500);
    let started = std::time::Instant::now();
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    three_storage_nodes(&mut c).await;
    create_table(&mut c, 1, 3).await.unwrap();
    // Target 100031's disk fails (node alive, target locally OFFLINE): a chain change, held back.
    heartbeat(&mut c, 10003, &[100_032]).await.unwrap();
    let mut last = 0;
    let info = loop {
        let info = routing(&mut c, 0).await.unwrap();
        assert!(info.version >= last, "routing versions never go back");
        last = info.version;
        if !info.bootstrapping {
            break info;
        }
        assert!(chain(&info, 100_001).targets.iter().all(|t| t.public_state == Serving as i32));
        assert_eq!(chain(&info, 100_001).chain_version, 1);
        assert!(started.elapsed() < Duration::from_secs(10), "bootstrapping never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The check that ends bootstrapping also runs the state machine.
    assert_eq!(states(&info, 100_001), (2, vec![(100_011, Serving), (100_021, Serving), (100_031, Offline)]));
    assert_mirrored(&info);
    server.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvConfig::Embedded { path: dir.path().join("kv") };
    let cfg = config(kv);

    let server = t3fs_mgmtd::start(cfg.clone()).await.unwrap();
    let mut c = client(&server).await;
    three_storage_nodes(&mut c).await;
    register(&mut c, 100, NodeType::Meta).await;
    let table = create_table(&mut c, 7, 3).await.unwrap();
    let before = routing(&mut c, 0).await.unwrap();
    // Shut down with the client's connection still open (as storage nodes' would be): the store
    // must be released anyway, and promptly.
    let t = std::time::Instant::now();
    server.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
    drop(c);

    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    let after = routing(&mut c, 0).await.unwrap();
    assert!(after.version > before.version, "routing versions never go back");
    assert_eq!(after.tables, vec![table.clone()]);
    assert_eq!(after.chains, before.chains);
    assert_eq!(after.targets, before.targets);
    let ids = |info: &proto::RoutingInfo| info.nodes.iter().map(|n| (n.node_id, n.status)).collect::<Vec<_>>();
    // Restored nodes keep their status (a grace period instead of failing everyone at once).
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(node(&after, 10002).grpc_addr, "127.0.0.1:10002");
    // The restored cluster keeps working: heartbeats are accepted, the table retry is idempotent.
    heartbeat(&mut c, 10001, &[100011, 100012]).await.unwrap();
    assert_eq!(create_table(&mut c, 7, 3).await.unwrap(), table);
    server.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_cluster_token_are_refused() {
    let mut cfg = config(KvConfig::Mem);
    cfg.token = "s3cret".into();
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;

    for token in [None, header(""), header("wrong")] {
        let st =
            c.get_routing_info(proto::GetRoutingInfoReq { header: token.clone(), known_version: 0 }).await.unwrap_err();
        assert_eq!(code(st), StatusCode::Unauthenticated);
        let req = proto::RegisterNodeReq {
            header: token.clone(),
            node_id: 5,
            node_type: NodeType::Meta as i32,
            ..Default::default()
        };
        assert_eq!(code(c.register_node(req).await.unwrap_err()), StatusCode::Unauthenticated);
        let req = proto::HeartbeatReq { header: token.clone(), node_id: 5, ..Default::default() };
        assert_eq!(code(c.heartbeat(req).await.unwrap_err()), StatusCode::Unauthenticated);
        let req = proto::CreateChainTableReq { header: token.clone(), table_id: 1, replicas: 1, ..Default::default() };
        assert_eq!(code(c.create_chain_table(req).await.unwrap_err()), StatusCode::Unauthenticated);
        let req = proto::UpdateChainReq { header: token.clone(), chain_id: 1, add_target: 1, remove_target: 0 };
        assert_eq!(code(c.update_chain(req).await.unwrap_err()), StatusCode::Unauthenticated);
        let req = proto::RotateLastSrvReq { header: token, chain_id: 1 };
        assert_eq!(code(c.rotate_last_srv(req).await.unwrap_err()), StatusCode::Unauthenticated);
    }

    let req = proto::RegisterNodeReq {
        header: header("s3cret"),
        node_id: 5,
        node_type: NodeType::Meta as i32,
        ..Default::default()
    };
    c.register_node(req).await.unwrap();
    let info = c
        .get_routing_info(proto::GetRoutingInfoReq { header: header("s3cret"), known_version: 0 })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.nodes.len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn run_returns_when_cancelled() {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(t3fs_mgmtd::run(config(KvConfig::Mem), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

use t3fs_common::metrics::sample;

/// `GET /metrics` body of a server.
async fn scrape(server: &Server) -> String {
    let addr = server.metrics_addr().expect("metrics endpoint configured");
    t3fs_common::metrics::scrape(addr).await.unwrap()
}

#[tokio::test]
async fn metrics_follow_nodes_targets_chains_and_rpcs() {
    let mut cfg = config(KvConfig::Mem);
    cfg.bootstrap_ms = Some(0);
    cfg.metrics_listen = Some("127.0.0.1:0".into());
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = client(&server).await;
    let body = scrape(&server).await;
    assert_eq!(sample(&body, "t3fs_mgmtd_is_primary"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "t3fs_mgmtd_lease_term"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "t3fs_mgmtd_nodes{node_type=\"MGMTD\",status=\"PRIMARY_MGMTD\"}"), Some(1.0), "{body}");

    three_storage_nodes(&mut c).await;
    create_table(&mut c, 1, 3).await.unwrap();
    let info = routing(&mut c, 0).await.unwrap();
    let body = scrape(&server).await;
    let line = |s: &str| sample(&body, s);
    assert_eq!(line("t3fs_mgmtd_nodes{node_type=\"STORAGE\",status=\"HEARTBEAT_CONNECTED\"}"), Some(3.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_targets_by_public_state{state=\"SERVING\"}"), Some(6.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_targets_by_local_state{state=\"UPTODATE\"}"), Some(6.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_chains"), Some(2.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_routing_version"), Some(info.version as f64), "{body}");
    assert_eq!(line("t3fs_mgmtd_rpcs_total{method=\"register_node\",code=\"Ok\"}"), Some(3.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_rpcs_total{method=\"create_chain_table\",code=\"Ok\"}"), Some(1.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_rpc_duration_seconds_count{method=\"heartbeat\"}"), Some(3.0), "{body}");
    assert_eq!(line("t3fs_mgmtd_chain_changes_total"), Some(0.0), "{body}");

    // A refused request is counted with its code.
    let st = heartbeat(&mut c, 424242, &[]).await.unwrap_err();
    let refused = code(st);
    // Node 10003 reports its targets OFFLINE: the checker changes both chains.
    heartbeat_with(&mut c, 10003, &[100031, 100032], LocalTargetState::Offline).await.unwrap();
    let mut body = scrape(&server).await;
    for _ in 0..100 {
        if sample(&body, "t3fs_mgmtd_chain_changes_total").unwrap_or(0.0) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        body = scrape(&server).await;
    }
    assert_eq!(sample(&body, "t3fs_mgmtd_chain_changes_total"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "t3fs_mgmtd_targets_by_local_state{state=\"OFFLINE\"}"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "t3fs_mgmtd_targets_by_public_state{state=\"OFFLINE\"}"), Some(2.0), "{body}");
    let series = format!("t3fs_mgmtd_rpcs_total{{method=\"heartbeat\",code=\"{refused:?}\"}}");
    assert_eq!(sample(&body, &series), Some(1.0), "{body}");
    server.shutdown().await;
}
