//! Shared by the mgmtd integration tests that drive mgmtd over gRPC through [`MgmtdConn`] with fake
//! storage nodes: a fast-timing config, routing polls, node registration and the fake nodes' heartbeats.
//! (Each test file uses a subset, hence `dead_code` allowed here.)
#![allow(dead_code)]
use std::time::{Duration, Instant};

use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, LocalTargetState, NodeType, PublicTargetState};
use t3fs_kv::KvConfig;
use t3fs_mgmtd::Config;
use tokio_util::sync::CancellationToken;

pub const LEASE_MS: u64 = 1500;
pub const SERVING: i32 = PublicTargetState::Serving as i32;
pub const OFFLINE: i32 = PublicTargetState::Offline as i32;

/// mgmtd `id` on an in-memory store, with short check, bootstrap and lease timings (a long
/// heartbeat timeout: fake nodes never fail unless a test stops them).
pub fn config(id: u32) -> Config {
    let mut cfg = Config::new(id, "127.0.0.1:0", KvConfig::Mem);
    cfg.heartbeat_timeout_ms = 10_000;
    cfg.check_interval_ms = 50;
    cfg.bootstrap_ms = Some(300);
    cfg.lease_length_ms = LEASE_MS;
    cfg.extend_lease_interval_ms = 200;
    cfg.lease_margin_ms = 300;
    cfg
}

pub fn header() -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), ..Default::default() })
}

/// The full routing info from the primary.
pub async fn routing(conn: &MgmtdConn) -> proto::RoutingInfo {
    let rsp = conn
        .call(|mut c| async move {
            c.get_routing_info(proto::GetRoutingInfoReq { header: header(), known_version: 0 }).await
        })
        .await
        .unwrap();
    rsp.into_inner().info.expect("known version 0 always gets info")
}

/// Polls routing info until `pred` holds (10 s at most).
pub async fn wait_until(
    conn: &MgmtdConn,
    what: &str,
    pred: impl Fn(&proto::RoutingInfo) -> bool,
) -> proto::RoutingInfo {
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

pub async fn register(conn: &MgmtdConn, id: u32, ty: NodeType) {
    let req = proto::RegisterNodeReq {
        header: header(),
        node_id: id,
        node_type: ty as i32,
        grpc_addr: format!("127.0.0.1:{id}"),
        ..Default::default()
    };
    conn.call(|mut c| {
        let req = req.clone();
        async move { c.register_node(req).await }
    })
    .await
    .unwrap();
}

/// The fake storage nodes 10001..=10003.
pub const FAKE_NODES: std::ops::RangeInclusive<u32> = 10001..=10003;

/// Registers the fake storage nodes and starts their heartbeats ([`fake_storage_heartbeats`]).
pub async fn fake_storage_nodes(conn: MgmtdConn, cancel: CancellationToken) {
    for n in FAKE_NODES {
        register(&conn, n, NodeType::Storage).await;
    }
    fake_storage_heartbeats(conn, cancel);
}

/// Heartbeats of the fake storage nodes (registered by the caller) every 100 ms until `cancel`: targets
/// `node * 10 + 1` and `+ 2`, each UPTODATE while routing shows it SERVING or SYNCING (the fake's sync
/// completes at once) or does not know it yet, ONLINE otherwise, with 1 GiB free of 4 GiB. A refused
/// heartbeat is logged and retried (a test may restart mgmtd under them).
pub fn fake_storage_heartbeats(conn: MgmtdConn, cancel: CancellationToken) {
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            let info = routing(&conn).await;
            for n in FAKE_NODES {
                let targets = [u64::from(n) * 10 + 1, u64::from(n) * 10 + 2]
                    .into_iter()
                    .map(|t| {
                        let public = info.targets.iter().find(|x| x.target_id == t).map(|x| x.public_state);
                        let up = public.is_none_or(|s| s == SERVING || s == PublicTargetState::Syncing as i32);
                        let local = if up { LocalTargetState::Uptodate } else { LocalTargetState::Online };
                        proto::LocalTarget {
                            target_id: t,
                            local_state: local as i32,
                            free_bytes: Some(1 << 30),
                            capacity_bytes: Some(4 << 30),
                            ..Default::default()
                        }
                    })
                    .collect();
                let req = proto::HeartbeatReq {
                    header: header(),
                    node_id: n,
                    node_type: NodeType::Storage as i32,
                    targets,
                    config_version: 0,
                };
                let sent = conn.call(|mut c| {
                    let req = req.clone();
                    async move { c.heartbeat(req).await }
                });
                if let Err(e) = sent.await {
                    eprintln!("fake storage node {n}: heartbeat refused: {e}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
