//! CRC32C of device memory (cuda/crc32c.cu): segment CRCs on the GPU, combined on the host
//! ([`crate::crc`]), so bytes written straight into GPU memory are checked where they landed.

use cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};

use super::Gpu;
use crate::crc::{SEGMENT, combine, segments};
use crate::{KernelError, Result, sources};

/// The CRC32C of `data` (device memory), computed on `gpu`'s stream; waits for the result.
pub fn crc32c(gpu: &Gpu, data: &CudaView<'_, u8>) -> Result<u32> {
    let len = data.len();
    if len == 0 {
        return Ok(0);
    }
    let nseg = segments(len, SEGMENT);
    let n = u32::try_from(nseg).map_err(|_| KernelError::InvalidArgument(format!("{len} bytes is too long")))?;
    let s = gpu.stream();
    let mut out = s.alloc_zeros::<u32>(nseg)?;
    let f = gpu.function(&sources::crc32c(), "crc32c_segments", 0)?;
    let (len64, seg) = (len as u64, SEGMENT as u32);
    let mut b = s.launch_builder(&f);
    b.arg(data).arg(&len64).arg(&seg).arg(&mut out).arg(&n);
    // SAFETY: matches crc32c_segments(const u8*, u64, u32, u32*, u32) with 256 threads per block
    // (the kernel's table needs exactly that); thread i reads bytes [i·seg, min((i+1)·seg, len))
    // of `data` and writes out[i], i < nseg = out.len().
    unsafe {
        b.launch(LaunchConfig { grid_dim: (n.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
    }?;
    let segs = s.clone_dtoh(&out)?;
    s.synchronize()?;
    Ok(combine(&segs, SEGMENT, len))
}
