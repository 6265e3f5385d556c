//! The storage server's periodic trim (`trim_interval_ms`, `Engine::trim`): after chunks are
//! removed, every replica gives their slots' blocks back to the file system within two passes and
//! counts them in `t3fs_storage_trimmed_bytes_total`; chunks still live keep their data.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::UpdateType;
use t3fs_common::{ChunkId, InodeId};

mod common;
use common::*;

/// Bytes the group files under a target directory hold on disk.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += allocated(&p);
        } else if p.parent().and_then(Path::parent).is_some_and(|e| e.ends_with("engine")) {
            total += p.metadata().unwrap().blocks() * 512;
        }
    }
    total
}

fn trimmed(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("t3fs_storage_trimmed_bytes_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_chunks_give_their_blocks_back_on_every_replica() {
    let mut c = Cluster::start_with(|cfg| cfg.trim_interval_ms = 100).await;
    let client = BulkClient::default();
    let data = vec![9u8; CHUNK_SIZE as usize];
    let chunks: Vec<ChunkId> = (0..8).map(|i| ChunkId::new(InodeId(11), i)).collect();
    for &chunk in &chunks {
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, &data), &data).await.unwrap();
    }
    let before: Vec<u64> = c.dirs.iter().map(|d| allocated(d.path())).collect();
    assert!(before.iter().all(|&b| b >= 8 * u64::from(CHUNK_SIZE)), "{before:?}");
    for &chunk in &chunks[..6] {
        client.call(&c.bulk(0), &update(101, 1, chunk, UpdateType::Remove, 0, b""), &[]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for (node, server) in c.servers.iter().enumerate() {
        loop {
            let n = trimmed(&scrape(server).await);
            if n >= 6 * u64::from(CHUNK_SIZE) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node {node}: {n} bytes trimmed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = allocated(c.dirs[node].path());
        assert!(before[node] - after >= 6 * u64::from(CHUNK_SIZE), "node {node}: {} -> {after}", before[node]);
    }
    // The chunks still live read back whole on every replica.
    for &chunk in &chunks[6..] {
        for node in 0..3 {
            let target = node as u64 * 100 + 101;
            let (_, got) = client.call(&c.bulk(node), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
            assert!(got[..] == data[..], "node {node}, chunk {chunk}");
        }
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
