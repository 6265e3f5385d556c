//! Chunk engine benchmark: sequential write and read MiB/s and 4 KiB random-read IOPS of one target's
//! chunk store on the local disk, beside `fio` running the equivalent jobs on the same disk in the same
//! run (skipped with a message if `fio` is not installed).
//!
//! `cargo run --release -p t3fs-storage --example engine_bench -- [DIR] [TOTAL_MIB] [CHUNK_KIB] [JOBS]
//! [RAND_SECS] [DIRECT]` (defaults: /var/tmp, 512, 1024, 4, 5, 1). Works in a fresh temp directory under
//! DIR. DIRECT 1: the engine uses O_DIRECT (`direct_io`) and fio runs with `--direct=1`; 0: both buffered.
//!
//! - sequential write: JOBS tasks write TOTAL_MIB of whole chunks (`Update::Replace`), each chunk a
//!   slot write + `fdatasync` + a durable metadata commit; fio: `rw=write`, `bs=CHUNK`, `fdatasync=1`,
//!   JOBS jobs over one file;
//! - sequential overwrite: the same again over every chunk, so each update also frees the chunk's old
//!   slot; then the bytes the group files hold on disk are printed;
//! - the page cache of the data files is dropped (`posix_fadvise(DONTNEED)`; fio: `invalidate=1`);
//! - sequential read: JOBS tasks read every chunk whole (CRC-verified); fio: `rw=read`, `bs=CHUNK`;
//! - random read: 16 tasks read 4 KiB at random 4 KiB-aligned offsets of random chunks for RAND_SECS (each
//!   read verifies, and so reads, the CRC block around it); fio: `rw=randread`, `bs=4k`, 16 jobs;
//! - every other chunk removed, then two trim passes (`Engine::trim`): the bytes the group files hold
//!   on disk before and after.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use t3fs_common::{ChunkId, InodeId, TargetId};
use t3fs_storage::ChunkStore;
use t3fs_storage::chunk_store::Update;

const RAND_TASKS: usize = 16;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

/// A small xorshift generator (no dependency needed for benchmark offsets).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Drops the page cache of every file under `dir`.
fn drop_cache(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("listing the bench directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            drop_cache(&p);
        } else if let Ok(f) = std::fs::File::open(&p) {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on an open descriptor; no memory is passed.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base: String = arg(1, "/var/tmp".to_string());
    let total_mib: u64 = arg(2, 512);
    let chunk_kib: u32 = arg(3, 1024);
    let jobs: u64 = arg(4, 4);
    let rand_secs: u64 = arg(5, 5);
    let direct = arg::<u8>(6, 1) == 1;
    let chunk_len = chunk_kib * 1024;
    let n_chunks = total_mib * 1024 / u64::from(chunk_kib);
    let dir = tempfile::Builder::new().prefix("t3fs-engine-bench").tempdir_in(&base)?;
    let target = dir.path().join("target");
    println!(
        "chunk engine bench in {}: {n_chunks} chunks of {chunk_kib} KiB ({total_mib} MiB), {jobs} jobs",
        dir.path().display()
    );
    let options = t3fs_storage::engine::EngineOptions { direct_io: direct, ..Default::default() };
    let (store, _) = ChunkStore::open_with(TargetId(1), &target, options)?;
    println!("direct_io requested: {direct}, in use: {}", store.engine().direct_io());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let data: Vec<u8> = (0..chunk_len).map(|_| rng.next() as u8).collect();
    let data = Bytes::from(data);

    // Sequential write, then an overwrite: every chunk replaced once more, each update freeing its
    // old slot.
    let bytes = n_chunks * u64::from(chunk_len);
    let write = mib_s(bytes, replace_all(&store, &data, n_chunks, jobs, 1).await?);
    let overwrite = mib_s(bytes, replace_all(&store, &data, n_chunks, jobs, 2).await?);
    println!(
        "after the overwrite: {} MiB of chunk data, {} MiB allocated on disk by the group files",
        bytes >> 20,
        allocated_bytes(&target) >> 20
    );

    // Sequential read, cold.
    drop_cache(&target);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for j in 0..jobs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (j..n_chunks).step_by(jobs as usize) {
                let (d, _) = store.read(chunk(i), 0, chunk_len).await?;
                assert_eq!(d.len(), chunk_len as usize);
            }
            Ok::<_, t3fs_common::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let read = mib_s(n_chunks * u64::from(chunk_len), t0.elapsed().as_secs_f64());

    // Random 4 KiB reads, cold.
    drop_cache(&target);
    let (stop, ops) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for j in 0..RAND_TASKS {
        let (store, stop, ops) = (store.clone(), stop.clone(), ops.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x1234_5678 + j as u64);
            while !stop.load(Ordering::Relaxed) {
                let i = rng.next() % n_chunks;
                let off = (rng.next() % u64::from(chunk_len / 4096)) as u32 * 4096;
                store.read(chunk(i), off, 4096).await?;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, t3fs_common::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(rand_secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let iops = ops.load(Ordering::Relaxed) as f64 / rand_secs as f64;
    let (used, files) = store.engine().space();
    println!("engine: {} MiB in slots, {} MiB of group files", used >> 20, files >> 20);

    // Half the chunks removed; two trim passes (what the storage server runs every 10 s) give their
    // slots' blocks back.
    for i in (0..n_chunks).step_by(2) {
        let g = store.lock(chunk(i)).await;
        store.apply(&g, 3, 1, Update::Remove).await?;
    }
    let before_trim = allocated_bytes(&target);
    let t0 = Instant::now();
    let trimmed = store.engine().trim(usize::MAX) + store.engine().trim(usize::MAX);
    println!(
        "half the chunks removed: {} MiB allocated on disk; trim gave back {} MiB in {:.0} ms: {} MiB allocated",
        before_trim >> 20,
        trimmed >> 20,
        t0.elapsed().as_secs_f64() * 1000.0,
        allocated_bytes(&target) >> 20
    );
    store.close();

    let fio = run_fio(dir.path(), total_mib, chunk_kib, jobs, rand_secs, direct);
    println!();
    println!("| measure | chunk engine | fio (same disk, same run) |");
    println!("|---|---|---|");
    let f = |v: Option<f64>, unit: &str| v.map_or("n/a (fio not run)".to_string(), |v| format!("{v:.0} {unit}"));
    println!("| sequential write ({chunk_kib} KiB, synced) | {write:.0} MiB/s | {} |", f(fio.map(|x| x.0), "MiB/s"));
    println!("| sequential overwrite ({chunk_kib} KiB, synced, frees the old slot) | {overwrite:.0} MiB/s | – |");
    println!("| sequential read ({chunk_kib} KiB, cold) | {read:.0} MiB/s | {} |", f(fio.map(|x| x.1), "MiB/s"));
    println!("| random read 4 KiB, {RAND_TASKS} tasks, cold | {iops:.0} IOPS | {} |", f(fio.map(|x| x.2), "IOPS"));
    Ok(())
}

/// The bench's chunk `i`.
fn chunk(i: u64) -> ChunkId {
    ChunkId::new(InodeId(1 + i / 1_000_000), (i % 1_000_000) as u32)
}

/// `jobs` tasks replace chunks `0..n_chunks` with `data` at `version`; returns the seconds taken.
async fn replace_all(store: &ChunkStore, data: &Bytes, n_chunks: u64, jobs: u64, version: u64) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for j in 0..jobs {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            for i in (j..n_chunks).step_by(jobs as usize) {
                let g = store.lock(chunk(i)).await;
                let u = Update::Replace { data: data.clone(), payload_crc32c: crc32c::crc32c(&data) };
                store.apply(&g, version, 1, u).await?;
            }
            Ok::<_, t3fs_common::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Bytes the files under `dir` have allocated on disk (`st_blocks`).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("listing the bench directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            total += allocated_bytes(&p);
        } else if let Ok(m) = p.metadata() {
            total += m.blocks() * 512;
        }
    }
    total
}

/// Runs the equivalent fio jobs; `None` (with a message) if fio is missing or fails.
fn run_fio(
    dir: &Path,
    total_mib: u64,
    chunk_kib: u32,
    jobs: u64,
    rand_secs: u64,
    direct: bool,
) -> Option<(f64, f64, f64)> {
    let file = dir.join("fio.dat");
    let part = format!("{}M", total_mib / jobs);
    let common = |name: &str| {
        let mut c = Command::new("fio");
        c.args([
            &format!("--name={name}"),
            &format!("--filename={}", file.display()),
            "--ioengine=psync",
            "--group_reporting",
            "--output-format=json",
            &format!("--direct={}", u8::from(direct)),
        ]);
        c
    };
    let seq = |rw: &str, extra: &[&str]| {
        let mut c = common(rw);
        c.args([
            &format!("--rw={rw}"),
            &format!("--bs={chunk_kib}k"),
            &format!("--numjobs={jobs}"),
            &format!("--size={part}"),
            &format!("--offset_increment={part}"),
        ]);
        c.args(extra);
        c
    };
    let mut rand = common("randread");
    rand.args([
        "--rw=randread",
        "--bs=4k",
        &format!("--numjobs={RAND_TASKS}"),
        &format!("--size={total_mib}M"),
        "--time_based",
        &format!("--runtime={rand_secs}"),
        "--invalidate=1",
    ]);
    let mut out = Vec::new();
    for (mut cmd, key, field) in [
        (seq("write", &["--fdatasync=1"]), "write", "bw_bytes"),
        (seq("read", &["--invalidate=1"]), "read", "bw_bytes"),
        (rand, "read", "iops"),
    ] {
        let res = match cmd.output() {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                println!("fio failed: {}", String::from_utf8_lossy(&o.stderr));
                return None;
            }
            Err(e) => {
                println!("fio not run ({e}); install fio for the side-by-side figures");
                return None;
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&res.stdout).ok()?;
        let x = v["jobs"][0][key][field].as_f64()?;
        out.push(if field == "bw_bytes" { x / (1 << 20) as f64 } else { x });
    }
    Some((out[0], out[1], out[2]))
}
