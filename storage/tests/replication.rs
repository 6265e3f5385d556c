//! Chain replication through three in-process storage servers and a fake mgmtd.
//!
//! The fake mgmtd accepts RegisterNode/Heartbeat and serves a fixed RoutingInfo: one chain (id 1) of
//! targets 101 -> 201 -> 301 on nodes 1, 2, 3, all SERVING, with the node addresses the servers registered.
//! Tests may edit the routing (target states, chain version) to simulate mgmtd decisions.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::mgmtd_server::{Mgmtd, MgmtdServer};
use t3fs_common::proto::storage_admin_client::StorageAdminClient;
use t3fs_common::proto::{self, BulkRequest, PublicTargetState, bulk_request};
use t3fs_common::{ChunkId, InodeId, StatusCode, TargetId};
use t3fs_storage::{Config, Server, TargetConfig};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "secret";
const CHUNK_SIZE: u32 = 1 << 20;

#[derive(Default)]
struct FakeState {
    nodes: Vec<proto::NodeInfo>,
    chain: proto::ChainInfo,
    version: u64,
    heartbeats: Vec<proto::HeartbeatReq>,
}

#[derive(Clone)]
struct FakeMgmtd(Arc<Mutex<FakeState>>);

impl FakeMgmtd {
    fn new() -> Self {
        let targets = [101, 201, 301]
            .map(|t| proto::ChainTarget { target_id: t, public_state: PublicTargetState::Serving as i32 })
            .to_vec();
        Self(Arc::new(Mutex::new(FakeState {
            chain: proto::ChainInfo { chain_id: 1, chain_version: 1, targets },
            version: 1,
            ..Default::default()
        })))
    }

    fn info(&self) -> proto::RoutingInfo {
        let s = self.0.lock().unwrap();
        let targets = s
            .chain
            .targets
            .iter()
            .map(|t| proto::TargetInfo {
                target_id: t.target_id,
                node_id: (t.target_id / 100) as u32,
                chain_id: 1,
                public_state: t.public_state,
                ..Default::default()
            })
            .collect();
        proto::RoutingInfo {
            version: s.version,
            bootstrapping: false,
            nodes: s.nodes.clone(),
            tables: vec![proto::ChainTable { table_id: 1, version: 1, chains: vec![1], desc: String::new() }],
            chains: vec![s.chain.clone()],
            targets,
        }
    }

    /// Edits the chain (as mgmtd would) and publishes a new routing version.
    fn edit_chain(&self, f: impl FnOnce(&mut proto::ChainInfo)) -> u64 {
        let mut s = self.0.lock().unwrap();
        f(&mut s.chain);
        s.version += 1;
        s.version
    }

    fn version(&self) -> u64 {
        self.0.lock().unwrap().version
    }
}

#[tonic::async_trait]
impl Mgmtd for FakeMgmtd {
    async fn register_node(
        &self,
        req: tonic::Request<proto::RegisterNodeReq>,
    ) -> Result<tonic::Response<proto::RegisterNodeRsp>, tonic::Status> {
        let r = req.into_inner();
        assert_eq!(r.header.unwrap().token, TOKEN);
        assert_eq!(r.node_type, proto::NodeType::Storage as i32);
        let mut s = self.0.lock().unwrap();
        s.nodes.retain(|n| n.node_id != r.node_id);
        s.nodes.push(proto::NodeInfo {
            node_id: r.node_id,
            node_type: r.node_type,
            status: proto::NodeStatus::HeartbeatConnected as i32,
            grpc_addr: r.grpc_addr,
            bulk_addr: r.bulk_addr,
            hostname: r.hostname,
            last_heartbeat_ms: 0,
        });
        s.version += 1;
        Ok(tonic::Response::new(proto::RegisterNodeRsp { routing_version: s.version }))
    }

    async fn heartbeat(
        &self,
        req: tonic::Request<proto::HeartbeatReq>,
    ) -> Result<tonic::Response<proto::HeartbeatRsp>, tonic::Status> {
        let mut s = self.0.lock().unwrap();
        s.heartbeats.push(req.into_inner());
        Ok(tonic::Response::new(proto::HeartbeatRsp { routing_version: s.version }))
    }

    async fn get_routing_info(
        &self,
        req: tonic::Request<proto::GetRoutingInfoReq>,
    ) -> Result<tonic::Response<proto::GetRoutingInfoRsp>, tonic::Status> {
        let info = self.info();
        let known = req.into_inner().known_version;
        Ok(tonic::Response::new(proto::GetRoutingInfoRsp { info: (known != info.version).then_some(info) }))
    }

    async fn create_chain_table(
        &self,
        _: tonic::Request<proto::CreateChainTableReq>,
    ) -> Result<tonic::Response<proto::CreateChainTableRsp>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake mgmtd"))
    }
}

struct Cluster {
    mgmtd: FakeMgmtd,
    mgmtd_addr: String,
    mgmtd_cancel: CancellationToken,
    dirs: Vec<tempfile::TempDir>,
    servers: Vec<Server>,
}

async fn start_fake_mgmtd() -> (FakeMgmtd, String, CancellationToken) {
    let fake = FakeMgmtd::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cancel = CancellationToken::new();
    let svc = MgmtdServer::new(fake.clone());
    let shutdown = cancel.clone().cancelled_owned();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(l), shutdown)
            .await
            .unwrap();
    });
    (fake, addr, cancel)
}

fn config(node: u32, mgmtd_addr: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::new(node, mgmtd_addr, vec![TargetConfig { id: u64::from(node) * 100 + 1, path: dir.into() }]);
    c.token = TOKEN.into();
    c.heartbeat_interval_ms = 100;
    c.routing_refresh_ms = 50;
    c
}

impl Cluster {
    async fn start() -> Self {
        let (mgmtd, mgmtd_addr, mgmtd_cancel) = start_fake_mgmtd().await;
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Cluster { mgmtd, mgmtd_addr, mgmtd_cancel, dirs, servers: vec![] };
        c.start_servers().await;
        c
    }

    async fn start_servers(&mut self) {
        for (i, d) in self.dirs.iter().enumerate() {
            let server = t3fs_storage::start(config(i as u32 + 1, &self.mgmtd_addr, d.path())).await.unwrap();
            self.servers.push(server);
        }
        self.wait_routing(self.mgmtd.version()).await;
    }

    /// Waits until every server has routing info at least at `version` (with all 3 nodes).
    async fn wait_routing(&self, version: u64) {
        for s in &self.servers {
            s.routing()
                .wait_for(Duration::from_secs(10), |r| r.version() >= version && r.info.nodes.len() == 3)
                .await
                .unwrap();
        }
    }

    async fn stop_servers(&mut self) {
        for s in self.servers.drain(..) {
            s.shutdown().await;
        }
    }

    fn bulk(&self, node: usize) -> String {
        self.servers[node].bulk_addr().to_string()
    }

    async fn admin(&self, node: usize) -> StorageAdminClient<tonic::transport::Channel> {
        let addr = self.servers[node].grpc_addr().to_string();
        StorageAdminClient::new(t3fs_common::routing::connect_channel(&addr).await.unwrap())
    }

    async fn query(&self, node: usize, chunk: ChunkId) -> Option<proto::ChunkMeta> {
        let rsp = self
            .admin(node)
            .await
            .query_chunk(proto::QueryChunkReq {
                header: Some(header()),
                target_id: node as u64 * 100 + 101,
                chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rsp.found, rsp.meta.is_some());
        rsp.meta
    }
}

fn header() -> proto::RequestHeader {
    proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: TOKEN.into(), ..Default::default() }
}

fn update(
    target: u64,
    chain_version: u32,
    chunk: ChunkId,
    ty: proto::UpdateType,
    offset: u32,
    data: &[u8],
) -> BulkRequest {
    BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: TOKEN.into(),
        op: Some(bulk_request::Op::Update(proto::UpdateChunk {
            chain_id: 1,
            chain_version,
            target_id: target,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            update_type: ty as i32,
            offset,
            chunk_size: CHUNK_SIZE,
            payload_crc32c: crc32c::crc32c(data),
            update_version: 0,
        })),
    }
}

fn write(target: u64, chain_version: u32, chunk: ChunkId, offset: u32, data: &[u8]) -> BulkRequest {
    update(target, chain_version, chunk, proto::UpdateType::Write, offset, data)
}

fn read(target: u64, chunk: ChunkId, offset: u32, length: u32) -> BulkRequest {
    BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: TOKEN.into(),
        op: Some(bulk_request::Op::Read(proto::ReadChunk {
            target_id: target,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset,
            length,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_head_to_tail() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(77), 3);
    let data = vec![0xABu8; 100_000];

    // A client write through the head reaches all three replicas before it is acknowledged.
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 1, chunk, 0, &data), &data).await.unwrap();
    let meta = rsp.meta.unwrap();
    assert_eq!((meta.version, meta.length, meta.crc32c), (1, 100_000, crc32c::crc32c(&data)));
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n}");
    }

    // An overwrite that extends: version 2 everywhere, same CRC.
    let (rsp, _) =
        client.call(&c.bulk(0), &write(101, 1, chunk, 99_990, b"0123456789abcdef"), b"0123456789abcdef").await.unwrap();
    let meta = rsp.meta.unwrap();
    assert_eq!((meta.version, meta.length), (2, 100_006));
    let mut expected = data.clone();
    expected.truncate(99_990);
    expected.extend_from_slice(b"0123456789abcdef");
    assert_eq!(meta.crc32c, crc32c::crc32c(&expected));
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n}");
    }

    // Read back from the tail (and a range from the middle).
    let (rsp, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), &expected[..]);
    assert_eq!(rsp.payload_crc32c, crc32c::crc32c(&expected));
    assert_eq!(rsp.meta.unwrap().version, 2);
    let (_, part) = client.call(&c.bulk(1), &read(201, chunk, 99_995, 100), &[]).await.unwrap();
    assert_eq!(part.as_ref(), b"56789abcdef");

    // Refusals: non-head client write, stale chain version, unknown chain, bad token, bad payload CRC,
    // a target that is not on the node, a missing chunk.
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    assert_eq!(err(client.call(&c.bulk(1), &write(201, 1, chunk, 0, b"x"), b"x").await), StatusCode::NotHead);
    assert_eq!(
        err(client.call(&c.bulk(0), &write(101, 2, chunk, 0, b"x"), b"x").await),
        StatusCode::ChainVersionMismatch
    );
    let mut unknown_chain = write(101, 1, chunk, 0, b"x");
    if let Some(bulk_request::Op::Update(u)) = unknown_chain.op.as_mut() {
        u.chain_id = 9;
    }
    assert_eq!(err(client.call(&c.bulk(0), &unknown_chain, b"x").await), StatusCode::RoutingNotReady);
    let mut bad_token = write(101, 1, chunk, 0, b"x");
    bad_token.token = "wrong".into();
    assert_eq!(err(client.call(&c.bulk(0), &bad_token, b"x").await), StatusCode::Unauthenticated);
    let no_token = BulkRequest { token: String::new(), ..read(101, chunk, 0, 1) };
    assert_eq!(err(client.call(&c.bulk(0), &no_token, &[]).await), StatusCode::Unauthenticated);
    assert_eq!(err(client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"x"), b"y").await), StatusCode::ChecksumMismatch);
    assert_eq!(err(client.call(&c.bulk(0), &read(201, chunk, 0, 1), &[]).await), StatusCode::TargetNotServing);
    let missing = ChunkId::new(InodeId(77), 4);
    assert_eq!(err(client.call(&c.bulk(2), &read(301, missing, 0, 1), &[]).await), StatusCode::ChunkNotFound);
    // None of the refused requests changed anything.
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n}");
    }
    let mut admin = c.admin(1).await;
    let bad = admin.list_chunks(proto::ListChunksReq { header: None, target_id: 201 }).await.unwrap_err();
    assert_eq!(t3fs_common::Error::from_tonic(&bad).code, StatusCode::Unauthenticated);
    let list =
        admin.list_chunks(proto::ListChunksReq { header: Some(header()), target_id: 201 }).await.unwrap().into_inner();
    assert_eq!(list.chunks, vec![meta.clone()]);

    // Heartbeats report every target as up to date, with its used bytes and chain version.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let s = c.mgmtd.0.lock().unwrap();
        for node in 1..=3u32 {
            let hb = s.heartbeats.iter().rev().find(|h| h.node_id == node).expect("heartbeat");
            assert_eq!(hb.targets.len(), 1);
            let t = &hb.targets[0];
            assert_eq!(t.target_id, u64::from(node) * 100 + 1);
            assert_eq!(t.local_state, proto::LocalTargetState::Uptodate as i32);
            assert_eq!((t.used_bytes, t.chain_version), (100_006, 1));
        }
    }

    // A restart in the same process reopens the same directories with the data intact.
    c.stop_servers().await;
    c.start_servers().await;
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n} after restart");
    }
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), &expected[..]);

    // Remove replicates too.
    let rm = update(101, 1, chunk, proto::UpdateType::Remove, 0, b"");
    let (rsp, _) = client.call(&c.bulk(0), &rm, &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 3);
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await, None, "replica {n}");
        let target = n as u64 * 100 + 101;
        assert_eq!(err(client.call(&c.bulk(n), &read(target, chunk, 0, 1), &[]).await), StatusCode::ChunkNotFound);
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_keep_replicas_identical() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(5), 0);
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let client = client.clone();
        let head = c.bulk(0);
        tasks.push(tokio::spawn(async move {
            // Overlapping writes: the final content depends on the order the head applied them.
            let data = vec![i as u8 + 1; 3000];
            client.call(&head, &write(101, 1, chunk, i * 1000, &data), &data).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metas: Vec<_> = query_all(&c, chunk).await;
    assert_eq!(metas[0].version, 24);
    assert!(metas.iter().all(|m| m == &metas[0]), "{metas:?}");
    let mut contents = Vec::new();
    for n in 0..3 {
        let target = n as u64 * 100 + 101;
        contents.push(client.call(&c.bulk(n), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap().1);
    }
    assert_eq!(contents[0].len(), 26_000);
    assert!(contents.iter().all(|d| d == &contents[0]));
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

async fn query_all(c: &Cluster, chunk: ChunkId) -> Vec<proto::ChunkMeta> {
    let mut out = Vec::new();
    for n in 0..3 {
        out.push(c.query(n, chunk).await.expect("chunk on every replica"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_tail_is_skipped_and_refuses_writes() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(9), 1);
    // mgmtd moves the tail offline and bumps the chain version.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 2;
        ch.targets[2].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    assert_eq!(
        err(client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"old"), b"old").await),
        StatusCode::ChainVersionMismatch
    );
    client.call(&c.bulk(0), &write(101, 2, chunk, 0, b"new"), b"new").await.unwrap();
    assert_eq!(c.query(0, chunk).await.unwrap().version, 1);
    assert_eq!(c.query(1, chunk).await.unwrap().version, 1);
    assert_eq!(c.query(2, chunk).await, None);
    // The offline target refuses forwarded updates and reads.
    let mut fwd = write(301, 2, chunk, 0, b"new");
    if let Some(bulk_request::Op::Update(u)) = fwd.op.as_mut() {
        u.update_version = 1;
    }
    assert_eq!(err(client.call(&c.bulk(2), &fwd, b"new").await), StatusCode::TargetNotServing);
    assert_eq!(err(client.call(&c.bulk(2), &read(301, chunk, 0, 3), &[]).await), StatusCode::TargetNotServing);
    // With the head offline, the middle becomes the head.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 3;
        ch.targets[0].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    assert_eq!(err(client.call(&c.bulk(0), &write(101, 3, chunk, 0, b"x"), b"x").await), StatusCode::TargetNotServing);
    let (rsp, _) = client.call(&c.bulk(1), &write(201, 3, chunk, 3, b"er"), b"er").await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 2);
    let (_, back) = client.call(&c.bulk(1), &read(201, chunk, 0, 100), &[]).await.unwrap();
    assert_eq!(back.as_ref(), b"newer");
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test]
async fn start_fails_without_mgmtd_and_releases_the_target() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, &addr, dir.path());
    cfg.register_timeout_ms = 300;
    let t0 = std::time::Instant::now();
    assert!(t3fs_storage::start(cfg).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The target was closed again: it can be opened right away.
    t3fs_storage::ChunkStore::open(TargetId(101), dir.path()).unwrap();
}
