//! `t3fs bench`: a data benchmark through the native client. Writes `--files` files of `--size`
//! bytes each in `--block`-sized writes, `--concurrency` files in flight, then reads them all back
//! the same way, and prints throughput (MiB/s), block operations per second (IOPS) and files per
//! second for each phase (a table, or one JSON document with `--json`).
//!
//! The files go to a fresh directory `DIR/run-<pid>-<ms>` (DIR: `--dir`, default `/t3fs-bench`),
//! removed at the end unless `--keep`. Every block carries a pattern that depends on its file and
//! block index, so `--verify` checks each block read against what was written (a mismatch is an
//! error). A byte progress bar is drawn on stderr per phase, only on a terminal without `--json`.
//!
//! Bad input (zero or unparseable sizes and counts, a block larger than 64 MiB) is refused before
//! anything is created.
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use t3fs_client::{Client, InodeId};
use t3fs_common::proto;

use crate::admin::output::{Table, print_json};
use crate::admin::transfer::progress_bar;
use crate::admin::{Ctx, GlobalOpts};

/// Largest block one client call may move.
const MAX_BLOCK: u64 = 64 << 20;
/// Pattern offsets vary over this many bytes (so blocks differ without regenerating data).
const SHIFT: usize = 4096;

/// `t3fs bench [OPTIONS]`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub global: GlobalOpts,
    /// How many files to write and read.
    #[arg(long, default_value = "16", value_name = "N")]
    pub files: String,
    /// Size of each file: bytes, or with K, M or G (powers of 1024).
    #[arg(long, default_value = "64M", value_name = "SIZE")]
    pub size: String,
    /// Bytes per write/read call (one "operation" for IOPS), at most 64M.
    #[arg(long, default_value = "4M", value_name = "SIZE")]
    pub block: String,
    /// Files in flight at once.
    #[arg(long, default_value = "8", value_name = "N")]
    pub concurrency: String,
    /// Directory (created if missing) that receives the run's own subdirectory.
    #[arg(long, default_value = "/t3fs-bench", value_name = "PATH")]
    pub dir: String,
    /// Check every block read against what was written.
    #[arg(long)]
    pub verify: bool,
    /// Keep the files (default: remove them and the run's directory at the end).
    #[arg(long)]
    pub keep: bool,
}

/// Parses a byte size: plain bytes or a number with K, M or G (KiB, MiB, GiB).
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let bad = || anyhow::anyhow!("bad size {s:?}: expected bytes or a number with K, M or G (e.g. 4096, 4K, 1M, 2G)");
    let t = s.trim();
    let (num, mul) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some(i) => {
            let mul = match &t[i..] {
                "K" | "k" | "KiB" => 1 << 10,
                "M" | "m" | "MiB" => 1 << 20,
                "G" | "g" | "GiB" => 1 << 30,
                _ => return Err(bad()),
            };
            (&t[..i], mul)
        }
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mul).ok_or_else(bad)
}

fn parse_count(s: &str, what: &str) -> anyhow::Result<usize> {
    match s.trim().parse::<usize>() {
        Ok(0) | Err(_) => bail!("bad {what} {s:?}: expected a whole number > 0"),
        Ok(n) => Ok(n),
    }
}

/// A checked benchmark plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub files: usize,
    pub size: u64,
    pub block: u64,
    pub concurrency: usize,
}

impl Plan {
    pub fn from_args(a: &BenchArgs) -> anyhow::Result<Plan> {
        let files = parse_count(&a.files, "--files")?;
        let concurrency = parse_count(&a.concurrency, "--concurrency")?;
        let size = parse_bytes(&a.size)?;
        let block = parse_bytes(&a.block)?;
        if size == 0 {
            bail!("bad --size {:?}: files must not be empty", a.size);
        }
        if block == 0 || block > MAX_BLOCK {
            bail!("bad --block {:?}: between 1 byte and 64M", a.block);
        }
        if !a.dir.starts_with('/') {
            bail!("{}: not an absolute t3fs path", a.dir);
        }
        Ok(Plan { files, size, block: block.min(size), concurrency: concurrency.min(files) })
    }

    pub fn total_bytes(&self) -> u64 {
        self.size * self.files as u64
    }

    /// Block operations per file.
    pub fn blocks_per_file(&self) -> u64 {
        self.size.div_ceil(self.block)
    }
}

/// The bytes of block `b` of file `f` (`len` bytes), a window of `pattern`.
fn block_data(pattern: &[u8], f: usize, b: u64, len: usize) -> &[u8] {
    let start = (f.wrapping_mul(131) + (b as usize).wrapping_mul(17)) % SHIFT;
    &pattern[start..start + len]
}

/// Figures of one phase.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub bytes: u64,
    pub ops: u64,
    pub files: usize,
    pub seconds: f64,
}

impl Phase {
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.seconds.max(1e-9)
    }
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.seconds.max(1e-9)
    }
    fn json(&self) -> Value {
        json!({
            "bytes": self.bytes,
            "ops": self.ops,
            "seconds": self.seconds,
            "mib_per_s": self.mib_per_s(),
            "iops": self.iops(),
            "files_per_s": self.files_per_s(),
        })
    }
}

/// Writes file `f` (created exclusively in `dir`) block by block; returns its inode after close.
async fn write_one(
    c: &Client,
    ctx: &Ctx,
    dir: u64,
    plan: Plan,
    pattern: &[u8],
    f: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<proto::Inode> {
    let name = format!("f{f:06}");
    let inode = c.create(&ctx.user, InodeId(dir), name.as_bytes(), 0o644, true).await.with_context(|| name.clone())?;
    let mut off = 0u64;
    for b in 0..plan.blocks_per_file() {
        let len = plan.block.min(plan.size - off) as usize;
        c.write(&inode, off, block_data(pattern, f, b, len))
            .await
            .with_context(|| format!("{name}: writing at offset {off}"))?;
        off += len as u64;
        bar.inc(len as u64);
    }
    c.close(&ctx.user, InodeId(inode.id), off, true).await.with_context(|| format!("{name}: close"))
}

/// Reads file `f` block by block, checking each block when `verify`.
async fn read_one(
    c: &Client,
    inode: &proto::Inode,
    plan: Plan,
    pattern: &[u8],
    f: usize,
    verify: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut off = 0u64;
    for b in 0..plan.blocks_per_file() {
        let len = plan.block.min(plan.size - off) as usize;
        let data = c.read(inode, off, len as u32).await.with_context(|| format!("f{f:06}: reading at offset {off}"))?;
        if data.len() != len {
            bail!("f{f:06}: read {} bytes at offset {off}, expected {len}", data.len());
        }
        if verify && data != block_data(pattern, f, b, len) {
            bail!("f{f:06}: data at offset {off} differs from what was written");
        }
        off += len as u64;
        bar.inc(len as u64);
    }
    Ok(())
}

/// Creates `path` and any missing parents; returns its inode id.
async fn mkdirs(c: &Client, ctx: &Ctx, path: &str) -> anyhow::Result<u64> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(c.resolve_path(&ctx.user, "/").await.context("/")?.id);
    }
    Ok(c.mkdirs(&ctx.user, InodeId::ROOT, rel, 0o755).await.with_context(|| path.to_string())?.id)
}

/// `t3fs bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let ctx = Ctx::new(&args.global)?;
    let c: Arc<Client> = ctx.client().await?;
    let run_name = format!("run-{}-{}", std::process::id(), t3fs_common::now_ms());
    let base = args.dir.trim_end_matches('/');
    let run_dir = format!("{base}/{run_name}");
    let dir = mkdirs(&c, &ctx, &run_dir).await?;
    let pattern: Arc<Vec<u8>> = Arc::new(
        (0..plan.block as usize + SHIFT).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8).collect(),
    );
    let visible = crate::admin::transfer::show_progress(&ctx);
    if !ctx.json {
        println!(
            "t3fs bench: {} files x {} bytes, {}-byte blocks, {} in flight, in {run_dir}",
            plan.files, plan.size, plan.block, plan.concurrency
        );
    }

    let result = async {
        let bar = progress_bar(plan.total_bytes(), "write", visible);
        let start = Instant::now();
        let mut inodes: Vec<(usize, proto::Inode)> = futures::stream::iter(0..plan.files)
            .map(|f| {
                let (c, ctx, pattern, bar) = (&c, &ctx, &pattern, &bar);
                async move { write_one(c, ctx, dir, plan, pattern, f, bar).await.map(|i| (f, i)) }
            })
            .buffer_unordered(plan.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let write = phase(plan, start);
        bar.finish_and_clear();
        inodes.sort_by_key(|(f, _)| *f);

        let bar = progress_bar(plan.total_bytes(), "read", visible);
        let start = Instant::now();
        futures::stream::iter(inodes.iter())
            .map(|(f, inode)| {
                let (c, pattern, bar) = (&c, &pattern, &bar);
                async move { read_one(c, inode, plan, pattern, *f, args.verify, bar).await }
            })
            .buffer_unordered(plan.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()?;
        let read = phase(plan, start);
        bar.finish_and_clear();
        anyhow::Ok((write, read))
    }
    .await;

    let cleanup = if args.keep { Ok(()) } else { remove_run(&c, &ctx, base, &run_name, plan.files).await };
    let (write, read) = result?;
    cleanup?;
    if ctx.json {
        print_json(&json!({
            "files": plan.files,
            "file_size": plan.size,
            "block_size": plan.block,
            "concurrency": plan.concurrency,
            "dir": run_dir,
            "kept": args.keep,
            "verified": args.verify,
            "write": write.json(),
            "read": read.json(),
        }));
    } else {
        let mut t = Table::new(&["PHASE", "BYTES", "SECONDS", "MiB/s", "IOPS", "FILES/s"]);
        for (name, p) in [("write", write), ("read", read)] {
            t.row(vec![
                name.into(),
                p.bytes.to_string(),
                format!("{:.3}", p.seconds),
                format!("{:.1}", p.mib_per_s()),
                format!("{:.1}", p.iops()),
                format!("{:.1}", p.files_per_s()),
            ]);
        }
        print!("{}", t.render());
        if args.verify {
            println!("verified: every block read matched what was written");
        }
    }
    c.shutdown().await;
    Ok(())
}

fn phase(plan: Plan, start: Instant) -> Phase {
    Phase {
        bytes: plan.total_bytes(),
        ops: plan.blocks_per_file() * plan.files as u64,
        files: plan.files,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Removes the run's files (those that exist) and its directory.
async fn remove_run(c: &Client, ctx: &Ctx, base: &str, run_name: &str, files: usize) -> anyhow::Result<()> {
    let run_dir = format!("{base}/{run_name}");
    let dir = c.resolve_path(&ctx.user, &run_dir).await.with_context(|| run_dir.clone())?;
    for f in 0..files {
        let name = format!("f{f:06}");
        match c.remove(&ctx.user, InodeId(dir.id), name.as_bytes(), false).await {
            Ok(_) => {}
            Err(e) if e.code == t3fs_common::StatusCode::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("{run_dir}/{name}: removing")),
        }
    }
    let parent = if base.is_empty() { "/" } else { base };
    let p = c.resolve_path(&ctx.user, parent).await.with_context(|| parent.to_string())?;
    c.remove(&ctx.user, InodeId(p.id), run_name.as_bytes(), true)
        .await
        .with_context(|| format!("{run_dir}: removing"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(files: &str, size: &str, block: &str, conc: &str) -> BenchArgs {
        BenchArgs {
            global: GlobalOpts::default(),
            files: files.into(),
            size: size.into(),
            block: block.into(),
            concurrency: conc.into(),
            dir: "/b".into(),
            verify: false,
            keep: false,
        }
    }

    #[test]
    fn sizes_and_plans() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("4K").unwrap(), 4096);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert!(parse_bytes("4X").is_err() && parse_bytes("").is_err() && parse_bytes("-1").is_err());
        let p = Plan::from_args(&args("10", "1M", "256K", "4")).unwrap();
        assert_eq!((p.blocks_per_file(), p.total_bytes()), (4, 10 << 20));
        // A block larger than the file shrinks to it; more workers than files shrink to the files.
        let p = Plan::from_args(&args("2", "1000", "4K", "8")).unwrap();
        assert_eq!((p.block, p.concurrency, p.blocks_per_file()), (1000, 2, 1));
        // Odd tail block.
        let p = Plan::from_args(&args("1", "10K", "4K", "1")).unwrap();
        assert_eq!(p.blocks_per_file(), 3);
        for bad in [args("0", "1M", "4K", "1"), args("1", "0", "4K", "1"), args("1", "1M", "0", "1")] {
            assert!(Plan::from_args(&bad).is_err());
        }
        assert!(Plan::from_args(&args("1", "1M", "65M", "1")).is_err());
        assert!(Plan::from_args(&args("1", "1M", "4K", "0")).is_err());
        assert!(Plan::from_args(&args("x", "1M", "4K", "1")).is_err());
        let mut a = args("1", "1M", "4K", "1");
        a.dir = "rel".into();
        assert!(Plan::from_args(&a).is_err());
    }

    #[test]
    fn blocks_differ_by_file_and_index() {
        let pattern: Vec<u8> =
            (0..8192 + SHIFT).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let a = block_data(&pattern, 0, 0, 8192);
        assert_ne!(a, block_data(&pattern, 1, 0, 8192));
        assert_ne!(a, block_data(&pattern, 0, 1, 8192));
        assert_eq!(a, block_data(&pattern, 0, 0, 8192));
        let p = Phase { bytes: 4 << 20, ops: 4, files: 2, seconds: 2.0 };
        assert_eq!((p.mib_per_s(), p.iops(), p.files_per_s()), (2.0, 2.0, 1.0));
    }
}
