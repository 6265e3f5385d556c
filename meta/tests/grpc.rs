//! End-to-end: a meta server on 127.0.0.1:0 with the in-memory KV store, registered with a tiny fake
//! mgmtd (accepts RegisterNode/Heartbeat, serves fixed routing info with table 1 of 2 chains),
//! driven through its gRPC API.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use t3fs_common::proto::mgmtd_server::{Mgmtd, MgmtdServer};
use t3fs_common::proto::{self, meta_client::MetaClient};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::KvConfig;
use t3fs_meta::Config;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct FakeMgmtd {
    token: String,
    registered: Arc<Mutex<Vec<proto::RegisterNodeReq>>>,
    heartbeats: Arc<AtomicUsize>,
    /// Pushed with every heartbeat reply whose request reports another version.
    config: Arc<Mutex<Option<proto::NodeConfig>>>,
    /// The config version of the latest heartbeat.
    reported: Arc<Mutex<u64>>,
}

impl FakeMgmtd {
    fn check(&self, h: &Option<proto::RequestHeader>) -> Result<(), Status> {
        let token = h.as_ref().map(|h| h.token.as_str()).unwrap_or("");
        if token != self.token {
            return Err(Error::new(StatusCode::Unauthenticated, "bad token").to_tonic());
        }
        Ok(())
    }
}

fn routing_info() -> proto::RoutingInfo {
    proto::RoutingInfo {
        version: 3,
        tables: vec![proto::ChainTable { table_id: 1, version: 1, chains: vec![101, 102], desc: String::new() }],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Mgmtd for FakeMgmtd {
    async fn register_node(
        &self,
        req: Request<proto::RegisterNodeReq>,
    ) -> Result<Response<proto::RegisterNodeRsp>, Status> {
        let r = req.into_inner();
        self.check(&r.header)?;
        self.registered.lock().unwrap().push(r);
        Ok(Response::new(proto::RegisterNodeRsp { routing_version: 3 }))
    }
    async fn heartbeat(&self, req: Request<proto::HeartbeatReq>) -> Result<Response<proto::HeartbeatRsp>, Status> {
        self.check(&req.get_ref().header)?;
        assert_eq!(req.get_ref().node_type, proto::NodeType::Meta as i32);
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
        let applied = req.get_ref().config_version;
        *self.reported.lock().unwrap() = applied;
        let config = self.config.lock().unwrap().clone().filter(|c| c.version != applied);
        Ok(Response::new(proto::HeartbeatRsp { routing_version: 3, config, heartbeat_timeout_ms: 0 }))
    }
    async fn get_routing_info(
        &self,
        req: Request<proto::GetRoutingInfoReq>,
    ) -> Result<Response<proto::GetRoutingInfoRsp>, Status> {
        self.check(&req.get_ref().header)?;
        let info = (req.get_ref().known_version < 3).then(routing_info);
        Ok(Response::new(proto::GetRoutingInfoRsp { info }))
    }
    async fn create_chain_table(
        &self,
        _req: Request<proto::CreateChainTableReq>,
    ) -> Result<Response<proto::CreateChainTableRsp>, Status> {
        Err(Status::unimplemented("fake mgmtd"))
    }

    async fn update_chain(&self, _: Request<proto::UpdateChainReq>) -> Result<Response<proto::UpdateChainRsp>, Status> {
        Err(Status::unimplemented("fake mgmtd"))
    }
    async fn rotate_last_srv(
        &self,
        _: Request<proto::RotateLastSrvReq>,
    ) -> Result<Response<proto::RotateLastSrvRsp>, Status> {
        Err(Status::unimplemented("fake mgmtd"))
    }
    async fn set_config(&self, _: Request<proto::SetConfigReq>) -> Result<Response<proto::SetConfigRsp>, Status> {
        Err(Status::unimplemented("fake mgmtd"))
    }
    async fn get_config(&self, _: Request<proto::GetConfigReq>) -> Result<Response<proto::GetConfigRsp>, Status> {
        Err(Status::unimplemented("fake mgmtd"))
    }
}

async fn spawn_fake(fake: FakeMgmtd, cancel: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MgmtdServer::new(fake))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                cancel.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    addr.to_string()
}

fn header(token: &str) -> Option<proto::RequestHeader> {
    Some(proto::RequestHeader {
        request_id: t3fs_common::new_request_id(),
        token: token.to_string(),
        uid: 1000,
        gid: 1000,
        gids: vec![],
    })
}

fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> StatusCode {
    Error::from_tonic(&r.unwrap_err()).code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_serves_the_namespace_over_grpc() {
    let stop = CancellationToken::new();
    let fake = FakeMgmtd { token: "secret".into(), ..Default::default() };
    let mgmtd_addr = spawn_fake(fake.clone(), stop.clone()).await;
    let mut config = Config::new(mgmtd_addr, KvConfig::Mem);
    config.token = "secret".into();
    config.heartbeat_interval_ms = 50;
    config.routing_refresh_ms = 50;
    let server = t3fs_meta::start(config).await.unwrap();
    let addr = server.grpc_addr();

    {
        let reg = fake.registered.lock().unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!((reg[0].node_id, reg[0].node_type), (100, proto::NodeType::Meta as i32));
        assert_eq!(reg[0].grpc_addr, addr.to_string());
    }

    let mut c = MetaClient::connect(format!("http://{addr}")).await.unwrap();
    let h = || header("secret");
    let d = c
        .mkdir(proto::MkdirReq { header: h(), parent: 1, name: "d".into(), mode: 0o755 })
        .await
        .unwrap()
        .into_inner()
        .inode
        .unwrap();
    assert_eq!((d.uid, d.gid, d.nlink), (1000, 1000, 2));
    let f = c
        .create(proto::CreateReq {
            header: h(),
            parent: d.id,
            name: "f".into(),
            mode: 0o644,
            exclusive: true,
            session: None,
        })
        .await
        .unwrap()
        .into_inner()
        .inode
        .unwrap();
    let layout = f.layout.unwrap();
    assert_eq!((layout.table_id, layout.table_version, layout.stripe, layout.chunk_size), (1, 1, 2, 1 << 20));
    let again = c.create(proto::CreateReq {
        header: h(),
        parent: d.id,
        name: "f".into(),
        mode: 0o644,
        exclusive: true,
        session: None,
    });
    assert_eq!(code(again.await), StatusCode::AlreadyExists);

    let page = c
        .read_dir(proto::ReadDirReq { header: h(), inode: 1, start_after: Default::default(), limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    assert_eq!((&page.entries[0].name[..], page.entries[0].inode, page.more), (&b"d"[..], d.id, false));
    let looked = c.lookup(proto::LookupReq { header: h(), parent: d.id, name: "f".into() }).await.unwrap();
    assert_eq!(looked.into_inner().inode.unwrap(), f);

    let set = proto::SetAttrReq { header: h(), inode: f.id, mode: Some(0o600), ..Default::default() };
    assert_eq!(c.set_attr(set).await.unwrap().into_inner().inode.unwrap().mode, 0o600);
    let closed = c
        .close(proto::CloseReq {
            header: h(),
            inode: f.id,
            length_hint: 5000,
            wrote: true,
            session_id: 0,
            truncate_version: 0,
        })
        .await
        .unwrap();
    assert_eq!(closed.into_inner().inode.unwrap().length, 5000);
    let got = c.get_attr(proto::GetAttrReq { header: h(), inode: f.id }).await.unwrap().into_inner().inode.unwrap();
    assert_eq!((got.length, got.mode), (5000, 0o600));
    let fs = c.stat_fs(proto::StatFsReq { header: h() }).await.unwrap().into_inner();
    assert_eq!((fs.inodes, fs.used_bytes), (3, 5000));

    // Errors arrive with their stable codes; nothing changes.
    let bad = c.mkdir(proto::MkdirReq { header: h(), parent: 1, name: "a/b".into(), mode: 0o755 });
    assert_eq!(code(bad.await), StatusCode::InvalidArgument);
    let rmdir = c.remove(proto::RemoveReq { header: h(), parent: 1, name: "d".into(), is_dir: true });
    assert_eq!(code(rmdir.await), StatusCode::DirectoryNotEmpty);
    let missing = c.lookup(proto::LookupReq { header: h(), parent: 1, name: "nope".into() });
    assert_eq!(code(missing.await), StatusCode::NotFound);
    for token in ["wrong", ""] {
        let denied = c.get_attr(proto::GetAttrReq { header: header(token), inode: 1 });
        assert_eq!(code(denied.await), StatusCode::Unauthenticated);
    }
    let no_header = c.get_attr(proto::GetAttrReq { header: None, inode: 1 });
    assert_eq!(code(no_header.await), StatusCode::Unauthenticated);

    let removed = c.remove(proto::RemoveReq { header: h(), parent: d.id, name: "f".into(), is_dir: false }).await;
    let removed = removed.unwrap().into_inner().inode.unwrap();
    assert_eq!((removed.id, removed.nlink, removed.layout), (f.id, 0, Some(layout)));
    c.remove(proto::RemoveReq { header: h(), parent: 1, name: "d".into(), is_dir: true }).await.unwrap();
    let page = c.read_dir(proto::ReadDirReq { header: h(), inode: 1, ..Default::default() }).await.unwrap();
    assert!(page.into_inner().entries.is_empty());

    // Heartbeats keep coming.
    let before = fake.heartbeats.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.heartbeats.load(Ordering::SeqCst) >= before + 2);

    tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.expect("shutdown is prompt");
    let mut fresh = MetaClient::connect(format!("http://{addr}")).await;
    if let Ok(c) = fresh.as_mut() {
        assert!(c.get_attr(proto::GetAttrReq { header: h(), inode: 1 }).await.is_err());
    }
    stop.cancel();
}

#[tokio::test]
async fn start_fails_fast_when_mgmtd_refuses() {
    let stop = CancellationToken::new();
    let fake = FakeMgmtd { token: "secret".into(), ..Default::default() };
    let mgmtd_addr = spawn_fake(fake, stop.clone()).await;
    let mut config = Config::new(mgmtd_addr, KvConfig::Mem);
    config.token = "not-the-token".into();
    let started = tokio::time::timeout(Duration::from_secs(10), t3fs_meta::start(config)).await.expect("bounded");
    let err = started.err().expect("registration must fail");
    assert!(format!("{err:#}").contains("Unauthenticated"), "{err:#}");
    stop.cancel();
}

#[tokio::test]
async fn run_stops_on_cancel_and_bad_configs_are_refused() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let mut bad = Config::new(mgmtd_addr.clone(), KvConfig::Mem);
    bad.chunk_size = 12345;
    assert!(t3fs_meta::start(bad).await.is_err());

    let cancel = CancellationToken::new();
    let task = tokio::spawn(t3fs_meta::run(Config::new(mgmtd_addr, KvConfig::Mem), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("run returns").unwrap().unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_a_restart_in_process() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(mgmtd_addr, KvConfig::Embedded { path: dir.path().join("meta") });
    let h = || header("");

    let server = t3fs_meta::start(config.clone()).await.unwrap();
    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let f = c.create(proto::CreateReq {
        header: h(),
        parent: 1,
        name: "f".into(),
        mode: 0o644,
        exclusive: true,
        session: None,
    });
    let f = f.await.unwrap().into_inner().inode.unwrap();
    // Shut down while the client still holds its connection open.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.expect("shutdown is prompt");

    let server = t3fs_meta::start(config).await.expect("the store reopens in this process");
    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let looked = c.lookup(proto::LookupReq { header: h(), parent: 1, name: "f".into() }).await.unwrap();
    assert_eq!(looked.into_inner().inode.unwrap(), f);
    let g = c.create(proto::CreateReq {
        header: h(),
        parent: 1,
        name: "g".into(),
        mode: 0o644,
        exclusive: true,
        session: None,
    });
    // Ids are never reused after a restart: g comes from a fresh batch (a random shard's, so its id
    // may be lower than f's, but never in f's batch).
    let g = g.await.unwrap().into_inner().inode.unwrap();
    assert_ne!(g.id / t3fs_meta::keys::ID_BATCH, f.id / t3fs_meta::keys::ID_BATCH, "{} vs {}", g.id, f.id);
    drop(c);
    server.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_link_symlink_batch_stat_and_xattrs_over_grpc() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let server = t3fs_meta::start(Config::new(mgmtd_addr, KvConfig::Mem)).await.unwrap();
    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let h = || header("");
    let create = |name: &str| proto::CreateReq {
        header: h(),
        parent: 1,
        name: name.to_string().into(),
        mode: 0o644,
        exclusive: true,
        session: None,
    };
    let a = c.create(create("a")).await.unwrap().into_inner().inode.unwrap();
    let b = c.create(create("b")).await.unwrap().into_inner().inode.unwrap();

    let rename = |rid: &str| proto::RenameReq {
        header: Some(proto::RequestHeader { request_id: rid.to_string(), ..header("").unwrap() }),
        src_parent: 1,
        src_name: "a".into(),
        dst_parent: 1,
        dst_name: "b".into(),
        no_replace: false,
        exchange: false,
    };
    let replaced = c.rename(rename("mv-1")).await.unwrap().into_inner().replaced.unwrap();
    assert_eq!((replaced.id, replaced.nlink), (b.id, 0));
    // A retry with the same request id returns the same answer; a new id fails (source gone).
    assert_eq!(c.rename(rename("mv-1")).await.unwrap().into_inner().replaced.unwrap(), replaced);
    assert_eq!(code(c.rename(rename("mv-2")).await), StatusCode::NotFound);
    let flags = proto::RenameReq { no_replace: true, exchange: true, ..rename("") };
    assert_eq!(code(c.rename(flags).await), StatusCode::InvalidArgument);

    let link = proto::LinkReq { header: h(), inode: a.id, new_parent: 1, new_name: "l".into() };
    assert_eq!(c.link(link).await.unwrap().into_inner().inode.unwrap().nlink, 2);
    let sym = proto::SymlinkReq { header: h(), parent: 1, name: "s".into(), target: "b".into() };
    let s = c.symlink(sym).await.unwrap().into_inner().inode.unwrap();
    assert_eq!((s.inode_type, &s.symlink_target[..]), (proto::InodeType::Symlink as i32, &b"b"[..]));
    let too_long = proto::SymlinkReq { header: h(), parent: 1, name: "t".into(), target: vec![b'x'; 5000].into() };
    assert_eq!(code(c.symlink(too_long).await), StatusCode::NameTooLong);

    let stat = c.batch_stat(proto::BatchStatReq { header: h(), inodes: vec![a.id, b.id, 1] }).await.unwrap();
    let entries = stat.into_inner().entries;
    // b lost its last link in the rename: it waits for GC with nlink 0 (still found by id).
    let found: Vec<(bool, u32)> = entries.iter().map(|e| (e.found, e.inode.as_ref().map_or(9, |i| i.nlink))).collect();
    assert_eq!(found, vec![(true, 2), (true, 0), (true, 2)]);

    let set = proto::SetXattrReq {
        header: h(),
        inode: a.id,
        name: "user.k".into(),
        value: "v".into(),
        create_only: true,
        replace_only: false,
    };
    c.set_xattr(set.clone()).await.unwrap();
    assert_eq!(code(c.set_xattr(set).await), StatusCode::AlreadyExists);
    let get = || proto::XattrReq { header: h(), inode: a.id, name: "user.k".into() };
    assert_eq!(&c.get_xattr(get()).await.unwrap().into_inner().value[..], b"v");
    let names = c.list_xattr(proto::ListXattrReq { header: h(), inode: a.id }).await.unwrap().into_inner().names;
    assert_eq!(names.iter().map(|n| n.to_vec()).collect::<Vec<_>>(), vec![b"user.k".to_vec()]);
    c.remove_xattr(get()).await.unwrap();
    assert_eq!(code(c.get_xattr(get()).await), StatusCode::NotFound);
    assert_eq!(code(c.remove_xattr(get()).await), StatusCode::NotFound);

    // Idempotent remove: the retry of a lost reply still succeeds with the same inode.
    let rm = || proto::RemoveReq {
        header: Some(proto::RequestHeader { request_id: "rm-1".into(), ..header("").unwrap() }),
        parent: 1,
        name: "l".into(),
        is_dir: false,
    };
    let first = c.remove(rm()).await.unwrap().into_inner();
    assert_eq!(c.remove(rm()).await.unwrap().into_inner(), first);
    drop(c);
    server.shutdown().await;
    stop.cancel();
}

use t3fs_common::metrics::sample;

/// `GET /metrics` body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    t3fs_common::metrics::scrape(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_ops_and_kv_transactions() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let mut config = Config::new(mgmtd_addr, KvConfig::Mem);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = t3fs_meta::start(config).await.unwrap();
    let maddr = server.metrics_addr().expect("metrics endpoint configured");
    let before = scrape(maddr).await;
    assert_eq!(sample(&before, "t3fs_meta_ops_total{op=\"mkdir\",code=\"Ok\"}"), None, "{before}");
    let txns_before = sample(&before, "t3fs_meta_kv_transactions_total").unwrap();

    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let mkdir = || proto::MkdirReq { header: header(""), parent: 1, name: "d".into(), mode: 0o755 };
    c.mkdir(mkdir()).await.unwrap();
    assert_eq!(code(c.mkdir(mkdir()).await), StatusCode::AlreadyExists);
    c.lookup(proto::LookupReq { header: header(""), parent: 1, name: "d".into() }).await.unwrap();

    let body = scrape(maddr).await;
    assert_eq!(sample(&body, "t3fs_meta_ops_total{op=\"mkdir\",code=\"Ok\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "t3fs_meta_ops_total{op=\"mkdir\",code=\"AlreadyExists\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "t3fs_meta_ops_total{op=\"lookup\",code=\"Ok\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "t3fs_meta_op_duration_seconds_count{op=\"mkdir\"}"), Some(2.0), "{body}");
    let txns = sample(&body, "t3fs_meta_kv_transactions_total").unwrap();
    assert!(txns >= txns_before + 3.0, "every op ran at least one transaction: {txns_before} -> {txns}");
    assert_eq!(sample(&body, "t3fs_meta_kv_conflicts_total"), Some(0.0), "{body}");
    // Each mkdir was a batch of one on an idle directory.
    assert_eq!(sample(&body, "t3fs_meta_dir_batch_ops_count"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "t3fs_meta_dir_batch_ops_sum"), Some(2.0), "{body}");
    server.shutdown().await;
    stop.cancel();
}

/// Polls `done` until it holds (or fails the test after 10 s).
async fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_configs_apply_without_a_restart() {
    let stop = CancellationToken::new();
    let fake = FakeMgmtd::default();
    let mgmtd_addr = spawn_fake(fake.clone(), stop.clone()).await;
    let mut config = Config::new(mgmtd_addr, KvConfig::Mem);
    config.heartbeat_interval_ms = 50;
    config.idempotency_ttl_ms = 60_000;
    let server = t3fs_meta::start(config).await.unwrap();
    assert_eq!(server.store().idempotency_ttl(), Duration::from_secs(60));
    let push = |version: u64, toml: &str| {
        let c = proto::NodeConfig { node_type: proto::NodeType::Meta as i32, version, toml: toml.into() };
        *fake.config.lock().unwrap() = Some(c);
    };

    push(1, "idempotency_ttl_ms = 5000\nidempotency_clean_interval_ms = 100\n");
    wait("version 1 applied and reported", || *fake.reported.lock().unwrap() == 1).await;
    assert_eq!(server.hot_config().version(), 1);
    assert_eq!(server.store().idempotency_ttl(), Duration::from_secs(5));

    // Refused on the node (an item meta does not have): version 1 stays, and is still reported.
    push(2, "fence_after_ms = 5000\n");
    let seen = fake.heartbeats.load(Ordering::SeqCst);
    wait("three more heartbeats", || fake.heartbeats.load(Ordering::SeqCst) >= seen + 3).await;
    assert_eq!((server.hot_config().version(), *fake.reported.lock().unwrap()), (1, 1));
    assert_eq!(server.store().idempotency_ttl(), Duration::from_secs(5));

    // Unset items fall back to the file's values.
    push(3, "");
    wait("version 3 applied and reported", || *fake.reported.lock().unwrap() == 3).await;
    assert_eq!(server.store().idempotency_ttl(), Duration::from_secs(60));
    server.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_layout_mkdirs_and_real_path_over_grpc() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let server = t3fs_meta::start(Config::new(mgmtd_addr, KvConfig::Mem)).await.unwrap();
    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let h = || header("");
    let mkdirs = |path: &str| proto::MkdirsReq { header: h(), parent: 1, path: path.to_string().into(), mode: 0o750 };
    let z = c.mkdirs(mkdirs("x/y/z")).await.unwrap().into_inner().inode.unwrap();
    assert_eq!((z.mode, z.uid), (0o750, 1000));
    assert_eq!(c.mkdirs(mkdirs("x/y/z")).await.unwrap().into_inner().inode.unwrap().id, z.id);
    assert_eq!(code(c.mkdirs(mkdirs("x/../y")).await), StatusCode::InvalidArgument);

    let layout = proto::Layout { table_id: 1, chunk_size: 1 << 16, stripe: 2, ..Default::default() };
    let set = |inode, layout| proto::SetLayoutReq { header: h(), inode, layout };
    let y = z.parent;
    let got = c.set_layout(set(y, Some(layout))).await.unwrap().into_inner().inode.unwrap();
    assert_eq!(got.layout, Some(layout));
    assert_eq!(code(c.set_layout(set(y, None)).await), StatusCode::InvalidArgument);
    let too_wide = proto::Layout { stripe: 3, ..got.layout.unwrap() };
    assert_eq!(code(c.set_layout(set(y, Some(too_wide))).await), StatusCode::InvalidArgument);
    let f = c
        .create(proto::CreateReq {
            header: h(),
            parent: y,
            name: "f".into(),
            mode: 0o644,
            exclusive: true,
            session: None,
        })
        .await
        .unwrap()
        .into_inner()
        .inode
        .unwrap();
    assert_eq!(f.layout.map(|l| (l.chunk_size, l.stripe)), Some((1 << 16, 2)));

    let path = |inode, name: &str| proto::RealPathReq { header: h(), inode, name: name.to_string().into() };
    let p = c.real_path(path(z.id, "")).await.unwrap().into_inner().path;
    assert_eq!(&p[..], b"/x/y/z");
    assert_eq!(&c.real_path(path(y, "f")).await.unwrap().into_inner().path[..], b"/x/y/f");
    assert_eq!(code(c.real_path(path(f.id, "")).await), StatusCode::NotDirectory);
    drop(c);
    server.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_locks_over_grpc() {
    let stop = CancellationToken::new();
    let mgmtd_addr = spawn_fake(FakeMgmtd::default(), stop.clone()).await;
    let mut config = Config::new(mgmtd_addr, KvConfig::Mem);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = t3fs_meta::start(config).await.unwrap();
    let maddr = server.metrics_addr().expect("metrics endpoint configured");
    let mut c = MetaClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let create =
        proto::CreateReq { header: header(""), parent: 1, name: "f".into(), mode: 0o644, ..Default::default() };
    let f = c.create(create).await.unwrap().into_inner().inode.unwrap();
    use proto::{LockKind, LockOp, LockType};
    let lock = |client: &str, t: LockType, start: u64, end: u64| proto::FileLock {
        client_id: client.into(),
        owner: 7,
        kind: LockKind::Posix as i32,
        lock_type: t as i32,
        start,
        end,
        pid: 99,
        acquired_ns: 0,
    };
    let req = |op: LockOp, l: proto::FileLock| proto::LockReq {
        header: header(""),
        inode: f.id,
        op: op as i32,
        lock: Some(l),
    };
    // Host A write-locks 0..=99; host B gets 100..=199 but not 50..=149, and GET names A's lock.
    let rsp = c.lock(req(LockOp::Set, lock("host-a", LockType::Write, 0, 99))).await.unwrap().into_inner();
    assert!(rsp.granted && rsp.conflict.is_none());
    assert!(c.lock(req(LockOp::Set, lock("host-b", LockType::Write, 100, 199))).await.unwrap().into_inner().granted);
    let rsp = c.lock(req(LockOp::Set, lock("host-b", LockType::Write, 50, 149))).await.unwrap().into_inner();
    let conflict = rsp.conflict.expect("the conflicting lock");
    assert!(!rsp.granted);
    assert_eq!((conflict.client_id.as_str(), conflict.start, conflict.end, conflict.pid), ("host-a", 0, 99, 99));
    let rsp = c.lock(req(LockOp::Get, lock("host-b", LockType::Read, 0, u64::MAX))).await.unwrap().into_inner();
    assert_eq!(rsp.conflict.map(|l| l.lock_type), Some(LockType::Write as i32));
    // Releasing A's owner frees the range for B.
    assert!(
        c.lock(req(LockOp::ReleaseOwner, lock("host-a", LockType::Unlock, 0, 0))).await.unwrap().into_inner().granted
    );
    assert!(c.lock(req(LockOp::Set, lock("host-b", LockType::Write, 50, 149))).await.unwrap().into_inner().granted);
    // Bad requests are refused and change nothing.
    assert_eq!(
        code(c.lock(req(LockOp::Set, lock("host-a", LockType::Write, 9, 1))).await),
        StatusCode::InvalidArgument
    );
    assert_eq!(
        code(c.lock(req(LockOp::Get, lock("host-a", LockType::Unlock, 0, 1))).await),
        StatusCode::InvalidArgument
    );
    assert_eq!(
        code(c.lock(req(LockOp::Unspecified, lock("host-a", LockType::Write, 0, 1))).await),
        StatusCode::InvalidArgument
    );
    let mut no_lock = req(LockOp::Set, lock("host-a", LockType::Write, 0, 1));
    no_lock.lock = None;
    assert_eq!(code(c.lock(no_lock).await), StatusCode::InvalidArgument);
    let mut missing = req(LockOp::Set, lock("host-a", LockType::Write, 0, 1));
    missing.inode = 999_999;
    assert_eq!(code(c.lock(missing).await), StatusCode::NotFound);

    let body = scrape(maddr).await;
    assert_eq!(sample(&body, "t3fs_meta_lock_conflicts_total"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "t3fs_meta_ops_total{op=\"lock\",code=\"Ok\"}"), Some(6.0), "{body}");
    drop(c);
    server.shutdown().await;
    stop.cancel();
}
