//! Kernel benchmarks on the GPU (feature `cuda`): MLA decode GB/s and TFLOPS (FlashMLA's
//! formulas) for b=128, h_q ∈ {16, 64, 128}, s_q ∈ {1, 2}, s_k ∈ {4096, 8192}; FP8 GEMM TFLOPS
//! for DeepGEMM's shapes, per kernel variant (`mma.sync`, and `wgmma` on Hopper, compared with each
//! other on the same inputs); each as a percentage of the H200 datasheet peaks (4.8 TB/s, 1979 dense
//! FP8 TFLOPS) and of the device-to-device copy this run measures. Inputs are generated on the
//! device from a seed (never zeros); L2 (60 MB) is flushed with a 512 MiB memset before every timed
//! run; each figure is the median of `--iters` runs timed with CUDA events.
//!
//! `cargo run --release -p t3fs-kernels --features cuda --example kernel_bench -- [--quick] [--iters N]`
use std::sync::Arc;

use t3fs_kernels::gpu::gemm::{Fp8Gemm, GemmVariant, gemm_cost};
use t3fs_kernels::gpu::mla::{MlaDecoder, MlaDeviceArgs, Workspace, mla_cost};
use t3fs_kernels::gpu::{CudaSlice, Gpu, fill};
use t3fs_kernels::mla_ref::{D_K, MlaShape, PAGE};
use t3fs_kernels::sources::MlaKernel;

const PEAK_BW: f64 = 4.8e12;
const PEAK_FP8: f64 = 1979e12;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Timer {
    gpu: Arc<Gpu>,
    flush: CudaSlice<u8>,
    iters: usize,
}

impl Timer {
    /// Median milliseconds of `f` over `iters` runs after 2 warm-ups, L2 flushed before each.
    fn median_ms(&mut self, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        for _ in 0..2 {
            f()?;
        }
        let mut v = Vec::with_capacity(self.iters);
        for _ in 0..self.iters {
            self.gpu.stream().memset_zeros(&mut self.flush)?;
            let a = self.gpu.record_event()?;
            f()?;
            let b = self.gpu.record_event()?;
            b.synchronize()?;
            v.push(a.elapsed_ms(&b)? as f64);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 30 });
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return Ok(());
        }
    };
    println!(
        "device: {} (sm_{}{}, {} SMs), arch {}",
        gpu.name(),
        gpu.compute_capability().0,
        gpu.compute_capability().1,
        gpu.sm_count(),
        gpu.arch()
    );
    let s = gpu.stream().clone();
    let mut t = Timer { gpu: gpu.clone(), flush: s.alloc_zeros::<u8>(512 << 20)?, iters };

    // Device copy ceiling: bytes read + written.
    let n_copy = 2usize << 30;
    let src = s.alloc_zeros::<u8>(n_copy)?;
    let mut dst = s.alloc_zeros::<u8>(n_copy)?;
    let copy_ms = t.median_ms(|| {
        s.memcpy_dtod(&src, &mut dst)?;
        Ok(())
    })?;
    let copy_bw = 2.0 * n_copy as f64 / (copy_ms * 1e-3);
    drop((src, dst));
    println!("device copy: {:.0} GB/s ({:.1}% of 4.8 TB/s)", copy_bw / 1e9, 100.0 * copy_bw / PEAK_BW);

    let mut rows = Vec::new();
    // MLA decode.
    let decs: Vec<MlaDecoder> =
        MlaKernel::ALL.iter().map(|&k| MlaDecoder::with_kernel(gpu.clone(), k)).collect::<Result<_, _>>()?;
    let s_ks: &[usize] = if quick { &[4096] } else { &[4096, 8192] };
    for &s_k in s_ks {
        let batch = 128;
        let blocks_per_seq = s_k / PAGE;
        let num_blocks = batch * blocks_per_seq;
        let mut kc = s.alloc_zeros::<u16>(num_blocks * PAGE * D_K)?;
        fill::bf16(&gpu, &mut kc, 11, 1.0)?;
        // Block table: a fixed permutation of the pages (stride walk), like FlashMLA's random one.
        let bt: Vec<i32> = (0..num_blocks).map(|i| ((i * 7919) % num_blocks) as i32).collect();
        let bt_d = s.clone_htod(&bt)?;
        let sl = vec![s_k as i32; batch];
        let sl_d = s.clone_htod(&sl)?;
        for &h_q in &[16usize, 64, 128] {
            for &s_q in &[1usize, 2] {
                let shape = MlaShape { batch, s_q, h_q, h_kv: 1, num_blocks, max_blocks_per_seq: blocks_per_seq };
                let mut q = s.alloc_zeros::<u16>(shape.q_len())?;
                fill::bf16(&gpu, &mut q, 12, 1.0)?;
                let mut out = s.alloc_zeros::<u16>(shape.out_len())?;
                let mut lse = s.alloc_zeros::<f32>(shape.lse_len())?;
                let a = MlaDeviceArgs {
                    shape,
                    q: &q,
                    kcache: &kc,
                    block_table: &bt_d,
                    seqlens: &sl_d,
                    softmax_scale: 1.0 / (D_K as f32).sqrt(),
                    causal: s_q > 1,
                };
                let mut first: Option<Vec<u16>> = None;
                for dec in &decs {
                    let plan = dec.plan(&shape, &sl, None)?;
                    let mut ws = Workspace::default();
                    let ms = t.median_ms(|| {
                        dec.decode(&a, &plan, &mut ws, &mut out, &mut lse)?;
                        Ok(())
                    })?;
                    // Kernels must agree with each other on these large shapes too (the tests
                    // compare each with the CPU reference on smaller ones).
                    let o: Vec<f32> = s.clone_dtoh(&out)?.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect();
                    let agree = match &first {
                        None => {
                            first = Some(s.clone_dtoh(&out)?);
                            String::new()
                        }
                        Some(f) => {
                            let f: Vec<f32> = f.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect();
                            format!(", rel L2 vs splitkv {:.1e}", t3fs_kernels::check::rel_l2(&o, &f))
                        }
                    };
                    let (bytes, flops) = mla_cost(&shape, s_k as f64);
                    let bw = bytes / (ms * 1e-3);
                    let tf = flops / (ms * 1e-3) / 1e12;
                    rows.push(format!(
                        "| MLA [{}] b={batch} h_q={h_q:>3} s_q={s_q} s_k={s_k} (parts {}, tile {}) | {ms:.3} ms | {:.0} GB/s ({:.0}% peak, {:.0}% copy) | {tf:.0} TFLOPS ({:.0}% of 989 bf16){agree} |",
                        dec.kernel().name(),
                        plan.plan.num_parts,
                        plan.tile_m,
                        bw / 1e9,
                        100.0 * bw / PEAK_BW,
                        100.0 * bw / copy_bw,
                        100.0 * tf / 989.0
                    ));
                    println!("{}", rows.last().map(String::as_str).unwrap_or(""));
                }
            }
        }
    }

    // FP8 GEMM, DeepGEMM's normal shapes, every variant the device supports on the same inputs; each
    // later variant's row also gives its speed-up over the first and how far its output is from it.
    let gemms = GemmVariant::ALL
        .into_iter()
        .filter(|v| v.supported_on(gpu.arch()))
        .map(|v| Fp8Gemm::with_variant(gpu.clone(), v))
        .collect::<Result<Vec<_>, _>>()?;
    let ms_list: &[usize] = if quick { &[128, 4096] } else { &[64, 128, 4096] };
    let nks: &[(usize, usize)] =
        &[(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)];
    for &m in ms_list {
        for &(n, k) in nks {
            let mut a = s.alloc_zeros::<u8>(m * k)?;
            let mut b = s.alloc_zeros::<u8>(n * k)?;
            let mut sa = s.alloc_zeros::<f32>(m * (k / 128))?;
            let mut sb = s.alloc_zeros::<f32>(n.div_ceil(128) * (k / 128))?;
            fill::e4m3(&gpu, &mut a, 21)?;
            fill::e4m3(&gpu, &mut b, 22)?;
            fill::f32s(&gpu, &mut sa, 23, 0.5, 1.5)?;
            fill::f32s(&gpu, &mut sb, 24, 0.5, 1.5)?;
            let mut first: Option<(f64, Vec<u16>)> = None;
            for g in &gemms {
                let mut d = s.alloc_zeros::<u16>(m * n)?;
                let ms = t.median_ms(|| {
                    g.gemm(&a, &sa, &b, &sb, &mut d, m, n, k)?;
                    Ok(())
                })?;
                let out = s.clone_dtoh(&d)?;
                gpu.synchronize()?;
                let (bytes, flops) = gemm_cost(m, n, k);
                let tf = flops / (ms * 1e-3) / 1e12;
                let vs_first = match &first {
                    Some((ms0, out0)) => format!(
                        " {:.2}x vs {}, rel_l2 {:.1e} |",
                        ms0 / ms,
                        gemms[0].variant().name(),
                        rel_l2_bf16(&out, out0)
                    ),
                    None => String::new(),
                };
                rows.push(format!(
                    "| FP8 GEMM {:<8} m={m:>4} n={n:>5} k={k:>5} | {ms:.3} ms | {:.0} GB/s | {tf:.0} TFLOPS ({:.1}% of 1979) |{vs_first}",
                    g.variant().name(),
                    bytes / (ms * 1e-3) / 1e9,
                    100.0 * tf * 1e12 / PEAK_FP8
                ));
                println!("{}", rows.last().map(String::as_str).unwrap_or(""));
                if first.is_none() {
                    first = Some((ms, out));
                }
            }
        }
    }
    println!("\n## summary (median of {iters}, L2 flushed; copy ceiling {:.0} GB/s)", copy_bw / 1e9);
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// `‖x − y‖ / ‖y‖` over two bf16 outputs, in f64; NaN when either holds a NaN.
fn rel_l2_bf16(x: &[u16], y: &[u16]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (half::bf16::from_bits(a).to_f64(), half::bf16::from_bits(b).to_f64());
        num += (a - b) * (a - b);
        den += b * b;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}
