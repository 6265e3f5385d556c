//! The GPU data loaders' host side (`t3fs_kernels::{records, sample_loader, kvcache}`) against a
//! real in-process cluster (mgmtd, meta, three storage servers, 1 MiB chunks):
//!
//! - record files: three files of ~500 random-size samples (0 to 20 KiB, some empty, some
//!   crossing chunk boundaries) written through the client, read back by `RecordFile`, then two
//!   shuffled epochs through `SampleLoader`: every sample exactly once per epoch with its exact
//!   bytes, in the documented deterministic order, different per epoch; the producer never runs
//!   more than `prefetch_batches` ahead; an unshuffled `drop_last` loader over two files walks
//!   them in order; a byte overwritten inside a sample ends the epoch with a Format error naming
//!   the file and the sample.
//! - KV caches: sequences of 1, 64 and 130 tokens (h_kv = 1) and a 70-token h_kv = 2 sequence
//!   written with `write_sequence`, loaded into a 0xFF-filled (bf16 NaN) paged cache: every token's
//!   bytes sit where the block table says, and every byte no token owns is still 0xFF; the same
//!   batch through `load_batch_to_region` (the GPUDirect loader, host memory standing for the
//!   device region over TCP) fills exactly the same bytes.
//! - Cancellation: epochs dropped while their reads are in flight (the batch buffer then outlives
//!   the aborted producer and is freed by the last read, never leaked), a KV-cache load dropped
//!   mid-way; the loader and the cluster keep working afterwards. Reads land in place (the
//!   loaders lend ranges of the caller's buffer to the client), so this is the path where an
//!   ownership mistake would be a write into freed memory.
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{BatchConfig, Client, InodeId, UserInfo};
use t3fs_common::layout::SplitMix64;
use t3fs_kernels::KernelError;
use t3fs_kernels::kvcache::{self, KvBatchPlan, UNUSED_BLOCK, load_batch, page_bytes, token_bytes, write_sequence};
use t3fs_kernels::records::{RecordFile, write_record_file};
use t3fs_kernels::sample_loader::{BatchBuffers, LoaderConfig, SampleLoader, VecBuffers, epoch_order};

const CHUNK: u64 = 1 << 20;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..n.div_ceil(8)).flat_map(|_| r.next_u64().to_le_bytes()).take(n).collect()
}

/// Batch buffers that count how many are alive (handed out and not yet dropped): the memory the
/// loader holds, whatever its internals, is what the prefetch bound is about.
#[derive(Clone, Default)]
struct CountingBuffers {
    live: Arc<AtomicUsize>,
    max_live: Arc<AtomicUsize>,
}

struct CountedBuf {
    v: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl Deref for CountedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v
    }
}

impl DerefMut for CountedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v
    }
}

impl Drop for CountedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BatchBuffers for CountingBuffers {
    type Buf = CountedBuf;
    async fn acquire(&self, len: usize) -> t3fs_kernels::Result<CountedBuf> {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_live.fetch_max(now, Ordering::SeqCst);
        Ok(CountedBuf { v: vec![0xAB; len], live: self.live.clone() })
    }
}

async fn mkdir(client: &Client, name: &str) {
    client.mkdir(&UserInfo::root(), InodeId::ROOT, name.as_bytes(), 0o755).await.unwrap();
}

/// Waits until `cond` holds (the producer runs on other threads), failing after 20 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_files_load_in_shuffled_epochs_with_bounded_prefetch_and_detect_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    mkdir(&client, "ds").await;

    // 150 + 170 + 180 = 500 samples of 0..=20 KiB; every 37th one empty.
    let mut r = SplitMix64::new(3);
    let counts = [150usize, 170, 180];
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut paths = Vec::new();
    for (f, &count) in counts.iter().enumerate() {
        let samples: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let len = if (all.len() + i) % 37 == 5 { 0 } else { (r.next_u64() % (20 * 1024 + 1)) as usize };
                bytes(len, r.next_u64())
            })
            .collect();
        let path = format!("/ds/part-{f}.rec");
        write_record_file(&client, &path, &samples).await.unwrap();
        all.extend(samples);
        paths.push(path);
    }
    assert_eq!(all.len(), 500);

    // Every file opens, and its index places samples across chunk boundaries.
    let mut crossing = 0;
    let mut files = Vec::new();
    for (f, path) in paths.iter().enumerate() {
        let rf = RecordFile::open(&client, path).await.unwrap();
        assert_eq!(rf.len(), counts[f]);
        let chunks = rf.inode().length.div_ceil(CHUNK);
        assert!(chunks >= 2, "{path} is {} bytes: too small to cross a chunk", rf.inode().length);
        for e in rf.index().entries() {
            if e.len > 0 && e.offset / CHUNK != (e.end() - 1) / CHUNK {
                crossing += 1;
            }
        }
        files.push(rf);
    }
    assert!(crossing >= 2, "only {crossing} samples cross a chunk boundary");
    let first_of = |f: usize| counts[..f].iter().sum::<usize>();
    for (f, rf) in files.iter().enumerate() {
        for i in [0, 5, counts[f] - 1] {
            assert!(rf.read_sample(&client, i).await.unwrap() == all[first_of(f) + i], "file {f} sample {i}");
        }
    }

    let cfg = LoaderConfig {
        batch_size: 32,
        seed: 5,
        shuffle: true,
        drop_last: false,
        prefetch_batches: 2,
        read: BatchConfig { max_in_flight_requests: 16, ..BatchConfig::default() },
    };
    let buffers = CountingBuffers::default();
    let loader = SampleLoader::new(client.clone(), &paths, cfg.clone(), buffers.clone()).await.unwrap();
    assert_eq!((loader.num_samples(), loader.num_batches()), (500, 16));
    assert_eq!(loader.locate(150), Some((1, 0)));
    assert_eq!(loader.locate(499), Some((2, 179)));
    assert_eq!(loader.locate(500), None);

    let mut orders = Vec::new();
    for epoch in 0..2u64 {
        let mut stream = loader.epoch(epoch);
        let mut seen = vec![false; 500];
        let mut order = Vec::new();
        let mut n = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            assert_eq!((batch.epoch, batch.index), (epoch, n));
            assert_eq!(batch.samples.len(), if n == 15 { 500 - 15 * 32 } else { 32 });
            assert_eq!(batch.offsets.len(), batch.samples.len() + 1);
            assert_eq!((batch.offsets[0], batch.offsets[batch.samples.len()]), (0, batch.buf.len()));
            for (i, &g) in batch.samples.iter().enumerate() {
                assert!(!std::mem::replace(&mut seen[g as usize], true), "epoch {epoch}: sample {g} twice");
                assert!(batch.sample(i) == &all[g as usize][..], "epoch {epoch} batch {n}: sample {g} differs");
            }
            order.extend_from_slice(&batch.samples);
            if n == 0 {
                // Holding batch 0, the producer fills its window (2 batches) and stops there: three
                // batch buffers alive (ours and two ahead), not four.
                eventually("the prefetch window to fill", || stream.ahead() == 2 && stream.produced() == 3).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!((stream.ahead(), stream.produced()), (2, 3), "the producer ran past its window");
                assert_eq!(buffers.live.load(Ordering::SeqCst), 3, "batch buffers alive while holding one");
            }
            assert!(stream.ahead() <= 2);
            n += 1;
        }
        assert_eq!(n, 16);
        assert!(seen.iter().all(|&s| s), "epoch {epoch} missed samples");
        assert_eq!(stream.max_ahead(), 2, "prefetch depth reached and never exceeded");
        assert_eq!(buffers.max_live.load(Ordering::SeqCst), 3, "held + prefetch_batches buffers at most");
        assert_eq!(order, epoch_order(500, 5, epoch, true), "the documented order");
        orders.push(order);
    }
    assert_ne!(orders[0], orders[1], "epochs are shuffled differently");

    // Unshuffled, drop_last, over files 0 and 2: file order, the short tail dropped.
    let two = vec![paths[0].clone(), paths[2].clone()];
    let cfg2 = LoaderConfig { batch_size: 64, shuffle: false, drop_last: true, prefetch_batches: 1, ..cfg.clone() };
    let loader2 = SampleLoader::new(client.clone(), &two, cfg2, VecBuffers).await.unwrap();
    assert_eq!((loader2.num_samples(), loader2.num_batches()), (330, 5));
    let mut stream = loader2.epoch(0);
    let mut next_id = 0u32;
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        for (i, &g) in batch.samples.iter().enumerate() {
            assert_eq!(g, next_id);
            let want = if g < 150 { &all[g as usize] } else { &all[320 + g as usize - 150] };
            assert!(batch.sample(i) == &want[..], "sample {g}");
            next_id += 1;
        }
    }
    assert_eq!(next_id, 320);
    assert_eq!(stream.max_ahead(), 1);

    // Overwrite one byte in the middle of sample 7 of file 1 (global 157).
    let victim = &files[1];
    let e = victim.index().entry(7).unwrap();
    assert!(e.len > 0);
    let at = e.offset + u64::from(e.len / 2);
    let old = all[157][e.len as usize / 2];
    client.write(victim.inode(), at, &[old ^ 0x5A]).await.unwrap();
    let err = victim.read_sample(&client, 7).await.unwrap_err();
    assert!(matches!(&err, KernelError::Format(m) if m.contains("/ds/part-1.rec") && m.contains("sample 7")), "{err}");
    let mut stream = loader.epoch(2);
    let mut good = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(batch)) => {
                assert!(!batch.samples.contains(&157), "the corrupted sample was delivered");
                good += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("epoch ended without reporting the corrupted sample"),
        }
    };
    let KernelError::Format(msg) = &err else { panic!("expected a Format error, got {err}") };
    assert!(msg.contains("/ds/part-1.rec: sample 7 (global 157)") && msg.contains("crc"), "{msg}");
    assert!(stream.next().await.is_none(), "nothing after the error");
    let pos = epoch_order(500, 5, 2, true).iter().position(|&g| g == 157).unwrap();
    assert_eq!(good, pos / 32, "every batch before the corrupted one arrived");
    drop(stream);

    drop((loader, loader2));
    client.shutdown().await;
    cluster.shutdown().await;
}

/// Batch buffers that remember which tokio task acquired them (the loader's producer) and count
/// those freed by a DIFFERENT task: a batch-read task that still held the buffer, as the owner of
/// its `ExternalBuf`, after the producer was aborted.
#[derive(Clone, Default)]
struct TaskTrackingBuffers {
    live: Arc<AtomicUsize>,
    freed_by_a_read: Arc<AtomicUsize>,
}

struct TrackedBuf {
    v: Vec<u8>,
    acquired_in: Option<tokio::task::Id>,
    bufs: TaskTrackingBuffers,
}

impl Deref for TrackedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v
    }
}

impl DerefMut for TrackedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v
    }
}

impl Drop for TrackedBuf {
    fn drop(&mut self) {
        let now = tokio::task::try_id();
        if now.is_some() && now != self.acquired_in {
            self.bufs.freed_by_a_read.fetch_add(1, Ordering::SeqCst);
        }
        self.bufs.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TaskTrackingBuffers {
    /// A buffer owned by the current task (`None` outside any task, e.g. in a test's body).
    fn make(&self, len: usize, fill: u8) -> TrackedBuf {
        self.live.fetch_add(1, Ordering::SeqCst);
        TrackedBuf { v: vec![fill; len], acquired_in: tokio::task::try_id(), bufs: self.clone() }
    }
}

impl BatchBuffers for TaskTrackingBuffers {
    type Buf = TrackedBuf;
    async fn acquire(&self, len: usize) -> t3fs_kernels::Result<TrackedBuf> {
        Ok(self.make(len, 0xAB))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_an_epoch_with_reads_in_flight_is_safe_and_the_loader_and_cluster_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    mkdir(&client, "ab").await;
    // 96 samples of 64..128 KiB (~9 MiB): a 16-sample batch is ~1.5 MiB of reads.
    let mut r = SplitMix64::new(21);
    let samples: Vec<Vec<u8>> =
        (0..96).map(|_| bytes((64 << 10) + (r.next_u64() % (64 << 10)) as usize, r.next_u64())).collect();
    write_record_file(&client, "/ab/big.rec", &samples).await.unwrap();
    let paths = vec!["/ab/big.rec".to_string()];
    let cfg = LoaderConfig {
        batch_size: 16,
        seed: 1,
        prefetch_batches: 2,
        read: BatchConfig { max_in_flight_requests: 4, ..BatchConfig::default() },
        ..LoaderConfig::default()
    };
    let buffers = TaskTrackingBuffers::default();
    let loader = SampleLoader::new(client.clone(), &paths, cfg, buffers.clone()).await.unwrap();

    // Drop the stream at different points: as soon as the producer holds its first batch buffer
    // (its reads just submitted), after taking one or two batches, a moment into a batch.
    for round in 0..8u64 {
        let mut stream = loader.epoch(round);
        match round % 4 {
            0 => eventually("the first batch buffer", || buffers.live.load(Ordering::SeqCst) >= 1).await,
            1 | 2 => {
                for _ in 0..round {
                    let batch = stream.next().await.unwrap().unwrap();
                    for (i, &g) in batch.samples.iter().enumerate() {
                        assert!(batch.sample(i) == &samples[g as usize][..], "round {round}: sample {g}");
                    }
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(3)).await,
        }
        drop(stream);
        // The aborted producer's buffers are freed: by the producer, or by the last read that was
        // still writing into one. None leaks.
        eventually("every batch buffer to be freed", || buffers.live.load(Ordering::SeqCst) == 0).await;
    }
    let by_reads = buffers.freed_by_a_read.load(Ordering::SeqCst);
    eprintln!("8 aborted epochs; {by_reads} batch buffers outlived their producer and were freed by a read");
    assert!(by_reads >= 1, "no abort ever caught reads in flight; make the batches larger");

    // The loader and the cluster work on: a whole epoch, every sample once with its exact bytes.
    let mut stream = loader.epoch(100);
    let mut seen = vec![false; samples.len()];
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        for (i, &g) in batch.samples.iter().enumerate() {
            assert!(!std::mem::replace(&mut seen[g as usize], true));
            assert!(batch.sample(i) == &samples[g as usize][..], "sample {g}");
        }
    }
    assert!(seen.iter().all(|&s| s));
    drop(stream);
    let rf = RecordFile::open(&client, "/ab/big.rec").await.unwrap();
    assert!(rf.read_sample(&client, 95).await.unwrap() == samples[95]);
    assert_eq!(buffers.live.load(Ordering::SeqCst), 0);

    // Cancelling a KV-cache load mid-way (a timeout): its reads own the cache, so the future can be
    // dropped at any point. Timeouts grow until two cancellations caught page reads in flight (the
    // cache then outlives the dropped future and is freed by the last read).
    let values: Vec<u16> = (0..300 * kvcache::KV_DIM).map(|i| i as u16).collect();
    write_sequence(&client, "/ab/kv", 1, &values).await.unwrap();
    let kv = vec!["/ab/kv".to_string(); 8];
    let cfg = BatchConfig { max_in_flight_requests: 2, ..BatchConfig::default() };
    let caches = TaskTrackingBuffers::default();
    for ms in 1..=100u64 {
        let load = load_batch(&client, &kv, 1, caches.make(40 * page_bytes(1), 0xFF), cfg);
        if tokio::time::timeout(Duration::from_millis(ms), load).await.is_ok() {
            break;
        }
        eventually("the cancelled load's cache to be freed", || caches.live.load(Ordering::SeqCst) == 0).await;
        if caches.freed_by_a_read.load(Ordering::SeqCst) >= 2 {
            break;
        }
    }
    let by_reads = caches.freed_by_a_read.load(Ordering::SeqCst);
    eprintln!("KV loads cancelled with reads in flight: {by_reads}");
    assert!(by_reads >= 1, "no cancelled KV load ever had reads in flight");
    let (plan, cache) = load_batch(&client, &kv, 1, vec![0xFFu8; 40 * page_bytes(1)], cfg).await.unwrap();
    let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    check_cache(&cache, &plan, &vec![le; 8], 1);

    drop(loader);
    client.shutdown().await;
    cluster.shutdown().await;
}

/// Checks that `dest` holds exactly `seqs` as `plan` places them, and 0xFF everywhere else.
fn check_cache(dest: &[u8], plan: &KvBatchPlan, seqs: &[Vec<u8>], h_kv: usize) {
    let (tb, pb) = (token_bytes(h_kv), page_bytes(h_kv));
    let mut owned = vec![false; dest.len()];
    for (s, src) in seqs.iter().enumerate() {
        let tokens = src.len() / tb;
        assert_eq!(plan.seqlens[s] as usize, tokens);
        for t in 0..tokens {
            let block = plan.block_table[s * plan.max_blocks_per_seq + t / kvcache::PAGE_TOKENS];
            assert!(block >= 0 && (block as usize) < plan.num_blocks, "seq {s} token {t}: block {block}");
            let at = block as usize * pb + (t % kvcache::PAGE_TOKENS) * tb;
            assert!(dest[at..at + tb] == src[t * tb..(t + 1) * tb], "seq {s} token {t} differs in block {block}");
            owned[at..at + tb].fill(true);
        }
        let pages = tokens.div_ceil(kvcache::PAGE_TOKENS);
        for p in pages..plan.max_blocks_per_seq {
            assert_eq!(plan.block_table[s * plan.max_blocks_per_seq + p], UNUSED_BLOCK, "seq {s} page {p}");
        }
    }
    let stray = dest.iter().zip(&owned).filter(|&(&b, &o)| !o && b != 0xFF).count();
    assert_eq!(stray, 0, "bytes no token owns were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_cache_pages_land_in_their_blocks_and_unused_slots_stay_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    mkdir(&client, "kv").await;

    let random_bf16 = |tokens: usize, h_kv: usize, seed: u64| -> Vec<u16> {
        let mut r = SplitMix64::new(seed);
        (0..tokens * h_kv * kvcache::KV_DIM).map(|_| r.next_u64() as u16).collect()
    };
    let le = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };

    let lens = [1usize, 64, 130];
    let mut paths = Vec::new();
    let mut seqs = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let path = format!("/kv/seq-{i}");
        let values = random_bf16(len, 1, 100 + i as u64);
        write_sequence(&client, &path, 1, &values).await.unwrap();
        paths.push(path);
        seqs.push(le(&values));
    }
    let pb = page_bytes(1);
    let cfg = BatchConfig { max_in_flight_requests: 2, ..BatchConfig::default() };
    let (plan, dest) = load_batch(&client, &paths, 1, vec![0xFFu8; 7 * pb], cfg).await.unwrap();
    assert_eq!(dest.len(), 7 * pb, "the cache comes back whole");
    let s = UNUSED_BLOCK;
    assert_eq!(plan.seqlens, vec![1, 64, 130]);
    assert_eq!((plan.num_blocks, plan.max_blocks_per_seq), (5, 3));
    assert_eq!(plan.block_table, vec![0, s, s, 1, s, s, 2, 3, 4]);
    check_cache(&dest, &plan, &seqs, 1);
    // The partial pages (seq 0's only token, seq 2's last 2 tokens) leave the rest of their block alone.
    assert!(dest[1152..pb].iter().all(|&b| b == 0xFF));
    assert!(dest[4 * pb + 2 * 1152..5 * pb].iter().all(|&b| b == 0xFF));
    assert!(dest[5 * pb..].iter().all(|&b| b == 0xFF));

    // The GPUDirect loader's host side: the same batch through `load_batch_to_region`, with host
    // memory standing for the device region (over TCP every page comes back inline and is
    // applied by the callback, which is what `DeviceRegion::apply` does with device copies).
    let mut region = vec![0xFFu8; 7 * pb];
    // SAFETY: `region` is not moved or freed until `reg` is dropped below.
    let reg = unsafe { client.bulk().register(region.as_mut_ptr(), region.len()) }.unwrap();
    let mut host = vec![0xFFu8; 7 * pb];
    let plan2 = kvcache::load_batch_to_region(&client, &paths, 1, &reg, 2, |r| {
        r.apply_to_host(&mut host).map_err(KernelError::from)
    })
    .await
    .unwrap();
    assert_eq!(plan2, plan);
    assert!(host == dest, "the region load fills the same bytes as load_batch, and nothing else");
    // SAFETY: as above.
    let small = unsafe { client.bulk().register(region.as_mut_ptr(), 4 * pb) }.unwrap();
    let err = kvcache::load_batch_to_region(&client, &paths, 1, &small, 2, |_| Ok(())).await.unwrap_err();
    assert!(matches!(err, KernelError::InvalidArgument(_)), "a region one block short: {err}");
    drop((reg, small));

    // h_kv = 2 and an empty sequence; an exact-size cache.
    let values = random_bf16(70, 2, 7);
    write_sequence(&client, "/kv/h2", 2, &values).await.unwrap();
    write_sequence(&client, "/kv/empty", 2, &[]).await.unwrap();
    let two = vec!["/kv/empty".to_string(), "/kv/h2".to_string()];
    let (plan, dest) =
        load_batch(&client, &two, 2, vec![0xFFu8; 2 * page_bytes(2)], BatchConfig::default()).await.unwrap();
    assert_eq!((plan.seqlens.clone(), plan.block_table.clone()), (vec![0, 70], vec![s, s, 0, 1]));
    check_cache(&dest, &plan, &[Vec::new(), le(&values)], 2);

    // Errors: a cache one block short, a file that is not whole tokens, a bad token count.
    let err = load_batch(&client, &paths, 1, vec![0u8; 4 * pb], cfg).await.unwrap_err();
    assert!(matches!(err, KernelError::InvalidArgument(_)), "{err}");
    let odd = client.create(&UserInfo::root(), InodeId::ROOT, b"odd", 0o644, true).await.unwrap();
    client.write(&odd, 0, &[1u8; 1000]).await.unwrap();
    client.close(&UserInfo::root(), InodeId(odd.id), 1000, true).await.unwrap();
    let err = load_batch(&client, &["/odd".to_string()], 1, dest, cfg).await.unwrap_err();
    assert!(matches!(&err, KernelError::Format(m) if m.contains("/odd")), "{err}");
    let err = write_sequence(&client, "/kv/bad", 1, &[0u16; 577]).await.unwrap_err();
    assert!(matches!(err, KernelError::InvalidArgument(_)), "{err}");

    client.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loader_rejects_bad_configs_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client: Arc<Client> = cluster.client().await.unwrap();
    write_record_file(&client, "/ok.rec", [&b"abc"[..], &b""[..]]).await.unwrap();
    let odd = client.create(&UserInfo::root(), InodeId::ROOT, b"junk", 0o644, true).await.unwrap();
    client.write(&odd, 0, &bytes(5000, 1)).await.unwrap();
    client.close(&UserInfo::root(), InodeId(odd.id), 5000, true).await.unwrap();

    let ok = vec!["/ok.rec".to_string()];
    for cfg in [
        LoaderConfig { batch_size: 0, ..LoaderConfig::default() },
        LoaderConfig { prefetch_batches: 0, ..LoaderConfig::default() },
    ] {
        let r = SampleLoader::new(client.clone(), &ok, cfg, VecBuffers).await;
        assert!(matches!(r, Err(KernelError::InvalidArgument(_))));
    }
    let r = SampleLoader::new(client.clone(), &["/junk".to_string()], LoaderConfig::default(), VecBuffers).await;
    assert!(matches!(&r, Err(KernelError::Format(m)) if m.contains("/junk")), "{:?}", r.err());
    let r = SampleLoader::new(client.clone(), &["/missing".to_string()], LoaderConfig::default(), VecBuffers).await;
    assert!(matches!(&r, Err(KernelError::Client(e)) if e.message.contains("/missing")), "{:?}", r.err());
    // Rewriting a path replaces its contents (the old, longer file is truncated first).
    write_record_file(&client, "/ok.rec", [&b"z"[..]]).await.unwrap();
    let rf = RecordFile::open(&client, "/ok.rec").await.unwrap();
    assert_eq!(rf.len(), 1);
    assert_eq!(rf.read_sample(&client, 0).await.unwrap(), b"z");
    let loader = SampleLoader::new(client.clone(), &ok, LoaderConfig::default(), VecBuffers).await.unwrap();
    let mut stream = loader.epoch(0);
    let batch = stream.next().await.unwrap().unwrap();
    assert_eq!((batch.samples.clone(), batch.sample(0)), (vec![0], &b"z"[..]));
    assert!(stream.next().await.is_none());

    client.shutdown().await;
    cluster.shutdown().await;
}
