//! FP8 quantization on the GPU (cuda/quant.cu): 1×128 activation quantization of an f32 batch
//! that is already on the device, so a training step never takes its batch back to the host.
//! Bit-identical to [`crate::quant::quantize_1x128`] (tested).

use cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};

use super::{Gpu, arg_i32, check_len};
use crate::quant::{Fp8Matrix, QBLOCK};
use crate::{KernelError, Result, sources};

/// Quantizes `x` (`rows × cols` f32) into `q` (e4m3 codes) and `scales` (`rows × ceil(cols/128)`).
pub fn quantize_1x128(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    rows: usize,
    cols: usize,
    q: &mut CudaSlice<u8>,
    scales: &mut CudaSlice<f32>,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(KernelError::InvalidArgument(format!("cannot quantize a {rows}×{cols} matrix")));
    }
    let kb = cols.div_ceil(QBLOCK);
    if x.len() < rows * cols {
        return Err(KernelError::InvalidArgument(format!("x holds {} values, needs {}", x.len(), rows * cols)));
    }
    check_len("q", q, rows * cols)?;
    check_len("scales", scales, rows * kb)?;
    let f = gpu.function(&sources::quant(), "quant_1x128_f32", 0)?;
    let (r, c) = (arg_i32("rows", rows)?, arg_i32("cols", cols)?);
    let grid = (u32::try_from(kb).map_err(|_| KernelError::InvalidArgument("cols".into()))?, r as u32, 1);
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(q).arg(scales).arg(&r).arg(&c);
    // SAFETY: matches quant_1x128_f32(const float*, u8*, float*, int, int); one warp per (row,
    // 128-column block) touches only columns < cols of its row and one scale, all length-checked.
    unsafe { b.launch(LaunchConfig { grid_dim: grid, block_dim: (32, 1, 1), shared_mem_bytes: 0 }) }?;
    Ok(())
}

/// Host convenience (tests): uploads `x`, quantizes on the GPU, downloads the result.
pub fn quantize_1x128_host(gpu: &Gpu, x: &[f32], rows: usize, cols: usize) -> Result<Fp8Matrix> {
    if x.len() != rows * cols {
        return Err(KernelError::InvalidArgument(format!("{} values for a {rows}×{cols} matrix", x.len())));
    }
    let s = gpu.stream();
    let dx = s.clone_htod(x)?;
    let mut dq = s.alloc_zeros::<u8>(rows * cols)?;
    let mut ds = s.alloc_zeros::<f32>(rows * cols.div_ceil(QBLOCK))?;
    quantize_1x128(gpu, &dx.as_view(), rows, cols, &mut dq, &mut ds)?;
    let data = s.clone_dtoh(&dq)?;
    let scales = s.clone_dtoh(&ds)?;
    gpu.synchronize()?;
    Ok(Fp8Matrix { rows, cols, data, scales, scale_rows: rows, scale_cols: cols.div_ceil(QBLOCK) })
}
