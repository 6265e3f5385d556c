//! Several meta servers over one store: a directory's creates and removes meet on its owner.
//!
//! Two meta servers run in process over one KV store (as two meta hosts share one FoundationDB
//! cluster). Clients send creates, mkdirs and removes to the owner of the parent directory
//! (`client/src/meta_route.rs`), so each server answers exactly the operations of the directories
//! it owns, whichever client sent them, and batches them; with `dir_owner_routing` off a client's
//! operations all go to its current node. A stopped owner's directories fail over to the other
//! server at once. Each server garbage-collects the unlinked files it owns. Two FUSE mounts
//! writing, reading and removing in one directory reach its owner for every create and remove.
mod support;

use std::sync::Arc;
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, InodeId, UserInfo};
use t3fs_common::proto::NodeType;

/// A local cluster with a second meta server (its node id last).
async fn two_metas() -> (tempfile::TempDir, LocalCluster, u32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let second = cluster.add_meta().await.unwrap();
    (tmp, cluster, second)
}

/// Connects a client (with `owner_routing` as given) and waits until it knows `metas` meta nodes.
async fn client(cluster: &LocalCluster, owner_routing: bool, metas: usize) -> Arc<Client> {
    let cfg = t3fs_client::ClientConfig { dir_owner_routing: owner_routing, ..cluster.client_config() };
    let c = Client::connect(cfg).await.unwrap();
    knows_metas(&c, metas).await;
    c
}

/// Waits until `c` knows `metas` meta nodes.
async fn knows_metas(c: &Client, metas: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.routing().nodes_of_type(NodeType::Meta).count() != metas {
        assert!(tokio::time::Instant::now() < deadline, "the client never saw {metas} meta nodes");
        c.refresh_routing().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(node id, creates answered Ok, removes answered Ok)` of every meta server.
fn answered(cluster: &LocalCluster) -> Vec<(u32, u64, u64)> {
    cluster.metas().map(|m| (m.node_id(), m.metrics().ok_ops("create"), m.metrics().ok_ops("remove"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_and_removes_go_to_the_directory_owner_from_every_client() {
    let (_tmp, cluster, _) = two_metas().await;
    let root = UserInfo::root();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&cluster, true, 2).await);
    }

    const DIRS: usize = 24;
    const FILES: usize = 8;
    let mut dirs = Vec::new();
    for d in 0..DIRS {
        let name = format!("ckpt{d}");
        dirs.push(InodeId(clients[0].mkdir(&root, InodeId::ROOT, name.as_bytes(), 0o755).await.unwrap().id));
    }
    let owners: Vec<u32> = dirs.iter().map(|d| clients[0].dir_owner(*d).expect("two meta nodes are known")).collect();
    for c in &clients[1..] {
        let theirs: Vec<u32> = dirs.iter().map(|d| c.dir_owner(*d).unwrap()).collect();
        assert_eq!(theirs, owners, "every client picks the same owners");
    }
    let before = answered(&cluster);

    // Every client creates and then removes its own files in every directory, all at once.
    let mut tasks = Vec::new();
    for (ci, c) in clients.iter().enumerate() {
        for dir in &dirs {
            let (c, dir, root) = (c.clone(), *dir, root.clone());
            tasks.push(tokio::spawn(async move {
                for f in 0..FILES {
                    let name = format!("rank{ci}-{f}");
                    c.create(&root, dir, name.as_bytes(), 0o644, true).await.unwrap();
                }
                for f in 0..FILES {
                    let name = format!("rank{ci}-{f}");
                    c.remove(&root, dir, name.as_bytes(), false).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for dir in &dirs {
        assert!(clients[0].readdir(&root, *dir).await.unwrap().is_empty());
    }

    let after = answered(&cluster);
    let mut owned_by = Vec::new();
    for ((node, c0, r0), (_, c1, r1)) in before.iter().zip(&after) {
        let owned = owners.iter().filter(|o| *o == node).count() as u64;
        owned_by.push(owned);
        let per_dir = (clients.len() * FILES) as u64;
        assert_eq!(c1 - c0, owned * per_dir, "node {node} owns {owned} directories and answers exactly their creates");
        assert_eq!(r1 - r0, owned * per_dir, "node {node} answers exactly its directories' removes");
    }
    assert!(owned_by.iter().all(|n| *n > 0), "both meta nodes own directories: {owned_by:?}");
    let conflicts: u64 = cluster.metas().map(|m| m.metrics().kv_counts().1).sum();
    eprintln!("owners {owned_by:?}; KV conflicts on both servers: {conflicts}");

    // With owner routing off, a client's operations all go to its current meta node.
    let sticky = client(&cluster, false, 2).await;
    assert_eq!(sticky.dir_owner(dirs[0]), None);
    let before = answered(&cluster);
    for dir in &dirs {
        sticky.create(&root, *dir, b"sticky", 0o644, true).await.unwrap();
    }
    let served: Vec<u64> = answered(&cluster).iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
    assert!(served.contains(&(DIRS as u64)) && served.contains(&0), "one node served them all: {served:?}");

    for c in clients.into_iter().chain([sticky]) {
        c.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owner_hands_its_directories_to_the_other_meta_node() {
    let (_tmp, mut cluster, second) = two_metas().await;
    let root = UserInfo::root();
    let c = client(&cluster, true, 2).await;

    // A directory the second node owns (each new one is a coin toss).
    let mut dir = None;
    for d in 0..64 {
        let i = InodeId(c.mkdir(&root, InodeId::ROOT, format!("d{d}").as_bytes(), 0o755).await.unwrap().id);
        if c.dir_owner(i) == Some(second) {
            dir = Some(i);
            break;
        }
    }
    let dir = dir.expect("the second node owns one of 64 directories");
    c.create(&root, dir, b"before", 0o644, true).await.unwrap();

    // Its owner stops; routing still lists it until mgmtd's heartbeat timeout, but the next create
    // in its directory goes to the other node after one failed try, not after a retry timeout.
    assert!(cluster.stop_meta(second).await);
    let started = tokio::time::Instant::now();
    c.create(&root, dir, b"after", 0o644, true).await.unwrap();
    let took = started.elapsed();
    assert_ne!(c.dir_owner(dir), Some(second), "a node that just failed is not the owner");
    assert!(took < Duration::from_secs(c.config().retry_timeout_ms / 1000), "failover took {took:?}");
    eprintln!("create after the owner stopped took {took:?}");
    // Requests that go to the current node (which may have been the stopped one) move too.
    c.getattr(&root, dir).await.unwrap();
    let names: Vec<Vec<u8>> = c.readdir(&root, dir).await.unwrap().into_iter().map(|e| e.name.to_vec()).collect();
    assert_eq!(names, vec![b"after".to_vec(), b"before".to_vec()]);
    c.remove(&root, dir, b"before", false).await.unwrap();

    c.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_meta_server_collects_the_unlinked_files_it_owns() {
    let (_tmp, cluster, _) = two_metas().await;
    let root = UserInfo::root();
    let c = client(&cluster, true, 2).await;
    // Both servers must see each other, or one would (correctly) collect every file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cluster.metas().all(|m| t3fs_common::owner::meta_nodes(&m.routing().get()).len() == 2) {
        assert!(tokio::time::Instant::now() < deadline, "the meta servers never saw each other");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nodes: Vec<u32> = cluster.metas().map(|m| m.node_id()).collect();
    let collected =
        |cluster: &LocalCluster| -> Vec<u64> { cluster.metas().map(|m| m.metrics().gc_collected_count()).collect() };
    let before = collected(&cluster);

    const FILES: usize = 40;
    let mut expected = vec![0u64; nodes.len()];
    for f in 0..FILES {
        let name = format!("gone{f}");
        let i = c.create(&root, InodeId::ROOT, name.as_bytes(), 0o644, true).await.unwrap();
        c.write(&i, 0, b"some bytes").await.unwrap();
        c.close(&root, InodeId(i.id), 10, true).await.unwrap();
        c.remove(&root, InodeId::ROOT, name.as_bytes(), false).await.unwrap();
        let owner = t3fs_common::owner::owner(i.id, &nodes).unwrap();
        expected[nodes.iter().position(|n| *n == owner).unwrap()] += 1;
    }
    assert!(expected.iter().all(|n| *n > 0), "both servers own some of {FILES} files: {expected:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let now: Vec<u64> = collected(&cluster).iter().zip(&before).map(|(a, b)| a - b).collect();
        if now.iter().sum::<u64>() >= FILES as u64 || tokio::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done, expected, "each server collected exactly the files it owns");

    c.shutdown().await;
    cluster.shutdown().await;
}

/// Two FUSE mounts over two meta servers write, read and remove files in one directory: every
/// create and remove reaches the directory's owner, and each mount sees the other's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_mounts_share_one_directory_through_its_owner() {
    let Some(mut env) = support::Env::start().await else { return };
    env.cluster.add_meta().await.unwrap();
    let other = env.mount_another("m2").await;
    knows_metas(&env.client, 2).await;
    knows_metas(&other.client, 2).await;
    env.fs(|m| std::fs::create_dir(m.join("ckpt")).unwrap()).await;
    let dir = InodeId(env.inode("/ckpt").await.id);
    let owner = env.client.dir_owner(dir).unwrap();
    assert_eq!(other.client.dir_owner(dir), Some(owner));
    let before = answered(&env.cluster);

    const FILES: usize = 40;
    let write = |mnt: std::path::PathBuf, rank: usize| {
        std::thread::spawn(move || {
            for f in 0..FILES {
                std::fs::write(
                    mnt.join(format!("ckpt/rank{rank}-{f}")),
                    support::pattern(3000, (rank * 100 + f) as u64),
                )
                .unwrap();
            }
        })
    };
    let (a, b) = (write(env.mnt.clone(), 0), write(other.mnt.clone(), 1));
    support::blocking(move || (a.join().unwrap(), b.join().unwrap())).await;

    // Each mount reads every file, its own and the other's.
    for mnt in [env.mnt.clone(), other.mnt.clone()] {
        support::blocking(move || {
            let mut names: Vec<String> = std::fs::read_dir(mnt.join("ckpt"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names.len(), 2 * FILES);
            for rank in 0..2 {
                for f in 0..FILES {
                    let got = std::fs::read(mnt.join(format!("ckpt/rank{rank}-{f}"))).unwrap();
                    assert_eq!(got, support::pattern(3000, (rank * 100 + f) as u64));
                }
            }
        })
        .await;
    }
    // Each removes the other's files.
    let (m1, m2) = (env.mnt.clone(), other.mnt.clone());
    support::blocking(move || {
        for f in 0..FILES {
            std::fs::remove_file(m1.join(format!("ckpt/rank1-{f}"))).unwrap();
            std::fs::remove_file(m2.join(format!("ckpt/rank0-{f}"))).unwrap();
        }
        assert_eq!(std::fs::read_dir(m1.join("ckpt")).unwrap().count(), 0);
    })
    .await;

    let after = answered(&env.cluster);
    for ((node, c0, r0), (_, c1, r1)) in before.iter().zip(&after) {
        let expected = if *node == owner { (2 * FILES) as u64 } else { 0 };
        assert_eq!((c1 - c0, r1 - r0), (expected, expected), "node {node}: creates and removes (owner {owner})");
    }
    other.stop().await;
    env.stop().await;
}
