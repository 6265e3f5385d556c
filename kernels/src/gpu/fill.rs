//! Device-side random fills (cuda/util.cu): benchmark inputs of several gigabytes are generated
//! on the GPU from a seed instead of crossing PCIe, and are reproducible.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::Gpu;
use crate::Result;
use crate::sources;

fn cfg() -> LaunchConfig {
    LaunchConfig { grid_dim: (1024, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// Uniform bf16 values in [-scale, scale).
pub fn bf16(gpu: &Gpu, dst: &mut CudaSlice<u16>, seed: u64, scale: f32) -> Result<()> {
    let f = gpu.function(&sources::util(), "fill_bf16", 0)?;
    let n = dst.len() as u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dst).arg(&n).arg(&seed).arg(&scale);
    // SAFETY: fill_bf16(bf16*, u64 n, u64 seed, float) writes indices < n of `dst`, which holds n elements.
    unsafe { b.launch(cfg()) }?;
    Ok(())
}

/// Random finite e4m3 codes.
pub fn e4m3(gpu: &Gpu, dst: &mut CudaSlice<u8>, seed: u64) -> Result<()> {
    let f = gpu.function(&sources::util(), "fill_e4m3", 0)?;
    let n = dst.len() as u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dst).arg(&n).arg(&seed);
    // SAFETY: fill_e4m3(u8*, u64 n, u64 seed) writes indices < n of `dst`, which holds n elements.
    unsafe { b.launch(cfg()) }?;
    Ok(())
}

/// Uniform f32 values in [lo, hi).
pub fn f32s(gpu: &Gpu, dst: &mut CudaSlice<f32>, seed: u64, lo: f32, hi: f32) -> Result<()> {
    let f = gpu.function(&sources::util(), "fill_f32", 0)?;
    let n = dst.len() as u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dst).arg(&n).arg(&seed).arg(&lo).arg(&hi);
    // SAFETY: fill_f32(float*, u64 n, u64 seed, float, float) writes indices < n of `dst` (n elements).
    unsafe { b.launch(cfg()) }?;
    Ok(())
}
