//! fsx-style random-operation model test through a real FUSE mount: random writes, reads,
//! truncates, fallocates (default mode, punch hole, zero range), SEEK_DATA/SEEK_HOLE (never
//! skipping data), fsyncs and close+reopen on a few files in the mount, each mirrored on a file in
//! a local temp directory; after every step the touched file's size and every byte are compared
//! (through the open handle; after a reopen also through a fresh open by path, which drops the
//! kernel's page cache and reads what the daemon serves), all files every 64 steps.
//! The two-mount variant writes on mount A and, each time the writer closes, opens the file on
//! mount B of the same cluster and compares it whole (close-to-open consistency).
//!
//! Seeded: `T3FS_FSX_SEED` replays a run (the seed is printed at start); `T3FS_FSX_OPS` sets the
//! op count (default 20,000 per variant, the figure CI runs). A mismatch panics with the seed, the
//! step and the last ops, and writes the whole op log next to the test data (path in the message).
//!
//! Cost: every op is a round trip to meta or storage (the per-step check flushes the handle's
//! buffer). Debug build, idle 2-core machine, dependencies at opt-level 2: about 8-9 ms per op,
//! so each 20,000-op variant takes about 3 minutes, a third of it in the checks.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

mod support;
use support::Env;
use support::sys::fallocate;

/// Ops per run (each variant, in CI too); `T3FS_FSX_OPS` overrides (e.g. 500 for a quick run).
const OPS: usize = 20_000;
/// Files operated on at once.
const FILES: usize = 3;

/// One mirrored file: the handle on the mount, the local twin, and their paths.
struct Pair {
    mnt_path: PathBuf,
    local_path: PathBuf,
    mnt: Option<File>,
    local: File,
}

struct Fsx {
    rng: StdRng,
    seed: u64,
    files: Vec<Pair>,
    /// Where the reader of the two-mount variant opens the same files (None: one mount).
    reader: Option<PathBuf>,
    /// The largest file size ops aim for (writes may end a little past it).
    max_len: u64,
    /// Offsets cluster around this (a chunk boundary) half of the time.
    boundary: u64,
    log: Vec<String>,
    log_path: PathBuf,
    step: usize,
    /// Time spent in the checks (reading everything back), to print with the run's figures.
    check_time: std::time::Duration,
}

fn open_rw(p: &Path, truncate: bool) -> File {
    OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(p).unwrap()
}

impl Fsx {
    fn new(seed: u64, mnt: &Path, local: &Path, reader: Option<PathBuf>, chunk: u64, log_path: PathBuf) -> Fsx {
        let files = (0..FILES)
            .map(|i| {
                let (mnt_path, local_path) = (mnt.join(format!("fsx{i}")), local.join(format!("fsx{i}")));
                let (m, l) = (open_rw(&mnt_path, true), open_rw(&local_path, true));
                Pair { mnt_path, local_path, mnt: Some(m), local: l }
            })
            .collect();
        Fsx {
            rng: StdRng::seed_from_u64(seed),
            seed,
            files,
            reader,
            max_len: chunk + chunk / 4,
            boundary: chunk,
            log: Vec::new(),
            log_path,
            step: 0,
            check_time: std::time::Duration::ZERO,
        }
    }

    /// A random offset: near the chunk boundary half the time, anywhere below `max_len` otherwise.
    fn offset(&mut self) -> u64 {
        if self.rng.random_bool(0.5) {
            let span = 8192;
            self.boundary - span + self.rng.random_range(0..2 * span)
        } else {
            self.rng.random_range(0..self.max_len)
        }
    }

    fn len(&mut self) -> u64 {
        match self.rng.random_range(0..10) {
            0..=5 => self.rng.random_range(1..512),
            6..=8 => self.rng.random_range(512..16384),
            _ => self.rng.random_range(16384..200_000),
        }
    }

    /// `len` random bytes (filled in one call: per-byte generation dominated debug-build runs).
    fn bytes(&mut self, len: u64) -> Vec<u8> {
        let mut data = vec![0u8; len as usize];
        self.rng.fill_bytes(&mut data);
        data
    }

    fn fail(&self, what: &str) -> ! {
        let mut f = File::create(&self.log_path).unwrap();
        for l in &self.log {
            writeln!(f, "{l}").unwrap();
        }
        let tail: Vec<&String> = self.log.iter().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "fsx mismatch at step {} (seed {}, replay with T3FS_FSX_SEED={}): {what}\nlast ops:\n{}\nfull op log: {}",
            self.step,
            self.seed,
            self.seed,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
            self.log_path.display()
        );
    }

    /// Compares file `i` through its open handle (size and every byte).
    fn check_handle(&self, i: usize) {
        let p = &self.files[i];
        let Some(m) = &p.mnt else { return };
        let want = std::fs::read(&p.local_path).unwrap();
        let size = m.metadata().unwrap().len();
        if size != want.len() as u64 {
            self.fail(&format!("file {i}: size through the handle {size}, model {}", want.len()));
        }
        let mut got = vec![0u8; want.len()];
        let n = read_full(m, &mut got, 0);
        if n != want.len() || got != want {
            self.fail(&format!(
                "file {i}: contents through the handle differ at byte {}",
                first_diff(&got[..n], &want)
            ));
        }
    }

    /// Compares file `i` through a fresh open by path on `root` (no cached pages).
    fn check_fresh(&self, i: usize, root: &Path, label: &str) {
        let want = std::fs::read(&self.files[i].local_path).unwrap();
        let name = self.files[i].mnt_path.file_name().unwrap();
        let got = std::fs::read(root.join(name)).unwrap();
        if got != want {
            self.fail(&format!(
                "file {i}: {label} read {} bytes, model {}; first difference at {}",
                got.len(),
                want.len(),
                first_diff(&got, &want)
            ));
        }
    }

    fn step(&mut self) {
        self.step += 1;
        let i = self.rng.random_range(0..FILES);
        if self.files[i].mnt.is_none() {
            // Closed (the two-mount variant closes between bursts): reopen.
            self.reopen(i, false);
            return;
        }
        match self.rng.random_range(0..100) {
            0..=34 => {
                let (off, len) = (self.offset(), self.len());
                let data = self.bytes(len);
                self.log.push(format!("{} write f{i} off={off} len={len}", self.step));
                let p = &self.files[i];
                p.mnt.as_ref().unwrap().write_all_at(&data, off).unwrap();
                p.local.write_all_at(&data, off).unwrap();
            }
            35..=44 => {
                // Append at the current end.
                let end = self.files[i].local.metadata().unwrap().len();
                let len = self.len();
                let data = self.bytes(len);
                self.log.push(format!("{} write-at-end f{i} off={end} len={len}", self.step));
                let p = &self.files[i];
                p.mnt.as_ref().unwrap().write_all_at(&data, end).unwrap();
                p.local.write_all_at(&data, end).unwrap();
            }
            57..=59 => {
                // SEEK_DATA never skips data: the model reads zeros from the offset up to the answer
                // (up to the end when it says ENXIO); SEEK_HOLE answers within [offset, size].
                let off = self.offset();
                self.log.push(format!("{} seek f{i} off={off}", self.step));
                let p = &self.files[i];
                let model = std::fs::read(&p.local_path).unwrap();
                let fd = std::os::fd::AsRawFd::as_raw_fd(p.mnt.as_ref().unwrap());
                let size = model.len() as u64;
                // SAFETY: lseek on a descriptor the Pair keeps open.
                let (data, hole) = unsafe {
                    (libc::lseek(fd, off as i64, libc::SEEK_DATA), libc::lseek(fd, off as i64, libc::SEEK_HOLE))
                };
                if off >= size {
                    if data >= 0 || hole >= 0 {
                        self.fail(&format!("seek f{i} off={off} past the end {size}: data {data}, hole {hole}"));
                    }
                    return;
                }
                let skipped_to = if data < 0 { size } else { data as u64 };
                if skipped_to < off
                    || skipped_to > size
                    || model[off as usize..skipped_to as usize].iter().any(|&b| b != 0)
                {
                    self.fail(&format!("seek f{i} off={off}: SEEK_DATA {data} skips data (size {size})"));
                }
                if hole < off as i64 || hole as u64 > size {
                    self.fail(&format!("seek f{i} off={off}: SEEK_HOLE {hole} outside [{off}, {size}]"));
                }
                return; // nothing changed
            }
            45..=56 => {
                let (off, len) = (self.offset(), self.len());
                self.log.push(format!("{} read f{i} off={off} len={len}", self.step));
                let p = &self.files[i];
                let (mut a, mut b) = (vec![0u8; len as usize], vec![0u8; len as usize]);
                let na = read_full(p.mnt.as_ref().unwrap(), &mut a, off);
                let nb = read_full(&p.local, &mut b, off);
                if na != nb || a[..na] != b[..nb] {
                    self.fail(&format!("read f{i} off={off} len={len}: {na} bytes vs model {nb}"));
                }
                return; // nothing changed
            }
            60..=71 => {
                let size = if self.rng.random_bool(0.2) { 0 } else { self.offset() };
                self.log.push(format!("{} truncate f{i} size={size}", self.step));
                let p = &self.files[i];
                p.mnt.as_ref().unwrap().set_len(size).unwrap();
                p.local.set_len(size).unwrap();
            }
            72..=77 => {
                let (off, len) = (self.offset(), self.len());
                self.log.push(format!("{} fallocate f{i} off={off} len={len}", self.step));
                let p = &self.files[i];
                if let Err(e) = fallocate(p.mnt.as_ref().unwrap(), 0, off, len) {
                    self.fail(&format!("fallocate on the mount: {e}"));
                }
                fallocate(&p.local, 0, off, len).unwrap();
            }
            78..=81 => {
                // Punch hole, or zero range with or without KEEP_SIZE; often over a whole chunk.
                let off = if self.rng.random_bool(0.3) { 0 } else { self.offset() };
                let len = match self.rng.random_bool(0.5) {
                    true => self.len(),
                    false => self.boundary + self.rng.random_range(0..self.boundary / 2),
                };
                let (name, mode) = match self.rng.random_range(0..3) {
                    0 => ("punch-hole", libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE),
                    1 => ("zero-range-keep", libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE),
                    _ => ("zero-range", libc::FALLOC_FL_ZERO_RANGE),
                };
                self.log.push(format!("{} {name} f{i} off={off} len={len}", self.step));
                let p = &self.files[i];
                if let Err(e) = fallocate(p.mnt.as_ref().unwrap(), mode, off, len) {
                    self.fail(&format!("{name} on the mount: {e}"));
                }
                // The model, by hand (the twin's file system need not support these modes).
                let size = p.local.metadata().unwrap().len();
                let to = (off + len).min(size);
                if off < to {
                    p.local.write_all_at(&vec![0u8; (to - off) as usize], off).unwrap();
                }
                if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && off + len > size {
                    p.local.set_len(off + len).unwrap();
                }
            }
            82..=85 => {
                self.log.push(format!("{} fsync f{i}", self.step));
                self.files[i].mnt.as_ref().unwrap().sync_all().unwrap();
            }
            _ => {
                let trunc = self.rng.random_bool(0.1);
                self.reopen(i, trunc);
                return;
            }
        }
        let t = std::time::Instant::now();
        self.check_handle(i);
        if self.step.is_multiple_of(64) {
            for j in 0..FILES {
                self.check_handle(j);
            }
        }
        self.check_time += t.elapsed();
    }

    /// Closes file `i` (if open) and checks it through fresh opens: on the writer's mount, and on
    /// the reader's when there is one; then reopens it (with O_TRUNC if `trunc`).
    fn reopen(&mut self, i: usize, trunc: bool) {
        self.log.push(format!("{} close+reopen f{i}{}", self.step, if trunc { " O_TRUNC" } else { "" }));
        let writer_root = self.files[i].mnt_path.parent().unwrap().to_path_buf();
        drop(self.files[i].mnt.take());
        self.check_fresh(i, &writer_root, "a fresh open on the writer's mount");
        if let Some(r) = self.reader.clone() {
            self.check_fresh(i, &r, "a fresh open on the reader's mount after the writer closed");
        }
        let p = &mut self.files[i];
        p.mnt = Some(open_rw(&p.mnt_path, trunc));
        if trunc {
            p.local.set_len(0).unwrap();
        }
        self.check_handle(i);
    }

    /// Closes every file and checks each on every mount.
    fn finish(&mut self) {
        for i in 0..FILES {
            self.reopen(i, false);
            drop(self.files[i].mnt.take());
        }
    }
}

/// pread until `buf` is full or EOF; returns the bytes read.
fn read_full(f: &File, buf: &mut [u8], off: u64) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("pread: {e}"),
        }
    }
    n
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

fn seed() -> u64 {
    match std::env::var("T3FS_FSX_SEED") {
        Ok(s) => s.parse().expect("T3FS_FSX_SEED is a number"),
        Err(_) => rand::random(),
    }
}

fn ops(default: usize) -> usize {
    std::env::var("T3FS_FSX_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn run(ops: usize, two_mounts: bool) {
    let Some(env) = Env::start().await else { return };
    let chunk = env.chunk_size().await as u64;
    let reader = if two_mounts { Some(env.mount_another("mnt-b").await) } else { None };
    let local = env.tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let seed = seed();
    eprintln!("fsx: seed {seed} (T3FS_FSX_SEED={seed} replays), {ops} ops, two mounts: {two_mounts}");
    let log_path = std::env::temp_dir().join(format!("t3fs-fsx-{seed}.log"));
    let reader_mnt = reader.as_ref().map(|r| r.mnt.clone());
    let mnt = env.mnt.clone();
    let start = std::time::Instant::now();
    let check = support::blocking(move || {
        let mut fsx = Fsx::new(seed, &mnt, &local, reader_mnt, chunk, log_path);
        for _ in 0..ops {
            fsx.step();
        }
        fsx.finish();
        fsx.check_time
    })
    .await;
    eprintln!("fsx: {ops} ops in {:?} ({check:?} of it in the per-step checks)", start.elapsed());
    if let Some(r) = reader {
        r.stop().await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsx_one_mount() {
    run(ops(OPS), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsx_writer_and_reader_on_two_mounts() {
    run(ops(OPS), true).await;
}
