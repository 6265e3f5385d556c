//! Configs per node type through the real gRPC service: SetConfig/GetConfig, the push in heartbeat
//! replies, refusals, the token check, the metric, and configs surviving a restart.
use t3fs_common::proto::{self, NodeType};
use t3fs_common::routing::{MgmtdClient, connect_mgmtd};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::KvConfig;
use t3fs_mgmtd::Config;

const TOKEN: &str = "s3cret";

fn config(kv: KvConfig) -> Config {
    let mut cfg = Config::new(1, "127.0.0.1:0", kv);
    cfg.heartbeat_timeout_ms = 30_000;
    cfg.token = TOKEN.into();
    cfg.metrics_listen = Some("127.0.0.1:0".into());
    cfg
}

fn header(token: &str) -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: token.into(), ..Default::default() })
}

async fn set(
    c: &mut MgmtdClient,
    ty: NodeType,
    toml: &str,
    expected: Option<u64>,
) -> Result<proto::NodeConfig, StatusCode> {
    let req = proto::SetConfigReq {
        header: header(TOKEN),
        node_type: ty as i32,
        toml: toml.into(),
        expected_version: expected,
    };
    match c.set_config(req).await {
        Ok(rsp) => Ok(rsp.into_inner().config.expect("reply carries the config")),
        Err(st) => Err(Error::from_tonic(&st).code),
    }
}

async fn get(c: &mut MgmtdClient, ty: NodeType) -> proto::NodeConfig {
    let req = proto::GetConfigReq { header: header(TOKEN), node_type: ty as i32 };
    c.get_config(req).await.unwrap().into_inner().config.expect("reply carries the config")
}

async fn heartbeat(c: &mut MgmtdClient, id: u32, config_version: u64) -> Option<proto::NodeConfig> {
    let req = proto::HeartbeatReq {
        header: header(TOKEN),
        node_id: id,
        node_type: NodeType::Storage as i32,
        config_version,
        ..Default::default()
    };
    c.heartbeat(req).await.unwrap().into_inner().config
}

#[tokio::test]
async fn set_get_push_refuse_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(KvConfig::Embedded { path: dir.path().join("kv") });
    let server = t3fs_mgmtd::start(cfg.clone()).await.unwrap();
    let mut c = connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap();
    let reg = proto::RegisterNodeReq {
        header: header(TOKEN),
        node_id: 10001,
        node_type: NodeType::Storage as i32,
        ..Default::default()
    };
    c.register_node(reg).await.unwrap();

    assert_eq!(get(&mut c, NodeType::Storage).await.version, 0);
    assert_eq!(heartbeat(&mut c, 10001, 0).await, None, "no config set: no payload");
    let text = "# hot items\nlog = \"info,t3fs_storage=debug\"\nfence_after_ms = 4000\n";
    let one = set(&mut c, NodeType::Storage, text, Some(0)).await.unwrap();
    assert_eq!((one.version, one.toml.as_str()), (1, text));
    assert_eq!(get(&mut c, NodeType::Storage).await, one);
    assert_eq!(heartbeat(&mut c, 10001, 0).await, Some(one.clone()));
    assert_eq!(heartbeat(&mut c, 10001, 1).await, None, "current: no payload");

    // Refused, changing nothing: bad TOML, an unknown item, a bad log filter, a stale expected
    // version, a node type that takes no config, a bad token.
    for (ty, toml, expected) in [
        (NodeType::Storage, "fence_after_ms = ", None),
        (NodeType::Storage, "bogus = 1", None),
        (NodeType::Storage, "log = \"info,=x=y\"", None),
        (NodeType::Storage, "", Some(0)),
        (NodeType::Fuse, "", None),
    ] {
        assert_eq!(set(&mut c, ty, toml, expected).await.unwrap_err(), StatusCode::InvalidArgument, "{toml:?}");
    }
    let req = proto::SetConfigReq {
        header: header("wrong"),
        node_type: NodeType::Storage as i32,
        toml: String::new(),
        expected_version: None,
    };
    assert_eq!(Error::from_tonic(&c.set_config(req).await.unwrap_err()).code, StatusCode::Unauthenticated);
    let req = proto::GetConfigReq { header: header("wrong"), node_type: NodeType::Storage as i32 };
    assert_eq!(Error::from_tonic(&c.get_config(req).await.unwrap_err()).code, StatusCode::Unauthenticated);
    assert_eq!(get(&mut c, NodeType::Storage).await, one);

    let meta = set(&mut c, NodeType::Meta, "idempotency_ttl_ms = 60000", None).await.unwrap();
    assert_eq!(meta.version, 1);
    let body = t3fs_common::metrics::scrape(server.metrics_addr().unwrap()).await.unwrap();
    assert!(body.contains("t3fs_mgmtd_config_version{node_type=\"STORAGE\"} 1"), "{body}");
    let info = c
        .get_routing_info(proto::GetRoutingInfoReq { header: header(TOKEN), known_version: 0 })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let node = info.nodes.iter().find(|n| n.node_id == 10001).unwrap();
    assert_eq!(node.config_version, 1, "the version the node reported last");

    // A restarted mgmtd serves the stored configs, with versions continuing.
    server.shutdown().await;
    drop(c);
    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap();
    assert_eq!(get(&mut c, NodeType::Storage).await, one);
    assert_eq!(get(&mut c, NodeType::Meta).await, meta);
    assert_eq!(set(&mut c, NodeType::Storage, "", Some(1)).await.unwrap().version, 2);
    server.shutdown().await;
}
