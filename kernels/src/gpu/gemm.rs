//! FP8 block-scaled GEMM launcher (`D = A·Bᵀ`, cuda/fp8_gemm.cu): A `[m][k]` e4m3 with 1×128
//! scales `[m][k/128]`, B `[n][k]` e4m3 with 128×128 scales `[ceil(n/128)][k/128]`, D `[m][n]`
//! bf16. Shapes must satisfy `k % 128 == 0` and `n % 8 == 0` (checked; DeepGEMM has the same K
//! rule). The result equals `gemm_ref::gemm_fp8_ref` up to f32 summation order and bf16 rounding.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{Gpu, arg_i32, check_len};
use crate::gpu_consts::GEMM_STAGES;
use crate::quant::{Fp8Matrix, QBLOCK};
use crate::{KernelError, Result, sources};

/// Launches the FP8 GEMM on one GPU.
pub struct Fp8Gemm {
    gpu: Arc<Gpu>,
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
    pub fn new(gpu: Arc<Gpu>) -> Result<Fp8Gemm> {
        gpu.require_fp8_mma()?;
        Ok(Fp8Gemm { gpu })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
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
        let smem = sources::gemm_smem_bytes(GEMM_STAGES);
        let f = self.gpu.function(&sources::fp8_gemm(GEMM_STAGES), "fp8_gemm_nt", smem)?;
        let (mi, ni, ki) = (arg_i32("m", m)?, arg_i32("n", n)?, arg_i32("k", k)?);
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
        let mut l = self.gpu.stream().launch_builder(&f);
        l.arg(a).arg(sa).arg(b).arg(sb).arg(d).arg(&mi).arg(&ni).arg(&ki);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: smem as u32 };
        // SAFETY: matches fp8_gemm_nt's signature; all buffers were length-checked against (m, n, k),
        // the kernel zero-fills loads past m/n and skips stores past m/n, and k % 128 == 0.
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
