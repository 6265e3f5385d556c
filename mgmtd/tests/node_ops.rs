//! Admin node and layout operations against a primary and a standby mgmtd sharing one KV store,
//! with fake storage nodes that report local states the way storage does: UPTODATE while routing
//! shows the target SERVING (or SYNCING: the fake's sync completes at once), ONLINE otherwise.
use std::time::{Duration, Instant};

use support::{SERVING, config, fake_storage_heartbeats, header, register, routing, wait_until};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, NodeStatus, NodeType, PublicTargetState};
use t3fs_common::routing::RoutingCache;
use t3fs_common::{Error, StatusCode};
use t3fs_kv::Db;
use tokio_util::sync::CancellationToken;

mod support;

fn node(info: &proto::RoutingInfo, id: u32) -> Option<&proto::NodeInfo> {
    info.nodes.iter().find(|n| n.node_id == id)
}

fn target_state(info: &proto::RoutingInfo, id: u64) -> i32 {
    info.targets.iter().find(|t| t.target_id == id).map_or(-1, |t| t.public_state)
}

fn chain(info: &proto::RoutingInfo, id: u32) -> proto::ChainInfo {
    info.chains.iter().find(|c| c.chain_id == id).cloned().expect("chain exists")
}

fn ids(c: &proto::ChainInfo) -> Vec<u64> {
    c.targets.iter().map(|t| t.target_id).collect()
}

async fn disable(conn: &MgmtdConn, node_id: u32) -> Result<proto::NodeInfo, Error> {
    let rsp =
        conn.call(|mut c| async move { c.disable_node(proto::DisableNodeReq { header: header(), node_id }).await });
    Ok(rsp.await?.into_inner().node.expect("node"))
}

async fn enable(conn: &MgmtdConn, node_id: u32) -> Result<proto::NodeInfo, Error> {
    let rsp = conn.call(|mut c| async move { c.enable_node(proto::EnableNodeReq { header: header(), node_id }).await });
    Ok(rsp.await?.into_inner().node.expect("node"))
}

async fn unregister(conn: &MgmtdConn, node_id: u32) -> Result<u64, Error> {
    let rsp = conn
        .call(|mut c| async move { c.unregister_node(proto::UnregisterNodeReq { header: header(), node_id }).await });
    Ok(rsp.await?.into_inner().routing_version)
}

async fn set_order(conn: &MgmtdConn, chain_id: u32, target_ids: &[u64]) -> Result<proto::ChainInfo, Error> {
    let req = proto::SetPreferredOrderReq { header: header(), chain_id, target_ids: target_ids.to_vec() };
    let rsp = conn.call(|mut c| {
        let req = req.clone();
        async move { c.set_preferred_order(req).await }
    });
    Ok(rsp.await?.into_inner().chain.expect("chain"))
}

async fn rotate_head(conn: &MgmtdConn, chain_id: u32) -> Result<proto::ChainInfo, Error> {
    let rsp = conn.call(|mut c| async move {
        c.rotate_chain_head(proto::RotateChainHeadReq { header: header(), chain_id }).await
    });
    Ok(rsp.await?.into_inner().chain.expect("chain"))
}

async fn create_table(conn: &MgmtdConn, req: proto::CreateChainTableReq) -> Result<proto::ChainTable, Error> {
    let rsp = conn.call(|mut c| {
        let req = req.clone();
        async move { c.create_chain_table(req).await }
    });
    Ok(rsp.await?.into_inner().table.expect("table"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_layout_operations() {
    let db: Db = t3fs_kv::mem::MemKv::new();
    let m1 = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    let m2 = t3fs_mgmtd::start_with_db(config(2), db.clone()).await.unwrap();
    assert!(m1.is_primary() && !m2.is_primary());
    let (a1, a2) = (m1.grpc_addr().to_string(), m2.grpc_addr().to_string());
    // Configured with the primary only: the standby's address comes from routing info.
    let conn = MgmtdConn::new(&a1).unwrap();
    let cancel = CancellationToken::new();
    for n in 10001..=10003u32 {
        register(&conn, n, NodeType::Storage).await;
    }
    register(&conn, 10010, NodeType::Meta).await;
    fake_storage_heartbeats(conn.clone(), cancel.clone());
    wait_until(&conn, "targets", |i| i.targets.len() == 6).await;
    let req = proto::CreateChainTableReq { header: header(), table_id: 1, replicas: 3, ..Default::default() };
    create_table(&conn, req).await.unwrap();
    let info = wait_until(&conn, "bootstrapping to end", |i| {
        !i.bootstrapping && i.chains.len() == 2 && i.targets.iter().all(|t| t.public_state == SERVING)
    })
    .await;
    let t = info.targets.iter().find(|t| t.target_id == 100_011).unwrap();
    assert_eq!((t.free_bytes, t.capacity_bytes), (Some(1 << 30), Some(4 << 30)), "disk space in routing info");

    // The standby is listed right after the primary, and clients learn its address.
    let info = wait_until(&conn, "the standby listed", |i| i.nodes.get(1).is_some_and(|n| n.node_id == 2)).await;
    assert_eq!(info.nodes[0].status, NodeStatus::PrimaryMgmtd as i32);
    let standby = &info.nodes[1];
    assert_eq!((standby.node_type, standby.status), (NodeType::Mgmtd as i32, NodeStatus::HeartbeatConnected as i32));
    assert_eq!(standby.grpc_addr, a2);
    RoutingCache::new().refresh_via(&conn, "").await.unwrap();
    assert!(conn.addrs().contains(&a2), "{:?}", conn.addrs());

    // Disable a storage node: its targets go offline, the chains keep serving from the others,
    // and its heartbeats (still accepted) do not bring it back.
    let disabled = disable(&conn, 10002).await.unwrap();
    assert_eq!(disabled.status, NodeStatus::Disabled as i32);
    let info = wait_until(&conn, "node 10002's targets offline", |i| {
        [100_021, 100_022].iter().all(|&t| target_state(i, t) == PublicTargetState::Offline as i32)
    })
    .await;
    for c in &info.chains {
        assert_eq!(c.targets[0].public_state, SERVING, "{c:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = routing(&conn).await;
    assert_eq!(node(&info, 10002).unwrap().status, NodeStatus::Disabled as i32);
    assert_eq!(target_state(&info, 100_021), PublicTargetState::Offline as i32);

    // Unregister refusals change nothing.
    let v = info.version;
    let e = unregister(&conn, 10002).await.unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidArgument);
    assert!(e.message.contains("chain"), "{e}");
    let e = unregister(&conn, 10001).await.unwrap_err();
    assert!(e.message.contains("heartbeat-connected"), "{e}");
    assert_eq!(unregister(&conn, 4242).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(unregister(&conn, 2).await.unwrap_err().code, StatusCode::InvalidArgument, "a live standby");
    assert_eq!(disable(&conn, 4242).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(routing(&conn).await.version, v);

    // Enable it: its targets resync (SYNCING), then serve.
    assert_eq!(enable(&conn, 10002).await.unwrap().status, NodeStatus::HeartbeatConnected as i32);
    let mut saw_syncing = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = routing(&conn).await;
        let states = [100_021, 100_022].map(|t| target_state(&info, t));
        saw_syncing |= states.contains(&(PublicTargetState::Syncing as i32));
        if states == [SERVING, SERVING] {
            break;
        }
        assert!(Instant::now() < deadline, "node 10002's targets never served again: {states:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_syncing, "re-enabled targets resync before serving");

    // Preferred order: the checker puts the chain in that order; rotate-head moves the head
    // behind the other SERVING targets and keeps the rotation.
    let before = chain(&routing(&conn).await, 100_001);
    let mut want = ids(&before);
    want.reverse();
    assert_eq!(set_order(&conn, 100_001, &want[..2]).await.unwrap_err().code, StatusCode::InvalidArgument);
    let set = set_order(&conn, 100_001, &want).await.unwrap();
    assert_eq!(set.preferred_order, want);
    let info = wait_until(&conn, "the preferred order", |i| ids(&chain(i, 100_001)) == want).await;
    assert!(chain(&info, 100_001).chain_version > before.chain_version);
    let rotated = rotate_head(&conn, 100_001).await.unwrap();
    let after = vec![want[1], want[2], want[0]];
    assert_eq!((ids(&rotated), rotated.preferred_order.clone()), (after.clone(), after.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ids(&chain(&routing(&conn).await, 100_001)), after, "the checker keeps the rotation");
    assert_eq!(rotate_head(&conn, 77).await.unwrap_err().code, StatusCode::NotFound);

    // A new chain-table version lists chains explicitly.
    let req = proto::CreateChainTableReq {
        header: header(),
        table_id: 1,
        new_version: true,
        chains: vec![100_002, 100_001],
        ..Default::default()
    };
    let table = create_table(&conn, req.clone()).await.unwrap();
    assert_eq!((table.version, table.chains.clone()), (2, vec![100_002, 100_001]));
    let bad = proto::CreateChainTableReq { chains: vec![100_009], ..req };
    assert_eq!(create_table(&conn, bad).await.unwrap_err().code, StatusCode::NotFound);
    let info = routing(&conn).await;
    assert!(info.tables.iter().any(|t| (t.table_id, t.version) == (1, 2)));

    // A node with no targets: refused while connected, forgotten once disabled.
    assert!(unregister(&conn, 10010).await.is_err());
    disable(&conn, 10010).await.unwrap();
    unregister(&conn, 10010).await.unwrap();
    assert!(node(&routing(&conn).await, 10010).is_none());

    // The standby dies: it is listed as failed once its announcement is stale, and can be
    // unregistered then.
    m2.kill().await;
    wait_until(&conn, "the dead standby failed", |i| {
        node(i, 2).is_some_and(|n| n.status == NodeStatus::HeartbeatFailed as i32)
    })
    .await;
    unregister(&conn, 2).await.unwrap();
    wait_until(&conn, "the dead standby forgotten", |i| node(i, 2).is_none()).await;

    cancel.cancel();
    m1.shutdown().await;
}
