//! KV caches from t3fs straight into a GPU paged cache: the batch's pages are read with the
//! batch-read API into a pinned host buffer laid out as the paged cache, then copied to the
//! device in one DMA. The result is what [`super::mla::MlaDecoder::decode`] takes.
//!
//! With GPUDirect RDMA (a [`DeviceRegion`]: device memory registered with the RDMA transport),
//! [`load_to_region`] has the storage nodes write the pages straight into the device cache
//! instead: no staging buffer and no host copy. [`DeviceRegion::new`] says why when that path is
//! not available (no DMA-BUF export, no RDMA NIC), and the pinned path is the fallback.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, sys};
use t3fs_client::{BatchConfig, Client};

use super::Gpu;
use super::direct::DeviceRegion;
use super::staging::PinnedPool;
use crate::kvcache::{self, KvBatchPlan, page_bytes};
use crate::{KernelError, Result};

/// A paged KV cache on the device and the plan (seqlens, block table) that addresses it.
pub struct DeviceKvBatch {
    pub cache: CudaSlice<u16>,
    pub plan: KvBatchPlan,
    pub block_table: CudaSlice<i32>,
    pub seqlens: CudaSlice<i32>,
}

/// Loads the sequences at `paths` (one file per sequence, `kvcache` layout) into a device paged
/// cache through one pinned staging buffer from `staging` (it must hold the batch's pages).
pub async fn load_to_device(
    gpu: &Arc<Gpu>,
    client: &Arc<Client>,
    paths: &[String],
    h_kv: usize,
    staging: &PinnedPool,
    cfg: BatchConfig,
) -> Result<DeviceKvBatch> {
    let buf = staging.get(staging.buf_size()).await?;
    let (plan, buf) = kvcache::load_batch(client, paths, h_kv, buf, cfg).await?;
    let bytes = plan.num_blocks.max(1) * page_bytes(h_kv);
    if bytes > buf.len() {
        return Err(KernelError::InvalidArgument("staging buffer smaller than the batch".into()));
    }
    let s = gpu.stream();
    let mut cache = s.alloc_zeros::<u16>(bytes / 2)?;
    // SAFETY: pinned allocations are page aligned, so the buffer is u16-aligned; `bytes` is even
    // (a page is 64·h_kv·576·2 bytes) and within the buffer; u16 has no invalid bit patterns.
    let src = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u16, bytes / 2) };
    s.memcpy_htod(src, &mut cache)?;
    let block_table = s.clone_htod(&plan.block_table)?;
    let seqlens = s.clone_htod(&plan.seqlens)?;
    gpu.synchronize()?;
    drop(buf);
    Ok(DeviceKvBatch { cache, plan, block_table, seqlens })
}

/// A batch loaded into a [`DeviceRegion`]: the region is the paged cache
/// ([`DeviceRegion::as_u16`]); the plan, block table and seqlens address it.
pub struct RegionKvBatch {
    pub plan: KvBatchPlan,
    pub block_table: CudaSlice<i32>,
    pub seqlens: CudaSlice<i32>,
}

/// Loads the sequences at `paths` into `region` as a paged cache (block `k` at byte
/// `k · page_bytes(h_kv)`), `depth` page reads at a time, by GPUDirect RDMA: storage nodes write
/// the pages in place (each checked against the node's CRC32C on the GPU); what comes back
/// inline (CRC-checked on the host) is copied in and holes are zeroed on the GPU's stream.
/// Returns once the cache is complete on the device.
pub async fn load_to_region(
    gpu: &Arc<Gpu>,
    client: &Arc<Client>,
    paths: &[String],
    h_kv: usize,
    region: &DeviceRegion,
    depth: usize,
) -> Result<RegionKvBatch> {
    let plan = kvcache::load_batch_to_region(client, paths, h_kv, region.registration(), depth, |r| {
        region.apply(r)?;
        region.verify(r)
    })
    .await?;
    let s = gpu.stream();
    let block_table = s.clone_htod(&plan.block_table)?;
    let seqlens = s.clone_htod(&plan.seqlens)?;
    gpu.synchronize()?;
    Ok(RegionKvBatch { plan, block_table, seqlens })
}

/// Whether the device can export its memory as DMA-BUF file descriptors
/// (`CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED`), the route for GPUDirect RDMA registration
/// (`ibv_reg_dmabuf_mr`, see [`super::direct`]).
pub fn dmabuf_supported(gpu: &Gpu) -> Result<bool> {
    Ok(gpu.context().attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED)? != 0)
}
