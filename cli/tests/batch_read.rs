//! The batch read API (`t3fs_client::batch`) against a real in-process cluster (mgmtd, meta, three
//! storage servers, 1 MiB chunks, 3-replica chains):
//!
//! - 10,000 random (file, offset, len) reads over 20 files of random sizes (some with holes),
//!   including zero-length reads and reads past EOF, into pooled and owned buffers, compared byte
//!   for byte with what was written; then 2,000 more into disjoint ranges of one caller-owned
//!   buffer (`ExternalBuf`), which land in place and write nothing outside their bytes;
//! - a storage server stopped while a large batch is in flight: every read still completes
//!   correctly from the remaining replicas;
//! - the queue depth and per-node limits are never exceeded (and are reached), and bad requests
//!   complete with an error instead of stalling the queue;
//! - region reads (`Client::read_to_region`, the GPUDirect path) over TCP land at their offset
//!   with holes zeroed, before and after a storage server stops.
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{BatchConfig, BatchReader, BufferPool, Client, Completion, ExternalBuf, ReadBuf, ReadReq, UserInfo};
use t3fs_common::layout::SplitMix64;
use t3fs_common::proto;
use t3fs_common::{InodeId, StatusCode};

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..n.div_ceil(8)).flat_map(|_| r.next_u64().to_le_bytes()).take(n).collect()
}

/// A file as written: its inode (after close) and its full expected contents (holes as zeros).
struct File {
    inode: Arc<proto::Inode>,
    data: Vec<u8>,
}

/// Writes `sizes.len()` files. Every third file gets a hole: only its first half is written and
/// the file is then extended past the written data.
async fn write_files(client: &Client, sizes: &[usize], seed: u64) -> Vec<File> {
    let user = UserInfo::default();
    let mut files = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("f{seed}-{i}");
        let inode = client.create(&user, InodeId::ROOT, name.as_bytes(), 0o644, true).await.unwrap();
        assert_eq!(inode.layout.as_ref().unwrap().chunk_size, 1 << 20);
        let mut data = bytes(size, seed * 1000 + i as u64);
        let written = if i % 3 == 2 { size / 2 } else { size };
        data[written..].fill(0);
        if written > 0 {
            client.write(&inode, 0, &data[..written]).await.unwrap();
        }
        let mut inode = client.close(&user, InodeId(inode.id), size as u64, true).await.unwrap();
        if written < size {
            // Meta takes the length from storage (where the data ends); the hole at the end
            // comes from extending the file, as ftruncate would.
            inode = client.truncate(&user, InodeId(inode.id), size as u64).await.unwrap();
        }
        assert_eq!(inode.length, size as u64);
        files.push(File { inode: Arc::new(inode), data });
    }
    files
}

/// What a read of `len` at `offset` must return.
fn expected(f: &File, offset: u64, len: u32) -> &[u8] {
    let start = (offset as usize).min(f.data.len());
    let end = (start + len as usize).min(f.data.len());
    &f.data[start..end]
}

/// Checks one completion; `user_data` packs (file index << 32 | read index) and `reqs` holds each
/// read's (offset, len).
fn check(files: &[File], reqs: &[(usize, u64, u32)], c: Completion) {
    let (fi, offset, len) = reqs[c.user_data as usize];
    let n = c.result.unwrap_or_else(|e| panic!("read {} failed: {e}", c.user_data));
    let want = expected(&files[fi], offset, len);
    assert_eq!(n, want.len(), "read {}: file {fi} offset {offset} len {len}", c.user_data);
    assert!(&c.buf[..n] == want, "read {}: data differs (file {fi} offset {offset} len {len})", c.user_data);
}

/// Runs `reqs` through `reader` the way a loader does: take a pool buffer, submit, and reap
/// completions whenever the pool or the queue is full. Returns the number checked.
async fn run_loader(
    reader: &mut BatchReader,
    pool: &BufferPool,
    files: &[File],
    reqs: &[(usize, u64, u32)],
    done: &AtomicUsize,
) -> usize {
    let mut next = 0;
    let mut checked = 0;
    loop {
        while next < reqs.len() && reader.pending() < reader.config().max_in_flight_requests {
            let Some(buf) = pool.try_acquire() else { break };
            let (fi, offset, len) = reqs[next];
            let req = ReadReq { inode: files[fi].inode.clone(), offset, len, buf: buf.into(), user_data: next as u64 };
            reader.submit(req).await;
            next += 1;
        }
        match reader.next().await {
            Some(c) => {
                check(files, reqs, c);
                checked += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            None => break,
        }
    }
    assert_eq!(next, reqs.len());
    checked
}

/// Random reads: mostly small, some spanning chunks, some zero-length, some past EOF.
fn random_reads(files: &[File], count: usize, max_len: u32, seed: u64) -> Vec<(usize, u64, u32)> {
    let mut r = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let fi = (r.next_u64() % files.len() as u64) as usize;
            let flen = files[fi].data.len() as u64;
            let offset = match r.next_u64() % 10 {
                0 => flen + r.next_u64() % 10_000, // at or past EOF
                1 => ((r.next_u64() % (flen / (1 << 20) + 1)) << 20).saturating_sub(r.next_u64() % 5000), // near a chunk boundary
                _ => r.next_u64() % (flen + 1),
            };
            let len = match r.next_u64() % 20 {
                0 => 0,
                1..=3 => (r.next_u64() % u64::from(max_len)) as u32 + 1,
                _ => (r.next_u64() % 16_384) as u32 + 1,
            };
            (fi, offset, len)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_random_reads_match_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut r = SplitMix64::new(42);
    let mut sizes: Vec<usize> = (0..20).map(|_| (r.next_u64() % (3 << 20)) as usize).collect();
    sizes[0] = 0;
    sizes[1] = 1 << 20; // exactly one chunk
    sizes[2] = 3 << 20; // chunk boundaries, with a hole from 1.5 MiB
    let files = write_files(&client, &sizes, 1).await;

    let max_len = 1 << 20;
    let reqs = random_reads(&files, 10_000, max_len, 7);
    let pool = BufferPool::new(max_len as usize, 64);
    let mut reader = client.batch_reader(BatchConfig { max_in_flight_requests: 32, ..BatchConfig::default() });
    let done = AtomicUsize::new(0);
    let t = Instant::now();
    assert_eq!(run_loader(&mut reader, &pool, &files, &reqs, &done).await, reqs.len());
    let s = reader.stats();
    eprintln!("10,000 reads in {:?}: {s:?}", t.elapsed());
    assert_eq!((s.submitted, s.completed, s.in_flight), (10_000, 10_000, 0));
    assert!(s.max_in_flight <= 32);
    assert_eq!(pool.available(), pool.capacity(), "every pooled buffer came back");

    // The one-call form, into plain Vecs, completions in any order.
    let reqs = random_reads(&files, 1000, 3 << 20, 8);
    let batch = reqs
        .iter()
        .enumerate()
        .map(|(i, &(fi, offset, len))| ReadReq {
            inode: files[fi].inode.clone(),
            offset,
            len,
            buf: ReadBuf::Owned(vec![0xEE; len as usize]),
            user_data: i as u64,
        })
        .collect();
    let mut reader = client.batch_read(batch);
    let mut seen = vec![false; reqs.len()];
    while let Some(c) = reader.next().await {
        assert!(!std::mem::replace(&mut seen[c.user_data as usize], true), "one completion per read");
        check(&files, &reqs, c);
    }
    assert!(seen.iter().all(|&s| s));

    // Into caller-owned external memory: 2,000 reads, each into its own range of ONE Arc-owned
    // buffer, a one-byte guard after every range. Reads land in place; nothing outside a read's
    // returned bytes (guards, and the tail past EOF of a clamped read) is written.
    let reqs = random_reads(&files, 2000, 256 << 10, 9);
    let mut starts = Vec::with_capacity(reqs.len());
    let mut total = 0usize;
    for &(_, _, len) in &reqs {
        starts.push(total);
        total += len as usize + 1;
    }
    let mut owner = Arc::new(std::sync::Mutex::new(vec![0xEEu8; total]));
    let base = Arc::get_mut(&mut owner).unwrap().get_mut().unwrap().as_mut_ptr();
    let erased: Arc<dyn Any + Send + Sync> = owner.clone();
    let batch = reqs
        .iter()
        .enumerate()
        .map(|(i, &(fi, offset, len))| {
            // SAFETY: [starts[i], starts[i] + len) lies inside the Vec that `owner` keeps alive, the
            // ranges are disjoint (a guard byte between each), and the Vec is not touched again
            // until every ExternalBuf is dropped (the try_unwrap below).
            let buf = unsafe { ExternalBuf::new(base.add(starts[i]), len as usize, erased.clone()) };
            ReadReq { inode: files[fi].inode.clone(), offset, len, buf: buf.into(), user_data: i as u64 }
        })
        .collect();
    drop(erased);
    let mut reader = client.batch_read(batch);
    let mut returned = vec![None; reqs.len()];
    while let Some(c) = reader.next().await {
        let i = c.user_data as usize;
        assert_eq!(c.buf.len(), reqs[i].2 as usize, "an ExternalBuf derefs to exactly its range");
        returned[i] = Some(*c.result.as_ref().unwrap_or_else(|e| panic!("read {i}: {e}")));
        check(&files, &reqs, c);
    }
    drop(reader);
    let buf = Arc::try_unwrap(owner).expect("every ExternalBuf went with its completion").into_inner().unwrap();
    for (i, &(fi, offset, len)) in reqs.iter().enumerate() {
        let n = returned[i].expect("one completion per read");
        let (at, len) = (starts[i], len as usize);
        assert!(buf[at..at + n] == *expected(&files[fi], offset, len as u32), "read {i} in place");
        assert!(buf[at + n..=at + len].iter().all(|&b| b == 0xEE), "read {i} wrote past its {n} bytes");
    }
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_server_stopped_mid_batch_every_read_completes_from_other_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    // 24 MiB over 6 files (no holes: every chunk exists on every replica).
    let files: Vec<File> = write_files(&client, &[4 << 20; 2], 2)
        .await
        .into_iter()
        .chain(write_files(&client, &[4 << 20; 2], 3).await)
        .chain(write_files(&client, &[4 << 20; 2], 4).await)
        .collect();
    // 1 GiB (T3FS_BATCH_FAILURE_MIB) of 1 MiB reads at random (unaligned, so most span two chunks on two chains).
    let total: usize = std::env::var("T3FS_BATCH_FAILURE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let mut r = SplitMix64::new(11);
    let reqs: Vec<(usize, u64, u32)> = (0..total)
        .map(|_| {
            let fi = (r.next_u64() % files.len() as u64) as usize;
            (fi, r.next_u64() % (3 << 20), 1 << 20)
        })
        .collect();
    let files = Arc::new(files);
    let reqs = Arc::new(reqs);
    let done = Arc::new(AtomicUsize::new(0));
    let loader = {
        let (client, files, reqs, done) = (client.clone(), files.clone(), reqs.clone(), done.clone());
        tokio::spawn(async move {
            let pool = BufferPool::new(1 << 20, 48);
            let mut reader = client.batch_reader(BatchConfig { max_in_flight_requests: 32, ..BatchConfig::default() });
            let n = run_loader(&mut reader, &pool, &files, &reqs, &done).await;
            (n, reader.stats())
        })
    };
    // Stop storage server 2 once a fifth of the batch is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < reqs.len() / 5 {
        assert!(Instant::now() < deadline, "batch made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(cluster.stop_storage(1).await);
    let at_stop = done.load(Ordering::SeqCst);
    assert!(at_stop < reqs.len(), "the batch finished before the failure was injected; make it larger");
    let (n, stats) = loader.await.unwrap();
    eprintln!("stopped storage 2 after {at_stop} of {} reads; {stats:?}", reqs.len());
    assert_eq!(n, reqs.len());
    assert!(stats.failovers > 0, "no read ever hit the stopped server: {stats:?}");
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_depth_and_node_limits_hold_and_bad_requests_complete_with_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let files = write_files(&client, &[5 << 20, 3 << 20], 5).await;
    let cfg = BatchConfig {
        max_in_flight_requests: 6,
        max_ops_per_node: 2,
        max_bytes_per_op: 256 << 10,
        ..BatchConfig::default()
    };
    let reqs = random_reads(&files, 300, 2 << 20, 9);
    let pool = BufferPool::new(2 << 20, 16);
    let mut reader = client.batch_reader(cfg);
    let done = AtomicUsize::new(0);
    assert_eq!(run_loader(&mut reader, &pool, &files, &reqs, &done).await, 300);
    let s = reader.stats();
    assert_eq!(s.max_in_flight, 6, "the queue fills to its depth and no further: {s:?}");
    assert!(s.max_node_ops >= 1 && s.max_node_ops <= 2, "per-node limit: {s:?}");

    // Submitting beyond the depth waits (the queue is full while reads are in flight).
    let mut reader = client.batch_reader(BatchConfig { max_in_flight_requests: 1, ..cfg });
    let big = |user_data| ReadReq {
        inode: files[0].inode.clone(),
        offset: 0,
        len: 5 << 20,
        buf: ReadBuf::Owned(vec![0; 5 << 20]),
        user_data,
    };
    reader.submit(big(0)).await;
    let back = reader.try_submit(big(1));
    if let Err(req) = back {
        assert_eq!(req.user_data, 1, "a refused request is handed back");
    }
    let c = reader.next().await.unwrap();
    assert_eq!(c.result.unwrap(), 5 << 20);
    assert!(c.buf[..] == files[0].data[..]);
    // Bad requests: a buffer too small, and a directory; both complete with errors.
    let dir = client.getattr(&UserInfo::default(), InodeId::ROOT).await.unwrap();
    reader
        .submit(ReadReq { inode: files[0].inode.clone(), offset: 0, len: 10, buf: vec![0; 5].into(), user_data: 7 })
        .await;
    reader.submit(ReadReq { inode: Arc::new(dir), offset: 0, len: 10, buf: vec![0; 10].into(), user_data: 8 }).await;
    let mut codes = Vec::new();
    while let Some(c) = reader.next().await {
        if c.user_data == 1 {
            assert_eq!(c.result.unwrap(), 5 << 20);
            continue;
        }
        codes.push((c.user_data, c.result.unwrap_err().code));
    }
    codes.sort_by_key(|c| c.0);
    assert_eq!(codes, vec![(7, StatusCode::InvalidArgument), (8, StatusCode::IsDirectory)]);
    drop(client);
    cluster.shutdown().await;
}

/// `Client::read_to_region` (the GPUDirect path) over TCP: every part comes back inline or as a
/// hole, and applying the parts to a host buffer standing for the region gives exactly what the
/// read returns, at the asked offset, touching nothing else; still so with a storage server down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_reads_land_at_their_offset_with_holes_zeroed_and_survive_a_stopped_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let files = write_files(&client, &[3 << 20, 5_000_000, 1 << 20, 777, 0, 2_500_001], 21).await;
    let mut region = vec![0u8; 8 << 20];
    // SAFETY: `region` is neither moved nor freed until `reg` is dropped at the end of the test.
    let reg = unsafe { client.bulk().register(region.as_mut_ptr(), region.len()) }.unwrap();
    assert!(!reg.is_device());
    let mut reads = random_reads(&files, 300, 3 << 20, 21);
    reads.push((1, 4_999_990, 100)); // crosses EOF
    reads.push((4, 0, 10)); // empty file
    reads.push((2, 1 << 20, 5)); // at EOF
    for (round, &(fi, offset, len)) in reads.iter().enumerate() {
        if round == reads.len() / 2 {
            assert!(cluster.stop_storage(1).await);
        }
        let at = (offset as usize * 7 + round) % (region.len() - len as usize);
        region.fill(0xA5);
        let read = client.read_to_region(&files[fi].inode, offset, len, &reg, at).await.unwrap();
        let want = expected(&files[fi], offset, len);
        assert_eq!(read.len, want.len(), "read {round}: ({fi}, {offset}, {len})");
        let mut next = at;
        for part in &read.parts {
            let (o, n) = part.span();
            assert_eq!(o, next, "read {round}: parts tile the range in order");
            assert!(n > 0);
            next += n;
            assert!(!matches!(part, t3fs_client::RegionPart::Written { .. }), "TCP cannot write in place");
        }
        assert_eq!(next, at + want.len());
        read.apply_to_host(&mut region).unwrap();
        assert!(region[at..at + want.len()] == *want, "read {round}: ({fi}, {offset}, {len}) at {at}");
        assert!(region[..at].iter().chain(&region[at + want.len()..]).all(|&b| b == 0xA5), "read {round}");
    }
    // A range past the registered memory is refused before anything is sent.
    let e = client.read_to_region(&files[0].inode, 0, 1 << 20, &reg, region.len() - 10).await.unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidArgument);
    drop(reg);
    drop(client);
    cluster.shutdown().await;
}
