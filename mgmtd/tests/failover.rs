//! Three mgmtd on one shared KV store: one primary, two standbys; clients follow the primary
//! through `MgmtdConn`, across a crash of the primary and a clean handover.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use t3fs_common::mgmtd_conn::{MgmtdConn, primary_hint};
use t3fs_common::proto::{self, LocalTargetState, NodeStatus, NodeType, PublicTargetState};
use t3fs_common::routing::{RoutingCache, connect_mgmtd};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::{Db, KvConfig};
use t3fs_mgmtd::{Config, Server};
use tokio_util::sync::CancellationToken;

const LEASE_MS: u64 = 1500;
const INTERVAL_MS: u64 = 200;
const BOOTSTRAP_MS: u64 = 1000;
/// Scheduling slack for a loaded test machine.
const SLACK_MS: u64 = 700;

fn config(id: u32) -> Config {
    let mut cfg = Config::new(id, "127.0.0.1:0", KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 10_000;
    cfg.check_interval_ms = 50;
    cfg.bootstrap_ms = Some(BOOTSTRAP_MS);
    cfg.lease_length_ms = LEASE_MS;
    cfg.extend_lease_interval_ms = INTERVAL_MS;
    cfg.lease_margin_ms = 300;
    cfg
}

fn header() -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), ..Default::default() })
}

async fn routing(conn: &MgmtdConn) -> Result<proto::RoutingInfo, Error> {
    let rsp = conn
        .call(|mut c| async move {
            c.get_routing_info(proto::GetRoutingInfoReq { header: header(), known_version: 0 }).await
        })
        .await?;
    Ok(rsp.into_inner().info.expect("known version 0 always gets info"))
}

/// One routing snapshot as the monitor saw it.
#[derive(Clone, Debug)]
struct Snap {
    at: Instant,
    primary: u32,
    version: u64,
    bootstrapping: bool,
    chains: Vec<proto::ChainInfo>,
}

/// Polls routing info every 20 ms through its own connection, recording every answer.
fn monitor(conn: MgmtdConn, cancel: CancellationToken) -> Arc<Mutex<Vec<Snap>>> {
    let snaps = Arc::new(Mutex::new(Vec::new()));
    let out = snaps.clone();
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            if let Ok(info) = routing(&conn).await {
                let primary = info.nodes[0].node_id;
                assert_eq!(info.nodes[0].status, NodeStatus::PrimaryMgmtd as i32);
                snaps.lock().unwrap().push(Snap {
                    at: Instant::now(),
                    primary,
                    version: info.version,
                    bootstrapping: info.bootstrapping,
                    chains: info.chains,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    out
}

/// Fake storage nodes 10001..=10003 with targets `node * 10 + 1`, `+ 2`, heartbeating every
/// 100 ms through `conn`; a target in `hidden` is not reported (its disk failed). Returns the
/// number of successful heartbeats so far.
fn storage_nodes(conn: MgmtdConn, hidden: Arc<Mutex<Vec<u64>>>, cancel: CancellationToken) -> Arc<Mutex<u64>> {
    let ok = Arc::new(Mutex::new(0u64));
    let count = ok.clone();
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            for n in 10001..=10003u32 {
                let hidden = hidden.lock().unwrap().clone();
                let targets: Vec<proto::LocalTarget> = [u64::from(n) * 10 + 1, u64::from(n) * 10 + 2]
                    .into_iter()
                    .filter(|t| !hidden.contains(t))
                    .map(|t| proto::LocalTarget {
                        target_id: t,
                        local_state: LocalTargetState::Uptodate as i32,
                        ..Default::default()
                    })
                    .collect();
                let req = proto::HeartbeatReq {
                    header: header(),
                    node_id: n,
                    node_type: NodeType::Storage as i32,
                    targets,
                    ..Default::default()
                };
                if conn
                    .call(|mut c| {
                        let req = req.clone();
                        async move { c.heartbeat(req).await }
                    })
                    .await
                    .is_ok()
                {
                    *count.lock().unwrap() += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    ok
}

/// Waits until one of `servers` is primary; returns its index.
async fn wait_primary(servers: &[&Server], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = servers.iter().position(|s| s.is_primary()) {
            return i;
        }
        assert!(Instant::now() < deadline, "no primary after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `addr`'s answer to a routing request: `NotPrimary` naming `primary` (retried for a while, as a
/// standby learns the new holder at its next lease round).
async fn assert_names_primary(addr: &str, primary: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut c = connect_mgmtd(addr).await.unwrap();
        let st = c
            .get_routing_info(proto::GetRoutingInfoReq { header: header(), known_version: 0 })
            .await
            .expect_err("a standby refuses");
        let e = Error::from_tonic(&st);
        assert_eq!(e.code, StatusCode::NotPrimary, "{e}");
        if primary_hint(&e).as_deref() == Some(primary) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} does not name {primary}: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chain(chains: &[proto::ChainInfo], id: u32) -> &proto::ChainInfo {
    chains.iter().find(|c| c.chain_id == id).expect("chain exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_and_everyone_follows() {
    let db: Db = t3fs_kv::mem::MemKv::new();
    let m1 = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    let m2 = t3fs_mgmtd::start_with_db(config(2), db.clone()).await.unwrap();
    let m3 = t3fs_mgmtd::start_with_db(config(3), db.clone()).await.unwrap();
    assert!(m1.is_primary(), "the first mgmtd on an empty store takes the lease at start");
    assert!(!m2.is_primary() && !m3.is_primary());
    let addr = |s: &Server| s.grpc_addr().to_string();
    let (a1, a2, a3) = (addr(&m1), addr(&m2), addr(&m3));
    assert_names_primary(&a2, &a1).await;
    assert_names_primary(&a3, &a1).await;

    // Everyone lists all three, in different orders (the standbys first, so they must follow).
    let cancel = CancellationToken::new();
    let storage_conn = MgmtdConn::new(&format!("{a3},{a2},{a1}")).unwrap();
    for n in 10001..=10003u32 {
        let req = proto::RegisterNodeReq {
            header: header(),
            node_id: n,
            node_type: NodeType::Storage as i32,
            grpc_addr: format!("127.0.0.1:{n}"),
            ..Default::default()
        };
        storage_conn
            .call(|mut c| {
                let req = req.clone();
                async move { c.register_node(req).await }
            })
            .await
            .unwrap();
    }
    assert_eq!(storage_conn.current(), a1, "the connection moved to the primary");
    let hidden = Arc::new(Mutex::new(Vec::new()));
    let beats = storage_nodes(storage_conn.clone(), hidden.clone(), cancel.clone());
    let snaps = monitor(MgmtdConn::new(&format!("{a2},{a1},{a3}")).unwrap(), cancel.clone());
    let cache = RoutingCache::new();
    let poller =
        cache.spawn_poller(format!("{a1}, {a2}, {a3}"), String::new(), Duration::from_millis(50), cancel.clone());

    // A chain table, then the end of m1's bootstrapping.
    let conn = MgmtdConn::new(&format!("{a2},{a3},{a1}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while routing(&conn).await.unwrap().targets.len() < 6 {
        assert!(Instant::now() < deadline, "targets never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let req = proto::CreateChainTableReq { header: header(), table_id: 1, replicas: 3, ..Default::default() };
    conn.call(|mut c| {
        let req = req.clone();
        async move { c.create_chain_table(req).await }
    })
    .await
    .unwrap();
    cache.wait_for(Duration::from_secs(10), |r| !r.info.bootstrapping && r.info.chains.len() == 2).await.unwrap();
    let before = routing(&conn).await.unwrap();
    assert_eq!(before.nodes[0].node_id, 1);
    let chain_before = chain(&before.chains, 100_001).clone();
    assert!(chain_before.targets.iter().all(|t| t.public_state == PublicTargetState::Serving as i32));

    // Crash the primary (the lease is not handed over), then fail target 100031's disk: a chain
    // change the new primary must hold back while it bootstraps.
    m1.kill().await;
    let killed = Instant::now();
    hidden.lock().unwrap().push(100_031);
    let standbys = [&m2, &m3];
    let i = wait_primary(&standbys, Duration::from_millis(LEASE_MS + INTERVAL_MS + SLACK_MS)).await;
    let took = killed.elapsed();
    let (new, other) = (standbys[i], standbys[1 - i]);
    let new_addr = addr(new);
    let new_id = if i == 0 { 2 } else { 3 };
    println!("mgmtd {new_id} took over {took:?} after the crash");
    assert_names_primary(&addr(other), &new_addr).await;

    // The poller follows: the new primary bootstraps, then the chain changes.
    let r = cache
        .wait_for(Duration::from_secs(10), |r| {
            r.info.nodes[0].node_id == new_id
                && !r.info.bootstrapping
                && chain(&r.info.chains, 100_001)
                    .targets
                    .iter()
                    .any(|t| t.public_state != PublicTargetState::Serving as i32)
        })
        .await
        .unwrap();
    let after = chain(&r.info.chains, 100_001);
    assert_eq!(after.chain_version, chain_before.chain_version + 1);
    assert_eq!(after.targets.last().unwrap().target_id, 100_031);
    assert_eq!(after.targets.last().unwrap().public_state, PublicTargetState::Offline as i32);
    // Storage heartbeats follow the new primary (nodes stay connected).
    let n = *beats.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(*beats.lock().unwrap() > n, "heartbeats reach the new primary");
    assert_eq!(storage_conn.current(), new_addr);
    let info = routing(&conn).await.unwrap();
    for n in 10001..=10003u32 {
        let node = info.nodes.iter().find(|x| x.node_id == n).unwrap();
        assert_eq!(node.status, NodeStatus::HeartbeatConnected as i32, "node {n}");
    }

    // A clean shutdown hands the lease over at once: the last mgmtd takes over well before the
    // lease would have expired.
    let last_id = if new_id == 2 { 3 } else { 2 };
    assert!(new.is_primary());
    let (new, other) = if i == 0 { (m2, m3) } else { (m3, m2) };
    new.shutdown().await;
    let handed = Instant::now();
    wait_primary(&[&other], Duration::from_millis(2 * INTERVAL_MS + SLACK_MS)).await;
    assert!(handed.elapsed() < Duration::from_millis(LEASE_MS), "took {:?}", handed.elapsed());
    cache.wait_for(Duration::from_secs(5), |r| r.info.nodes[0].node_id == last_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    cancel.cancel();
    let _ = poller.await;
    other.shutdown().await;

    // Over everything the monitor saw: versions never went back, and while the new primary
    // bootstrapped the chains were exactly as before the crash.
    let snaps = snaps.lock().unwrap().clone();
    for w in snaps.windows(2) {
        assert!(w[1].version >= w[0].version, "routing version went back: {} -> {}", w[0].version, w[1].version);
    }
    let booting: Vec<&Snap> = snaps.iter().filter(|s| s.primary == new_id && s.bootstrapping).collect();
    assert!(!booting.is_empty(), "the monitor saw the new primary bootstrapping");
    for s in &booting {
        assert_eq!(chain(&s.chains, 100_001), &chain_before, "a chain changed during bootstrapping");
    }
    let first = booting[0].at;
    let done = snaps.iter().find(|s| s.primary == new_id && !s.bootstrapping).expect("bootstrapping ended");
    assert!(done.at > first);
    assert!(snaps.iter().any(|s| s.primary == last_id), "the monitor followed the handover too");
    // Versions strictly increase across a takeover (every takeover bumps it).
    let v_old = snaps.iter().filter(|s| s.primary == 1).map(|s| s.version).max().unwrap();
    let v_new = snaps.iter().filter(|s| s.primary == new_id).map(|s| s.version).min().unwrap();
    assert!(v_new > v_old);
}

#[tokio::test]
async fn a_restarted_primary_waits_for_its_own_crashed_lease() {
    let db: Db = t3fs_kv::mem::MemKv::new();
    let m1 = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    assert!(m1.is_primary());
    m1.kill().await;
    // The same node id started again: the lease of the crashed run is not its to extend.
    let started = Instant::now();
    let again = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    assert!(!again.is_primary());
    wait_primary(&[&again], Duration::from_millis(LEASE_MS + INTERVAL_MS + SLACK_MS)).await;
    assert!(started.elapsed() >= Duration::from_millis(LEASE_MS / 2), "took over before the lease ran out");
    // After a clean shutdown the next start is primary at once.
    again.shutdown().await;
    let third = t3fs_mgmtd::start_with_db(config(1), db).await.unwrap();
    assert!(third.is_primary());
    third.shutdown().await;
}
