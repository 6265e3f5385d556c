//! FP8 block-scaled GEMM launcher (`D = A·Bᵀ`): A `[m][k]` e4m3 with 1×128 scales `[m][k/128]`,
//! B `[n][k]` e4m3 with 128×128 scales `[ceil(n/128)][k/128]`, D `[m][n]` bf16. Shapes must satisfy
//! `k % 128 == 0` and `n % 8 == 0` (checked; DeepGEMM has the same K rule). The result equals
//! `gemm_ref::gemm_fp8_ref` up to f32 summation order and bf16 rounding.
//!
//! Two kernels with one signature and one grid (one 128×128 tile per CTA, 256 threads): the
//! `mma.sync` one (cuda/fp8_gemm.cu, sm_89+) and the Hopper `wgmma` one (cuda/fp8_gemm_wgmma.cu,
//! sm_90a only). [`Fp8Gemm::new`] picks `wgmma` on Hopper; [`Fp8Gemm::with_variant`] pins one, so
//! tests and benchmarks can run both on the same inputs.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{Gpu, arg_i32, check_len};
use crate::gpu_consts::GEMM_STAGES;
use crate::quant::{Fp8Matrix, QBLOCK};
use crate::{KernelError, Result, sources};

/// Which FP8 GEMM kernel an [`Fp8Gemm`] launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmVariant {
    /// `mma.sync m16n8k32 e4m3` (sm_89+; on Hopper ptxas lowers it to f16 tensor-core ops).
    MmaSync,
    /// `wgmma.mma_async m64n128k32 e4m3`: Hopper's FP8 tensor cores (sm_90a only).
    Wgmma,
}

impl GemmVariant {
    /// Both variants, the portable one first.
    pub const ALL: [GemmVariant; 2] = [GemmVariant::MmaSync, GemmVariant::Wgmma];

    /// Short name for logs and benchmark rows.
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::MmaSync => "mma.sync",
            GemmVariant::Wgmma => "wgmma",
        }
    }

    /// Whether this variant can run on a device compiled for `arch` (e.g. `sm_90a`).
    pub fn supported_on(self, arch: &str) -> bool {
        match self {
            GemmVariant::MmaSync => true,
            GemmVariant::Wgmma => arch == "sm_90a",
        }
    }

    /// (source, entry point, dynamic shared memory bytes).
    fn kernel(self) -> (sources::KernelSource, &'static str, usize) {
        match self {
            GemmVariant::MmaSync => {
                (sources::fp8_gemm(GEMM_STAGES), "fp8_gemm_nt", sources::gemm_smem_bytes(GEMM_STAGES))
            }
            GemmVariant::Wgmma => {
                (sources::fp8_gemm_wgmma(GEMM_STAGES), "fp8_gemm_nt_wgmma", sources::gemm_wgmma_smem_bytes(GEMM_STAGES))
            }
        }
    }
}

/// Launches the FP8 GEMM on one GPU.
pub struct Fp8Gemm {
    gpu: Arc<Gpu>,
    variant: GemmVariant,
}

/// Checks the shape rules of the kernel.
pub fn check_shape(m: usize, n: usize, k: usize) -> Result<()> {
    if m == 0 || n == 0 || k == 0 || !k.is_multiple_of(QBLOCK) || !n.is_multiple_of(8) {
        return Err(KernelError::InvalidArgument(format!(
            "fp8 gemm needs m, n, k > 0, k % 128 == 0 and n % 8 == 0; got m={m} n={n} k={k}"
        )));
    }
    Ok(())
}

impl Fp8Gemm {
    /// The GPU-verified variant (`mma.sync`). The `wgmma` variant is much faster on Hopper by
    /// design but has not run on a GPU yet, so it is opt-in through [`Fp8Gemm::with_variant`]
    /// until `kernels/scripts/gpu-check.sh` has passed with it (docs/kernels.md).
    pub fn new(gpu: Arc<Gpu>) -> Result<Fp8Gemm> {
        Self::with_variant(gpu, GemmVariant::MmaSync)
    }

    /// A launcher pinned to `variant`; `Unsupported` when the device cannot run it.
    pub fn with_variant(gpu: Arc<Gpu>, variant: GemmVariant) -> Result<Fp8Gemm> {
        gpu.require_fp8_mma()?;
        if !variant.supported_on(gpu.arch()) {
            return Err(KernelError::Unsupported(format!(
                "the {} FP8 GEMM needs sm_90a; {} is {}",
                variant.name(),
                gpu.name(),
                gpu.arch()
            )));
        }
        Ok(Fp8Gemm { gpu, variant })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn variant(&self) -> GemmVariant {
        self.variant
    }

    /// `d = a · bᵀ` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        a: &CudaSlice<u8>,
        sa: &CudaSlice<f32>,
        b: &CudaSlice<u8>,
        sb: &CudaSlice<f32>,
        d: &mut CudaSlice<u16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        check_shape(m, n, k)?;
        let kb = k / QBLOCK;
        check_len("a", a, m * k)?;
        check_len("sa", sa, m * kb)?;
        check_len("b", b, n * k)?;
        check_len("sb", sb, n.div_ceil(QBLOCK) * kb)?;
        check_len("d", d, m * n)?;
        let (src, entry, smem) = self.variant.kernel();
        let f = self.gpu.function(&src, entry, smem)?;
        let (mi, ni, ki) = (arg_i32("m", m)?, arg_i32("n", n)?, arg_i32("k", k)?);
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
        let mut l = self.gpu.stream().launch_builder(&f);
        l.arg(a).arg(sa).arg(b).arg(sb).arg(d).arg(&mi).arg(&ni).arg(&ki);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 };
        // SAFETY: both entry points (fp8_gemm_nt, fp8_gemm_nt_wgmma) take exactly these arguments; all
        // buffers were length-checked against (m, n, k), the kernels zero-fill loads past m/n and skip
        // stores past m/n, and k % 128 == 0; smem is what the variant's kernel lays out.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// Convenience for tests: host matrices in, host `m×n` f32 (from the bf16 output) out. The
    /// output is poisoned with NaN first, so an unwritten element shows up.
    pub fn gemm_host(&self, a: &Fp8Matrix, b: &Fp8Matrix) -> Result<Vec<f32>> {
        let (m, n, k) = (a.rows, b.rows, a.cols);
        if b.cols != k || a.scale_rows != m || a.scale_cols != k.div_ceil(QBLOCK) || b.scale_rows != n.div_ceil(QBLOCK)
        {
            return Err(KernelError::InvalidArgument("fp8 gemm operands have mismatched shapes or scales".into()));
        }
        check_shape(m, n, k)?;
        let s = self.gpu.stream();
        let da = s.clone_htod(&a.data)?;
        let dsa = s.clone_htod(&a.scales)?;
        let db = s.clone_htod(&b.data)?;
        let dsb = s.clone_htod(&b.scales)?;
        let mut dd = s.clone_htod(&vec![0xffffu16; m * n])?;
        self.gemm(&da, &dsa, &db, &dsb, &mut dd, m, n, k)?;
        let out = s.clone_dtoh(&dd)?;
        self.gpu.synchronize()?;
        Ok(out.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect())
    }
}

/// DeepGEMM's figures for one GEMM: (bytes moved, FLOPs), scales included in the bytes.
pub fn gemm_cost(m: usize, n: usize, k: usize) -> (f64, f64) {
    let (mf, nf, kf) = (m as f64, n as f64, k as f64);
    let kb = k.div_ceil(QBLOCK) as f64;
    let bytes = mf * kf + nf * kf + 2.0 * mf * nf + 4.0 * (mf * kb + (n.div_ceil(QBLOCK) as f64) * kb);
    (bytes, 2.0 * mf * nf * kf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_name_their_own_kernels() {
        assert!(GemmVariant::MmaSync.supported_on("sm_89") && GemmVariant::MmaSync.supported_on("sm_90a"));
        assert!(GemmVariant::Wgmma.supported_on("sm_90a"));
        assert!(!GemmVariant::Wgmma.supported_on("sm_90") && !GemmVariant::Wgmma.supported_on("sm_100"));
        assert_ne!(GemmVariant::MmaSync.name(), GemmVariant::Wgmma.name());
        for v in GemmVariant::ALL {
            let (src, entry, smem) = v.kernel();
            assert_eq!(src.entries, vec![entry], "{}", v.name());
            assert!(src.text.contains(&format!("{entry}(")), "{}: entry missing from the source", v.name());
            assert!((GEMM_STAGES * 2 * 128 * 128..=232_448).contains(&smem), "{}: {smem} bytes", v.name());
        }
        // The wgmma kernel aligns its tiles to 1024 bytes by hand and needs the slack for it.
        assert_eq!(GemmVariant::Wgmma.kernel().2, GemmVariant::MmaSync.kernel().2 + 1024);
    }
}
