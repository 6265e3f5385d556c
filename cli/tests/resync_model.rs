//! Resync acceptance (issue 4) on a real in-process cluster (mgmtd, meta, three storage servers with
//! two targets each, 3-replica chains, 64 KiB chunks): one storage server stops and its targets go
//! OFFLINE; a seeded random stream of writes (small, chunk-sized, chunk-spanning, extending past the
//! end with a hole), truncates (down, up with zero fill, to 0), file creates (names are reused) and
//! removals runs through the native client against a local model of every file; meta's GC collects
//! the removed files' chunks while the server is still away. The server returns (the stream goes on
//! while it comes back and syncs, and a little after), every target ends SERVING, and then:
//!
//! - every chain's replicas list the same live chunks with the same version, length and CRC32C (chain
//!   version aside: it records when a replica got the content), with nothing pending;
//! - every chunk read from every replica explicitly (a bulk ReadChunk to that target) is byte-identical
//!   across the chain and matches its listed length and CRC32C;
//! - every live chunk belongs to a live file, on the chain its layout names, inside the file's length
//!   (so removed files' chunks and cut chunks are gone everywhere), and holds exactly the model's bytes
//!   (a missing chunk or the part past a chunk's length is model zeros);
//! - what the client reads, and the length meta has, match the model.
//!
//! Seeded: `T3FS_RESYNC_SEED` replays a run (the seed is printed at start and in every failure);
//! `T3FS_RESYNC_OPS` sets the number of operations while the server is down (default 400).
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use t3fs_cli::local::inproc::LocalCluster;
use t3fs_cli::local::plan::{Plan, ShapeArgs};
use t3fs_client::{Client, UserInfo};
use t3fs_common::StatusCode;
use t3fs_common::bulk::BulkClient;
use t3fs_common::ids::{ChunkId, InodeId, TargetId};
use t3fs_common::layout::SplitMix64;
use t3fs_common::proto::{self, PublicTargetState, bulk_request};

mod support;
use support::pattern;

/// Chunk size of the test cluster: small, so that random ranges often span chunks.
const CS: u64 = 64 << 10;
/// Largest file the stream makes.
const MAX_LEN: u64 = 8 * CS;
/// Names the stream picks from (a removed name is created again later).
const NAMES: u64 = 8;

struct ModelFile {
    name: String,
    inode: proto::Inode,
    data: Vec<u8>,
}

/// The local model and the random stream that drives the cluster.
struct Stream {
    seed: u64,
    rng: SplitMix64,
    client: Arc<Client>,
    user: UserInfo,
    files: Vec<ModelFile>,
    /// Inodes of removed files.
    removed: Vec<u64>,
    /// The last operations, for failure messages.
    log: Vec<String>,
    step: usize,
}

impl Stream {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.rng.next_u64() % n }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        let last = self.log.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n  ");
        panic!(
            "resync model: {what}\n(seed {s}, replay with T3FS_RESYNC_SEED={s}; step {}; last ops:\n  {last})",
            self.step,
            s = self.seed
        )
    }

    fn check<T, E: std::fmt::Display>(&self, what: &str, r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| self.fail(format!("{what}: {e}")))
    }

    /// One random operation, applied to the cluster and, once acknowledged, to the model.
    async fn op(&mut self) {
        self.step += 1;
        let roll = self.below(100);
        let few = self.files.len() < 4;
        if self.files.is_empty() || (roll < if few { 20 } else { 5 } && self.files.len() < NAMES as usize) {
            self.create().await;
        } else if roll < 8 && !few {
            let i = self.below(self.files.len() as u64) as usize;
            let f = self.files.swap_remove(i);
            self.log.push(format!("remove {} (inode {})", f.name, f.inode.id));
            let gone = self.client.remove(&self.user, InodeId::ROOT, f.name.as_bytes(), false).await;
            let gone = self.check("remove", gone);
            if gone.nlink != 0 {
                self.fail(format!("removed file still has {} links", gone.nlink));
            }
            self.removed.push(f.inode.id);
        } else if roll < 26 {
            self.truncate().await;
        } else {
            self.write().await;
        }
    }

    async fn create(&mut self) {
        let live: HashSet<String> = self.files.iter().map(|f| f.name.clone()).collect();
        let start = self.below(NAMES);
        let Some(name) = (0..NAMES).map(|k| format!("f{}", (start + k) % NAMES)).find(|n| !live.contains(n)) else {
            return;
        };
        let inode = self.client.create(&self.user, InodeId::ROOT, name.as_bytes(), 0o644, true).await;
        let inode = self.check("create", inode);
        self.log.push(format!("create {name} (inode {})", inode.id));
        self.files.push(ModelFile { name, inode, data: Vec::new() });
    }

    async fn write(&mut self) {
        let i = self.below(self.files.len() as u64) as usize;
        let len = self.files[i].data.len() as u64;
        let n = match self.below(4) {
            0 => 1 + self.below(512),
            1 => 1 + self.below(CS),
            2 => CS + self.below(2 * CS), // always spans a chunk boundary
            _ => 1 + self.below(8192),
        };
        let offset = match self.below(4) {
            0 => self.below(len + 1),
            // Just before a chunk boundary.
            1 => (1 + self.below(MAX_LEN / CS - 1)) * CS - 1 - self.below(100),
            // Past the end: the gap is a hole.
            2 => len + self.below(CS),
            _ => self.below(MAX_LEN),
        };
        let offset = offset.min(MAX_LEN - 1);
        let n = n.min(MAX_LEN - offset);
        let data = pattern(n as usize, self.rng.next_u64());
        let f = &self.files[i];
        let (id, name) = (f.inode.id, f.name.clone());
        self.log.push(format!("write {name} [{offset}, +{n}) (length {len})"));
        let r = self.client.write(&f.inode, offset, &data).await;
        self.check("write", r);
        let end = offset + n;
        let closed = self.client.close(&self.user, InodeId(id), end, true).await;
        let closed = self.check("close after write", closed);
        let f = &mut self.files[i];
        if f.data.len() < end as usize {
            f.data.resize(end as usize, 0);
        }
        f.data[offset as usize..end as usize].copy_from_slice(&data);
        f.inode = closed;
        let (got, want) = (self.files[i].inode.length, self.files[i].data.len() as u64);
        if got != want {
            self.fail(format!("{name}: meta length {got} after the write, model {want}"));
        }
    }

    async fn truncate(&mut self) {
        let i = self.below(self.files.len() as u64) as usize;
        let len = self.files[i].data.len() as u64;
        let new_len = match self.below(6) {
            0 | 1 => self.below(len + 1),
            2 => self.below(len / CS + 1) * CS, // on a chunk boundary
            3 | 4 => (len + 1 + self.below(2 * CS)).min(MAX_LEN),
            _ => 0,
        };
        let (id, name) = (self.files[i].inode.id, self.files[i].name.clone());
        self.log.push(format!("truncate {name} {len} -> {new_len}"));
        let r = self.client.truncate(&self.user, InodeId(id), new_len).await;
        let inode = self.check("truncate", r);
        if inode.length != new_len {
            self.fail(format!("{name}: meta length {} after truncate to {new_len}", inode.length));
        }
        let f = &mut self.files[i];
        f.data.resize(new_len as usize, 0);
        f.inode = inode;
    }

    /// Reads every file through the client and compares it with the model, and its length in meta.
    async fn check_reads(&self) {
        for f in &self.files {
            let r = self.client.getattr(&self.user, InodeId(f.inode.id)).await;
            let inode = self.check("getattr", r);
            if inode.length != f.data.len() as u64 {
                self.fail(format!("{}: meta length {}, model {}", f.name, inode.length, f.data.len()));
            }
            let r = self.client.read(&inode, 0, MAX_LEN as u32 + 1).await;
            let got = self.check("read", r);
            if got != f.data {
                let at = got.iter().zip(&f.data).position(|(a, b)| a != b);
                self.fail(format!(
                    "{}: client read differs from the model (lengths {} / {}, first difference at {at:?})",
                    f.name,
                    got.len(),
                    f.data.len()
                ));
            }
        }
    }

    /// Waits until meta's GC has collected every removed file (its chunks first, then the inode).
    async fn wait_removed_collected(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for &id in &self.removed {
            loop {
                match self.client.getattr(&self.user, InodeId(id)).await {
                    Err(e) if e.code == StatusCode::NotFound => break,
                    Err(e) => self.fail(format!("getattr of removed inode {id}: {e}")),
                    Ok(_) if tokio::time::Instant::now() > deadline => {
                        self.fail(format!("removed inode {id} not collected after 30 s"))
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
}

fn seed() -> u64 {
    match std::env::var("T3FS_RESYNC_SEED") {
        Ok(s) => s.parse().expect("T3FS_RESYNC_SEED is a number"),
        Err(_) => rand::random(),
    }
}

fn ops() -> usize {
    std::env::var("T3FS_RESYNC_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400)
}

fn state_of(r: &t3fs_common::routing::Routing, target: u64) -> i32 {
    r.info.chains.iter().flat_map(|c| &c.targets).find(|t| t.target_id == target).map_or(0, |t| t.public_state)
}

/// Waits (up to `secs`) until routing shows every target in `targets` in `state`.
async fn wait_state(s: &Stream, targets: &[u64], state: PublicTargetState, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        s.client.refresh_routing().await;
        let r = s.client.routing();
        if targets.iter().all(|t| state_of(&r, *t) == state as i32) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            s.fail(format!("targets {targets:?} not {state:?} after {secs} s: {:?}", r.info.chains));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a whole chunk from one target with an explicit bulk ReadChunk; `None` if it has no such chunk.
async fn read_replica(s: &Stream, bulk: &BulkClient, token: &str, target: u64, chunk: ChunkId) -> Option<Bytes> {
    let addr = s.check("bulk address", s.client.routing().bulk_addr(TargetId(target)));
    let req = proto::BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: token.to_string(),
        op: Some(bulk_request::Op::Read(proto::ReadChunk {
            target_id: target,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset: 0,
            length: CS as u32,
            relaxed: false,
        })),
    };
    match bulk.call(&addr, &req, &[]).await {
        Ok((rsp, data)) => {
            if rsp.payload_crc32c != crc32c::crc32c(&data) {
                s.fail(format!("chunk {chunk} from target {target}: payload CRC does not match"));
            }
            Some(data)
        }
        Err(e) if e.code == StatusCode::ChunkNotFound => None,
        Err(e) => s.fail(format!("reading chunk {chunk} from target {target}: {e}")),
    }
}

/// The checks of the module note, on a quiet cluster with every target SERVING.
async fn assert_replicas_match_model(s: &Stream, token: &str) {
    let bulk = BulkClient::default();
    let r = s.client.routing();
    let live: BTreeMap<u64, &ModelFile> = s.files.iter().map(|f| (f.inode.id, f)).collect();
    let mut seen = HashSet::new();
    let mut checked = 0usize;
    for chain in &r.info.chains {
        let targets: Vec<u64> = chain.targets.iter().map(|t| t.target_id).collect();
        let mut listings = Vec::new();
        for &t in &targets {
            let l = s.client.list_chunks(TargetId(t)).await;
            let mut l = s.check("list chunks", l);
            l.iter_mut().for_each(|m| m.chain_version = 0);
            l.sort_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
            listings.push(l);
        }
        for (t, l) in targets.iter().zip(&listings).skip(1) {
            if *l != listings[0] {
                let only = |a: &[proto::ChunkMeta], b: &[proto::ChunkMeta]| {
                    a.iter().filter(|m| !b.contains(m)).map(|m| format!("{m:?}")).collect::<Vec<_>>()
                };
                s.fail(format!(
                    "chain {}: target {t} lists other chunks than target {}:\n only on {t}: {:?}\n only on {}: {:?}",
                    chain.chain_id,
                    targets[0],
                    only(l, &listings[0]),
                    targets[0],
                    only(&listings[0], l)
                ));
            }
        }
        for m in &listings[0] {
            let chunk = s.check("chunk id", ChunkId::from_bytes(&m.chunk_id));
            if m.removed || m.pending_version != 0 {
                s.fail(format!("chain {}: chunk {chunk} listed removed or pending: {m:?}", chain.chain_id));
            }
            let Some(f) = live.get(&chunk.inode.0) else {
                s.fail(format!("chain {}: chunk {chunk} of a removed or unknown file: {m:?}", chain.chain_id))
            };
            let lay = f.inode.layout.as_ref().expect("a file has a layout");
            let home = s.check("chunk chain", r.chunk_chain(lay, chunk.index)).chain_id;
            if home != chain.chain_id {
                s.fail(format!("chunk {chunk} is on chain {}, its layout says {home}", chain.chain_id));
            }
            let start = u64::from(chunk.index) * CS;
            let end = (start + CS).min(f.data.len() as u64);
            if u64::from(m.length) > end.saturating_sub(start) {
                s.fail(format!("{}: chunk {chunk} holds {} bytes past the file's end: {m:?}", f.name, m.length));
            }
            let want = &f.data[start as usize..end as usize];
            for &t in &targets {
                let Some(data) = read_replica(s, &bulk, token, t, chunk).await else {
                    s.fail(format!("{}: chunk {chunk} listed but not readable on target {t}", f.name))
                };
                if (data.len() as u32, crc32c::crc32c(&data)) != (m.length, m.crc32c) {
                    s.fail(format!("{}: chunk {chunk} on target {t}: {} bytes do not match {m:?}", f.name, data.len()));
                }
                let (head, rest) = want.split_at(data.len());
                if data != head || rest.iter().any(|&b| b != 0) {
                    let at = data.iter().zip(head).position(|(a, b)| a != b);
                    s.fail(format!(
                        "{}: chunk {chunk} on target {t} differs from the model (first difference at {at:?})",
                        f.name
                    ));
                }
            }
            seen.insert((chunk.inode.0, chunk.index));
            checked += 1;
        }
    }
    // A chunk no replica has reads as zeros: the model must have nothing but zeros there.
    for f in &s.files {
        for (index, piece) in f.data.chunks(CS as usize).enumerate() {
            if !seen.contains(&(f.inode.id, index as u32)) && piece.iter().any(|&b| b != 0) {
                s.fail(format!("{}: chunk {index} is on no replica, but the model has data there", f.name));
            }
        }
    }
    eprintln!("resync model: {checked} chunks checked on every replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returning_server_resyncs_to_byte_identical_replicas() {
    let seed = seed();
    let n_ops = ops();
    eprintln!("resync model: seed {seed} (T3FS_RESYNC_SEED={seed} replays), {n_ops} ops while a server is down");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A new directory with 64 KiB chunks; LocalCluster::start then loads it.
    Plan::load_or_create_shaped(
        &dir,
        Some("127.0.0.1:0"),
        ShapeArgs { chunk_size: Some(CS as u32), ..Default::default() },
    )
    .unwrap();
    let mut cluster = LocalCluster::start(&dir).await.unwrap();
    let token = cluster.plan.cluster.token.clone();
    let client = cluster.client().await.unwrap();
    let mut s = Stream {
        seed,
        rng: SplitMix64::new(seed),
        client: client.clone(),
        user: UserInfo::root(),
        files: Vec::new(),
        removed: Vec::new(),
        log: Vec::new(),
        step: 0,
    };
    let t0 = std::time::Instant::now();
    // Some files exist on every replica before the failure.
    for _ in 0..30 {
        s.op().await;
    }

    // A storage server (chosen by the seed) stops; its targets go OFFLINE.
    let victim = s.below(cluster.plan.storage.len() as u64) as usize;
    let node = cluster.plan.storage[victim].node_id;
    let dead: Vec<u64> =
        client.routing().info.targets.iter().filter(|t| t.node_id == node).map(|t| t.target_id).collect();
    assert_eq!(dead.len(), 2, "seed {seed}");
    s.log.push(format!("stop storage server {victim} (node {node}, targets {dead:?})"));
    assert!(cluster.stop_storage(victim).await);
    wait_state(&s, &dead, PublicTargetState::Offline, 30).await;

    for k in 0..n_ops {
        s.op().await;
        if k % 50 == 49 {
            s.check_reads().await;
        }
    }
    s.check_reads().await;
    // The removed files' chunks are collected while the server is away (it must learn it from resync).
    s.wait_removed_collected().await;
    let down = t0.elapsed();

    // The server returns; more operations run while its targets come back and sync.
    s.log.push(format!("start storage server {victim}"));
    s.check("restart", cluster.start_storage(victim).await);
    // Operations go on until the returning targets are SERVING (at least 30, for at most 60 s), so some
    // usually land while they are SYNCING.
    let (mut during_sync, mut after) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while after < 30 && tokio::time::Instant::now() < deadline {
        s.op().await;
        s.client.refresh_routing().await;
        let r = s.client.routing();
        let states: Vec<i32> = dead.iter().map(|t| state_of(&r, *t)).collect();
        if states.contains(&(PublicTargetState::Syncing as i32)) {
            during_sync += 1;
        }
        if states.iter().all(|&st| st == PublicTargetState::Serving as i32) {
            after += 1;
        }
    }
    wait_state(&s, &dead, PublicTargetState::Serving, 60).await;
    s.check_reads().await;
    let all: Vec<u64> = client.routing().info.chains.iter().flat_map(|c| &c.targets).map(|t| t.target_id).collect();
    wait_state(&s, &all, PublicTargetState::Serving, 10).await;
    s.wait_removed_collected().await;
    // Every storage server has the routing the client has (else a node may still refuse reads of a
    // target mgmtd has just made SERVING).
    let version = client.routing().version();
    for i in 0..cluster.plan.storage.len() {
        let server = cluster.storage(i).expect("every storage server runs");
        let r = server.routing().wait_for(Duration::from_secs(10), |r| r.version() >= version).await;
        s.check("storage routing", r);
    }

    // The returning targets were resynced by their predecessors (not just found up to date).
    let mut syncs = 0.0;
    for i in 0..cluster.plan.storage.len() {
        let addr = cluster.storage(i).and_then(|x| x.metrics_addr()).expect("storage servers serve metrics");
        let body = s.check("metrics", t3fs_common::metrics::scrape(addr).await);
        syncs += t3fs_common::metrics::sample(&body, "t3fs_storage_syncs_completed_total").unwrap_or(0.0);
    }
    if syncs < dead.len() as f64 {
        s.fail(format!("{syncs} syncs completed, want one into each of {dead:?}"));
    }

    assert_replicas_match_model(&s, &token).await;
    s.check_reads().await;
    eprintln!(
        "resync model: {} ops ({during_sync} while syncing), {} live files, {} removed; {down:?} until the \
         restart, {:?} in all",
        s.step,
        s.files.len(),
        s.removed.len(),
        t0.elapsed()
    );
    drop(s);
    client.shutdown().await;
    drop(client);
    cluster.shutdown().await;
}
