//! Corruption end to end on an in-process cluster (3 storage nodes, 3-replica chains): one byte of a
//! chunk's data flipped on disk on one replica. The client's reads still return the right bytes
//! (storage detects the CRC32C mismatch, the client reads another replica), the damaged node counts
//! the checksum error in its metrics, `t3fs admin fsck` reports the chunk, `fsck --repair` rewrites
//! the replica from a good one, and a second fsck is clean.
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::UserInfo;
use t3fs_common::layout::SplitMix64;
use t3fs_common::metrics::{sample, scrape};
use t3fs_common::{ChainTableId, ChunkId, InodeId, TargetId, layout};

#[path = "../../storage/tests/common/corrupt.rs"]
mod corrupt;
use corrupt::corrupt_on_disk;

const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

async fn admin(data: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("admin")
        .args(["--data-dir", data.to_str().unwrap()])
        .args(args)
        .env_remove("T3FS_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_is_detected_served_from_another_replica_counted_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let cluster = LocalCluster::start(&data_dir).await.unwrap();
    let client = cluster.client().await.unwrap();
    let user = UserInfo::root();

    let mut rng = SplitMix64::new(42);
    let data: Vec<u8> = (0..(300 << 10) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
    let inode = client.create(&user, InodeId::ROOT, b"victim.bin", 0o644, true).await.unwrap();
    client.write(&inode, 0, &data).await.unwrap();
    let inode = Arc::new(client.close(&user, InodeId(inode.id), data.len() as u64, true).await.unwrap());

    // The replica to damage: the middle target of chunk 0's chain, and the storage node holding it.
    let routing = client.routing();
    let lay = inode.layout.unwrap();
    let table = routing.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
    let chain = routing.chain(layout::chain_of(&lay, &table.chains, 0).unwrap()).unwrap();
    let target = TargetId(chain.targets[1].target_id);
    let (node, store) = (0..3)
        .find_map(|i| cluster.storage(i).and_then(|s| s.store(target).map(|st| (s, st))))
        .expect("a node serves the target");
    let root = store.chunks_dir().parent().expect("the target directory").to_path_buf();
    assert!(corrupt_on_disk(&root, &data[5000..5064]) >= 1, "chunk bytes not found under {}", root.display());

    // Reads are right every time; reads spread over replicas, so some hit the damaged one, which
    // counts it and refuses, and the client moves on.
    let series = format!("t3fs_storage_checksum_errors_total{{target=\"{}\"}}", target.0);
    let metrics = node.metrics_addr().expect("metrics served");
    let mut counted = 0.0;
    for _ in 0..30 {
        assert!(client.read(&inode, 0, data.len() as u32).await.unwrap() == data, "read returned wrong bytes");
        counted = sample(&scrape(metrics).await.unwrap(), &series).unwrap_or(0.0);
        if counted > 0.0 {
            break;
        }
    }
    assert!(counted >= 1.0, "the damaged replica never counted a checksum error");

    // fsck reports it (exit 1), names the chunk and the target.
    let chunk = ChunkId::new(InodeId(inode.id), 0);
    let out = admin(&data_dir, &["fsck", "/victim.bin"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&chunk.to_string()) && stdout.contains(&format!("target {target}")), "{stdout}");
    // --repair rewrites it from a good replica; the re-check is clean.
    let out = admin(&data_dir, &["fsck", "--repair", "/victim.bin"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("REPAIRED") && stdout.contains("1 bad, 1 repaired"), "{stdout}");
    assert!(stdout.contains(&format!("target {target}: repaired from target")), "{stdout}");
    let out = admin(&data_dir, &["fsck", "/victim.bin"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && stdout.contains("0 bad"), "{stdout}");
    let rep = sample(&scrape(metrics).await.unwrap(), "t3fs_storage_repairs_total");
    assert_eq!(rep, Some(1.0));
    // --repair with --meta-only is refused.
    assert_eq!(admin(&data_dir, &["fsck", "--repair", "--meta-only", "/"]).await.status.code(), Some(1));
    // The repaired replica serves the right bytes (read it directly through its store).
    let meta = store.query(chunk).unwrap().unwrap();
    let good = client.query_chunk(TargetId(chain.targets[0].target_id), chunk).await.unwrap().unwrap();
    assert_eq!((meta.version, meta.length, meta.crc32c), (good.version, good.length, good.crc32c));
    let (back, _) = store.read(chunk, 0, meta.length).await.unwrap();
    assert!(back[..] == data[..meta.length as usize], "repaired replica differs");
    client.shutdown().await;
    cluster.shutdown().await;
}
