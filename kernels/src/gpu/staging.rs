//! Host→GPU staging for the loaders: a bounded pool of pinned (page-locked) host buffers that the
//! sample loader reads batches into ([`PinnedPool`] implements `BatchBuffers`), and a
//! double-buffered uploader ([`H2dPipeline`]) that copies a filled buffer into one of its device
//! slots on its own copy stream, so the copy of batch k+1 overlaps the kernels working on batch k.
//!
//! Pinned memory is allocated without `WRITECOMBINED` (the loader reads samples back for their
//! CRC, and write-combined memory is very slow to read from the CPU).
//!
//! Invariants (these make the raw-pointer `Deref` of [`PinnedBuf`] sound):
//! - A [`PinnedBuf`] is the only handle to its memory while it lives; the CPU touches it only
//!   through that handle.
//! - [`H2dPipeline::upload`] consumes the buffer: the async copy (`cuMemcpyHtoDAsync`, also for a
//!   partly filled buffer) may still be reading it, so it goes back to the pool together with an
//!   event recorded after the copy, and [`PinnedPool`] waits for that event before handing the
//!   buffer out again.
//! - A device slot is overwritten only after the compute stream passed the point where the
//!   previous batch in that slot was [`H2dPipeline::release`]d; kernels use a slot only after
//!   [`H2dPipeline::acquire`] made the compute stream wait for its copy.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtrMut, PinnedHostSlice};
use tokio::sync::Semaphore;

use super::Gpu;
use crate::sample_loader::BatchBuffers;
use crate::{KernelError, Result};

/// A pooled buffer and the end of the last async copy that read it (waited for before reuse).
type Free = (PinnedHostSlice<u8>, Option<CudaEvent>);

struct PoolInner {
    free: Mutex<Vec<Free>>,
    permits: Semaphore,
    buf_size: usize,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // A buffer may still be read by an upload: wait before its memory is freed (the host
        // slice's own drop waits only for cudarc-tracked copies).
        let free = self.free.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, pending) in free.iter() {
            if let Some(e) = pending
                && let Err(err) = e.synchronize()
            {
                tracing::error!(error = %err, "waiting for an upload before freeing its pinned buffer failed");
            }
        }
    }
}

/// A bounded pool of equally sized pinned host buffers, allocated once.
#[derive(Clone)]
pub struct PinnedPool {
    inner: Arc<PoolInner>,
}

/// One pinned buffer, out of its pool until dropped. Derefs to its first `len` bytes.
pub struct PinnedBuf {
    host: Option<PinnedHostSlice<u8>>,
    /// Set by [`H2dPipeline::upload`]: the copy that still reads this buffer.
    pending: Option<CudaEvent>,
    ptr: *mut u8,
    len: usize,
    pool: Arc<PoolInner>,
}

// SAFETY: the buffer is exclusively owned (module invariants); the raw pointer is only a cached
// address of memory owned by `host`, which cudarc declares Send.
unsafe impl Send for PinnedBuf {}

impl PinnedPool {
    /// `count` pinned buffers of `buf_size` bytes each.
    pub fn new(gpu: &Gpu, buf_size: usize, count: usize) -> Result<PinnedPool> {
        if buf_size == 0 || count == 0 {
            return Err(KernelError::InvalidArgument("pinned pool needs buf_size > 0 and count > 0".into()));
        }
        let mut free = Vec::with_capacity(count);
        for _ in 0..count {
            // SAFETY: the memory is uninitialized; PinnedBuf hands it out only as bytes (any bit
            // pattern is a valid u8), and it is zeroed below before first use.
            let mut h = unsafe { gpu.context().alloc_pinned_with_flags::<u8>(buf_size, 0) }?;
            h.as_mut_slice()?.fill(0);
            free.push((h, None));
        }
        Ok(PinnedPool {
            inner: Arc::new(PoolInner { free: Mutex::new(free), permits: Semaphore::new(count), buf_size }),
        })
    }

    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// A buffer whose first `len` bytes are usable; waits while all are out, and for any copy
    /// still reading it.
    pub async fn get(&self, len: usize) -> Result<PinnedBuf> {
        if len > self.inner.buf_size {
            return Err(KernelError::InvalidArgument(format!(
                "batch of {len} bytes does not fit pinned buffers of {} bytes",
                self.inner.buf_size
            )));
        }
        let permit =
            self.inner.permits.acquire().await.map_err(|_| KernelError::InvalidArgument("pool closed".into()))?;
        permit.forget();
        let entry = self.inner.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some((mut host, pending)) = entry else {
            self.inner.permits.add_permits(1);
            return Err(KernelError::InvalidArgument("pinned pool accounting broken".into()));
        };
        // Wait for the last upload that read this buffer, then for any cudarc-tracked copy.
        let ready = match pending.as_ref().map(|e| e.synchronize()).transpose() {
            Ok(_) => host.as_mut_ptr(),
            Err(e) => Err(e),
        };
        let ptr = match ready {
            Ok(p) => p,
            Err(e) => {
                self.inner.free.lock().unwrap_or_else(|p| p.into_inner()).push((host, pending));
                self.inner.permits.add_permits(1);
                return Err(e.into());
            }
        };
        Ok(PinnedBuf { host: Some(host), pending: None, ptr, len, pool: self.inner.clone() })
    }
}

impl BatchBuffers for PinnedPool {
    type Buf = PinnedBuf;
    async fn acquire(&self, len: usize) -> Result<PinnedBuf> {
        self.get(len).await
    }
}

impl Deref for PinnedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` addresses `buf_size >= len` bytes owned by `host`, which lives as long as
        // self; every copy that read it finished before `get` returned (as_mut_ptr synchronized its
        // event), and no copy can start while this handle exists (module invariants).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for PinnedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push((h, self.pending.take()));
            self.pool.permits.add_permits(1);
        }
    }
}

/// Device slots fed from pinned buffers on a separate copy stream (module note).
pub struct H2dPipeline {
    gpu: Arc<Gpu>,
    copy: Arc<CudaStream>,
    slots: Vec<CudaSlice<u8>>,
    /// Per slot: the compute stream's release point of the last batch that used it.
    released: Vec<Option<CudaEvent>>,
    /// Per slot: the end of the copy that filled it.
    ready: Vec<Option<CudaEvent>>,
    lens: Vec<usize>,
    next: usize,
}

impl H2dPipeline {
    /// `depth` device slots (2 = double buffering) of `slot_bytes` each.
    pub fn new(gpu: Arc<Gpu>, slot_bytes: usize, depth: usize) -> Result<H2dPipeline> {
        if depth == 0 || slot_bytes == 0 {
            return Err(KernelError::InvalidArgument("h2d pipeline needs depth > 0 and slot_bytes > 0".into()));
        }
        let copy = gpu.context().new_stream()?;
        let mut slots = Vec::with_capacity(depth);
        for _ in 0..depth {
            slots.push(gpu.stream().alloc_zeros::<u8>(slot_bytes)?);
        }
        Ok(H2dPipeline {
            gpu,
            copy,
            slots,
            released: (0..depth).map(|_| None).collect(),
            ready: (0..depth).map(|_| None).collect(),
            lens: vec![0; depth],
            next: 0,
        })
    }

    /// Starts copying `buf` into the next slot and returns the slot index. Consumes the buffer
    /// (back to its pool; reused only after this copy finished).
    pub fn upload(&mut self, mut buf: PinnedBuf) -> Result<usize> {
        let i = self.next;
        let len = buf.len;
        if len > self.slots[i].len() {
            return Err(KernelError::InvalidArgument(format!("{len} bytes exceed the device slot")));
        }
        if let Some(ev) = self.released[i].take() {
            self.copy.wait(&ev)?;
        }
        if buf.host.is_none() {
            return Err(KernelError::InvalidArgument("pinned buffer already released".into()));
        }
        {
            let (dptr, _record) = self.slots[i].device_ptr_mut(&self.copy);
            // SAFETY: `buf.ptr` addresses at least `len` bytes of pinned memory owned by `buf.host`;
            // the copy is asynchronous, so the buffer must not be written or freed until it ends:
            // `buf` returns to its pool with the event recorded below as `pending`, and the pool
            // waits for that event before handing the buffer out again (PinnedHostSlice's drop
            // waits only for its own event, so the pool keeps the host slice alive meanwhile).
            // The device slot holds at least `len` bytes (checked above) and `_record` orders
            // the write against cudarc's tracking of the slot.
            unsafe {
                let src = std::slice::from_raw_parts(buf.ptr as *const u8, len);
                cudarc::driver::result::memcpy_htod_async(dptr, src, self.copy.cu_stream())?;
            }
        }
        buf.pending = Some(self.copy.record_event(None)?);
        self.ready[i] = Some(self.copy.record_event(None)?);
        self.lens[i] = len;
        self.next = (i + 1) % self.slots.len();
        drop(buf);
        Ok(i)
    }

    /// Makes the compute stream wait for slot `i`'s copy and returns the slot and its length.
    pub fn acquire(&mut self, i: usize) -> Result<(&CudaSlice<u8>, usize)> {
        let ev = self.ready.get_mut(i).ok_or_else(|| KernelError::InvalidArgument(format!("no slot {i}")))?;
        if let Some(ev) = ev.take() {
            self.gpu.stream().wait(&ev)?;
        }
        Ok((&self.slots[i], self.lens[i]))
    }

    /// Marks slot `i` free once the work enqueued so far on the compute stream is done.
    pub fn release(&mut self, i: usize) -> Result<()> {
        let r = self.released.get_mut(i).ok_or_else(|| KernelError::InvalidArgument(format!("no slot {i}")))?;
        *r = Some(self.gpu.stream().record_event(None)?);
        Ok(())
    }

    /// Waits for every copy queued so far.
    pub fn synchronize(&self) -> Result<()> {
        self.copy.synchronize()?;
        Ok(())
    }
}
