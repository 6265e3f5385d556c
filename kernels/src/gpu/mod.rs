//! GPU side (feature `cuda`): a [`Gpu`] (one device context + stream + loaded kernel modules),
//! NVRTC compilation with an on-disk cache ([`nvrtc`]), the MLA decode and FP8 GEMM launchers
//! ([`mla`], [`gemm`]), device-side random fills ([`fill`]), pinned host staging for loaders
//! ([`staging`]) and GPUDirect RDMA regions that storage writes into ([`direct`]).
//!
//! Invariants: nothing touches cudarc before [`crate::gpu_available`] (libcuda loadable) and, for
//! compilation, [`nvrtc::nvrtc_available`]: cudarc panics when a library is missing, and every
//! entry point here returns [`KernelError::NoGpu`] / [`KernelError::Compile`] instead. Kernels are
//! compiled for the device's own architecture (`sm_90a` on Hopper); the launchers check shapes and
//! buffer lengths before every launch, so a bad argument is an error, never an out-of-bounds access.

pub mod crc;
pub mod direct;
pub mod fill;
pub mod gemm;
pub mod kvload;
pub mod mla;
pub mod nvrtc;
pub mod quant;
pub mod staging;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys;
pub use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};

use crate::sources::KernelSource;
use crate::{KernelError, Result};
use nvrtc::KernelCache;

/// One CUDA device with its stream and the kernel modules loaded so far.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    cc: (i32, i32),
    sms: usize,
    arch: String,
    cache: KernelCache,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
}

impl Gpu {
    /// Opens device `ordinal`. `NoGpu` when libcuda is missing or there is no such device.
    pub fn new(ordinal: usize) -> Result<Arc<Gpu>> {
        Self::with_cache(ordinal, KernelCache::default_dir())
    }

    /// Like [`Gpu::new`] with an explicit kernel cache.
    pub fn with_cache(ordinal: usize, cache: KernelCache) -> Result<Arc<Gpu>> {
        if !crate::gpu_available() {
            return Err(KernelError::NoGpu("libcuda is not loadable (no NVIDIA driver)".into()));
        }
        let count = CudaContext::device_count().map_err(|e| KernelError::NoGpu(format!("cuDeviceGetCount: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(KernelError::NoGpu(format!("device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal)?;
        let cc = ctx.compute_capability()?;
        let sms = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let name = ctx.name()?;
        // Hopper gets its arch-specific target (wgmma/setmaxnreg need the `a` suffix).
        let arch = if cc == (9, 0) { "sm_90a".to_string() } else { format!("sm_{}{}", cc.0, cc.1) };
        let stream = ctx.default_stream();
        Ok(Arc::new(Gpu { ctx, stream, name, cc, sms, arch, cache, modules: Mutex::new(HashMap::new()) }))
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }
    pub fn sm_count(&self) -> usize {
        self.sms
    }
    /// The NVRTC target kernels are compiled for (`sm_90a` on Hopper).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Errors unless the device can run the `mma.sync` e4m3 / bf16 kernels (sm_89 or newer).
    pub fn require_fp8_mma(&self) -> Result<()> {
        if self.cc < (8, 9) {
            return Err(KernelError::Unsupported(format!(
                "{} is sm_{}{}; the kernels need sm_89+ (FP8 mma) — Hopper sm_90a is the target",
                self.name, self.cc.0, self.cc.1
            )));
        }
        Ok(())
    }

    /// The module for `src`, compiled (or taken from the cache) and loaded on first use.
    pub fn module(&self, src: &KernelSource) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(&src.name) {
            return Ok(m.clone());
        }
        let compiled = self.cache.get_or_compile(src, &self.arch)?;
        if !compiled.from_cache {
            tracing::debug!(kernel = %src.name, arch = %self.arch, log = %compiled.log, "compiled kernel");
        }
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin))?;
        mods.insert(src.name.clone(), module.clone());
        Ok(module)
    }

    /// Kernel `entry` of `src`, with its dynamic shared memory limit raised to `smem` bytes.
    pub fn function(&self, src: &KernelSource, entry: &str, smem: usize) -> Result<CudaFunction> {
        let f = self.module(src)?.load_function(entry)?;
        if smem > 48 * 1024 {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                i32::try_from(smem).map_err(|_| KernelError::InvalidArgument("shared memory size".into()))?,
            )?;
        }
        Ok(f)
    }

    /// Waits for all work queued on the stream; surfaces asynchronous launch errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        Ok(())
    }

    /// A timing event (CU_EVENT_DEFAULT) recorded on the stream now.
    pub fn record_event(&self) -> Result<cudarc::driver::CudaEvent> {
        let e = self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        e.record(&self.stream)?;
        Ok(e)
    }
}

/// `InvalidArgument` unless the device buffer holds at least `need` elements.
pub(crate) fn check_len<T>(what: &str, s: &CudaSlice<T>, need: usize) -> Result<()> {
    if s.len() < need {
        return Err(KernelError::InvalidArgument(format!(
            "{what}: device buffer holds {} elements, needs {need}",
            s.len()
        )));
    }
    Ok(())
}

/// `usize` → `i32` kernel argument, or `InvalidArgument`.
pub(crate) fn arg_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::InvalidArgument(format!("{what} = {v} does not fit a 32-bit index")))
}
