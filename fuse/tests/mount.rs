//! A real FUSE mount over an in-process fake cluster (fake mgmtd, an in-memory meta namespace, one
//! fake storage node). Needs root (or fusermount3) and /dev/fuse, so it is `#[ignore]`d by default:
//! run it with `cargo test -p t3fs-fuse --test mount -- --ignored`. The end-to-end test against the
//! real daemons is the lead's; this one pins the FUSE adapter's behaviour (write buffering, sizes
//! while writing, readdir, truncate, unlink, error codes).
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use t3fs_common::bulk::{self, BulkHandler};
use t3fs_common::proto::{self, InodeType, PublicTargetState, UpdateType, bulk_request};
use t3fs_common::{Error, StatusCode};
use t3fs_fuse::MountConfig;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const CS: u32 = 4096;

#[derive(Default)]
struct Storage(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl BulkHandler for Storage {
    async fn handle(&self, req: proto::BulkRequest, payload: Bytes) -> (proto::BulkResponse, Bytes) {
        let err = |c: StatusCode| (bulk::error_response(&Error::new(c, "fake")), Bytes::new());
        let mut chunks = self.0.lock().unwrap();
        match req.op {
            Some(bulk_request::Op::Read(r)) => {
                let Some(data) = chunks.get(&r.chunk_id.to_vec()) else { return err(StatusCode::ChunkNotFound) };
                let start = (r.offset as usize).min(data.len());
                let end = (start + r.length as usize).min(data.len());
                let out = Bytes::copy_from_slice(&data[start..end]);
                (proto::BulkResponse { payload_crc32c: crc32c::crc32c(&out), ..Default::default() }, out)
            }
            Some(bulk_request::Op::Update(u)) => {
                if crc32c::crc32c(&payload) != u.payload_crc32c {
                    return err(StatusCode::ChecksumMismatch);
                }
                let key = u.chunk_id.to_vec();
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
}

/// An in-memory namespace: just enough meta semantics for the adapter.
#[derive(Default)]
struct Ns {
    inodes: HashMap<u64, proto::Inode>,
    dentries: BTreeMap<(u64, Vec<u8>), u64>,
    next: u64,
}

struct Meta(Mutex<Ns>);

fn st(e: Error) -> Status {
    e.to_tonic()
}

impl Meta {
    fn new() -> Self {
        let mut ns = Ns { next: 2, ..Default::default() };
        ns.inodes.insert(
            1,
            proto::Inode {
                id: 1,
                inode_type: InodeType::Directory as i32,
                mode: 0o777,
                nlink: 2,
                parent: 1,
                ..Default::default()
            },
        );
        Meta(Mutex::new(ns))
    }
    fn rsp(i: &proto::Inode) -> Result<Response<proto::InodeRsp>, Status> {
        Ok(Response::new(proto::InodeRsp { inode: Some(i.clone()) }))
    }
    fn make(
        &self,
        h: Option<proto::RequestHeader>,
        parent: u64,
        name: &[u8],
        dir: bool,
        mode: u32,
        excl: bool,
    ) -> Result<Response<proto::InodeRsp>, Status> {
        let h = h.unwrap_or_default();
        let mut ns = self.0.lock().unwrap();
        if let Some(&id) = ns.dentries.get(&(parent, name.to_vec())) {
            if dir || excl {
                return Err(st(Error::new(StatusCode::AlreadyExists, "exists")));
            }
            return Self::rsp(&ns.inodes[&id]);
        }
        if !ns.inodes.contains_key(&parent) {
            return Err(st(Error::not_found("parent")));
        }
        let id = ns.next;
        ns.next += 1;
        let now = t3fs_common::now_ns();
        let inode = proto::Inode {
            id,
            inode_type: if dir { InodeType::Directory } else { InodeType::File } as i32,
            mode,
            uid: h.uid,
            gid: h.gid,
            nlink: if dir { 2 } else { 1 },
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
            parent,
            layout: (!dir).then_some(proto::Layout {
                table_id: 1,
                table_version: 1,
                chunk_size: CS,
                stripe: 1,
                base_index: 0,
                seed: 0,
            }),
            ..Default::default()
        };
        ns.inodes.insert(id, inode.clone());
        ns.dentries.insert((parent, name.to_vec()), id);
        Self::rsp(&inode)
    }
}

#[tonic::async_trait]
impl proto::meta_server::Meta for Meta {
    async fn lookup(&self, r: Request<proto::LookupReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        let ns = self.0.lock().unwrap();
        match ns.dentries.get(&(r.parent, r.name.to_vec())) {
            Some(id) => Self::rsp(&ns.inodes[id]),
            None => Err(st(Error::not_found("no entry"))),
        }
    }
    async fn get_attr(&self, r: Request<proto::GetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let ns = self.0.lock().unwrap();
        ns.inodes.get(&r.into_inner().inode).map_or_else(|| Err(st(Error::not_found("no inode"))), Self::rsp)
    }
    async fn mkdir(&self, r: Request<proto::MkdirReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        self.make(r.header, r.parent, &r.name, true, r.mode, true)
    }
    async fn create(&self, r: Request<proto::CreateReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        self.make(r.header, r.parent, &r.name, false, r.mode, r.exclusive)
    }
    async fn remove(&self, r: Request<proto::RemoveReq>) -> Result<Response<proto::RemoveRsp>, Status> {
        let r = r.into_inner();
        let mut ns = self.0.lock().unwrap();
        let key = (r.parent, r.name.to_vec());
        let id = *ns.dentries.get(&key).ok_or_else(|| st(Error::not_found("no entry")))?;
        let is_dir = ns.inodes[&id].inode_type == InodeType::Directory as i32;
        if is_dir != r.is_dir {
            let code = if is_dir { StatusCode::IsDirectory } else { StatusCode::NotDirectory };
            return Err(st(Error::new(code, "type")));
        }
        if is_dir && ns.dentries.keys().any(|(p, _)| *p == id) {
            return Err(st(Error::new(StatusCode::DirectoryNotEmpty, "not empty")));
        }
        ns.dentries.remove(&key);
        let mut inode = ns.inodes.remove(&id).expect("dentry points at an inode");
        inode.nlink = 0;
        Ok(Response::new(proto::RemoveRsp { inode: Some(inode) }))
    }
    async fn read_dir(&self, r: Request<proto::ReadDirReq>) -> Result<Response<proto::ReadDirRsp>, Status> {
        let r = r.into_inner();
        let ns = self.0.lock().unwrap();
        let all: Vec<proto::DirEntry> = ns
            .dentries
            .iter()
            .filter(|((p, n), _)| *p == r.inode && n.as_slice() > &r.start_after[..])
            .map(|((_, n), id)| proto::DirEntry {
                name: n.clone().into(),
                inode: *id,
                inode_type: ns.inodes[id].inode_type,
            })
            .collect();
        // Tiny pages so the client's paging is exercised.
        let more = all.len() > 2;
        Ok(Response::new(proto::ReadDirRsp { entries: all.into_iter().take(2).collect(), more }))
    }
    async fn set_attr(&self, r: Request<proto::SetAttrReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        let mut ns = self.0.lock().unwrap();
        let i = ns.inodes.get_mut(&r.inode).ok_or_else(|| st(Error::not_found("no inode")))?;
        if let Some(m) = r.mode {
            i.mode = m;
        }
        if let Some(l) = r.length {
            i.length = l;
        }
        if let Some(t) = r.mtime_ns {
            i.mtime_ns = t;
        }
        Self::rsp(i)
    }
    async fn close(&self, r: Request<proto::CloseReq>) -> Result<Response<proto::InodeRsp>, Status> {
        let r = r.into_inner();
        let mut ns = self.0.lock().unwrap();
        let i = ns.inodes.get_mut(&r.inode).ok_or_else(|| st(Error::not_found("no inode")))?;
        i.length = i.length.max(r.length_hint);
        Self::rsp(i)
    }
    async fn stat_fs(&self, _: Request<proto::StatFsReq>) -> Result<Response<proto::StatFsRsp>, Status> {
        let n = self.0.lock().unwrap().inodes.len() as u64;
        Ok(Response::new(proto::StatFsRsp { capacity_bytes: 1 << 30, used_bytes: 1 << 20, inodes: n }))
    }
}

async fn fake_cluster(cancel: &CancellationToken) -> (String, Arc<Storage>) {
    let storage = Arc::new(Storage::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bulk_addr = l.local_addr().unwrap().to_string();
    tokio::spawn(bulk::serve(l, storage.clone(), cancel.clone()));
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let grpc = incoming.local_addr().unwrap().to_string();
    let node = |id, ty: proto::NodeType, bulk: &str| proto::NodeInfo {
        node_id: id,
        node_type: ty as i32,
        status: proto::NodeStatus::HeartbeatConnected as i32,
        grpc_addr: grpc.clone(),
        bulk_addr: bulk.to_string(),
        ..Default::default()
    };
    let info = proto::RoutingInfo {
        version: 1,
        nodes: vec![node(1, proto::NodeType::Meta, ""), node(11, proto::NodeType::Storage, &bulk_addr)],
        tables: vec![proto::ChainTable { table_id: 1, version: 1, chains: vec![1], desc: String::new() }],
        chains: vec![proto::ChainInfo {
            chain_id: 1,
            chain_version: 1,
            targets: vec![proto::ChainTarget { target_id: 101, public_state: PublicTargetState::Serving as i32 }],
        }],
        targets: vec![proto::TargetInfo {
            target_id: 101,
            node_id: 11,
            chain_id: 1,
            public_state: PublicTargetState::Serving as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    let server = tonic::transport::Server::builder()
        .add_service(proto::mgmtd_server::MgmtdServer::new(Mgmtd(info)))
        .add_service(proto::meta_server::MetaServer::new(Meta::new()))
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
    tokio::spawn(server);
    (grpc, storage)
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The file-system checks, run on a blocking thread against the mountpoint.
fn exercise(mp: &std::path::Path) {
    // Create + buffered writes: the size is visible while the file is still open.
    let p = mp.join("a.bin");
    let data: Vec<u8> = (0..3 * CS as usize + 123).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&data[..1000]).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1000, "size includes buffered data");
    f.write_all(&data[1000..]).unwrap();
    // Reading through another handle after a flush of this one.
    f.flush().unwrap();
    drop(f);
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), data.len() as u64);

    // Overwrite in the middle (non-contiguous writes) and read it back on the same handle.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(4000)).unwrap();
    f.write_all(b"XYZ").unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"Q").unwrap();
    f.seek(SeekFrom::Start(3998)).unwrap();
    let mut buf = [0u8; 7];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, &[data[3998], data[3999], b'X', b'Y', b'Z', data[4003], data[4004]]);
    drop(f);

    // Truncate down and up: zeros, not old bytes.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(5000).unwrap();
    f.set_len(9000).unwrap();
    drop(f);
    let back = std::fs::read(&p).unwrap();
    assert_eq!(back.len(), 9000);
    assert_eq!(&back[..10], &data[..10]);
    assert_eq!(back[10], b'Q');
    assert_eq!(&back[4000..4003], b"XYZ");
    assert_eq!(&back[4003..5000], &data[4003..5000]);
    assert!(back[5000..].iter().all(|&b| b == 0));

    // O_TRUNC on open.
    std::fs::write(&p, b"short").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"short");

    // Directories and listings (meta pages by 2, so paging is exercised).
    std::fs::create_dir(mp.join("d")).unwrap();
    for i in 0..5 {
        std::fs::write(mp.join("d").join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let mut names: Vec<String> =
        std::fs::read_dir(mp.join("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4"]);
    assert_eq!(std::fs::read_to_string(mp.join("d/f3")).unwrap(), "3");
    assert_eq!(errno(std::fs::remove_dir(mp.join("d")).unwrap_err()), libc::ENOTEMPTY);
    for i in 0..5 {
        std::fs::remove_file(mp.join("d").join(format!("f{i}"))).unwrap();
    }
    std::fs::remove_dir(mp.join("d")).unwrap();
    assert!(!mp.join("d").exists());

    // chmod, errors, unsupported ops.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(errno(std::fs::metadata(mp.join("nope")).unwrap_err()), libc::ENOENT);
    assert_eq!(errno(std::fs::create_dir(mp.join("a.bin")).unwrap_err()), libc::EEXIST);
    assert_eq!(errno(std::fs::write(mp.join("x".repeat(256)), b"").unwrap_err()), libc::ENAMETOOLONG);
    assert_eq!(errno(std::fs::rename(&p, mp.join("b.bin")).unwrap_err()), libc::ENOSYS);
    assert_eq!(errno(std::fs::hard_link(&p, mp.join("c.bin")).unwrap_err()), libc::EOPNOTSUPP);
    std::fs::remove_file(&p).unwrap();
    assert!(!p.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs /dev/fuse and root (or fusermount3); run with --ignored"]
async fn mount_and_use() {
    let cancel = CancellationToken::new();
    let (mgmtd, storage) = fake_cluster(&cancel).await;
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().to_path_buf();
    let cfg = MountConfig { mgmtd_addr: mgmtd, threads: 2, ..Default::default() };
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(t3fs_fuse::run(cfg, mp.clone(), shutdown.clone()));
    // Wait for the mount to appear.
    let mut mounted = false;
    for _ in 0..100 {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        if mounts.lines().any(|l| l.split(' ').nth(1) == Some(mp.to_str().unwrap())) {
            mounted = true;
            break;
        }
        assert!(!daemon.is_finished(), "daemon exited early: {:?}", daemon.await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(mounted, "mount did not appear");
    let m = mp.clone();
    let res = tokio::task::spawn_blocking(move || exercise(&m)).await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    cancel.cancel();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(mp.to_str().unwrap()), "still mounted after shutdown");
    res.unwrap();
    assert!(storage.0.lock().unwrap().is_empty(), "chunks of removed files are deleted");
}
