//! MLA decode launcher: plans the split-KV work on the host (FlashMLA's cost model, `plan.rs`),
//! uploads the plan, runs `mla_decode_split` and then `mla_combine` on the GPU's stream.
//!
//! Layouts are FlashMLA's (see `mla_ref.rs`): q `[b][s_q][h_q][576]` bf16, paged cache
//! `[blocks][64][h_kv][576]` bf16, block table `[b][max_blocks]` i32, seqlens `[b]` i32; output
//! `[b][s_q][h_q][512]` bf16 and LSE `[b][h_q][s_q]` f32. A plan is valid for one set of seqlens
//! (like FlashMLA's scheduler metadata); reuse it across decode steps while the lengths hold.
//! Block-table entries of used pages must be in range — the kernel trusts them, so
//! [`MlaDecoder::decode_host`] validates them and device callers must (the loaders do).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{Gpu, arg_i32, check_len};
use crate::mla_ref::{D_K, D_V, MlaInputs, MlaOutput, MlaShape};
use crate::plan::{SplitPlan, num_sm_parts, plan_splits};
use crate::sources::MlaKernel;
use crate::{KernelError, Result, sources};

/// A split plan resident on the device.
pub struct DevicePlan {
    pub plan: SplitPlan,
    pub tile_m: usize,
    items: CudaSlice<i32>,
    parts: CudaSlice<i32>,
    splits: CudaSlice<i32>,
}

/// Scratch for split partials (f32 O and LSE per split and row); grows on demand.
#[derive(Default)]
pub struct Workspace {
    opart: Option<CudaSlice<f32>>,
    lse_part: Option<CudaSlice<f32>>,
}

/// Device buffers of one decode call.
pub struct MlaDeviceArgs<'a> {
    pub shape: MlaShape,
    pub q: &'a CudaSlice<u16>,
    pub kcache: &'a CudaSlice<u16>,
    pub block_table: &'a CudaSlice<i32>,
    pub seqlens: &'a CudaSlice<i32>,
    pub softmax_scale: f32,
    pub causal: bool,
}

/// Launches MLA decode on one GPU.
pub struct MlaDecoder {
    gpu: Arc<Gpu>,
    kernel: MlaKernel,
}

impl MlaDecoder {
    /// A decoder with the default (H200-verified) kernel.
    pub fn new(gpu: Arc<Gpu>) -> Result<MlaDecoder> {
        Self::with_kernel(gpu, MlaKernel::SplitKv)
    }

    /// A decoder with a chosen kernel (see [`MlaKernel`]; `Pipelined` is not yet GPU-verified).
    pub fn with_kernel(gpu: Arc<Gpu>, kernel: MlaKernel) -> Result<MlaDecoder> {
        gpu.require_fp8_mma()?;
        Ok(MlaDecoder { gpu, kernel })
    }

    pub fn kernel(&self) -> MlaKernel {
        self.kernel
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Plans the split-KV work for `seqlens` (host copy of the device seqlens) and uploads it.
    /// `num_parts` overrides FlashMLA's default (SMs / h_kv / row tiles), e.g. to force splits.
    pub fn plan(&self, shape: &MlaShape, seqlens: &[i32], num_parts: Option<usize>) -> Result<DevicePlan> {
        shape.validate()?;
        if seqlens.len() != shape.batch {
            return Err(KernelError::InvalidArgument(format!("{} seqlens for batch {}", seqlens.len(), shape.batch)));
        }
        let rows = shape.s_q * (shape.h_q / shape.h_kv);
        let tile_m = sources::mla_tile_for(rows);
        let parts = num_parts.unwrap_or_else(|| num_sm_parts(self.gpu.sm_count(), shape.h_kv, rows, tile_m));
        let plan = plan_splits(seqlens, parts)?;
        let s = self.gpu.stream();
        Ok(DevicePlan {
            items: s.clone_htod(&plan.item_words())?,
            parts: s.clone_htod(&plan.part_words())?,
            splits: s.clone_htod(&plan.split_words())?,
            plan,
            tile_m,
        })
    }

    /// Runs decode: `out` gets `[b][s_q][h_q][512]` bf16, `lse` gets `[b][h_q][s_q]` f32.
    pub fn decode(
        &self,
        a: &MlaDeviceArgs,
        plan: &DevicePlan,
        ws: &mut Workspace,
        out: &mut CudaSlice<u16>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let sh = a.shape;
        sh.validate()?;
        check_len("q", a.q, sh.q_len())?;
        check_len("kcache", a.kcache, sh.kcache_len())?;
        check_len("block_table", a.block_table, sh.batch * sh.max_blocks_per_seq)?;
        check_len("seqlens", a.seqlens, sh.batch)?;
        check_len("out", out, sh.out_len())?;
        check_len("lse", lse, sh.lse_len())?;
        if plan.plan.split_start.len() != sh.batch + 1 {
            return Err(KernelError::InvalidArgument("plan was made for another batch size".into()));
        }
        let rows_total = sh.s_q * sh.h_q;
        let part_rows = plan.plan.total_splits() * rows_total;
        let s = self.gpu.stream();
        if ws.lse_part.as_ref().is_none_or(|b| b.len() < part_rows.max(1)) {
            ws.opart = Some(s.alloc_zeros::<f32>(part_rows.max(1) * D_V)?);
            ws.lse_part = Some(s.alloc_zeros::<f32>(part_rows.max(1))?);
        }
        let (Some(opart), Some(lse_part)) = (ws.opart.as_mut(), ws.lse_part.as_mut()) else {
            return Err(KernelError::InvalidArgument("workspace allocation missing".into()));
        };
        let tile = plan.tile_m;
        let smem = sources::mla_smem_bytes_of(self.kernel, tile);
        let src = sources::mla_decode_of(self.kernel, tile);
        let split_fn = self.gpu.function(&src, "mla_decode_split", smem)?;
        let combine_fn = self.gpu.function(&src, "mla_combine", 0)?;
        let rows = sh.s_q * (sh.h_q / sh.h_kv);
        let grid = (
            u32::try_from(rows.div_ceil(tile)).map_err(|_| KernelError::InvalidArgument("too many rows".into()))?,
            u32::try_from(sh.h_kv).map_err(|_| KernelError::InvalidArgument("h_kv".into()))?,
            u32::try_from(plan.plan.num_parts).map_err(|_| KernelError::InvalidArgument("num_parts".into()))?,
        );
        let (s_q, h_q, h_kv) = (arg_i32("s_q", sh.s_q)?, arg_i32("h_q", sh.h_q)?, arg_i32("h_kv", sh.h_kv)?);
        let max_blocks = arg_i32("max_blocks_per_seq", sh.max_blocks_per_seq)?;
        let scale_log2 = a.softmax_scale * std::f32::consts::LOG2_E;
        let causal = i32::from(a.causal);
        let mut b = s.launch_builder(&split_fn);
        b.arg(a.q).arg(a.kcache).arg(a.block_table).arg(a.seqlens);
        b.arg(&plan.items).arg(&plan.parts).arg(&plan.splits);
        b.arg(&mut *out).arg(&mut *lse).arg(&mut *opart).arg(&mut *lse_part);
        b.arg(&s_q).arg(&h_q).arg(&h_kv).arg(&max_blocks).arg(&scale_log2).arg(&causal);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 };
        // SAFETY: the argument list matches mla_decode_split's signature in cuda/mla_decode.cu; every
        // buffer was length-checked above against the shape, the plan's items cover requests < batch
        // with blocks < ceil(seqlen/64) <= max_blocks, and split indices < total_splits, which sized
        // opart/lse_part. Block-table contents are the caller's contract (module note).
        unsafe { b.launch(cfg) }?;
        if plan.plan.total_splits() > sh.batch {
            let mut c = s.launch_builder(&combine_fn);
            c.arg(&plan.splits).arg(&*opart).arg(&*lse_part).arg(&mut *out).arg(&mut *lse).arg(&s_q).arg(&h_q);
            let cfg = LaunchConfig {
                grid_dim: (arg_i32("rows", rows_total)? as u32, arg_i32("batch", sh.batch)? as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches mla_combine's signature; it reads splits of requests < batch (sized
            // by the plan) and writes rows < s_q*h_q of out/lse, both length-checked above.
            unsafe { c.launch(cfg) }?;
        }
        Ok(())
    }

    /// Convenience for tests and examples: uploads host inputs (f32 values, rounded to bf16),
    /// decodes with an optional forced `num_parts`, and returns host outputs (bf16 → f32).
    /// Outputs are poisoned (NaN) before the launch, so an unwritten element shows up.
    pub fn decode_host(&self, inp: &MlaInputs, num_parts: Option<usize>) -> Result<MlaOutput> {
        inp.validate()?;
        let sh = inp.shape;
        let s = self.gpu.stream();
        let to_bf16 = |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect() };
        let q = s.clone_htod(&to_bf16(inp.q))?;
        let k = s.clone_htod(&to_bf16(inp.kcache))?;
        let bt = s.clone_htod(inp.block_table)?;
        let sl = s.clone_htod(inp.seqlens)?;
        let mut out = s.clone_htod(&vec![0xffffu16; sh.out_len()])?;
        let mut lse = s.clone_htod(&vec![f32::NAN; sh.lse_len()])?;
        let plan = self.plan(&sh, inp.seqlens, num_parts)?;
        let args = MlaDeviceArgs {
            shape: sh,
            q: &q,
            kcache: &k,
            block_table: &bt,
            seqlens: &sl,
            softmax_scale: inp.softmax_scale,
            causal: inp.causal,
        };
        let mut ws = Workspace::default();
        self.decode(&args, &plan, &mut ws, &mut out, &mut lse)?;
        let out_h = s.clone_dtoh(&out)?;
        let lse_h = s.clone_dtoh(&lse)?;
        self.gpu.synchronize()?;
        Ok(MlaOutput { out: out_h.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect(), lse: lse_h })
    }
}

/// FlashMLA's figures for one decode: (bytes moved, FLOPs) for mean key length `s_k`.
pub fn mla_cost(shape: &MlaShape, mean_s_k: f64) -> (f64, f64) {
    let (b, s_q, h_q, h_kv) = (shape.batch as f64, shape.s_q as f64, shape.h_q as f64, shape.h_kv as f64);
    let bytes = b * (s_q * h_q * D_K as f64 + mean_s_k * h_kv * D_K as f64 + s_q * h_q * D_V as f64) * 2.0;
    let flops = b * h_q * s_q * mean_s_k * 2.0 * (D_K + D_V) as f64;
    (bytes, flops)
}
