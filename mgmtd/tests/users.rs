//! Users, tokens and client sessions through a real mgmtd: who may do what, refusals change
//! nothing, token hashes stay inside, everything survives a restart, sessions expire.
use std::time::Duration;

use t3fs_common::proto::{self, NodeType};
use t3fs_common::routing::{MgmtdClient, connect_mgmtd};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::KvConfig;
use t3fs_mgmtd::Config;

const CLUSTER: &str = "the-cluster-token";

fn config(kv: KvConfig) -> Config {
    let mut cfg = Config::new(1, "127.0.0.1:0", kv);
    cfg.token = CLUSTER.into();
    cfg.check_interval_ms = 50;
    cfg.client_session_timeout_ms = 1000;
    cfg
}

fn header(token: &str) -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: token.into(), ..Default::default() })
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> StatusCode {
    Error::from_tonic(&r.unwrap_err()).code
}

async fn add_user(
    c: &mut MgmtdClient,
    token: &str,
    uid: u32,
    name: &str,
    admin: bool,
) -> Result<String, tonic::Status> {
    let req =
        proto::AddUserReq { header: header(token), uid, name: name.into(), gid: uid, admin, ..Default::default() };
    Ok(c.add_user(req).await?.into_inner().token)
}

async fn list_users(c: &mut MgmtdClient, token: &str) -> Result<Vec<proto::UserInfo>, tonic::Status> {
    Ok(c.list_users(proto::ListUsersReq { header: header(token) }).await?.into_inner().users)
}

async fn user_table(c: &mut MgmtdClient, token: &str, known: u64) -> Result<Option<proto::UserTable>, tonic::Status> {
    let req = proto::GetUserTableReq { header: header(token), known_version: known };
    Ok(c.get_user_table(req).await?.into_inner().table)
}

#[tokio::test]
async fn who_may_do_what() {
    let server = t3fs_mgmtd::start(config(KvConfig::Mem)).await.unwrap();
    let mut c = connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap();

    let admin = add_user(&mut c, CLUSTER, 0, "root", true).await.unwrap();
    let alice = add_user(&mut c, &admin, 1000, "alice", false).await.unwrap();
    assert_eq!((admin.len(), alice.len()), (64, 64));

    // Missing and wrong tokens are refused with Unauthenticated and change nothing.
    for bad in ["", "not-a-token-at-all", &alice[..63]] {
        assert_eq!(code(add_user(&mut c, bad, 7, "mallory", true).await), StatusCode::Unauthenticated, "{bad:?}");
        let req = proto::GetRoutingInfoReq { header: header(bad), known_version: 0 };
        assert_eq!(code(c.get_routing_info(req).await), StatusCode::Unauthenticated);
    }
    // A plain user may read routing info and keep a session, nothing else.
    let req = proto::GetRoutingInfoReq { header: header(&alice), known_version: 0 };
    assert!(c.get_routing_info(req).await.unwrap().into_inner().info.is_some());
    assert_eq!(code(add_user(&mut c, &alice, 7, "mallory", true).await), StatusCode::PermissionDenied);
    assert_eq!(code(list_users(&mut c, &alice).await), StatusCode::PermissionDenied);
    assert_eq!(code(user_table(&mut c, &alice, 0).await), StatusCode::PermissionDenied);
    let table = proto::CreateChainTableReq { header: header(&alice), table_id: 1, replicas: 1, ..Default::default() };
    assert_eq!(code(c.create_chain_table(table).await), StatusCode::PermissionDenied);
    // Storage and meta nodes register with the cluster token only; clients with any valid token.
    let reg = |token: &str, id, ty: NodeType| proto::RegisterNodeReq {
        header: header(token),
        node_id: id,
        node_type: ty as i32,
        grpc_addr: format!("127.0.0.1:{id}"),
        ..Default::default()
    };
    assert_eq!(code(c.register_node(reg(&alice, 10001, NodeType::Storage)).await), StatusCode::PermissionDenied);
    assert_eq!(code(c.register_node(reg(&admin, 10001, NodeType::Storage)).await), StatusCode::PermissionDenied);
    c.register_node(reg(&alice, 30001, NodeType::Client)).await.unwrap();

    // Nothing the refusals tried exists.
    let users = list_users(&mut c, CLUSTER).await.unwrap();
    assert_eq!(
        users.iter().map(|u| (u.uid, u.name.as_str(), u.admin)).collect::<Vec<_>>(),
        [(0, "root", true), (1000, "alice", false)]
    );
    assert!(users.iter().all(|u| u.token_sha256.is_empty()), "ListUsers never shows token hashes");

    // Daemons get the hashes, by version.
    let t = user_table(&mut c, CLUSTER, 0).await.unwrap().unwrap();
    assert_eq!((t.version, t.users.len()), (2, 2));
    assert!(t.users.iter().all(|u| u.token_sha256.len() == 32));
    assert!(user_table(&mut c, CLUSTER, 2).await.unwrap().is_none(), "no table when the caller is current");

    // A new token replaces the old one at once; removal ends a user.
    let req = proto::SetUserTokenReq { header: header(CLUSTER), uid: 1000, token: String::new() };
    let alice2 = c.set_user_token(req).await.unwrap().into_inner().token;
    let routing = |t: &str| proto::GetRoutingInfoReq { header: header(t), known_version: 0 };
    assert_eq!(code(c.get_routing_info(routing(&alice)).await), StatusCode::Unauthenticated);
    c.get_routing_info(routing(&alice2)).await.unwrap();
    c.remove_user(proto::RemoveUserReq { header: header(&admin), uid: 1000 }).await.unwrap();
    assert_eq!(code(c.get_routing_info(routing(&alice2)).await), StatusCode::Unauthenticated);
    let req = proto::RemoveUserReq { header: header(&admin), uid: 1000 };
    assert_eq!(code(c.remove_user(req).await), StatusCode::NotFound);
    assert_eq!(user_table(&mut c, CLUSTER, 0).await.unwrap().unwrap().version, 4);
    server.shutdown().await;
}

#[tokio::test]
async fn users_and_sessions_survive_restart_and_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(KvConfig::Embedded { path: dir.path().join("kv") });
    let server = t3fs_mgmtd::start(cfg.clone()).await.unwrap();
    let mut c = connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap();
    let bob = add_user(&mut c, CLUSTER, 1001, "bob", false).await.unwrap();
    let extend = |token: &str, id: &str| proto::ExtendClientSessionReq {
        header: header(token),
        client_id: id.into(),
        hostname: "h1".into(),
        description: "test".into(),
    };
    let s = c.extend_client_session(extend(&bob, "bob-1")).await.unwrap().into_inner().session.unwrap();
    assert_eq!((s.uid, s.hostname.as_str()), (1001, "h1"));
    assert!(s.expire_ms >= s.last_extend_ms + 1000);
    server.shutdown().await;
    drop(c);

    let server = t3fs_mgmtd::start(cfg).await.unwrap();
    let mut c = connect_mgmtd(&server.grpc_addr().to_string()).await.unwrap();
    // bob's token still works after the restart, and another user cannot take over his session.
    let s2 = c.extend_client_session(extend(&bob, "bob-1")).await.unwrap().into_inner().session.unwrap();
    assert_eq!(s2.start_ms, s.start_ms, "the restored session keeps its start");
    let carol = add_user(&mut c, CLUSTER, 1002, "carol", false).await.unwrap();
    assert_eq!(code(c.extend_client_session(extend(&carol, "bob-1")).await), StatusCode::PermissionDenied);
    let list = || proto::ListClientSessionsReq { header: header(CLUSTER) };
    let ids: Vec<String> =
        c.list_client_sessions(list()).await.unwrap().into_inner().sessions.into_iter().map(|s| s.client_id).collect();
    assert_eq!(ids, ["bob-1"]);
    assert_eq!(
        code(c.list_client_sessions(proto::ListClientSessionsReq { header: header(&bob) }).await),
        StatusCode::PermissionDenied
    );

    // Not extended for client_session_timeout_ms (1 s): the checker drops it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = c.list_client_sessions(list()).await.unwrap().into_inner().sessions;
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "session never expired: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
