//! Training samples from t3fs into an FP8 training step, and the loader's throughput into host
//! memory and into the GPU. Starts an in-process local cluster (3 storage servers, 3-replica
//! chains), writes a dataset of record files (each sample = one row of K f32 features), then:
//!
//! 1. storage → host: one shuffled epoch through `SampleLoader` into plain host buffers (GB/s);
//! 2. storage → GPU (feature `cuda` and a GPU): one shuffled epoch into pinned host buffers, each
//!    batch uploaded with async H2D on a copy stream (double-buffered device slots), quantized on
//!    the GPU (1×128 e4m3) and multiplied by a 128×128-quantized weight with the FP8 GEMM — the
//!    tiny training step. The first batch's GEMM output is checked against the CPU reference.
//!
//! `cargo run --release -p t3fs --features cuda --example train_step_from_t3fs -- [SAMPLES] [K] [BATCH]`
//! (defaults 4096, 4096, 256: 64 MiB of samples, 4 record files); `T3FS_DIRECT_IO=0` makes the
//! storage servers read through the page cache instead of O_DIRECT.
use std::time::Instant;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::UserInfo;
use t3fs_common::InodeId;
use t3fs_kernels::records::write_record_file;
use t3fs_kernels::sample_loader::{LoaderConfig, SampleLoader, VecBuffers};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const FILES: usize = 4;

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let samples = args.first().copied().unwrap_or(4096).max(FILES);
    let k = args.get(1).copied().unwrap_or(4096).div_ceil(128) * 128;
    let batch = args.get(2).copied().unwrap_or(256).max(1);
    let dir = tempfile::tempdir()?;
    // T3FS_DIRECT_IO=0: storage reads through the page cache instead of O_DIRECT (the default).
    let direct_io = std::env::var("T3FS_DIRECT_IO").map_or(true, |v| v != "0");
    let cluster =
        LocalCluster::start_with(dir.path(), |p| p.storage.iter_mut().for_each(|s| s.direct_io = direct_io)).await?;
    println!("storage direct_io = {direct_io}");
    let client = cluster.client().await?;
    client.mkdir(&UserInfo::root(), InodeId::ROOT, b"ds", 0o755).await?;

    let t = Instant::now();
    let per_file = samples / FILES;
    let mut paths = Vec::new();
    for f in 0..FILES {
        let rows: Vec<Vec<u8>> = (0..per_file)
            .map(|i| {
                t3fs_kernels::check::randn_vec((f * per_file + i) as u64, k)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let path = format!("/ds/part-{f}.rec");
        write_record_file(&client, &path, rows.iter()).await?;
        paths.push(path);
    }
    let total = (per_file * FILES * k * 4) as f64;
    println!(
        "dataset: {} samples × {k} f32 ({:.1} MiB) in {FILES} record files, written in {:.2} s",
        per_file * FILES,
        total / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let cfg = LoaderConfig {
        batch_size: batch,
        seed: 7,
        shuffle: true,
        drop_last: true,
        prefetch_batches: 2,
        ..LoaderConfig::default()
    };
    let loader = SampleLoader::new(client.clone(), &paths, cfg.clone(), VecBuffers).await?;
    let mut epoch = loader.epoch(0);
    let (t, mut bytes) = (Instant::now(), 0usize);
    while let Some(b) = epoch.next().await {
        bytes += b?.buf.len();
    }
    let host_gbs = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!(
        "storage -> host: {:.1} MiB in {:.3} s = {host_gbs:.3} GB/s",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    gpu_epoch(&client, &paths, cfg, k, host_gbs).await?;
    cluster.shutdown().await;
    Ok(())
}

#[cfg(feature = "cuda")]
async fn gpu_epoch(
    client: &std::sync::Arc<t3fs_client::Client>,
    paths: &[String],
    cfg: LoaderConfig,
    k: usize,
    host_gbs: f64,
) -> Res<()> {
    use t3fs_kernels::check::rel_l2;
    use t3fs_kernels::gemm_ref::{gemm_fp8_ref, random_matrix};
    use t3fs_kernels::gpu::gemm::Fp8Gemm;
    use t3fs_kernels::gpu::staging::{H2dPipeline, PinnedPool};
    use t3fs_kernels::gpu::{Gpu, quant};
    use t3fs_kernels::quant::{quantize_1x128, quantize_128x128};

    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("storage -> GPU skipped: {e}");
            return Ok(());
        }
    };
    let (m, n) = (cfg.batch_size, 4096usize);
    let batch_bytes = m * k * 4;
    let pool = PinnedPool::new(&gpu, batch_bytes, cfg.prefetch_batches + 2)?;
    let mut h2d = H2dPipeline::new(gpu.clone(), batch_bytes, 2)?;
    let gemm = Fp8Gemm::new(gpu.clone())?;
    let w = quantize_128x128(&random_matrix(99, n, k), n, k)?;
    let s = gpu.stream().clone();
    let (wb, wsb) = (s.clone_htod(&w.data)?, s.clone_htod(&w.scales)?);
    let mut q = s.alloc_zeros::<u8>(m * k)?;
    let mut sa = s.alloc_zeros::<f32>(m * k / 128)?;
    let mut d = s.alloc_zeros::<u16>(m * n)?;
    let loader = SampleLoader::new(client.clone(), paths, cfg, pool).await?;
    let mut epoch = loader.epoch(0);
    let (t, mut bytes, mut steps) = (Instant::now(), 0usize, 0usize);
    let mut first: Option<Vec<f32>> = None;
    while let Some(b) = epoch.next().await {
        let b = b?;
        let len = b.buf.len();
        if first.is_none() {
            first = Some(b.buf.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
        let slot = h2d.upload(b.buf)?;
        let (dev, _) = h2d.acquire(slot)?;
        // SAFETY: the slot holds `len` bytes of little-endian f32 rows written by the upload; f32
        // has no invalid bit patterns and the device allocation is 256-byte aligned.
        let x = unsafe { dev.transmute::<f32>(len / 4) }.ok_or("slot too small")?;
        quant::quantize_1x128(&gpu, &x, m, k, &mut q, &mut sa)?;
        gemm.gemm(&q, &sa, &wb, &wsb, &mut d, m, n, k)?;
        h2d.release(slot)?;
        if steps == 0 {
            let got: Vec<f32> = s.clone_dtoh(&d)?.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect();
            let x0 = first.as_ref().ok_or("no first batch")?;
            let want = gemm_fp8_ref(&quantize_1x128(x0, m, k)?, &w)?;
            let r = rel_l2(&got, &want);
            println!("first training step: FP8 GEMM [{m}×{k}]·[{n}×{k}]ᵀ vs CPU reference: rel L2 {r:.2e}");
            if r > 4e-3 {
                return Err(format!("GPU training step differs from the CPU reference (rel L2 {r:.2e})").into());
            }
        }
        bytes += len;
        steps += 1;
    }
    gpu.synchronize()?;
    let secs = t.elapsed().as_secs_f64();
    let gbs = bytes as f64 / secs / 1e9;
    println!(
        "storage -> GPU (pinned, async H2D, quantize + FP8 GEMM per batch on {}): {steps} steps, {:.1} MiB in {secs:.3} s = {gbs:.3} GB/s ({:.0}% of storage -> host)",
        gpu.name(),
        bytes as f64 / 1048576.0,
        100.0 * gbs / host_gbs
    );
    Ok(())
}

#[cfg(not(feature = "cuda"))]
async fn gpu_epoch(
    _: &std::sync::Arc<t3fs_client::Client>,
    _: &[String],
    _: LoaderConfig,
    _: usize,
    _: f64,
) -> Res<()> {
    println!("storage -> GPU skipped: built without the `cuda` feature");
    Ok(())
}
