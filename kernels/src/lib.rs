//! t3fs-kernels: GPU kernels (MLA decode, FP8 block-scaled GEMM) compiled at run time by NVRTC
//! through cudarc, each with a CPU reference, and the GPU data loaders that feed them from t3fs.
//!
//! Status: only the device probe exists yet; the kernels and loaders are issue 8. The probe is the
//! rule every later CUDA call follows: cudarc panics when libcuda is missing, so nothing may touch
//! CUDA before [`gpu_available`] says it is there.

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
