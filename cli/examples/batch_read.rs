//! Batch read figures of an in-process local cluster (3 storage servers, 3-replica chains, 1 MiB
//! chunks) through `t3fs_client::batch`, beside the local disk's figures for a file of the same size
//! in the same run: measured with `pread(2)` threads, and with fio when it is installed (fio's `psync`
//! engine with `numjobs` = depth, the same access pattern; skipped with a note otherwise).
//!
//! `cargo run --release -p t3fs --example batch_read -- [SIZE_MIB] [SECS] [DIR]`
//!
//! - 4 KiB random-read IOPS at queue depth 1, 32 and 128 (each for SECS seconds, default 3): t3fs
//!   keeps `depth` batch reads in flight into a pool of `depth` 4 KiB buffers; the disk baseline runs
//!   `depth` threads each doing one 4 KiB `pread` at a time.
//! - 1 MiB sequential GB/s: the whole file once, in 1 MiB aligned reads, depth 32 (t3fs) and one
//!   thread of 1 MiB `pread`s (disk; warm page cache, then cold after `POSIX_FADV_DONTNEED`).
//!
//! - 1 MiB sequential write GB/s: t3fs writes the file in 4 MiB calls through the native client (3
//!   replicas, every chunk update synced on each replica); fio writes the local file in 1 MiB calls
//!   and fsyncs it at the end.
//!
//! Page cache: the local file is written just before the runs, so the disk rows read from a warm page
//! cache unless stated (fio with `--invalidate=0`). The storage servers use their default
//! `direct_io = true`, so t3fs reads chunk data from the device, not from the page cache. Every read's
//! bytes are checked (not fio's).
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{BatchConfig, Client, ReadReq};
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
    let pool = client.buffer_pool(SMALL, depth).expect("registered pool");
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
    let pool = client.buffer_pool(BIG, depth).expect("registered pool");
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

/// Runs fio with `args` and returns its first job's JSON report (None if fio is missing or fails).
fn fio(args: &[String]) -> Option<serde_json::Value> {
    let out = std::process::Command::new("fio").args(args).arg("--output-format=json").output().ok()?;
    if !out.status.success() {
        eprintln!("fio {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["jobs"][0].clone())
}

/// fio's figures on the local file `path` of `size` bytes: 4 KiB random-read IOPS at each depth,
/// 1 MiB sequential read GB/s (warm cache, like the pread baseline) and 1 MiB sequential write GB/s
/// (fsync at the end), or None without fio.
fn fio_row(path: &std::path::Path, size: usize, secs: f64) -> Option<(Vec<f64>, f64, f64)> {
    let file = format!("--filename={}", path.display());
    // --invalidate=0: keep the page cache warm, like the pread baseline (fio drops it by default).
    let common = |name: &str| {
        vec![format!("--name={name}"), file.clone(), format!("--size={size}"), "--invalidate=0".to_string()]
    };
    let mut iops = Vec::new();
    for d in [1, 32, 128] {
        let mut a = common("randread");
        a.extend(
            ["--rw=randread", "--bs=4k", "--ioengine=psync", "--time_based", "--group_reporting", "--readonly"]
                .map(String::from),
        );
        a.extend([format!("--numjobs={d}"), format!("--runtime={secs}")]);
        iops.push(fio(&a)?["read"]["iops"].as_f64()?);
    }
    let mut a = common("read");
    a.extend(["--rw=read", "--bs=1m", "--ioengine=psync", "--readonly"].map(String::from));
    let read = fio(&a)?["read"]["bw_bytes"].as_f64()? / 1e9;
    let wpath = path.with_extension("fio-write");
    let mut a = vec!["--name=write".to_string(), format!("--filename={}", wpath.display()), format!("--size={size}")];
    a.extend(["--rw=write", "--bs=1m", "--ioengine=psync", "--end_fsync=1"].map(String::from));
    let write = fio(&a).and_then(|j| j["write"]["bw_bytes"].as_f64());
    let _ = std::fs::remove_file(&wpath);
    Some((iops, read, write? / 1e9))
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
    let fio_figures = fio_row(&path, data.len(), secs);
    drop_page_cache(&file);
    let disk_cold = disk_seq(&file, &data);
    drop(file);
    let _ = std::fs::remove_file(&path);

    let cluster = LocalCluster::start(&tmp.path().join("data")).await.expect("start cluster");
    let client = cluster.client().await.expect("client");
    let t = Instant::now();
    let inode = Arc::new(write_file(&client, &data).await);
    let t3_write = data.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
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
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12} {:>13}",
        "path", "4K d=1", "4K d=32", "4K d=128", "1M seq GB/s", "write GB/s"
    );
    println!(
        "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.3} {:>13}",
        "local disk pread (warm cache)", disk[0], disk[1], disk[2], disk_warm, "-"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12.3} {:>13}",
        "local disk pread (cold, DONTNEED)", "-", "-", "-", disk_cold, "-"
    );
    match fio_figures {
        Some((iops, read, write)) => println!(
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.3} {:>13.3}",
            "local disk fio psync (warm cache)", iops[0], iops[1], iops[2], read, write
        ),
        None => println!("{:<34} fio not installed or failed: no fio row", "local disk fio"),
    }
    println!(
        "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.3} {:>13.3}",
        "t3fs batch_read (engine O_DIRECT)", t3[0], t3[1], t3[2], t3_seq, t3_write
    );
}
