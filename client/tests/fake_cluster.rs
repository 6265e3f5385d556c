//! The client's data and metadata paths against an in-process fake cluster: a fake mgmtd (static
//! routing info), a minimal in-memory meta, and two fake storage nodes on the bulk plane that
//! "replicate" by applying an update to every target of the chain. Faults are injected per target.
//! The real daemons are exercised by the lead's end-to-end tests; this pins the client's own logic
//! (chunk splitting on the wire, holes, CRC checks, replica failover, retries, truncate/remove, batch
//! reads into caller-owned external memory).
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use t3fs_client::{Client, ClientConfig, RenameFlags, SetXattrMode, UserInfo};
use t3fs_common::bulk::{self, BulkHandler};
use t3fs_common::proto::{self, InodeType, PublicTargetState, UpdateType, bulk_request};
use t3fs_common::{ChunkId, Error, InodeId, StatusCode, TargetId};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const CS: u32 = 4096;
const FILE: u64 = 2;

/// (target, chunk id bytes) -> chunk bytes.
type ChunkMap = HashMap<(u64, Vec<u8>), Vec<u8>>;

#[derive(Default)]
struct Storage {
    chunks: Mutex<ChunkMap>,
    /// Targets whose reads fail with Unavailable.
    down: Mutex<HashSet<u64>>,
    /// Targets whose reads carry a wrong CRC.
    corrupt: Mutex<HashSet<u64>>,
    /// Updates to answer with NotHead before accepting.
    not_head: AtomicU32,
    /// Reads to answer with ChunkNotCommitted (a write in flight on the chain) before serving.
    not_committed: AtomicU32,
    reads: AtomicU32,
    updates: AtomicU32,
    /// (client id, channel, seq) of every update received.
    channels: Mutex<Vec<(Bytes, u32, u64)>>,
    /// Updates to apply but answer with Unavailable (a lost response).
    lose_responses: AtomicU32,
    /// Batch-read requests served.
    batches: AtomicU32,
    /// chain id -> targets, head first.
    chains: HashMap<u32, Vec<u64>>,
}

struct Node(Arc<Storage>);

impl Storage {
    /// One read as a storage node answers it: (CRC the header carries, data) or the error code.
    fn read(&self, r: &proto::ReadChunk) -> Result<(u32, Bytes), StatusCode> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.not_committed.load(Ordering::SeqCst) > 0 && !r.relaxed {
            self.not_committed.fetch_sub(1, Ordering::SeqCst);
            return Err(StatusCode::ChunkNotCommitted);
        }
        if self.down.lock().unwrap().contains(&r.target_id) {
            return Err(StatusCode::Unavailable);
        }
        let chunks = self.chunks.lock().unwrap();
        let Some(data) = chunks.get(&(r.target_id, r.chunk_id.to_vec())) else {
            return Err(StatusCode::ChunkNotFound);
        };
        let start = (r.offset as usize).min(data.len());
        let end = (start + r.length as usize).min(data.len());
        let out = Bytes::copy_from_slice(&data[start..end]);
        let mut crc = crc32c::crc32c(&out);
        if self.corrupt.lock().unwrap().contains(&r.target_id) {
            crc ^= 1;
        }
        Ok((crc, out))
    }
}

impl BulkHandler for Node {
    async fn handle(&self, req: proto::BulkRequest, payload: Bytes) -> (proto::BulkResponse, Bytes) {
        let s = &self.0;
        let err = |c: StatusCode| (bulk::error_response(&Error::new(c, "injected")), Bytes::new());
        match req.op {
            Some(bulk_request::Op::Read(r)) => match s.read(&r) {
                Ok((crc, out)) => (proto::BulkResponse { payload_crc32c: crc, ..Default::default() }, out),
                Err(c) => err(c),
            },
            Some(bulk_request::Op::BatchRead(b)) => {
                s.batches.fetch_add(1, Ordering::SeqCst);
                let mut payload = Vec::new();
                let mut results = Vec::new();
                for r in &b.reads {
                    results.push(match s.read(r) {
                        Ok((crc, out)) => {
                            payload.extend_from_slice(&out);
                            proto::ReadResult { length: out.len() as u32, crc32c: crc, ..Default::default() }
                        }
                        Err(c) => {
                            proto::ReadResult { code: c as u32, message: "injected".into(), ..Default::default() }
                        }
                    });
                }
                (proto::BulkResponse { results, ..Default::default() }, Bytes::from(payload))
            }
            Some(bulk_request::Op::Update(u)) => {
                s.updates.fetch_add(1, Ordering::SeqCst);
                s.channels.lock().unwrap().push((u.client_id.clone(), u.channel_id, u.seq));
                if s.not_head.load(Ordering::SeqCst) > 0 {
                    s.not_head.fetch_sub(1, Ordering::SeqCst);
                    return err(StatusCode::NotHead);
                }
                let chain = &s.chains[&u.chain_id];
                if chain[0] != u.target_id || u.chunk_size != CS {
                    return err(StatusCode::InvalidArgument);
                }
                if crc32c::crc32c(&payload) != u.payload_crc32c {
                    return err(StatusCode::ChecksumMismatch);
                }
                let mut chunks = s.chunks.lock().unwrap();
                for &t in chain {
                    let key = (t, u.chunk_id.to_vec());
                    match UpdateType::try_from(u.update_type) {
                        Ok(UpdateType::Write) => {
                            let c = chunks.entry(key).or_default();
                            let end = u.offset as usize + payload.len();
                            if c.len() < end {
                                c.resize(end, 0);
                            }
                            c[u.offset as usize..end].copy_from_slice(&payload);
                        }
                        Ok(UpdateType::Truncate) => match chunks.get_mut(&key) {
                            Some(c) => c.resize(u.offset as usize, 0),
                            None => return err(StatusCode::ChunkNotFound),
                        },
                        Ok(UpdateType::Remove) => {
                            if chunks.remove(&key).is_none() {
                                return err(StatusCode::ChunkNotFound);
                            }
                        }
                        _ => return err(StatusCode::InvalidArgument),
                    }
                }
                if s.lose_responses.load(Ordering::SeqCst) > 0 {
                    // Applied, but the answer is "lost": the client sees a retryable error.
                    s.lose_responses.fetch_sub(1, Ordering::SeqCst);
                    return err(StatusCode::Unavailable);
                }
                (proto::BulkResponse::default(), Bytes::new())
            }
            None => err(StatusCode::InvalidArgument),
        }
    }
}

struct Mgmtd(proto::RoutingInfo);

#[tonic::async_trait]
impl proto::mgmtd_server::Mgmtd for Mgmtd {
    async fn register_node(
        &self,
        _: Request<proto::RegisterNodeReq>,
    ) -> Result<Response<proto::RegisterNodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn heartbeat(&self, _: Request<proto::HeartbeatReq>) -> Result<Response<proto::HeartbeatRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_routing_info(
        &self,
        r: Request<proto::GetRoutingInfoReq>,
    ) -> Result<Response<proto::GetRoutingInfoRsp>, Status> {
        let info = (r.into_inner().known_version < self.0.version).then(|| self.0.clone());
        Ok(Response::new(proto::GetRoutingInfoRsp { info }))
    }
    async fn create_chain_table(
        &self,
        _: Request<proto::CreateChainTableReq>,
    ) -> Result<Response<proto::CreateChainTableRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn update_chain(&self, _: Request<proto::UpdateChainReq>) -> Result<Response<proto::UpdateChainRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rotate_last_srv(
        &self,
        _: Request<proto::RotateLastSrvReq>,
    ) -> Result<Response<proto::RotateLastSrvRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_config(&self, _: Request<proto::SetConfigReq>) -> Result<Response<proto::SetConfigRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_config(&self, _: Request<proto::GetConfigReq>) -> Result<Response<proto::GetConfigRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// One file (inode 2) under the root; enough meta for truncate, remove, rename and batch stat.
struct Meta(Arc<Mutex<proto::Inode>>, Arc<MetaLog>);

/// What the fake meta saw, and faults to inject.
#[derive(Default)]
struct MetaLog {
    /// Request ids of the Rename tries, in order.
    rename_ids: Mutex<Vec<String>>,
    /// Rename tries to answer with Busy (retryable) before applying.
    rename_busy: AtomicU32,
    /// Sizes of the BatchStat requests, in order.
    batch_sizes: Mutex<Vec<usize>>,
}

#[tonic::async_trait]
impl proto::meta_server::Meta for Meta {
    async fn lookup(&self, r: Request<proto::LookupReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        if r.parent == 1 && &r.name[..] == b"f" {
            return Ok(Response::new(proto::InodeRsp { inode: Some(self.0.lock().unwrap().clone()) }));
        }
        Err(Error::not_found("no such entry").to_tonic())
    }
    async fn get_attr(&self, r: Request<proto::GetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        match r.into_inner().inode {
            1 => Ok(Response::new(proto::InodeRsp {
                inode: Some(proto::Inode {
                    id: 1,
                    inode_type: InodeType::Directory as i32,
                    nlink: 2,
                    ..Default::default()
                }),
            })),
            FILE => Ok(Response::new(proto::InodeRsp { inode: Some(self.0.lock().unwrap().clone()) })),
            _ => Err(Error::not_found("no such inode").to_tonic()),
        }
    }
    async fn mkdir(&self, _: Request<proto::MkdirReq>) -> Result<Response<proto::InodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create(&self, _: Request<proto::CreateReq>) -> Result<Response<proto::InodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove(&self, _: Request<proto::RemoveReq>) -> Result<Response<proto::RemoveRsp>, Status> {
        let mut i = self.0.lock().unwrap().clone();
        i.nlink = 0;
        Ok(Response::new(proto::RemoveRsp { inode: Some(i) }))
    }
    async fn read_dir(&self, _: Request<proto::ReadDirReq>) -> Result<Response<proto::ReadDirRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_attr(&self, r: Request<proto::SetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        let mut i = self.0.lock().unwrap();
        if let Some(l) = r.length {
            i.length = l;
        }
        Ok(Response::new(proto::InodeRsp { inode: Some(i.clone()) }))
    }
    async fn close(&self, _: Request<proto::CloseReq>) -> Result<Response<proto::InodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn stat_fs(&self, _: Request<proto::StatFsReq>) -> Result<Response<proto::StatFsRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    /// Any rename onto the name "f" replaces the file's only link; other names replace nothing.
    async fn rename(&self, r: Request<proto::RenameReq>) -> Result<Response<proto::RenameRsp>, Status> {
        let r = r.into_inner();
        self.1.rename_ids.lock().unwrap().push(r.header.unwrap_or_default().request_id);
        if self.1.rename_busy.load(Ordering::SeqCst) > 0 {
            self.1.rename_busy.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(StatusCode::Busy, "injected").to_tonic());
        }
        let replaced = (&r.dst_name[..] == b"f").then(|| {
            let mut i = self.0.lock().unwrap().clone();
            i.nlink = 0;
            i
        });
        Ok(Response::new(proto::RenameRsp { replaced }))
    }
    async fn link(&self, _: Request<proto::LinkReq>) -> Result<Response<proto::InodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn symlink(&self, _: Request<proto::SymlinkReq>) -> Result<Response<proto::InodeRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    /// Finds the file only.
    async fn batch_stat(&self, r: Request<proto::BatchStatReq>) -> Result<Response<proto::BatchStatRsp>, Status> {
        let r = r.into_inner();
        self.1.batch_sizes.lock().unwrap().push(r.inodes.len());
        let file = self.0.lock().unwrap().clone();
        let entries = r
            .inodes
            .iter()
            .map(|&id| proto::BatchStatEntry { found: id == FILE, inode: (id == FILE).then(|| file.clone()) })
            .collect();
        Ok(Response::new(proto::BatchStatRsp { entries }))
    }
    async fn set_xattr(&self, _: Request<proto::SetXattrReq>) -> Result<Response<proto::Empty>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_xattr(&self, _: Request<proto::XattrReq>) -> Result<Response<proto::XattrRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_xattr(&self, _: Request<proto::ListXattrReq>) -> Result<Response<proto::ListXattrRsp>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_xattr(&self, _: Request<proto::XattrReq>) -> Result<Response<proto::Empty>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Cluster {
    client: Arc<Client>,
    storage: Arc<Storage>,
    file: Arc<Mutex<proto::Inode>>,
    meta: Arc<MetaLog>,
    cancel: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn serving(t: u64) -> proto::ChainTarget {
    proto::ChainTarget { target_id: t, public_state: PublicTargetState::Serving as i32 }
}

/// Two storage nodes (1: targets 101, 102; 2: targets 201, 202); chain 1 = [101, 201],
/// chain 2 = [202, 102]; the file is striped over both chains.
async fn cluster() -> Cluster {
    let cancel = CancellationToken::new();
    let chains: HashMap<u32, Vec<u64>> = [(1, vec![101, 201]), (2, vec![202, 102])].into();
    let storage = Arc::new(Storage { chains: chains.clone(), ..Default::default() });
    let mut nodes = Vec::new();
    for id in [1u32, 2] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(bulk::serve(l, Arc::new(Node(storage.clone())), cancel.clone()));
        nodes.push(proto::NodeInfo {
            node_id: 10 + id,
            node_type: proto::NodeType::Storage as i32,
            status: proto::NodeStatus::HeartbeatConnected as i32,
            grpc_addr: "127.0.0.1:1".into(),
            bulk_addr: addr,
            ..Default::default()
        });
    }
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let grpc = incoming.local_addr().unwrap().to_string();
    nodes.push(proto::NodeInfo {
        node_id: 1,
        node_type: proto::NodeType::Meta as i32,
        status: proto::NodeStatus::HeartbeatConnected as i32,
        grpc_addr: grpc.clone(),
        ..Default::default()
    });
    let target = |t: u64, node: u32, chain: u32| proto::TargetInfo {
        target_id: t,
        node_id: node,
        chain_id: chain,
        public_state: PublicTargetState::Serving as i32,
        ..Default::default()
    };
    let info = proto::RoutingInfo {
        version: 1,
        nodes,
        tables: vec![proto::ChainTable { table_id: 1, version: 1, chains: vec![1, 2], desc: String::new() }],
        chains: chains
            .iter()
            .map(|(&id, ts)| proto::ChainInfo {
                chain_id: id,
                chain_version: 1,
                targets: ts.iter().map(|&t| serving(t)).collect(),
                ..Default::default()
            })
            .collect(),
        targets: vec![target(101, 11, 1), target(102, 11, 2), target(201, 12, 1), target(202, 12, 2)],
        ..Default::default()
    };
    let file = Arc::new(Mutex::new(proto::Inode {
        id: FILE,
        inode_type: InodeType::File as i32,
        mode: 0o644,
        nlink: 1,
        layout: Some(proto::Layout {
            table_id: 1,
            table_version: 1,
            chunk_size: CS,
            stripe: 2,
            base_index: 0,
            seed: 7,
        }),
        ..Default::default()
    }));
    let meta = Arc::new(MetaLog::default());
    let server = tonic::transport::Server::builder()
        .add_service(proto::mgmtd_server::MgmtdServer::new(Mgmtd(info)))
        .add_service(proto::meta_server::MetaServer::new(Meta(file.clone(), meta.clone())))
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
    tokio::spawn(server);
    let cfg = ClientConfig { mgmtd_addr: grpc, retry_timeout_ms: 5_000, routing_refresh_ms: 100, ..Default::default() };
    let client = Client::connect(cfg).await.unwrap();
    Cluster { client, storage, file, meta, cancel }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

impl Cluster {
    fn inode(&self, length: u64) -> proto::Inode {
        let mut f = self.file.lock().unwrap();
        f.length = length;
        f.clone()
    }
    fn chunk(&self, target: u64, index: u32) -> Option<Vec<u8>> {
        let key = (target, ChunkId::new(InodeId(FILE), index).to_bytes().to_vec());
        self.storage.chunks.lock().unwrap().get(&key).cloned()
    }
    fn chunk_count(&self) -> usize {
        self.storage.chunks.lock().unwrap().len()
    }
}

#[tokio::test]
async fn write_then_read_across_chunks_and_replicas() {
    let c = cluster().await;
    let data = pattern(10_000, 3);
    let inode = c.inode(12_000);
    c.client.write(&inode, 1000, &data).await.unwrap();
    // Chunks 0..=2 exist, each on both replicas of its chain, identical.
    assert_eq!(c.chunk_count(), 6);
    let back = c.client.read(&inode, 1000, 10_000).await.unwrap();
    assert_eq!(back, data);
    // The first 1000 bytes are a hole inside chunk 0.
    let head = c.client.read(&inode, 0, 1500).await.unwrap();
    assert_eq!(&head[..1000], &[0u8; 1000][..]);
    assert_eq!(&head[1000..], &data[..500]);
    // Reads are clamped to the length; the tail past the written data reads as zeros.
    let tail = c.client.read(&inode, 10_990, 2000).await.unwrap();
    assert_eq!(tail.len(), 1010);
    assert_eq!(&tail[..10], &data[9990..]);
    assert!(tail[10..].iter().all(|&b| b == 0));
    assert!(c.client.read(&inode, 12_000, 100).await.unwrap().is_empty());
    assert!(c.client.read(&inode, 50_000, 100).await.unwrap().is_empty());
    assert!(c.client.read(&inode, 0, 0).await.unwrap().is_empty());
    // Empty write is a no-op.
    c.client.write(&inode, 123, &[]).await.unwrap();
    // The client's replica check sees the same chunk on both targets of a chain.
    let routing = c.client.routing();
    let table = routing.table(t3fs_common::ChainTableId(1), 1).unwrap();
    let layout = inode.layout.as_ref().unwrap();
    for idx in 0..3 {
        let chain = routing.chain(t3fs_common::layout::chain_of(layout, &table.chains, idx).unwrap()).unwrap();
        let [a, b] = [chain.targets[0].target_id, chain.targets[1].target_id];
        assert_eq!(c.chunk(a, idx).unwrap(), c.chunk(b, idx).unwrap());
    }
}

#[tokio::test]
async fn missing_chunks_read_as_zeros() {
    let c = cluster().await;
    let inode = c.inode(3 * u64::from(CS));
    c.client.write(&inode, u64::from(CS) + 10, b"hello").await.unwrap();
    let all = c.client.read(&inode, 0, 3 * CS).await.unwrap();
    assert_eq!(all.len(), 3 * CS as usize);
    let mut want = vec![0u8; 3 * CS as usize];
    want[CS as usize + 10..CS as usize + 15].copy_from_slice(b"hello");
    assert_eq!(all, want);
}

#[tokio::test]
async fn reads_fail_over_to_another_replica() {
    let c = cluster().await;
    let inode = c.inode(2 * u64::from(CS));
    let data = pattern(2 * CS as usize, 9);
    c.client.write(&inode, 0, &data).await.unwrap();
    // One replica of each chain is down, another returns corrupt data: every read still succeeds.
    c.storage.down.lock().unwrap().extend([101, 102]);
    for _ in 0..4 {
        assert_eq!(c.client.read(&inode, 0, 2 * CS).await.unwrap(), data);
    }
    c.storage.down.lock().unwrap().clear();
    c.storage.corrupt.lock().unwrap().extend([201, 202]);
    for _ in 0..4 {
        assert_eq!(c.client.read(&inode, 0, 2 * CS).await.unwrap(), data);
    }
    // Every replica corrupt: a checksum error, not bad data.
    c.storage.corrupt.lock().unwrap().extend([101, 102]);
    assert_eq!(c.client.read(&inode, 0, 10).await.unwrap_err().code, StatusCode::ChecksumMismatch);
}

#[tokio::test]
async fn reads_of_uncommitted_chunks_are_retried() {
    let c = cluster().await;
    let inode = c.inode(100);
    c.client.write(&inode, 0, b"committed soon").await.unwrap();
    // More "not committed" answers than replicas: the client tries every replica, backs off and retries
    // until the write in flight has committed.
    c.storage.not_committed.store(5, Ordering::SeqCst);
    let before = c.storage.reads.load(Ordering::SeqCst);
    assert_eq!(c.client.read(&inode, 0, 14).await.unwrap(), b"committed soon");
    assert_eq!(c.storage.not_committed.load(Ordering::SeqCst), 0);
    assert_eq!(c.storage.reads.load(Ordering::SeqCst) - before, 6);
}

#[tokio::test]
async fn writes_retry_retryable_errors() {
    let c = cluster().await;
    let inode = c.inode(100);
    c.storage.not_head.store(3, Ordering::SeqCst);
    c.client.write(&inode, 0, b"abc").await.unwrap();
    assert_eq!(c.storage.updates.load(Ordering::SeqCst), 4);
    assert_eq!(c.client.read(&inode, 0, 3).await.unwrap(), b"abc");
}

#[tokio::test]
async fn a_retried_write_resends_its_channel_and_seq_and_the_next_write_advances_it() {
    let c = cluster().await;
    let inode = c.inode(100);
    c.storage.lose_responses.store(1, Ordering::SeqCst);
    c.client.write(&inode, 0, b"abc").await.unwrap();
    c.client.write(&inode, 3, b"def").await.unwrap();
    let seen = c.storage.channels.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(!seen[0].0.is_empty() && seen[0].2 > 0, "{seen:?}");
    // The retry is the same (client, channel, seq); the next write reuses the free channel at seq + 1.
    assert_eq!(seen[0], seen[1]);
    assert_eq!((&seen[2].0, seen[2].1, seen[2].2), (&seen[0].0, seen[0].1, seen[0].2 + 1));
}

#[tokio::test]
async fn truncate_and_remove_fix_chunks() {
    let c = cluster().await;
    let user = UserInfo::root();
    let len = 3 * u64::from(CS) + 100;
    let inode = c.inode(len);
    let data = pattern(len as usize, 1);
    c.client.write(&inode, 0, &data).await.unwrap();
    assert_eq!(c.chunk_count(), 8);

    let t = c.client.truncate(&user, InodeId(FILE), u64::from(CS) + 5).await.unwrap();
    assert_eq!(t.length, u64::from(CS) + 5);
    assert_eq!(c.chunk_count(), 4);
    let after = c.client.read(&t, 0, 4 * CS).await.unwrap();
    assert_eq!(after, &data[..CS as usize + 5]);
    // Growing again shows zeros, not the old bytes.
    let g = c.client.truncate(&user, InodeId(FILE), 2 * u64::from(CS)).await.unwrap();
    let grown = c.client.read(&g, u64::from(CS), CS).await.unwrap();
    assert_eq!(&grown[..5], &data[CS as usize..CS as usize + 5]);
    assert!(grown[5..].iter().all(|&b| b == 0));

    let f = c.client.resolve_path(&user, "/./f").await.unwrap();
    assert_eq!(f.id, FILE);
    assert_eq!(c.client.resolve_path(&user, "/nope").await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(c.client.lookup(&user, InodeId::ROOT, b"a/b").await.unwrap_err().code, StatusCode::InvalidArgument);

    // Removing the last link leaves the chunks to meta's GC: the client deletes nothing.
    c.client.remove(&user, InodeId::ROOT, b"f", false).await.unwrap();
    assert_eq!(c.chunk_count(), 4);
}

#[tokio::test]
async fn query_chunk_needs_a_reachable_admin_service() {
    // The fake storage nodes have no gRPC admin service: the error must be a clean Unavailable.
    let c = cluster().await;
    let e = c.client.query_chunk(TargetId(101), ChunkId::new(InodeId(FILE), 0)).await.unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable);
    assert_eq!(
        c.client.query_chunk(TargetId(999), ChunkId::new(InodeId(FILE), 0)).await.unwrap_err().code,
        StatusCode::RoutingNotReady
    );
}

#[tokio::test]
async fn rename_over_a_last_link_leaves_chunks_to_gc_and_retries_keep_the_request_id() {
    let c = cluster().await;
    let user = UserInfo::root();
    let len = 2 * u64::from(CS) + 1;
    let inode = c.inode(len);
    c.client.write(&inode, 0, &pattern(len as usize, 4)).await.unwrap();
    assert_eq!(c.chunk_count(), 6);

    // A rename that replaces nothing leaves the chunks alone.
    let none = RenameFlags::default();
    assert_eq!(c.client.rename(&user, InodeId::ROOT, b"a", InodeId::ROOT, b"b", none).await.unwrap(), None);
    assert_eq!(c.chunk_count(), 6);

    // Two retryable failures, then success: three tries, one request id.
    c.meta.rename_busy.store(2, Ordering::SeqCst);
    c.meta.rename_ids.lock().unwrap().clear();
    let replaced = c.client.rename(&user, InodeId::ROOT, b"g", InodeId::ROOT, b"f", none).await.unwrap();
    assert_eq!(replaced.map(|i| (i.id, i.nlink)), Some((FILE, 0)));
    let ids = c.meta.rename_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    assert!(!ids[0].is_empty() && ids.iter().all(|i| *i == ids[0]), "one request id for every try: {ids:?}");
    assert_eq!(c.chunk_count(), 6, "the replaced file's chunks are meta's GC's to remove, not the client's");

    // rename_entry's request id is the caller's.
    let r = c.client.rename_entry(&user, "my-id", InodeId::ROOT, b"g", InodeId::ROOT, b"f", none).await.unwrap();
    assert_eq!(r.map(|i| i.nlink), Some(0));
    assert_eq!(c.chunk_count(), 6);
    assert_eq!(c.meta.rename_ids.lock().unwrap().last().unwrap(), "my-id");

    // Bad input never reaches meta.
    let sent = c.meta.rename_ids.lock().unwrap().len();
    let both = RenameFlags { no_replace: true, exchange: true };
    let bad = [
        c.client.rename(&user, InodeId::ROOT, b"a", InodeId::ROOT, b"b", both).await,
        c.client.rename(&user, InodeId::ROOT, b"..", InodeId::ROOT, b"b", none).await,
        c.client.rename(&user, InodeId::ROOT, b"a", InodeId::ROOT, b"x/y", none).await,
    ];
    for r in bad {
        assert_eq!(r.unwrap_err().code, StatusCode::InvalidArgument);
    }
    assert_eq!(c.meta.rename_ids.lock().unwrap().len(), sent);
}

#[tokio::test]
async fn batch_stat_splits_long_lists_and_keeps_order() {
    let c = cluster().await;
    let user = UserInfo::root();
    let n = 2 * t3fs_client::links::BATCH_STAT_MAX + 5;
    let ids: Vec<InodeId> = (0..n as u64).map(|i| InodeId(if i % 100 == 7 { FILE } else { 1000 + i })).collect();
    let got = c.client.batch_stat(&user, &ids).await.unwrap();
    assert_eq!(got.len(), n);
    for (id, i) in ids.iter().zip(&got) {
        assert_eq!(i.as_ref().map(|i| i.id), (id.0 == FILE).then_some(FILE));
    }
    let sizes = c.meta.batch_sizes.lock().unwrap().clone();
    let max = t3fs_client::links::BATCH_STAT_MAX;
    assert_eq!(sizes, vec![max, max, 5]);
    assert!(c.client.batch_stat(&user, &[]).await.unwrap().is_empty());
    assert_eq!(c.meta.batch_sizes.lock().unwrap().len(), 3, "an empty list sends nothing");
}

#[tokio::test]
async fn readlink_and_xattr_input_checks() {
    let c = cluster().await;
    let user = UserInfo::root();
    // The file is not a symlink.
    assert_eq!(c.client.readlink(&user, InodeId(FILE)).await.unwrap_err().code, StatusCode::InvalidArgument);
    assert_eq!(c.client.symlink(&user, InodeId::ROOT, b"l", b"").await.unwrap_err().code, StatusCode::InvalidArgument);
    assert_eq!(
        c.client.link(&user, InodeId(FILE), InodeId::ROOT, b"").await.unwrap_err().code,
        StatusCode::InvalidArgument
    );
    let big = vec![0u8; t3fs_client::xattr::XATTR_SIZE_MAX + 1];
    let e = c.client.set_xattr(&user, InodeId(FILE), b"user.a", &big, SetXattrMode::Upsert).await.unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidArgument);
    assert_eq!(c.client.get_xattr(&user, InodeId(FILE), b"").await.unwrap_err().code, StatusCode::InvalidArgument);
    let long = vec![b'a'; 256];
    assert_eq!(c.client.remove_xattr(&user, InodeId(FILE), &long).await.unwrap_err().code, StatusCode::NameTooLong);
}

#[tokio::test]
async fn batch_reads_land_in_disjoint_ranges_of_one_external_buffer() {
    use std::any::Any;
    use t3fs_client::{BatchConfig, ExternalBuf, ReadReq};

    let c = cluster().await;
    let inode = Arc::new(c.inode(5 * u64::from(CS)));
    // Chunks 0..=3 hold data up to 3·CS + 100; the rest of the file is a hole.
    let data = pattern(3 * CS as usize + 100, 5);
    c.client.write(&inode, 0, &data).await.unwrap();
    let mut want = data.clone();
    want.resize(5 * CS as usize, 0);

    // One Arc-owned buffer: [guard 16][A 6000][guard 16][B 6000][guard 16], guards never written.
    const G: usize = 16;
    const L: usize = 6000;
    let mut owner = Arc::new(Mutex::new(vec![0xEEu8; 3 * G + 2 * L]));
    let base = Arc::get_mut(&mut owner).unwrap().get_mut().unwrap().as_mut_ptr();
    let erased: Arc<dyn Any + Send + Sync> = owner.clone();
    // SAFETY: [G, G+L) and [2G+L, 2G+2L) lie inside the Vec that `owner` keeps alive and are
    // disjoint; nothing touches the Vec again until every ExternalBuf is dropped (try_unwrap).
    let (a, b) =
        unsafe { (ExternalBuf::new(base.add(G), L, erased.clone()), ExternalBuf::new(base.add(2 * G + L), L, erased)) };
    // A crosses chunks 0/1; B crosses chunks 2/3 and runs into the hole at 3·CS + 100.
    let (off_a, off_b) = (1000u64, 3 * u64::from(CS) - 500);
    let reqs = vec![
        ReadReq { inode: inode.clone(), offset: off_a, len: L as u32, buf: a.into(), user_data: 0 },
        ReadReq { inode: inode.clone(), offset: off_b, len: L as u32, buf: b.into(), user_data: 1 },
    ];
    let mut reader = c.client.batch_reader(BatchConfig { max_bytes_per_op: 1500, ..BatchConfig::default() });
    reader.submit_all(reqs);
    let mut seen = [false; 2];
    while let Some(done) = reader.next().await {
        let off = [off_a, off_b][done.user_data as usize] as usize;
        assert_eq!(done.result.unwrap(), L);
        assert!(done.buf[..] == want[off..off + L], "read {} differs", done.user_data);
        seen[done.user_data as usize] = true;
    }
    assert_eq!(seen, [true, true]);
    // Every completion (and its ExternalBuf) is gone, so the buffer is ours again.
    let buf = Arc::try_unwrap(owner).expect("no ExternalBuf outlives its completion").into_inner().unwrap();
    assert!(buf[..G].iter().chain(&buf[G + L..2 * G + L]).chain(&buf[2 * G + 2 * L..]).all(|&x| x == 0xEE));
    assert!(buf[G..G + L] == want[off_a as usize..off_a as usize + L]);
    assert!(buf[2 * G + L..2 * G + 2 * L] == want[off_b as usize..off_b as usize + L]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_reads_go_out_in_per_node_batches_and_match_single_reads() {
    use t3fs_client::{BatchConfig, ReadReq};

    let c = cluster().await;
    let inode = Arc::new(c.inode(8 * u64::from(CS)));
    let data = pattern(6 * CS as usize + 123, 9);
    c.client.write(&inode, 0, &data).await.unwrap();
    // One replica of chain 1 answers with bad CRCs: its batch items fail and fail over.
    c.storage.corrupt.lock().unwrap().insert(101);
    let mut rng = t3fs_common::layout::SplitMix64::new(3);
    let ranges: Vec<(u64, u32)> = (0..200)
        .map(|_| (rng.next_u64() % (8 * u64::from(CS)), (rng.next_u64() % (3 * u64::from(CS))) as u32))
        .collect();
    let cfg = BatchConfig {
        max_in_flight_requests: 64,
        max_ops_per_node: 1,
        max_bytes_per_op: 700,
        max_reads_per_batch: 16,
        max_bytes_per_batch: 6000,
    };
    let mut reader = c.client.batch_reader(cfg);
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        let buf = vec![0u8; len as usize].into();
        reader.submit(ReadReq { inode: inode.clone(), offset, len, buf, user_data: i as u64 }).await;
    }
    let mut done = 0;
    while let Some(comp) = reader.next().await {
        let (offset, len) = ranges[comp.user_data as usize];
        let n = comp.result.unwrap();
        let single = c.client.read(&inode, offset, len).await.unwrap();
        assert_eq!(&comp.buf[..n], &single[..], "read {offset}+{len}");
        done += 1;
    }
    assert_eq!(done, ranges.len());
    let s = reader.stats();
    assert!(s.max_node_ops <= 1, "{s:?}");
    assert!(s.wire_batches > 0 && s.wire_reads > 2 * s.wire_batches, "reads were not batched: {s:?}");
    assert!(s.failovers > 0, "{s:?}");
    assert!(c.storage.batches.load(Ordering::SeqCst) as u64 == s.wire_batches, "{s:?}");
}

#[tokio::test]
async fn lone_batch_reads_land_in_place_in_a_registered_pool_with_crc_checked() {
    use t3fs_client::{BatchConfig, ReadReq};

    let c = cluster().await;
    let inode = Arc::new(c.inode(6 * u64::from(CS)));
    // Data up to 4·CS + 300; the rest of the file is a hole.
    let data = pattern(4 * CS as usize + 300, 11);
    c.client.write(&inode, 0, &data).await.unwrap();
    let mut want = data.clone();
    want.resize(6 * CS as usize, 0);
    // One replica of chain 1 answers with bad CRCs: a direct read from it must fail its check on
    // the bytes in the pool buffer and fail over, never deliver them.
    c.storage.corrupt.lock().unwrap().insert(101);
    let pool = c.client.buffer_pool(3 * CS as usize, 2).unwrap();
    assert!(pool.is_registered());
    let mut reader = c.client.batch_reader(BatchConfig { max_bytes_per_op: 1500, ..BatchConfig::default() });
    let mut rng = t3fs_common::layout::SplitMix64::new(17);
    for i in 0..40u64 {
        let offset = rng.next_u64() % (6 * u64::from(CS));
        let len = (rng.next_u64() % (3 * u64::from(CS))) as u32;
        let mut buf = pool.acquire().await;
        buf.fill(0xAA); // stale bytes must not show through holes
        // One read at a time: nothing is queued for a node, so every chunk read goes alone.
        reader.submit(ReadReq { inode: inode.clone(), offset, len, buf: buf.into(), user_data: i }).await;
        let done = reader.next().await.unwrap();
        let n = done.result.unwrap();
        let o = offset as usize;
        assert_eq!(n, (want.len() - o).min(len as usize));
        assert!(done.buf[..n] == want[o..o + n], "read {offset}+{len}");
    }
    let s = reader.stats();
    assert!(s.direct_reads > 0, "{s:?}");
    assert!(s.failovers > 0, "the corrupt replica was never tried: {s:?}");
    assert_eq!(c.storage.batches.load(Ordering::SeqCst) as u64, s.wire_batches, "{s:?}");
}
