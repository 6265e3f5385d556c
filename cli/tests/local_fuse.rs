//! End to end through a real FUSE mount on an in-process local cluster (mgmtd, meta, three
//! storage servers, 3-replica chains):
//! - a 10 MiB random file written and read back through the mount, byte for byte;
//! - every chunk present on all three replicas of its chain with the CRC32C of its bytes;
//! - the cluster stopped and started again on the same data dir, the file reads back identical;
//! - bad names refused with EINVAL/ENAMETOOLONG, changing nothing.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::path::Path;
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_common::ids::{ChainTableId, ChunkId, InodeId, TargetId};
use t3fs_common::{layout, proto};

const FILE_SIZE: usize = 10 << 20;

fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing on this machine; the FUSE integration test cannot run");
        return false;
    }
    true
}

struct Mounted {
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    async fn new(cluster: &LocalCluster, path: &Path) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        let client = cluster.client().await.unwrap();
        let session =
            t3fs_fuse::mount(client, tokio::runtime::Handle::current(), path, &cluster.mount_config()).unwrap();
        Mounted { session: Some(session) }
    }

    async fn unmount(mut self) {
        if let Some(s) = self.session.take() {
            tokio::task::spawn_blocking(move || s.umount_and_join()).await.unwrap().unwrap();
        }
    }
}

/// Runs blocking file-system calls off the runtime threads that serve the FUSE requests.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = t3fs_common::layout::SplitMix64::new(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Checks through the storage admin API that every chunk of `inode` is on all replicas of its
/// chain with the CRC32C of the expected bytes.
async fn check_replicas(cluster: &LocalCluster, inode: &proto::Inode, data: &[u8]) {
    let client = cluster.client().await.unwrap();
    let routing = client.routing();
    let lay = inode.layout.expect("file has a layout");
    let table = routing.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
    let cs = lay.chunk_size as usize;
    let chunks = data.len().div_ceil(cs);
    let mut chains_used = std::collections::BTreeSet::new();
    for i in 0..chunks {
        let chain_id = layout::chain_of(&lay, &table.chains, i as u32).unwrap();
        chains_used.insert(chain_id);
        let chain = routing.chain(chain_id).unwrap();
        assert_eq!(chain.targets.len(), 3, "chain {chain_id} must have 3 replicas");
        let expected = &data[i * cs..((i + 1) * cs).min(data.len())];
        let crc = crc32c::crc32c(expected);
        let mut versions = Vec::new();
        for t in &chain.targets {
            let meta = client
                .query_chunk(TargetId(t.target_id), ChunkId::new(InodeId(inode.id), i as u32))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("chunk {i} missing on target {}", t.target_id));
            assert_eq!(meta.length as usize, expected.len(), "chunk {i} length on target {}", t.target_id);
            assert_eq!(meta.crc32c, crc, "chunk {i} crc32c on target {}", t.target_id);
            versions.push(meta.version);
        }
        assert!(versions.windows(2).all(|w| w[0] == w[1]), "chunk {i} versions differ: {versions:?}");
    }
    assert!(chains_used.len() > 1, "a 10 MiB file should stripe over more than one chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_read_replicate_restart_through_fuse() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mnt = tmp.path().join("mnt");
    let data = random_bytes(FILE_SIZE, 0xC0FFEE);

    let cluster = LocalCluster::start(&data_dir).await.unwrap();
    let m = Mounted::new(&cluster, &mnt).await;
    let file = mnt.join("dir").join("random.bin");
    {
        let (file, data) = (file.clone(), data.clone());
        blocking(move || {
            std::fs::create_dir(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &data).unwrap();
        })
        .await;
    }
    let back = {
        let file = file.clone();
        blocking(move || std::fs::read(file).unwrap()).await
    };
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes read back through FUSE differ from those written");
    let names = {
        let d = mnt.join("dir");
        blocking(move || std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()).await
    };
    assert_eq!(names, vec![std::ffi::OsString::from("random.bin")]);

    // Replicas, checked through the storage API.
    let client = cluster.client().await.unwrap();
    let user = t3fs_client::UserInfo::default();
    let dir = client.lookup(&user, InodeId::ROOT, b"dir").await.unwrap();
    let inode = client.lookup(&user, InodeId(dir.id), b"random.bin").await.unwrap();
    assert_eq!(inode.length as usize, FILE_SIZE);
    check_replicas(&cluster, &inode, &data).await;

    // Bad names through the mount: refused, nothing created.
    {
        let long = mnt.join("x".repeat(256));
        let err = blocking(move || std::fs::write(long, b"x").unwrap_err()).await;
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
        let long_dir = mnt.join("y".repeat(300));
        let err = blocking(move || std::fs::create_dir(long_dir).unwrap_err()).await;
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
        let root = mnt.clone();
        let names = blocking(move || std::fs::read_dir(root).unwrap().count()).await;
        assert_eq!(names, 1, "only `dir` exists at the root");
    }

    // Restart: stop everything, start again on the same data dir, read identical bytes.
    m.unmount().await;
    drop(client);
    cluster.shutdown().await;
    let cluster = LocalCluster::start(&data_dir).await.unwrap();
    let m = Mounted::new(&cluster, &mnt).await;
    let back = {
        let file = file.clone();
        blocking(move || std::fs::read(file).unwrap()).await
    };
    assert!(back == data, "bytes read back after restart differ");
    m.unmount().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_names_are_refused_by_client_and_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let user = t3fs_client::UserInfo::default();
    let long = vec![b'a'; 256];
    let cases: [(&[u8], t3fs_common::StatusCode); 4] = [
        (b"a/b", t3fs_common::StatusCode::InvalidArgument),
        (b"a\0b", t3fs_common::StatusCode::InvalidArgument),
        (&long, t3fs_common::StatusCode::NameTooLong),
        (b"..", t3fs_common::StatusCode::InvalidArgument),
    ];
    for (name, code) in cases {
        let e = client.create(&user, InodeId::ROOT, name, 0o644, true).await.unwrap_err();
        assert_eq!(e.code, code, "client create {name:?}");
        let e = client.mkdir(&user, InodeId::ROOT, name, 0o755).await.unwrap_err();
        assert_eq!(e.code, code, "client mkdir {name:?}");
        assert_eq!(
            e.errno(),
            if code == t3fs_common::StatusCode::NameTooLong { libc::ENAMETOOLONG } else { libc::EINVAL }
        );
    }
    // The meta server validates on its own too (a client that skips validation changes nothing).
    let routing = client.routing();
    let meta = routing.nodes_of_type(proto::NodeType::Meta).next().unwrap().grpc_addr.clone();
    let mut raw = proto::meta_client::MetaClient::new(t3fs_common::routing::connect_channel(&meta).await.unwrap());
    for (name, code) in cases {
        let st = raw
            .create(proto::CreateReq {
                header: Some(proto::RequestHeader { token: cluster.plan.cluster.token.clone(), ..Default::default() }),
                parent: InodeId::ROOT.0,
                name: bytes::Bytes::copy_from_slice(name),
                mode: 0o644,
                exclusive: true,
                session: None,
            })
            .await
            .unwrap_err();
        assert_eq!(t3fs_common::Error::from_tonic(&st).code, code, "meta create {name:?}");
    }
    let entries = client.readdir(&user, InodeId::ROOT).await.unwrap();
    assert!(entries.is_empty(), "nothing may be created by bad names: {entries:?}");
    // A wrong token is refused.
    let st = raw
        .get_attr(proto::GetAttrReq {
            header: Some(proto::RequestHeader { token: "wrong".into(), ..Default::default() }),
            inode: InodeId::ROOT.0,
        })
        .await
        .unwrap_err();
    assert_eq!(t3fs_common::Error::from_tonic(&st).code, t3fs_common::StatusCode::Unauthenticated);
    drop(client);
    tokio::time::sleep(Duration::from_millis(10)).await;
    cluster.shutdown().await;
}
