//! KV cache from t3fs into MLA decode: starts an in-process local cluster (mgmtd, meta, 3 storage
//! servers, 3-replica chains), writes a batch of paged KV caches as t3fs files (one file per
//! sequence, `kernels::kvcache` layout), loads the batch's pages with the batch-read API into a
//! paged cache in host memory (and, with a GPU, through pinned memory into a device paged cache),
//! decodes with the GPU MLA kernel, and compares with the CPU reference (FlashMLA's tolerances).
//! Without a GPU (or without the `cuda` feature) it checks the loaded cache byte for byte and runs
//! the CPU reference decode only.
//!
//! `cargo run --release -p t3fs --features cuda --example decode_from_t3fs -- [BATCH] [MAX_LEN] [H_Q]`
//! (defaults 16, 2048, 64; s_q = 1; lengths drawn in [0, MAX_LEN] plus the edge cases 0, 1, 64, 65)
use std::time::Instant;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_kernels::kvcache::{self, page_bytes};
use t3fs_kernels::mla_ref::{D_K, MlaInputs, MlaShape, mla_decode_ref};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let batch = args.first().copied().unwrap_or(16).max(4);
    let max_len = args.get(1).copied().unwrap_or(2048).max(65);
    let h_q = args.get(2).copied().unwrap_or(64).max(1);
    let h_kv = 1;
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path()).await?;
    let client = cluster.client().await?;

    // Sequences: edge-case lengths first, then random ones (seeded).
    let mut rng = t3fs_common::layout::SplitMix64::new(42);
    let mut lens: Vec<usize> = vec![0, 1, 64, 65];
    while lens.len() < batch {
        lens.push((rng.next_u64() % (max_len as u64 + 1)) as usize);
    }
    let mut written = 0usize;
    let mut paths = Vec::new();
    let mut sources = Vec::new();
    let t = Instant::now();
    for (i, &len) in lens.iter().enumerate() {
        let vals: Vec<u16> = t3fs_kernels::check::randn_vec(1000 + i as u64, len * h_kv * D_K)
            .iter()
            .map(|v| bf16_bits((v / 10.0).clamp(-1.0, 1.0)))
            .collect();
        let path = format!("/seq-{i:04}.kv");
        kvcache::write_sequence(&client, &path, h_kv, &vals).await?;
        written += vals.len() * 2;
        paths.push(path);
        sources.push(vals);
    }
    println!("wrote {batch} sequences, {:.1} MiB, in {:.2} s", written as f64 / 1048576.0, t.elapsed().as_secs_f64());

    // Paged cache in host memory, NaN-filled so any unloaded slot poisons the decode.
    let seqlens: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    let need = kvcache::plan_blocks(&seqlens)?.num_blocks.max(1);
    let cache = vec![0xffu8; need * page_bytes(h_kv)];
    let t = Instant::now();
    let (plan, cache) = kvcache::load_batch(&client, &paths, h_kv, cache, t3fs_client::BatchConfig::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "loaded {} pages ({:.1} MiB) in {:.3} s: {:.2} GB/s storage -> host",
        plan.num_blocks,
        written as f64 / 1048576.0,
        secs,
        written as f64 / secs / 1e9
    );
    for (s, src) in sources.iter().enumerate() {
        let tb = h_kv * D_K;
        for (tok, want) in src.chunks(tb).enumerate() {
            let block = plan.block(s, tok / 64).ok_or("missing page")?;
            let off = (block * 64 + tok % 64) * tb * 2;
            let got: Vec<u16> = cache[off..off + tb * 2].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            if got != want {
                return Err(format!("sequence {s} token {tok}: loaded bytes differ from the written ones").into());
            }
        }
    }
    println!("loaded cache matches the written tokens byte for byte");

    let shape = MlaShape { batch, s_q: 1, h_q, h_kv, num_blocks: need, max_blocks_per_seq: plan.max_blocks_per_seq };
    let q: Vec<f32> = t3fs_kernels::check::randn_vec(7, shape.q_len())
        .iter()
        .map(|v| half::bf16::from_f32((v / 10.0).clamp(-1.0, 1.0)).to_f32())
        .collect();
    let kc: Vec<f32> =
        cache.chunks(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect();
    let inp = MlaInputs {
        shape,
        q: &q,
        kcache: &kc,
        block_table: &plan.block_table,
        seqlens: &plan.seqlens,
        softmax_scale: 1.0 / (D_K as f32).sqrt(),
        causal: false,
    };
    let t = Instant::now();
    let want = mla_decode_ref(&inp)?;
    println!("CPU reference decode: {:.3} s", t.elapsed().as_secs_f64());
    gpu_decode(&client, &paths, &inp, &want).await?;
    cluster.shutdown().await;
    Ok(())
}

#[cfg(feature = "cuda")]
async fn gpu_decode(
    client: &std::sync::Arc<t3fs_client::Client>,
    paths: &[String],
    inp: &MlaInputs<'_>,
    want: &t3fs_kernels::mla_ref::MlaOutput,
) -> Res<()> {
    use t3fs_kernels::check::{calc_diff, check_allclose};
    use t3fs_kernels::gpu::mla::{MlaDecoder, MlaDeviceArgs, Workspace};
    use t3fs_kernels::gpu::{Gpu, direct::DeviceRegion, kvload, staging::PinnedPool};
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("GPU decode skipped: {e}");
            return Ok(());
        }
    };
    let sh = inp.shape;
    let bytes = sh.num_blocks * page_bytes(sh.h_kv);
    // GPUDirect RDMA when this host has it (storage writes into the device cache), else
    // storage -> pinned host -> device. Both upload the block table and seqlens.
    let region = match DeviceRegion::new(&gpu, client, bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("GPUDirect RDMA unavailable ({e}); staging through pinned host memory");
            None
        }
    };
    let t = Instant::now();
    let (staged, direct);
    let (kplan, kcache, ktable, kseqlens) = match &region {
        Some(r) => {
            direct = kvload::load_to_region(&gpu, client, paths, sh.h_kv, r, 64).await?;
            (&direct.plan, r.as_u16(), &direct.block_table, &direct.seqlens)
        }
        None => {
            let staging = PinnedPool::new(&gpu, bytes, 1)?;
            let cfg = t3fs_client::BatchConfig::default();
            staged = kvload::load_to_device(&gpu, client, paths, sh.h_kv, &staging, cfg).await?;
            (&staged.plan, &staged.cache, &staged.block_table, &staged.seqlens)
        }
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "storage -> GPU paged cache ({}): {} pages in {secs:.3} s = {:.2} GB/s",
        if region.is_some() { "GPUDirect RDMA" } else { "pinned staging" },
        kplan.num_blocks,
        (kplan.num_blocks * page_bytes(sh.h_kv)) as f64 / secs / 1e9
    );
    if kplan.block_table != inp.block_table {
        return Err("device load planned a different block table".into());
    }
    let dec = MlaDecoder::new(gpu.clone())?;
    let s = gpu.stream();
    let q: Vec<u16> = inp.q.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
    let q = s.clone_htod(&q)?;
    let mut out = s.clone_htod(&vec![0xffffu16; sh.out_len()])?;
    let mut lse = s.clone_htod(&vec![f32::NAN; sh.lse_len()])?;
    let plan = dec.plan(&sh, &kplan.seqlens, None)?;
    let args = MlaDeviceArgs {
        shape: sh,
        q: &q,
        kcache,
        block_table: ktable,
        seqlens: kseqlens,
        softmax_scale: inp.softmax_scale,
        causal: inp.causal,
    };
    let t = Instant::now();
    dec.decode(&args, &plan, &mut Workspace::default(), &mut out, &mut lse)?;
    gpu.synchronize()?;
    println!(
        "GPU decode on {} (first call compiles or loads the cached kernel): {:.3} s",
        gpu.name(),
        t.elapsed().as_secs_f64()
    );
    let got: Vec<f32> = s.clone_dtoh(&out)?.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    let got_lse = s.clone_dtoh(&lse)?;
    check_allclose("out", &got, &want.out, 8e-4, 2.01 / 128.0)?;
    check_allclose("lse", &got_lse, &want.lse, 1e-6, 8.01 / 65536.0)?;
    let finite = |v: &[f32]| v.iter().map(|x| if x.is_finite() { *x } else { 0.0 }).collect::<Vec<f32>>();
    println!("GPU decode matches the CPU reference (cos_diff {:.2e})", calc_diff(&finite(&got), &finite(&want.out)));
    Ok(())
}

#[cfg(not(feature = "cuda"))]
async fn gpu_decode(
    _: &std::sync::Arc<t3fs_client::Client>,
    _: &[String],
    _: &MlaInputs<'_>,
    _: &t3fs_kernels::mla_ref::MlaOutput,
) -> Res<()> {
    println!("GPU decode skipped: built without the `cuda` feature");
    Ok(())
}
