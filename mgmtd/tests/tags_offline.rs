//! Node tags and admin target offlining through gRPC, and that both survive a restart of mgmtd
//! (they are persisted with the node and target records): a mgmtd on an in-memory KV store with
//! fake storage nodes that report UPTODATE while routing shows their target SERVING or SYNCING
//! (the fake's sync completes at once) and ONLINE otherwise.
use std::time::{Duration, Instant};

use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, LocalTargetState, NodeType, PublicTargetState};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::{Db, KvConfig};
use t3fs_mgmtd::Config;
use tokio_util::sync::CancellationToken;

fn config() -> Config {
    let mut cfg = Config::new(1, "127.0.0.1:0", KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 10_000;
    cfg.check_interval_ms = 50;
    cfg.bootstrap_ms = Some(300);
    cfg.lease_length_ms = 1500;
    cfg.extend_lease_interval_ms = 200;
    cfg.lease_margin_ms = 300;
    cfg
}

fn header() -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), ..Default::default() })
}

async fn routing(conn: &MgmtdConn) -> proto::RoutingInfo {
    let req = proto::GetRoutingInfoReq { header: header(), known_version: 0 };
    let rsp = conn
        .call(|mut c| {
            let r = req.clone();
            async move { c.get_routing_info(r).await }
        })
        .await
        .unwrap();
    rsp.into_inner().info.expect("known version 0 always gets info")
}

async fn wait_until(conn: &MgmtdConn, what: &str, pred: impl Fn(&proto::RoutingInfo) -> bool) -> proto::RoutingInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = routing(conn).await;
        if pred(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn target(info: &proto::RoutingInfo, id: u64) -> proto::TargetInfo {
    *info.targets.iter().find(|t| t.target_id == id).expect("target exists")
}

const SERVING: i32 = PublicTargetState::Serving as i32;
const OFFLINE: i32 = PublicTargetState::Offline as i32;

/// Fake storage nodes 10001..=10003 with targets `node * 10 + 1`, `+ 2`, registering once and
/// heartbeating every 100 ms (registering again after `mgmtd` changes).
fn storage_nodes(conn: MgmtdConn, cancel: CancellationToken) {
    tokio::spawn(async move {
        for n in 10001..=10003u32 {
            let req = proto::RegisterNodeReq {
                header: header(),
                node_id: n,
                node_type: NodeType::Storage as i32,
                grpc_addr: format!("127.0.0.1:{n}"),
                ..Default::default()
            };
            if conn
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.register_node(r).await }
                })
                .await
                .is_err()
            {
                return;
            }
        }
        while !cancel.is_cancelled() {
            let info = routing(&conn).await;
            for n in 10001..=10003u32 {
                let targets = [u64::from(n) * 10 + 1, u64::from(n) * 10 + 2]
                    .into_iter()
                    .map(|t| {
                        let public = info.targets.iter().find(|x| x.target_id == t).map(|x| x.public_state);
                        let up = public.is_none_or(|s| s == SERVING || s == PublicTargetState::Syncing as i32);
                        let local = if up { LocalTargetState::Uptodate } else { LocalTargetState::Online };
                        proto::LocalTarget { target_id: t, local_state: local as i32, ..Default::default() }
                    })
                    .collect();
                let req = proto::HeartbeatReq {
                    header: header(),
                    node_id: n,
                    node_type: NodeType::Storage as i32,
                    targets,
                    config_version: 0,
                };
                let _ = conn
                    .call(|mut c| {
                        let r = req.clone();
                        async move { c.heartbeat(r).await }
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

async fn set_tags(
    conn: &MgmtdConn,
    node_id: u32,
    tags: &[(&str, &str)],
    mode: proto::SetTagsMode,
) -> Result<proto::NodeInfo, Error> {
    let tags: Vec<proto::NodeTag> =
        tags.iter().map(|(k, v)| proto::NodeTag { key: k.to_string(), value: v.to_string() }).collect();
    let req = proto::SetNodeTagsReq { header: header(), node_id, tags, mode: mode as i32 };
    let rsp = conn
        .call(|mut c| {
            let r = req.clone();
            async move { c.set_node_tags(r).await }
        })
        .await?;
    Ok(rsp.into_inner().node.expect("a node"))
}

async fn offline(conn: &MgmtdConn, target_id: u64, online: bool) -> Result<proto::OfflineTargetRsp, Error> {
    let req = proto::OfflineTargetReq { header: header(), target_id, online };
    Ok(conn
        .call(|mut c| {
            let r = req.clone();
            async move { c.offline_target(r).await }
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_and_offline_targets_survive_a_mgmtd_restart() {
    let db: Db = t3fs_kv::mem::MemKv::new();
    let m1 = t3fs_mgmtd::start_with_db(config(), db.clone()).await.unwrap();
    let conn = MgmtdConn::new(&m1.grpc_addr().to_string()).unwrap();
    let cancel = CancellationToken::new();
    storage_nodes(conn.clone(), cancel.clone());
    wait_until(&conn, "targets", |i| i.targets.len() == 6).await;
    let req = proto::CreateChainTableReq { header: header(), table_id: 1, replicas: 3, ..Default::default() };
    conn.call(|mut c| {
        let r = req.clone();
        async move { c.create_chain_table(r).await }
    })
    .await
    .unwrap();
    wait_until(&conn, "bootstrapping to end", |i| {
        !i.bootstrapping && i.targets.iter().all(|t| t.public_state == SERVING)
    })
    .await;

    let n = set_tags(&conn, 10002, &[("zone", "a"), ("ssd", "")], proto::SetTagsMode::Replace).await.unwrap();
    assert_eq!(n.tags.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["ssd", "zone"]);
    let e = set_tags(&conn, 10002, &[("bad key", "")], proto::SetTagsMode::Upsert).await.unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidArgument);
    let e = set_tags(&conn, 424242, &[], proto::SetTagsMode::Replace).await.unwrap_err();
    assert_eq!(e.code, StatusCode::NotFound);

    let rsp = offline(&conn, 100_021, false).await.unwrap();
    let chain = rsp.chain.expect("a chained target");
    assert_eq!(chain.targets.last().map(|t| (t.target_id, t.public_state)), Some((100_021, OFFLINE)));
    assert!(rsp.target.unwrap().admin_offline);
    assert_eq!(offline(&conn, 999, false).await.unwrap_err().code, StatusCode::NotFound);

    // Restart mgmtd on the same store: tags and the offline flag are still there, and the target
    // stays offline although its node reports it ONLINE.
    m1.shutdown().await;
    let m2 = t3fs_mgmtd::start_with_db(config(), db.clone()).await.unwrap();
    let conn2 = MgmtdConn::new(&m2.grpc_addr().to_string()).unwrap();
    storage_nodes(conn2.clone(), cancel.clone());
    let info = wait_until(&conn2, "bootstrapping to end after restart", |i| !i.bootstrapping).await;
    let node = info.nodes.iter().find(|n| n.node_id == 10002).unwrap();
    assert_eq!(node.tags.len(), 2, "{node:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = target(&routing(&conn2).await, 100_021);
    assert!(t.admin_offline && t.public_state == OFFLINE, "{t:?}");

    // Online: it resyncs and serves again.
    let rsp = offline(&conn2, 100_021, true).await.unwrap();
    assert!(!rsp.target.unwrap().admin_offline);
    wait_until(&conn2, "the target back", |i| target(i, 100_021).public_state == SERVING).await;
    cancel.cancel();
    m2.shutdown().await;
}
