//! Node tags and admin target offlining through gRPC, and that both survive a restart of mgmtd
//! (they are persisted with the node and target records): a mgmtd on an in-memory KV store with
//! fake storage nodes that report UPTODATE while routing shows their target SERVING or SYNCING
//! (the fake's sync completes at once) and ONLINE otherwise.
use std::time::Duration;

use support::{OFFLINE, SERVING, config, fake_storage_nodes, header, routing, wait_until};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto;
use t3fs_common::{Error, StatusCode};
use t3fs_kv::Db;
use tokio_util::sync::CancellationToken;

mod support;

fn target(info: &proto::RoutingInfo, id: u64) -> proto::TargetInfo {
    *info.targets.iter().find(|t| t.target_id == id).expect("target exists")
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
    let m1 = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    let conn = MgmtdConn::new(&m1.grpc_addr().to_string()).unwrap();
    let cancel = CancellationToken::new();
    fake_storage_nodes(conn.clone(), cancel.clone()).await;
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
    let m2 = t3fs_mgmtd::start_with_db(config(1), db.clone()).await.unwrap();
    let conn2 = MgmtdConn::new(&m2.grpc_addr().to_string()).unwrap();
    fake_storage_nodes(conn2.clone(), cancel.clone()).await;
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
