//! GPUDirect RDMA for the loaders: GPU memory registered with the bulk transport, so storage nodes
//! write file bytes straight into it and nothing is staged in host memory.
//!
//! How: [`DeviceRegion::new`] allocates device memory, exports it as a DMA-BUF
//! (`cuMemGetHandleForAddressRange`, `CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD`) and registers it with
//! the client's bulk transport (`BulkClient::register_dmabuf`, `ibv_reg_dmabuf_mr` on RDMA), with
//! the device address as the I/O virtual address. Reads go through
//! [`t3fs_client::Client::read_to_region`]; [`DeviceRegion::apply`] then copies in the parts that
//! came back to the host (a node may answer in its frame) and zeroes holes, on the GPU's stream,
//! and [`DeviceRegion::verify`] checks what the nodes wrote in place against the CRC32C they sent,
//! with a CRC kernel on the GPU.
//!
//! When: only where the device exports DMA-BUFs (`CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED`, Linux
//! with the open kernel modules) and the transport can register them (feature `rdma` and an RDMA
//! NIC). Elsewhere `new` returns [`KernelError::Unsupported`] saying why, and loaders use the
//! pinned staging path ([`super::kvload::load_to_device`]); `decode_from_t3fs` shows the choice.
//!
//! UNTESTED ON HARDWARE: no machine this was built on has both a GPU and an RDMA NIC. The
//! host-side logic (region reads, parts, offsets) is tested over TCP with host memory standing
//! for the region (`cli/tests/batch_read.rs`, `cli/tests/loaders.rs`).
//!
//! Invariants: the registration is dropped before the memory it names (field order); the region
//! is at least as large as asked, rounded up to 2 MiB, and allocated with plain `cuMemAlloc`
//! (DMA-BUF export wants page-aligned ranges of such memory, not stream-ordered pool memory);
//! [`DeviceRegion::apply`] writes only inside the region (each part is bounds-checked).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, result, sys};
use t3fs_client::{Client, RegionPart, RegionRead};
use t3fs_common::bulk::Registration;

use super::Gpu;
use super::kvload::dmabuf_supported;
use crate::{KernelError, Result};

/// Export granularity: regions are rounded up to this many bytes.
const ALIGN: usize = 2 << 20;

/// Device memory registered for storage nodes to write into (module note).
pub struct DeviceRegion {
    // Field order: the registration (the NIC's right to write) goes before the memory.
    reg: Registration,
    mem: CudaSlice<u16>,
    dptr: sys::CUdeviceptr,
    gpu: Arc<Gpu>,
}

impl DeviceRegion {
    /// At least `bytes` bytes of device memory, registered with `client`'s bulk transport.
    /// `Unsupported` (with the reason) where GPUDirect RDMA is not available here.
    pub fn new(gpu: &Arc<Gpu>, client: &Client, bytes: usize) -> Result<DeviceRegion> {
        if !dmabuf_supported(gpu)? {
            return Err(KernelError::Unsupported("this GPU (or driver) cannot export DMA-BUFs".into()));
        }
        let len = bytes.max(1).div_ceil(ALIGN) * ALIGN;
        let s = gpu.stream();
        // A plain cuMemAlloc allocation, not one from the stream-ordered pool that cudarc's
        // `alloc` uses where it can: DMA-BUF export is documented for cuMemAlloc'd memory. The
        // slice frees it on drop (cuMemFreeAsync accepts cuMemAlloc'd pointers).
        gpu.context().bind_to_thread()?;
        // SAFETY: a fresh allocation of `len` bytes (> 0), owned by the slice made from it below.
        let raw = unsafe { result::malloc_sync(len) }?;
        // SAFETY: `raw` is a live allocation of `len` bytes = `len / 2` u16 values, owned from here
        // on by `mem` (freed on its drop); it is zeroed right away (any bit pattern is a valid u16).
        let mut mem = unsafe { s.upgrade_device_ptr::<u16>(raw, len / 2) };
        s.memset_zeros(&mut mem)?;
        let dptr = {
            let (p, _sync) = mem.device_ptr(s);
            p
        };
        if dptr % 4096 != 0 {
            return Err(KernelError::Unsupported(format!("device allocation at {dptr:#x} is not page aligned")));
        }
        let mut fd: std::os::raw::c_int = -1;
        // SAFETY: `dptr..dptr + len` is one live allocation (`mem`, owned by the returned region);
        // the call writes one int through a valid pointer.
        let rc = unsafe {
            sys::cuMemGetHandleForAddressRange(
                (&mut fd as *mut std::os::raw::c_int).cast(),
                dptr,
                len,
                sys::CUmemRangeHandleType::CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD,
                0,
            )
        };
        if rc != sys::cudaError_enum::CUDA_SUCCESS || fd < 0 {
            return Err(KernelError::Unsupported(format!("cuMemGetHandleForAddressRange: {rc:?}")));
        }
        // SAFETY: the driver returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the memory behind the DMA-BUF (`mem`) lives in the returned region, whose field
        // order drops the registration first; the MR holds its own reference to the DMA-BUF, so
        // `fd` is closed when this function returns.
        let reg = unsafe { client.bulk().register_dmabuf(fd.as_raw_fd(), 0, len, dptr) }
            .map_err(|e| KernelError::Unsupported(format!("registering device memory: {e}")))?;
        Ok(DeviceRegion { reg, mem, dptr, gpu: gpu.clone() })
    }

    /// The registration to pass to [`Client::read_to_region`].
    pub fn registration(&self) -> &Registration {
        &self.reg
    }

    /// The region as bf16 values (u16 bits), e.g. a paged KV cache for the MLA decoder.
    pub fn as_u16(&self) -> &CudaSlice<u16> {
        &self.mem
    }

    pub fn len(&self) -> usize {
        self.mem.len() * 2
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Checks every part a storage node wrote in place against the CRC32C it sent, with the GPU
    /// CRC kernel ([`super::crc`]); `Format` naming the part on a mismatch. Waits for the GPU.
    pub fn verify(&self, read: &RegionRead) -> Result<()> {
        for part in &read.parts {
            let RegionPart::Written { offset, len, crc } = *part else { continue };
            if offset.checked_add(len).is_none_or(|end| end > self.len()) {
                return Err(KernelError::InvalidArgument(format!("{len} bytes at {offset} outside the region")));
            }
            // SAFETY: u16 -> u8 reinterprets initialized device memory as bytes (any bit pattern is a
            // valid u8); the view covers the region's `len()` bytes exactly.
            let bytes = unsafe { self.mem.transmute::<u8>(self.len()) }
                .ok_or_else(|| KernelError::InvalidArgument("region view".into()))?;
            let got = super::crc::crc32c(&self.gpu, &bytes.slice(offset..offset + len))?;
            if got != crc {
                return Err(KernelError::Format(format!(
                    "{len} bytes written into GPU memory at {offset}: crc {got:#010x}, the storage node sent {crc:#010x}"
                )));
            }
        }
        Ok(())
    }

    /// Copies in what a region read returned inline and zeroes its holes, on the GPU's stream
    /// (asynchronous; [`Gpu::synchronize`] before reading the region on the host).
    pub fn apply(&self, read: &RegionRead) -> Result<()> {
        let stream = self.gpu.stream().cu_stream();
        for part in &read.parts {
            let (at, n) = part.span();
            if at.checked_add(n).is_none_or(|end| end > self.len()) {
                return Err(KernelError::InvalidArgument(format!(
                    "{n} bytes at {at} outside a {}-byte region",
                    self.len()
                )));
            }
            let dst = self.dptr + at as u64;
            match part {
                RegionPart::Written { .. } => {}
                // SAFETY: `dst..dst + n` is inside the region (checked above); for pageable host
                // memory the driver has staged the source when the call returns, so `data` may go.
                RegionPart::Inline { data, .. } => unsafe { result::memcpy_htod_async(dst, data, stream) }?,
                // SAFETY: as above.
                RegionPart::Zero { .. } => unsafe { result::memset_d8_async(dst, 0, n, stream) }?,
            }
        }
        Ok(())
    }
}
