//! Sequential throughput of an in-process local cluster (3 storage servers, 3-replica chains) on
//! this machine, through the native client and through a FUSE mount, beside the local disk's own
//! figure for the same bytes (write + fsync, read back).
//!
//! `cargo run --release -p t3fs --example throughput -- [SIZE_MIB] [DIR]`
//!
//! Prints one table. Every replica of every write lands on the same local disk, so writes move 3x
//! the bytes to disk; reads come from one replica. Figures are for comparison between versions on
//! the same machine, not absolute claims.
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_common::InodeId;

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn disk_baseline(dir: &Path, data: &[u8]) -> (f64, f64) {
    let p = dir.join("baseline.bin");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).expect("create baseline file");
    for c in data.chunks(4 << 20) {
        f.write_all(c).expect("write baseline");
    }
    f.sync_all().expect("fsync baseline");
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut back = Vec::with_capacity(data.len());
    std::fs::File::open(&p).expect("open baseline").read_to_end(&mut back).expect("read baseline");
    let r = t.elapsed().as_secs_f64();
    assert!(back == data);
    let _ = std::fs::remove_file(p);
    (gbps(data.len(), w), gbps(data.len(), r))
}

async fn native(cluster: &LocalCluster, data: &Arc<Vec<u8>>) -> (f64, f64) {
    let client = cluster.client().await.expect("client");
    let user = t3fs_client::UserInfo::default();
    let inode = client.create(&user, InodeId::ROOT, b"native.bin", 0o644, true).await.expect("create");
    let piece = 4 << 20;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in data.chunks(piece).enumerate() {
        let (client, inode, c) = (client.clone(), inode.clone(), c.to_vec());
        tasks.push(tokio::spawn(async move { client.write(&inode, (i * piece) as u64, &c).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("write");
    }
    let inode = client.close(&user, InodeId(inode.id), data.len() as u64, true).await.expect("close");
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..data.len().div_ceil(piece) {
        let (client, inode) = (client.clone(), inode.clone());
        tasks.push(tokio::spawn(async move { client.read(&inode, (i * piece) as u64, piece as u32).await }));
    }
    let mut back = Vec::with_capacity(data.len());
    for t in tasks {
        back.extend(t.await.expect("join").expect("read"));
    }
    let r = t.elapsed().as_secs_f64();
    assert!(back == **data, "native read-back differs");
    (gbps(data.len(), w), gbps(data.len(), r))
}

async fn fuse(cluster: &LocalCluster, mnt: &Path, data: &Arc<Vec<u8>>) -> Option<(f64, f64)> {
    if !Path::new("/dev/fuse").exists() {
        return None;
    }
    std::fs::create_dir_all(mnt).ok()?;
    let client = cluster.client().await.ok()?;
    let cfg = cluster.mount_config();
    let m = mnt.to_path_buf();
    let rt = tokio::runtime::Handle::current();
    let session = tokio::task::spawn_blocking(move || t3fs_fuse::mount(client, rt, &m, &cfg)).await.ok()?.ok()?;
    let (p, d) = (mnt.join("fuse.bin"), data.clone());
    let figures = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut f = std::fs::File::create(&p).expect("create via fuse");
        for c in d.chunks(1 << 20) {
            f.write_all(c).expect("write via fuse");
        }
        f.sync_all().expect("fsync via fuse");
        drop(f);
        let w = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut back = Vec::with_capacity(d.len());
        std::fs::File::open(&p).expect("open via fuse").read_to_end(&mut back).expect("read via fuse");
        let r = t.elapsed().as_secs_f64();
        assert!(back == *d, "fuse read-back differs");
        (gbps(d.len(), w), gbps(d.len(), r))
    })
    .await
    .ok();
    let _ = tokio::task::spawn_blocking(move || session.umount_and_join()).await;
    figures
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let tmp = tempfile::tempdir_in(args.get(2).map(String::as_str).unwrap_or("/var/tmp")).expect("tempdir");
    let mut rng = t3fs_common::layout::SplitMix64::new(7);
    let data: Arc<Vec<u8>> = Arc::new((0..(mib << 20) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect());

    let (dw, dr) = disk_baseline(tmp.path(), &data);
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.expect("start cluster");
    let (nw, nr) = native(&cluster, &data).await;
    let f = fuse(&cluster, &tmp.path().join("mnt"), &data).await;
    cluster.shutdown().await;

    println!("t3fs throughput, {mib} MiB sequential, 1 MiB chunks, 3 replicas on one machine ({} cores)", num_cpus());
    println!("{:<28} {:>10} {:>10}", "path", "write GB/s", "read GB/s");
    println!("{:<28} {:>10.3} {:>10.3}", "local disk (write+fsync)", dw, dr);
    println!("{:<28} {:>10.3} {:>10.3}", "native client (4 MiB ops)", nw, nr);
    match f {
        Some((fw, fr)) => println!("{:<28} {:>10.3} {:>10.3}", "FUSE (1 MiB writes)", fw, fr),
        None => println!("{:<28} {:>10} {:>10}", "FUSE", "n/a", "n/a"),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
