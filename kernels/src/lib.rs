//! t3fs-kernels: the two kernels that dominate DeepSeek-style inference and training, MLA decoding
//! over a paged KV cache and FP8 GEMM with fine-grained (1×128 / 128×128) scaling, each with a
//! pure-Rust CPU reference, plus the loaders that feed them from t3fs.
//!
//! - CPU references (always compiled): [`fp8`] (e4m3 codec), [`quant`] (1×128 activation and
//!   128×128 weight quantizers), [`gemm_ref`] (block-scaled FP8 GEMM), [`mla_ref`] (MLA decode),
//!   [`plan`] (FlashMLA-style split-KV planner and the LSE-weighted combine), [`check`] (the
//!   comparison metrics tests and benchmarks use), [`crc`] (segmented CRC32C, the GPU CRC
//!   kernel's reference).
//! - GPU kernels (feature `cuda`): CUDA C++ sources embedded in the crate, compiled at run time by
//!   NVRTC for the device's architecture and cached on disk; launched through cudarc (`gpu`).
//! - Loaders: [`records`] (the record-file format for training samples), [`sample_loader`]
//!   (epochs, shuffling, batched random reads through the client's batch-read API) and [`kvcache`]
//!   (paged KV caches stored as t3fs files).
//!
//! The rule every CUDA call follows: cudarc panics when libcuda is missing, so nothing may touch
//! CUDA before [`gpu_available`] says it is there; every GPU entry point returns
//! [`KernelError::NoGpu`] instead of panicking.

pub mod check;
pub mod crc;
pub mod error;
pub mod fp8;
pub mod gemm_ref;
pub mod kvcache;
pub mod mla_ref;
pub mod plan;
pub mod quant;
pub mod records;
pub mod sample_loader;
pub mod sources;

/// Launch constants shared by the sources and the launchers.
pub mod gpu_consts {
    /// Pipeline depth of the FP8 GEMM kernel.
    pub const GEMM_STAGES: usize = 4;
}

#[cfg(feature = "cuda")]
pub mod gpu;

pub use error::{KernelError, Result};

/// Whether a CUDA driver is loadable on this machine (always false without the `cuda` feature).
pub fn gpu_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: is_culib_present only tries to dlopen libcuda and reports whether it succeeded;
        // it does not call into the driver.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_never_panics() {
        // On machines without a GPU this must be false rather than a panic.
        let _ = super::gpu_available();
    }
}
