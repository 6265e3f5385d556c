//! Batch read figures of an in-process local cluster (3 storage servers, 3-replica chains, 1 MiB
//! chunks) through `t3fs_client::batch`, beside the local disk's figure measured the same way with
//! `pread(2)` on a local file of the same size (fio is not installed on the development VM).
//!
//! `cargo run --release -p t3fs --example batch_read -- [SIZE_MIB] [SECS] [DIR]`
//!
//! - 4 KiB random-read IOPS at queue depth 1, 32 and 128 (each for SECS seconds, default 3): t3fs
//!   keeps `depth` batch reads in flight into a pool of `depth` 4 KiB buffers; the disk baseline runs
//!   `depth` threads each doing one 4 KiB `pread` at a time.
//! - 1 MiB sequential GB/s: the whole file once, in 1 MiB aligned reads, depth 32 (t3fs) and one
//!   thread of 1 MiB `pread`s (disk; warm page cache, then cold after `POSIX_FADV_DONTNEED`).
//!
//! Page cache: the file and the cluster's chunk files are written just before the runs, so both
//! sides read from a warm page cache unless stated. Every read's bytes are checked.
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{BatchConfig, BufferPool, Client, ReadReq};
use t3fs_common::InodeId;
use t3fs_common::layout::SplitMix64;
use t3fs_common::proto;

const SMALL: usize = 4096;
const BIG: usize = 1 << 20;

async fn write_file(client: &Client, data: &Arc<Vec<u8>>) -> proto::Inode {
    let user = t3fs_client::UserInfo::default();
    let inode = client.create(&user, InodeId::ROOT, b"bench.bin", 0o644, true).await.expect("create");
    for (i, c) in data.chunks(4 << 20).enumerate() {
        client.write(&inode, (i * (4 << 20)) as u64, c).await.expect("write");
    }
    client.close(&user, InodeId(inode.id), data.len() as u64, true).await.expect("close")
}

/// 4 KiB random reads at `depth` for `secs`: reads per second.
async fn t3fs_iops(client: &Arc<Client>, inode: &Arc<proto::Inode>, data: &[u8], depth: usize, secs: f64) -> f64 {
    let pool = BufferPool::new(SMALL, depth);
    let mut reader = client.batch_reader(BatchConfig { max_in_flight_requests: depth, ..BatchConfig::default() });
    let mut rng = SplitMix64::new(depth as u64);
    let blocks = (data.len() / SMALL) as u64;
    let mut offsets = std::collections::HashMap::new();
    let (start, end) = (Instant::now(), Instant::now() + Duration::from_secs_f64(secs));
    let (mut n, mut id) = (0u64, 0u64);
    loop {
        while Instant::now() < end {
            let Some(buf) = pool.try_acquire() else { break };
            let offset = (rng.next_u64() % blocks) * SMALL as u64;
            offsets.insert(id, offset as usize);
            reader
                .submit(ReadReq { inode: inode.clone(), offset, len: SMALL as u32, buf: buf.into(), user_data: id })
                .await;
            id += 1;
        }
        let Some(c) = reader.next().await else { break };
        let off = offsets.remove(&c.user_data).expect("known read");
        assert_eq!(c.result.expect("read"), SMALL);
        assert!(c.buf[..SMALL] == data[off..off + SMALL], "t3fs returned wrong bytes");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The whole file in 1 MiB reads at depth 32: GB/s.
async fn t3fs_seq(client: &Arc<Client>, inode: &Arc<proto::Inode>, data: &[u8]) -> f64 {
    let depth = 32;
    let pool = BufferPool::new(BIG, depth);
    let mut reader = client.batch_reader(BatchConfig { max_in_flight_requests: depth, ..BatchConfig::default() });
    let chunks = data.len().div_ceil(BIG);
    let t = Instant::now();
    let mut next = 0;
    loop {
        while next < chunks {
            let Some(buf) = pool.try_acquire() else { break };
            let req = ReadReq {
                inode: inode.clone(),
                offset: (next * BIG) as u64,
                len: BIG as u32,
                buf: buf.into(),
                user_data: next as u64,
            };
            reader.submit(req).await;
            next += 1;
        }
        let Some(c) = reader.next().await else { break };
        let off = c.user_data as usize * BIG;
        let n = c.result.expect("read");
        assert!(c.buf[..n] == data[off..(off + BIG).min(data.len())], "t3fs returned wrong bytes");
    }
    data.len() as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// `depth` threads of 4 KiB random preads for `secs`: reads per second.
fn disk_iops(file: &std::fs::File, data: &[u8], depth: usize, secs: f64) -> f64 {
    let total = AtomicU64::new(0);
    let blocks = (data.len() / SMALL) as u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        for t in 0..depth {
            let total = &total;
            s.spawn(move || {
                let mut rng = SplitMix64::new(1000 + t as u64);
                let mut buf = vec![0u8; SMALL];
                let mut n = 0;
                while Instant::now() < end {
                    let off = ((rng.next_u64() % blocks) as usize) * SMALL;
                    file.read_exact_at(&mut buf, off as u64).expect("pread");
                    assert!(buf == data[off..off + SMALL]);
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The whole file in 1 MiB preads, one thread: GB/s.
fn disk_seq(file: &std::fs::File, data: &[u8]) -> f64 {
    let mut buf = vec![0u8; BIG];
    let t = Instant::now();
    for off in (0..data.len()).step_by(BIG) {
        let n = BIG.min(data.len() - off);
        file.read_exact_at(&mut buf[..n], off as u64).expect("pread");
        assert!(buf[..n] == data[off..off + n]);
    }
    data.len() as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn drop_page_cache(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; fadvise only hints the kernel and touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let tmp = tempfile::tempdir_in(args.get(3).map(String::as_str).unwrap_or("/var/tmp")).expect("tempdir");
    let mut rng = SplitMix64::new(7);
    let data: Arc<Vec<u8>> = Arc::new((0..(mib << 20) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect());

    // Local disk baseline: the same bytes in one file, fsynced.
    let path = tmp.path().join("baseline.bin");
    std::fs::write(&path, &*data).expect("write baseline");
    let file = std::fs::File::open(&path).expect("open baseline");
    file.sync_all().expect("fsync baseline");
    let disk: Vec<f64> = [1, 32, 128].iter().map(|&d| disk_iops(&file, &data, d, secs)).collect();
    let disk_warm = disk_seq(&file, &data);
    drop_page_cache(&file);
    let disk_cold = disk_seq(&file, &data);
    drop(file);
    let _ = std::fs::remove_file(&path);

    let cluster = LocalCluster::start(&tmp.path().join("data")).await.expect("start cluster");
    let client = cluster.client().await.expect("client");
    let inode = Arc::new(write_file(&client, &data).await);
    let mut t3 = Vec::new();
    for d in [1, 32, 128] {
        t3.push(t3fs_iops(&client, &inode, &data, d, secs).await);
    }
    let t3_seq = t3fs_seq(&client, &inode, &data).await;
    drop(client);
    cluster.shutdown().await;

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "t3fs batch reads, {mib} MiB file, 1 MiB chunks, 3 replicas on one machine ({cores} cores), {secs} s per IOPS run"
    );
    println!("{:<34} {:>10} {:>10} {:>10} {:>12}", "path", "4K d=1", "4K d=32", "4K d=128", "1M seq GB/s");
    println!(
        "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.3}",
        "local disk pread (warm cache)", disk[0], disk[1], disk[2], disk_warm
    );
    println!("{:<34} {:>10} {:>10} {:>10} {:>12.3}", "local disk pread (cold, DONTNEED)", "-", "-", "-", disk_cold);
    println!("{:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.3}", "t3fs batch_read (warm cache)", t3[0], t3[1], t3[2], t3_seq);
}
