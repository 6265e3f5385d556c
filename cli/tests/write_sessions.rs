//! Write sessions of dead clients are pruned: a real mgmtd (client sessions expire after 1 s) and
//! a real meta (pruning every 300 ms). A write session whose client never had (or lost) its mgmtd
//! client session goes; one whose client keeps extending stays.
use std::time::Duration;

use t3fs_common::proto::{self, OpenSession};
use t3fs_common::{InodeId, StatusCode};
use t3fs_kv::KvConfig;
use t3fs_meta::namespace::Caller;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_dead_clients_are_pruned() {
    let mut mcfg = t3fs_mgmtd::Config::new(1, "127.0.0.1:0", KvConfig::Mem);
    mcfg.client_session_timeout_ms = 1000;
    mcfg.check_interval_ms = 100;
    let mgmtd = t3fs_mgmtd::start(mcfg).await.unwrap();
    let addr = mgmtd.grpc_addr().to_string();
    let mut cfg = t3fs_meta::Config::new(addr.clone(), KvConfig::Mem);
    cfg.session_prune_interval_ms = 300;
    let meta = t3fs_meta::start(cfg).await.unwrap();
    let store = meta.store().clone();

    // The live client keeps its mgmtd session; the dead one never had one.
    let mut m = t3fs_common::routing::connect_mgmtd(&addr).await.unwrap();
    let extend = |id: &str| proto::ExtendClientSessionReq {
        header: Some(proto::RequestHeader::default()),
        client_id: id.into(),
        ..Default::default()
    };
    m.extend_client_session(extend("live")).await.unwrap();
    let root = Caller::default();
    for (client, sid) in [("live", 1), ("dead", 2)] {
        let s = OpenSession { client_id: client.into(), session_id: sid };
        store.add_session(&root, InodeId::ROOT, s).await.unwrap();
    }
    let ids =
        || async { store.sessions_of(InodeId::ROOT).await.unwrap().into_iter().map(|(s, _)| s).collect::<Vec<_>>() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        m.extend_client_session(extend("live")).await.unwrap();
        let left = ids().await;
        if left == [1] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dead client's session never pruned: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the live client stops extending, mgmtd expires it and meta prunes its session too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ids().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "expired client's session never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bad sessions were never accepted in the first place.
    let bad = OpenSession { client_id: String::new(), session_id: 3 };
    assert_eq!(store.add_session(&root, InodeId::ROOT, bad).await.unwrap_err().code, StatusCode::InvalidArgument);
    meta.shutdown().await;
    mgmtd.shutdown().await;
}
