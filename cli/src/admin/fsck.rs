//! Data commands: `query-chunk` (one chunk's metadata on one target) and `fsck` (every chunk of a
//! file or tree checked on every replica of its chain).
//!
//! fsck, per chunk index `0..ceil(length / chunk_size)` of each file: query the chunk's metadata on
//! every target of its chain. A chunk no replica has is a hole (files are sparse) and fine. Otherwise
//! the chunk is bad when a replica cannot be asked (target down), lacks it, or disagrees with the
//! others in version, length or CRC32C. Unless `--meta-only`, every replica's data is also read over
//! the bulk plane and checked against the CRC32C its metadata records (storage verifies too, so a
//! damaged or missing data file comes back as an error). Chunks are checked 16 at a time.
//!
//! `--repair` ([`super::repair`]): a replica whose metadata agrees with the others but whose data fails
//! its CRC is rewritten from a replica whose data is good; the chunk is then checked again, and fsck
//! fails only for chunks still bad.
use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use t3fs_client::{Client, InodeId};
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, InodeType, bulk_request};
use t3fs_common::routing::Routing;
use t3fs_common::{ChainTableId, ChunkId, TargetId, layout};

use super::Ctx;
use super::namespace::{resolve, walk};
use super::output::{Table, chunk_meta_json, print_json};

/// Chunks checked concurrently.
const PARALLEL_CHUNKS: usize = 16;

/// `t3fs admin query-chunk --target T --inode I --index N`.
pub async fn query_chunk(ctx: &Ctx, target: u64, inode: u64, index: u32) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let chunk = ChunkId::new(InodeId(inode), index);
    let meta = c.query_chunk(TargetId(target), chunk).await.with_context(|| format!("target {target}"))?;
    if ctx.json {
        let m = meta.as_ref().map(chunk_meta_json);
        print_json(&json!({ "target_id": target, "chunk": chunk.to_string(), "found": meta.is_some(), "meta": m }));
    } else {
        match &meta {
            None => println!("chunk {chunk} not found on target {target}"),
            Some(m) => {
                let mut t = Table::new(&["TARGET", "CHUNK", "VERSION", "LENGTH", "CRC32C", "CHAIN VER", "REMOVED"]);
                t.row(vec![
                    target.to_string(),
                    chunk.to_string(),
                    m.version.to_string(),
                    m.length.to_string(),
                    format!("{:08x}", m.crc32c),
                    m.chain_version.to_string(),
                    m.removed.to_string(),
                ]);
                print!("{}", t.render());
            }
        }
    }
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin dump-chunkmeta --target T [--inode I]`: every live chunk's metadata on one target
/// (optionally only one file's), in chunk id order.
pub async fn dump_chunkmeta(ctx: &Ctx, target: u64, inode: Option<u64>) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let all = c.list_chunks(TargetId(target)).await.with_context(|| format!("target {target}"))?;
    let mut rows = Vec::new();
    for m in &all {
        let chunk = ChunkId::from_bytes(&m.chunk_id)?;
        if inode.is_none_or(|i| chunk.inode == InodeId(i)) {
            rows.push((chunk, m));
        }
    }
    if ctx.json {
        let chunks: Vec<_> = rows
            .iter()
            .map(|(chunk, m)| {
                let mut v = chunk_meta_json(m);
                v["chunk"] = json!(chunk.to_string());
                v["inode"] = json!(chunk.inode.0);
                v["index"] = json!(chunk.index);
                v
            })
            .collect();
        print_json(&json!({ "target_id": target, "chunks": chunks }));
    } else {
        let mut t = Table::new(&["CHUNK", "INODE", "INDEX", "VERSION", "LENGTH", "CRC32C", "CHAIN VER"]);
        for (chunk, m) in &rows {
            t.row(vec![
                chunk.to_string(),
                chunk.inode.0.to_string(),
                chunk.index.to_string(),
                m.version.to_string(),
                m.length.to_string(),
                format!("{:08x}", m.crc32c),
                m.chain_version.to_string(),
            ]);
        }
        print!("{}", t.render());
        println!("{} chunks", rows.len());
    }
    c.shutdown().await;
    Ok(())
}

/// What one replica said about one chunk.
enum Replica {
    Missing,
    Present(proto::ChunkMeta),
    Failed(String),
}

/// A bad chunk and why.
struct Problem {
    path: String,
    chunk: ChunkId,
    index: u32,
    chain: u32,
    reasons: Vec<String>,
    /// A repair was attempted (then the chunk is checked again).
    repair_tried: bool,
    /// Checked again after the repair and found fine.
    fixed: bool,
    /// For the re-check: the file and chunk index.
    file: Option<proto::Inode>,
}

/// The chain holding chunk `index` of a file with layout `l`.
fn chain_of<'r>(routing: &'r Routing, l: &proto::Layout, index: u32) -> anyhow::Result<&'r proto::ChainInfo> {
    let table = routing.table(ChainTableId(l.table_id), l.table_version)?;
    Ok(routing.chain(layout::chain_of(l, &table.chains, index)?)?)
}

/// Reads the whole chunk from one target and checks it against `meta`.
pub(super) async fn verify_data(
    ctx: &Ctx,
    bulk: &BulkClient,
    routing: &Routing,
    target: TargetId,
    chunk: ChunkId,
    meta: &proto::ChunkMeta,
) -> Result<(), String> {
    let node = routing.node_of_target(target).map_err(|e| e.to_string())?;
    let req = proto::BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: ctx.token.clone(),
        op: Some(bulk_request::Op::Read(proto::ReadChunk {
            target_id: target.0,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset: 0,
            length: meta.length,
            relaxed: false,
        })),
    };
    let (_, data) = bulk.call(&node.bulk_addr, &req, &[]).await.map_err(|e| format!("data read failed: {e}"))?;
    if data.len() != meta.length as usize {
        return Err(format!("data is {} bytes, metadata says {}", data.len(), meta.length));
    }
    let crc = crc32c::crc32c(&data);
    if crc != meta.crc32c {
        return Err(format!("data crc32c {crc:08x}, metadata says {:08x}", meta.crc32c));
    }
    Ok(())
}

/// What to check: data too (not only metadata), and repair damaged replicas.
#[derive(Clone, Copy)]
struct Check {
    data: bool,
    repair: bool,
}

/// Checks one chunk on every replica; `None` when it is fine.
async fn check_chunk(
    ctx: &Ctx,
    c: &Client,
    bulk: &BulkClient,
    path: &str,
    file: &proto::Inode,
    index: u32,
    check: Check,
) -> Option<Problem> {
    let Check { data, repair } = check;
    let chunk = ChunkId::new(InodeId(file.id), index);
    let routing = c.routing();
    let mut problem = Problem {
        path: path.to_string(),
        chunk,
        index,
        chain: 0,
        reasons: Vec::new(),
        repair_tried: false,
        fixed: false,
        file: Some(file.clone()),
    };
    let chain = match file.layout.as_ref().context("file has no layout").and_then(|l| chain_of(&routing, l, index)) {
        Ok(ch) => ch,
        Err(e) => {
            problem.reasons.push(format!("{e:#}"));
            return Some(problem);
        }
    };
    problem.chain = chain.chain_id;
    let mut replicas = Vec::with_capacity(chain.targets.len());
    for t in &chain.targets {
        let r = match c.query_chunk(TargetId(t.target_id), chunk).await {
            Ok(Some(m)) if !m.removed => Replica::Present(m),
            Ok(_) => Replica::Missing,
            Err(e) => Replica::Failed(e.to_string()),
        };
        replicas.push((TargetId(t.target_id), r));
    }
    let present: Vec<&proto::ChunkMeta> =
        replicas.iter().filter_map(|(_, r)| if let Replica::Present(m) = r { Some(m) } else { None }).collect();
    let all_missing = replicas.iter().all(|(_, r)| matches!(r, Replica::Missing));
    if all_missing {
        return None; // a hole
    }
    let reference = present.first().map(|m| (m.version, m.length, m.crc32c));
    // Replicas whose data checked out, and those whose data did not (both with their metadata).
    let (mut good, mut damaged) = (Vec::new(), Vec::new());
    for (target, r) in &replicas {
        match r {
            Replica::Missing => problem.reasons.push(format!("target {target}: replica missing")),
            Replica::Failed(e) => problem.reasons.push(format!("target {target}: query failed: {e}")),
            Replica::Present(m) => {
                if reference.is_some_and(|r| r != (m.version, m.length, m.crc32c)) {
                    problem.reasons.push(format!(
                        "target {target}: version {} length {} crc32c {:08x} disagrees with the other replicas",
                        m.version, m.length, m.crc32c
                    ));
                }
                if data {
                    match verify_data(ctx, bulk, &routing, *target, chunk, m).await {
                        Ok(()) => good.push((*target, m.clone())),
                        Err(e) => {
                            problem.reasons.push(format!("target {target}: {e}"));
                            damaged.push((*target, m.clone()));
                        }
                    }
                }
            }
        }
    }
    if repair && !damaged.is_empty() && !good.is_empty() {
        problem.repair_tried = true;
        let notes = super::repair::repair_replicas(ctx, bulk, &routing, chain, chunk, &good, &damaged).await;
        problem.reasons.extend(notes);
    }
    (!problem.reasons.is_empty()).then_some(problem)
}

/// `t3fs admin fsck PATH [--meta-only] [--repair]`. Fails (exit 1) when any chunk is (still) bad.
pub async fn fsck(ctx: &Ctx, path: &str, data: bool, repair: bool) -> anyhow::Result<()> {
    if repair && !data {
        bail!("--repair needs the data check: it cannot be combined with --meta-only");
    }
    let c = ctx.client().await?;
    let root = resolve(ctx, &c, path).await?;
    // A file with several names (hard links) is checked once, under the first name found.
    let mut seen = std::collections::HashSet::new();
    let files: Vec<(String, proto::Inode)> = walk(ctx, &c, path, root)
        .await?
        .into_iter()
        .filter(|e| e.inode.inode_type == InodeType::File as i32 && seen.insert(e.inode.id))
        .map(|e| (e.path, e.inode))
        .collect();
    let mut jobs = Vec::new();
    for (p, f) in &files {
        let cs = f.layout.as_ref().map_or(0, |l| l.chunk_size);
        let n = t3fs_client::data::chunk_count(f.length, cs);
        if n > u64::from(u32::MAX) + 1 {
            bail!("{p}: length {} is past the largest file for chunk size {cs}", f.length);
        }
        jobs.extend((0..n).map(|i| (p.as_str(), f, i as u32)));
    }
    let chunks = jobs.len();
    let bulk = BulkClient::default();
    let bar = super::transfer::count_bar(
        chunks as u64,
        &format!("fsck {path}"),
        "chunks",
        super::transfer::show_progress(ctx),
    );
    let (c_ref, bulk_ref, bar_ref) = (&c, &bulk, &bar);
    let mut problems: Vec<Problem> = futures::stream::iter(jobs)
        .map(|(p, f, i)| async move {
            let r = check_chunk(ctx, c_ref, bulk_ref, p, f, i, Check { data, repair }).await;
            bar_ref.inc(1);
            r
        })
        .buffer_unordered(PARALLEL_CHUNKS)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    bar.finish_and_clear();
    for p in problems.iter_mut().filter(|p| p.repair_tried) {
        let file = p.file.take().expect("set for every problem");
        p.fixed =
            check_chunk(ctx, &c, &bulk, &p.path, &file, p.index, Check { data: true, repair: false }).await.is_none();
    }
    let unfixed = problems.iter().filter(|p| !p.fixed).count();
    problems.sort_by(|a, b| (&a.path, a.index).cmp(&(&b.path, b.index)));
    if ctx.json {
        let bad: Vec<Value> = problems
            .iter()
            .map(|p| {
                json!({
                    "path": p.path,
                    "inode": p.chunk.inode.0,
                    "index": p.index,
                    "chunk": p.chunk.to_string(),
                    "chain": p.chain,
                    "problems": p.reasons,
                    "repaired": p.fixed,
                })
            })
            .collect();
        print_json(&json!({
            "path": path,
            "files": files.len(),
            "chunks": chunks,
            "bad": problems.len(),
            "repaired": problems.len() - unfixed,
            "data_checked": data,
            "bad_chunks": bad,
        }));
    } else {
        for p in &problems {
            let tag = if p.fixed { "REPAIRED" } else { "BAD" };
            println!("{tag} {} chunk {} (index {}, chain {}):", p.path, p.chunk, p.index, p.chain);
            for r in &p.reasons {
                println!("    {r}");
            }
        }
        let how = if data { "metadata and data" } else { "metadata only" };
        let repaired = if repair { format!(", {} repaired", problems.len() - unfixed) } else { String::new() };
        println!("fsck {path}: {} files, {chunks} chunks, {} bad{repaired} ({how})", files.len(), problems.len());
    }
    c.shutdown().await;
    if unfixed > 0 {
        bail!("fsck {path}: {unfixed} of {chunks} chunks are bad");
    }
    Ok(())
}
