//! `t3fs admin gc-orphans [--dry-run]`: finds chunk records of files that no longer exist and drops
//! them.
//!
//! Meta's GC removes a deleted file's chunks and purges the tombstones (storage `service/purge.rs`).
//! What it can leave behind, and what this sweeps up: tombstones written before the purge existed, a
//! purge GC could not finish (logged there), and live chunks of a deleted file (a writer whose update
//! arrived after GC removed the file's chunks). They cost a record each, and a live one its data.
//!
//! How, chain by chain (memory holds one chain's records and one flag per inode seen): every
//! SERVING replica lists its records, tombstones included (paged `ListChunks`); the inodes they
//! name are looked up in meta (`BatchStat`, each inode once). An inode meta does not
//! have is gone for good: ids are never reused, and a file waiting for GC still has its inode, so it
//! is left alone. For each record of a gone inode, a REMOVE goes to the chain's head if some replica
//! still has the chunk live or a pending update of it (`chunk_list::needs_removal`; a PURGE alone
//! would leave such a record), then a PURGE. Both follow the chain's normal rules, so nothing a live
//! file owns can be touched, and a replica that is not SERVING now drops its records when it is
//! resynced. A listing or lookup failure stops the command (chains already swept stay swept); a
//! failed update is counted and makes the command exit 1 after its report.
use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use t3fs_client::{Client, UserInfo};
use t3fs_common::proto::{ChainInfo, PublicTargetState, UpdateType};
use t3fs_common::{ChainId, ChunkId, InodeId, TargetId};

use super::Ctx;
use super::output::{Table, print_json};

/// Chunk updates in flight.
const PARALLEL: usize = 16;

/// What the replicas of one chain hold for one chunk.
#[derive(Default, Clone, Copy)]
struct Seen {
    live: usize,
    tombstones: usize,
    bytes: u64,
}

/// One gone inode's records.
#[derive(Default)]
struct Orphan {
    live_chunks: u64,
    bytes: u64,
    tombstones: u64,
}

#[derive(Default)]
struct Done {
    removed: u64,
    purged: u64,
    kept: u64,
    failed: u64,
}

pub async fn gc_orphans(ctx: &Ctx, dry_run: bool) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let routing = c.routing();
    let mut scan = Scan::default();
    let mut done = Done::default();
    // One chain at a time, so memory holds one chain's records (and a bit per inode seen).
    for chain in &routing.info.chains {
        let todo = scan.chain(&c, chain).await?;
        if !dry_run {
            clean(&c, todo, &mut done).await;
        }
    }
    report(ctx, dry_run, &scan, &done);
    c.shutdown().await;
    if done.failed > 0 {
        bail!("{} chunk updates failed; run gc-orphans again", done.failed);
    }
    Ok(())
}

/// What the listings found so far.
#[derive(Default)]
struct Scan {
    targets: usize,
    skipped: usize,
    chunks: usize,
    /// Every inode looked up: whether meta has it.
    exists: HashMap<InodeId, bool>,
    orphans: BTreeMap<u64, Orphan>,
}

impl Scan {
    /// Lists the chain's SERVING replicas and returns its orphan chunks: (chain, chunk, live somewhere).
    async fn chain(&mut self, c: &Client, chain: &ChainInfo) -> anyhow::Result<Vec<(ChainId, ChunkId, bool)>> {
        let mut records = BTreeMap::<ChunkId, Seen>::new();
        for t in &chain.targets {
            if t.public_state != PublicTargetState::Serving as i32 {
                self.skipped += 1;
                continue;
            }
            self.targets += 1;
            let listed = c
                .list_target_chunks(TargetId(t.target_id), true)
                .await
                .with_context(|| format!("listing target {}", t.target_id))?;
            for m in listed {
                let seen = records.entry(ChunkId::from_bytes(&m.chunk_id)?).or_default();
                // A pending update (even on a tombstone) may still become data: it is removed too.
                if t3fs_common::chunk_list::needs_removal(&m) {
                    seen.live += 1;
                    seen.bytes = seen.bytes.max(u64::from(m.length));
                } else {
                    seen.tombstones += 1;
                }
            }
        }
        self.chunks += records.len();
        let new: Vec<InodeId> = records
            .keys()
            .map(|chunk| chunk.inode)
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|i| !self.exists.contains_key(i))
            .collect();
        let found = c.batch_stat(&UserInfo::root(), &new).await.context("looking the files up in meta")?;
        self.exists.extend(new.into_iter().zip(found).map(|(i, f)| (i, f.is_some())));
        let mut todo = Vec::new();
        for (chunk, seen) in records {
            if self.exists.get(&chunk.inode) != Some(&false) {
                continue;
            }
            let o = self.orphans.entry(chunk.inode.0).or_default();
            if seen.live > 0 {
                o.live_chunks += 1;
                o.bytes += seen.bytes;
            } else {
                o.tombstones += 1;
            }
            todo.push((ChainId(chain.chain_id), chunk, seen.live > 0));
        }
        Ok(todo)
    }
}

/// REMOVE (where live) then PURGE of every orphan record, [`PARALLEL`] at a time.
async fn clean(c: &Client, todo: Vec<(ChainId, ChunkId, bool)>, done: &mut Done) {
    let mut runs = futures::stream::iter(todo)
        .map(|(chain, chunk, live)| async move {
            let removed = if live {
                c.chain_update(chain, chunk, UpdateType::Remove).await?;
                1
            } else {
                0
            };
            let left = c.chain_update(chain, chunk, UpdateType::Purge).await?;
            Ok::<_, t3fs_common::Error>((removed, left.version == 0))
        })
        .buffer_unordered(PARALLEL);
    while let Some(r) = runs.next().await {
        match r {
            Ok((removed, purged)) => {
                done.removed += removed;
                if purged { done.purged += 1 } else { done.kept += 1 }
            }
            Err(e) => {
                eprintln!("t3fs: {e}");
                done.failed += 1;
            }
        }
    }
}

fn report(ctx: &Ctx, dry_run: bool, scan: &Scan, done: &Done) {
    let (orphans, records, files) = (&scan.orphans, scan.chunks, scan.exists.len());
    let (targets, skipped) = (scan.targets, scan.skipped);
    let live: u64 = orphans.values().map(|o| o.live_chunks).sum();
    let bytes: u64 = orphans.values().map(|o| o.bytes).sum();
    let tombstones: u64 = orphans.values().map(|o| o.tombstones).sum();
    if ctx.json {
        let list: Vec<Value> = orphans
            .iter()
            .map(|(i, o)| json!({"inode": i, "live_chunks": o.live_chunks, "bytes": o.bytes, "tombstones": o.tombstones}))
            .collect();
        print_json(&json!({
            "dry_run": dry_run,
            "targets_listed": targets,
            "targets_skipped": skipped,
            "records": records,
            "files": files,
            "orphan_files": list,
            "orphan_live_chunks": live,
            "orphan_bytes": bytes,
            "orphan_tombstones": tombstones,
            "removed": done.removed,
            "purged": done.purged,
            "kept": done.kept,
            "failed": done.failed,
        }));
        return;
    }
    println!("listed {targets} SERVING targets ({skipped} others skipped): {records} chunks of {files} files");
    if !orphans.is_empty() {
        let mut t = Table::new(&["INODE", "LIVE CHUNKS", "BYTES", "TOMBSTONES"]);
        for (i, o) in orphans {
            t.row(vec![i.to_string(), o.live_chunks.to_string(), o.bytes.to_string(), o.tombstones.to_string()]);
        }
        print!("{}", t.render());
    }
    println!(
        "orphans: {} file(s) gone, {live} live chunk(s) ({bytes} bytes), {tombstones} chunk(s) with tombstones only",
        orphans.len()
    );
    if dry_run {
        println!("dry run: nothing changed");
    } else {
        println!("removed {}, purged {}, kept {}, failed {}", done.removed, done.purged, done.kept, done.failed);
    }
}
