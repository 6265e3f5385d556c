//! Test harness shared by the integration tests: three in-process storage servers and a fake mgmtd.
//!
//! The fake mgmtd accepts RegisterNode/Heartbeat and serves a fixed RoutingInfo: one chain (id 1) of
//! targets 101 -> 201 -> 301 on nodes 1, 2, 3, all SERVING, with the node addresses the servers registered.
//! Tests may edit the routing (target states, chain version) to simulate mgmtd decisions.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::mgmtd_server::{Mgmtd, MgmtdServer};
use t3fs_common::proto::storage_admin_client::StorageAdminClient;
use t3fs_common::proto::{self, BulkRequest, PublicTargetState, bulk_request};
use t3fs_common::{ChunkId, TargetId};
use t3fs_storage::chunk_store::Update;
use t3fs_storage::{ChunkStore, Config, Server, TargetConfig};
use tokio_util::sync::CancellationToken;

pub mod corrupt;

pub const TOKEN: &str = "secret";
pub const CHUNK_SIZE: u32 = 1 << 20;

#[derive(Default)]
pub struct FakeState {
    pub nodes: Vec<proto::NodeInfo>,
    pub chain: proto::ChainInfo,
    pub version: u64,
    pub heartbeats: Vec<proto::HeartbeatReq>,
    /// The pushed config: sent with every heartbeat reply whose request reports another version.
    pub config: Option<proto::NodeConfig>,
    /// More chains (and their targets) listed in the routing info, on no node of the cluster.
    pub extra_chains: Vec<proto::ChainInfo>,
    pub extra_targets: Vec<proto::TargetInfo>,
}

#[derive(Clone)]
pub struct FakeMgmtd(pub Arc<Mutex<FakeState>>);

impl FakeMgmtd {
    pub fn new() -> Self {
        let targets = [101, 201, 301]
            .map(|t| proto::ChainTarget { target_id: t, public_state: PublicTargetState::Serving as i32 })
            .to_vec();
        Self(Arc::new(Mutex::new(FakeState {
            chain: proto::ChainInfo { chain_id: 1, chain_version: 1, targets, ..Default::default() },
            version: 1,
            ..Default::default()
        })))
    }

    pub fn info(&self) -> proto::RoutingInfo {
        let s = self.0.lock().unwrap();
        let mut targets: Vec<_> = s
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
        targets.extend(s.extra_targets.iter().cloned());
        let mut chains = vec![s.chain.clone()];
        chains.extend(s.extra_chains.iter().cloned());
        proto::RoutingInfo {
            version: s.version,
            bootstrapping: false,
            nodes: s.nodes.clone(),
            tables: vec![proto::ChainTable { table_id: 1, version: 1, chains: vec![1], desc: String::new() }],
            chains,
            targets,
        }
    }

    /// Edits the chain (as mgmtd would) and publishes a new routing version.
    pub fn edit_chain(&self, f: impl FnOnce(&mut proto::ChainInfo)) -> u64 {
        let mut s = self.0.lock().unwrap();
        f(&mut s.chain);
        s.version += 1;
        s.version
    }

    pub fn version(&self) -> u64 {
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
            config_version: 0,
            tags: Vec::new(),
        });
        s.version += 1;
        Ok(tonic::Response::new(proto::RegisterNodeRsp { routing_version: s.version }))
    }

    async fn heartbeat(
        &self,
        req: tonic::Request<proto::HeartbeatReq>,
    ) -> Result<tonic::Response<proto::HeartbeatRsp>, tonic::Status> {
        let mut s = self.0.lock().unwrap();
        let req = req.into_inner();
        let config = s.config.clone().filter(|c| c.version != req.config_version);
        s.heartbeats.push(req);
        Ok(tonic::Response::new(proto::HeartbeatRsp { routing_version: s.version, config, heartbeat_timeout_ms: 0 }))
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

    async fn update_chain(
        &self,
        _: tonic::Request<proto::UpdateChainReq>,
    ) -> Result<tonic::Response<proto::UpdateChainRsp>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake mgmtd"))
    }
    async fn rotate_last_srv(
        &self,
        _: tonic::Request<proto::RotateLastSrvReq>,
    ) -> Result<tonic::Response<proto::RotateLastSrvRsp>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake mgmtd"))
    }

    async fn set_config(
        &self,
        _: tonic::Request<proto::SetConfigReq>,
    ) -> Result<tonic::Response<proto::SetConfigRsp>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake mgmtd: tests set FakeState::config"))
    }

    async fn get_config(
        &self,
        _: tonic::Request<proto::GetConfigReq>,
    ) -> Result<tonic::Response<proto::GetConfigRsp>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake mgmtd"))
    }
}

pub struct Cluster {
    pub mgmtd: FakeMgmtd,
    pub mgmtd_addr: String,
    pub mgmtd_cancel: CancellationToken,
    pub dirs: Vec<tempfile::TempDir>,
    pub servers: Vec<Server>,
    /// Applied to every server's config before it starts.
    pub tweak: fn(&mut Config),
}

pub async fn start_fake_mgmtd() -> (FakeMgmtd, String, CancellationToken) {
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

pub fn config(node: u32, mgmtd_addr: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::new(
        node,
        mgmtd_addr,
        vec![TargetConfig { id: u64::from(node) * 100 + 1, path: dir.into(), disk: None }],
    );
    c.token = TOKEN.into();
    c.heartbeat_interval_ms = 100;
    c.routing_refresh_ms = 50;
    // Every test server serves its metrics (tests/metrics.rs reads them).
    c.metrics_listen = Some("127.0.0.1:0".into());
    c
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Cluster::start`] with `tweak` applied to every server's config.
    pub async fn start_with(tweak: fn(&mut Config)) -> Self {
        let (mgmtd, mgmtd_addr, mgmtd_cancel) = start_fake_mgmtd().await;
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Cluster { mgmtd, mgmtd_addr, mgmtd_cancel, dirs, servers: vec![], tweak };
        c.start_servers().await;
        c
    }

    pub async fn start_servers(&mut self) {
        for (i, d) in self.dirs.iter().enumerate() {
            let mut cfg = config(i as u32 + 1, &self.mgmtd_addr, d.path());
            (self.tweak)(&mut cfg);
            let server = t3fs_storage::start(cfg).await.unwrap();
            self.servers.push(server);
        }
        self.wait_routing(self.mgmtd.version()).await;
    }

    /// Waits until every server has routing info at least at `version` (with all 3 nodes).
    pub async fn wait_routing(&self, version: u64) {
        for s in &self.servers {
            s.routing()
                .wait_for(Duration::from_secs(10), |r| r.version() >= version && r.info.nodes.len() == 3)
                .await
                .unwrap();
        }
    }

    /// Stops the tail's server (node 3, index 2).
    pub async fn stop_tail(&mut self) {
        assert_eq!(self.servers.len(), 3);
        self.servers.pop().unwrap().shutdown().await;
    }

    /// Starts the tail's server again on the same directory.
    pub async fn start_tail(&mut self) {
        assert_eq!(self.servers.len(), 2);
        let mut cfg = config(3, &self.mgmtd_addr, self.dirs[2].path());
        (self.tweak)(&mut cfg);
        let server = t3fs_storage::start(cfg).await.unwrap();
        self.servers.push(server);
        self.wait_routing(self.mgmtd.version()).await;
    }

    /// Every chunk and tombstone of a node's target, without the chain version (it records when a replica
    /// got the content, which legitimately differs after a resync).
    pub async fn listing(&self, node: usize) -> Vec<proto::ChunkMeta> {
        let target = t3fs_common::TargetId(node as u64 * 100 + 101);
        let mut admin = self.admin(node).await;
        // Small pages, so every test that compares listings also runs the paging of ListChunks.
        let mut chunks = t3fs_common::chunk_list::list_chunks(&mut admin, header, target, true, 3).await.unwrap();
        chunks.iter_mut().for_each(|c| c.chain_version = 0);
        chunks
    }

    /// Waits until node 3 has sent a heartbeat reporting target 301 in `state` at `chain_version`.
    pub async fn wait_tail_reports(&self, state: proto::LocalTargetState, chain_version: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.mgmtd.0.lock().unwrap().heartbeats.iter().any(|h| {
                h.node_id == 3
                    && h.targets.iter().any(|t| {
                        t.target_id == 301 && t.local_state == state as i32 && t.chain_version == chain_version
                    })
            });
            if found {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no heartbeat with {state:?} at chain version {chain_version}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the tail's listing equals the middle's.
    pub async fn wait_tail_identical(&self) -> Vec<proto::ChunkMeta> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (mid, tail) = (self.listing(1).await, self.listing(2).await);
            if mid == tail {
                assert_eq!(self.listing(0).await, mid, "head and middle differ");
                return mid;
            }
            assert!(std::time::Instant::now() < deadline, "tail never caught up:\n{mid:?}\n{tail:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop_servers(&mut self) {
        for s in self.servers.drain(..) {
            s.shutdown().await;
        }
    }

    pub fn bulk(&self, node: usize) -> String {
        self.servers[node].bulk_addr().to_string()
    }

    pub async fn admin(&self, node: usize) -> StorageAdminClient<tonic::transport::Channel> {
        let addr = self.servers[node].grpc_addr().to_string();
        StorageAdminClient::new(t3fs_common::routing::connect_channel(&addr).await.unwrap())
    }

    pub async fn query(&self, node: usize, chunk: ChunkId) -> Option<proto::ChunkMeta> {
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

/// `GET /metrics` body of a node.
pub async fn scrape(server: &Server) -> String {
    let addr = server.metrics_addr().expect("test servers serve metrics");
    t3fs_common::metrics::scrape(addr).await.unwrap()
}

pub fn header() -> proto::RequestHeader {
    proto::RequestHeader { request_id: t3fs_common::new_request_id(), token: TOKEN.into(), ..Default::default() }
}

pub fn update(
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
            sync: false,
            ..Default::default()
        })),
    }
}

pub fn write(target: u64, chain_version: u32, chunk: ChunkId, offset: u32, data: &[u8]) -> BulkRequest {
    update(target, chain_version, chunk, proto::UpdateType::Write, offset, data)
}

pub fn read(target: u64, chunk: ChunkId, offset: u32, length: u32) -> BulkRequest {
    BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: TOKEN.into(),
        op: Some(bulk_request::Op::Read(proto::ReadChunk {
            target_id: target,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset,
            length,
            relaxed: false,
        })),
    }
}

/// Moves the tail OFFLINE at chain version 2 and stops its server.
pub async fn take_tail_offline(c: &mut Cluster) {
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 2;
        ch.targets[2].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    c.stop_tail().await;
}

/// Restarts the tail and makes it SYNCING at chain version 3 (as mgmtd would once it reports ONLINE).
pub async fn bring_tail_back_syncing(c: &mut Cluster) {
    c.start_tail().await;
    c.wait_tail_reports(proto::LocalTargetState::Online, 2).await;
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 3;
        ch.targets[2].public_state = PublicTargetState::Syncing as i32;
    });
    c.wait_routing(v).await;
}

/// A sync update (what a SYNCING target's predecessor sends) at exactly `version`.
pub fn sync_update(
    target: u64,
    chain_version: u32,
    chunk: ChunkId,
    ty: proto::UpdateType,
    version: u64,
    data: &[u8],
) -> BulkRequest {
    let mut r = update(target, chain_version, chunk, ty, 0, data);
    if let Some(bulk_request::Op::Update(u)) = r.op.as_mut() {
        u.update_version = version;
        u.sync = true;
    }
    r
}

/// Applies `update` at `version` directly to the stopped tail's store, as if it had happened there
/// (e.g. as an old head that applied writes it never forwarded). `sync`: through `apply_sync`.
pub async fn tamper_tail(c: &Cluster, edits: &[(ChunkId, u64, Option<&[u8]>, bool)]) {
    let (store, _) = ChunkStore::open(TargetId(301), c.dirs[2].path()).unwrap();
    for &(chunk, version, data, sync) in edits {
        let u = match data {
            Some(d) => Update::Replace { data: Bytes::copy_from_slice(d), payload_crc32c: crc32c::crc32c(d) },
            None => Update::Remove,
        };
        let g = store.lock(chunk).await;
        let a = if sync { store.apply_sync(&g, version, 2, u).await } else { store.apply(&g, version, 2, u).await };
        assert!(!a.unwrap().duplicate);
    }
    store.close();
}

/// The tail's own view of a chunk: (version, length, crc).
pub fn at_tail(c: &Cluster, chunk: ChunkId) -> Option<(u64, u32, u32)> {
    c.servers[2].store(TargetId(301)).unwrap().query(chunk).unwrap().map(|m| (m.version, m.length, m.crc32c))
}

pub fn summary(m: &proto::ChunkMeta) -> (u64, u32, u32) {
    (m.version, m.length, m.crc32c)
}

pub fn find(list: &[proto::ChunkMeta], chunk: ChunkId) -> Option<&proto::ChunkMeta> {
    list.iter().find(|m| m.chunk_id.as_ref() == chunk.to_bytes())
}

/// Makes the (UPTODATE) tail SERVING at chain version 4.
pub async fn make_tail_serving(c: &Cluster) {
    c.wait_tail_reports(proto::LocalTargetState::Uptodate, 3).await;
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 4;
        ch.targets[2].public_state = PublicTargetState::Serving as i32;
    });
    c.wait_routing(v).await;
}

pub async fn assert_same_bytes(c: &Cluster, client: &BulkClient, chunk: ChunkId) {
    let (_, head) = client.call(&c.bulk(0), &read(101, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    let (_, tail) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(head, tail, "chunk {chunk}");
}

/// The tail's view of a chunk while its server is stopped.
pub fn at_tail_offline(c: &Cluster, chunk: ChunkId) -> (u64, u32, u32) {
    let (store, _) = ChunkStore::open(TargetId(301), c.dirs[2].path()).unwrap();
    let m = store.query(chunk).unwrap().unwrap();
    store.close();
    (m.version, m.length, m.crc32c)
}
