//! User tokens end to end on a real in-process cluster (mgmtd, meta, three storage servers): a
//! user added at mgmtd works at once on meta and storage, acts as its own uid whatever the request
//! header claims, a wrong token is refused everywhere and changes nothing, a removed user stops
//! working, and the client keeps a session at mgmtd.
use std::sync::Arc;
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, UserInfo};
use t3fs_common::proto;
use t3fs_common::{Error, InodeId, StatusCode};

async fn add_user(cluster: &LocalCluster, uid: u32, name: &str) -> String {
    let mut m = t3fs_common::routing::connect_mgmtd(cluster.mgmtd_addr()).await.unwrap();
    let header = proto::RequestHeader { token: cluster.plan.cluster.token.clone(), ..Default::default() };
    let req = proto::AddUserReq { header: Some(header), uid, name: name.into(), gid: uid, ..Default::default() };
    m.add_user(req).await.unwrap().into_inner().token
}

async fn client_with(cluster: &LocalCluster, token: &str) -> t3fs_common::Result<Arc<Client>> {
    let cfg = t3fs_client::ClientConfig {
        token: token.into(),
        retry_timeout_ms: 3_000,
        session_extend_ms: 200,
        ..cluster.client_config()
    };
    Client::connect(cfg).await
}

#[tokio::test]
async fn user_tokens_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let admin = cluster.client().await.unwrap();
    let root = UserInfo::root();
    let private = admin.mkdir(&root, InodeId::ROOT, b"private", 0o700).await.unwrap();

    // Added a moment ago: meta and storage learn the token on first sight.
    let token = add_user(&cluster, 1000, "alice").await;
    let alice = client_with(&cluster, &token).await.unwrap();
    // The header claims root; the token says alice.
    let f = alice.create(&root, InodeId::ROOT, b"alice.txt", 0o644, true).await.unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1000), "a user token acts as its user, not as the header says");
    let denied = alice.create(&root, InodeId(private.id), b"x", 0o644, true).await.unwrap_err();
    assert_eq!(denied.code, StatusCode::PermissionDenied);
    // Storage takes her token for data.
    alice.write(&f, 0, b"hello from alice").await.unwrap();
    let f = alice.close(&root, InodeId(f.id), 16, true).await.unwrap();
    assert_eq!(alice.read(&f, 0, 16).await.unwrap(), b"hello from alice");

    // A wrong token: mgmtd, meta and storage all refuse, nothing is created.
    let err = client_with(&cluster, "0123456789abcdef-wrong").await.err().expect("a wrong token must not connect");
    assert_eq!(err.code, StatusCode::Unauthenticated, "{err}");
    let meta_addr = alice.routing().nodes_of_type(proto::NodeType::Meta).next().unwrap().grpc_addr.clone();
    let mut meta = proto::meta_client::MetaClient::connect(format!("http://{meta_addr}")).await.unwrap();
    let bad = |name: &str| proto::CreateReq {
        header: Some(proto::RequestHeader { token: "0123456789abcdef-wrong".into(), ..Default::default() }),
        parent: InodeId::ROOT.0,
        name: name.as_bytes().to_vec().into(),
        mode: 0o644,
        exclusive: true,
        session: None,
    };
    let st = meta.create(bad("mallory.txt")).await.unwrap_err();
    assert_eq!(Error::from_tonic(&st).code, StatusCode::Unauthenticated);
    assert_eq!(admin.lookup(&root, InodeId::ROOT, b"mallory.txt").await.unwrap_err().code, StatusCode::NotFound);
    let bulk_code = {
        let req = proto::BulkRequest { token: "0123456789abcdef-wrong".into(), ..Default::default() };
        let storage = alice.routing().nodes_of_type(proto::NodeType::Storage).next().unwrap().bulk_addr.clone();
        t3fs_common::bulk::BulkClient::default().call(&storage, &req, &[]).await.unwrap_err().code
    };
    assert_eq!(bulk_code, StatusCode::Unauthenticated);

    // Her token may write to a chain's head, but not send chain-internal updates (a forwarded version,
    // a sync replacement) straight to a replica: refused, and the chunk is unchanged everywhere.
    let lay = f.layout.unwrap();
    let r = alice.routing();
    let table = r.table(t3fs_common::ids::ChainTableId(lay.table_id), lay.table_version).unwrap();
    let chain = r.chain(t3fs_common::layout::chain_of(&lay, &table.chains, 0).unwrap()).unwrap().clone();
    let chunk = t3fs_common::ids::ChunkId::new(InodeId(f.id), 0);
    let tail = chain.targets.last().unwrap().target_id;
    let tail_addr = r.node_of_target(t3fs_common::ids::TargetId(tail)).unwrap().bulk_addr.clone();
    let head = chain.targets[0].target_id;
    let head_addr = r.node_of_target(t3fs_common::ids::TargetId(head)).unwrap().bulk_addr.clone();
    let before = admin.query_chunk(t3fs_common::ids::TargetId(tail), chunk).await.unwrap().unwrap();
    let (write, replace, purge) = (proto::UpdateType::Write, proto::UpdateType::Replace, proto::UpdateType::Purge);
    // Nor purge tombstones (only meta's GC and admins do), at the head or further down.
    for (what, ty, target, addr, version, sync) in [
        ("forwarded", write, tail, &tail_addr, before.version + 1, false),
        ("sync", replace, tail, &tail_addr, before.version + 1, true),
        ("purge", purge, head, &head_addr, 0, false),
        ("forwarded purge", purge, tail, &tail_addr, before.version + 1, false),
    ] {
        let payload = b"mallory's bytes!";
        let req = proto::BulkRequest {
            request_id: "r".into(),
            token: token.clone(),
            op: Some(proto::bulk_request::Op::Update(proto::UpdateChunk {
                chain_id: chain.chain_id,
                chain_version: chain.chain_version,
                target_id: target,
                chunk_id: chunk.to_bytes().to_vec().into(),
                update_type: ty as i32,
                chunk_size: lay.chunk_size,
                payload_crc32c: crc32c::crc32c(payload),
                update_version: version,
                sync,
                ..Default::default()
            })),
        };
        let e = t3fs_common::bulk::BulkClient::default().call(addr, &req, payload).await.unwrap_err();
        assert_eq!(e.code, StatusCode::PermissionDenied, "{what}: {e}");
    }
    let after = admin.query_chunk(t3fs_common::ids::TargetId(tail), chunk).await.unwrap().unwrap();
    assert_eq!((after.version, after.crc32c), (before.version, before.crc32c));

    // The client keeps a session at mgmtd under its uid.
    let mut m = t3fs_common::routing::connect_mgmtd(cluster.mgmtd_addr()).await.unwrap();
    let header = proto::RequestHeader { token: cluster.plan.cluster.token.clone(), ..Default::default() };
    let sessions = m
        .list_client_sessions(proto::ListClientSessionsReq { header: Some(header.clone()) })
        .await
        .unwrap()
        .into_inner();
    let mine = sessions.sessions.iter().find(|s| s.client_id == alice.client_id()).expect("alice's session");
    assert_eq!(mine.uid, 1000);

    // Removed: within a poll interval every daemon refuses her.
    m.remove_user(proto::RemoveUserReq { header: Some(header), uid: 1000 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match alice.getattr(&root, InodeId(f.id)).await {
            Err(e) if e.code == StatusCode::Unauthenticated => break,
            other => assert!(tokio::time::Instant::now() < deadline, "still served after removal: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}
