//! Compiles every kernel source for Hopper (`sm_90a`) to a CUBIN with NVRTC. Needs only libnvrtc
//! (no GPU, no driver): CI installs it from the `nvidia-cuda-nvrtc` wheel. Skipped with a message
//! where libnvrtc is absent or the crate is built without `cuda`.
#![cfg(feature = "cuda")]

use t3fs_kernels::gpu::nvrtc::{compile_cubin, nvrtc_available, nvrtc_version};
use t3fs_kernels::sources;

#[test]
fn every_kernel_compiles_for_sm90a_without_spills() {
    if !nvrtc_available() {
        eprintln!("SKIPPED: libnvrtc not found (install nvidia-cuda-nvrtc and set LD_LIBRARY_PATH)");
        return;
    }
    let v = nvrtc_version().expect("nvrtc version");
    eprintln!("NVRTC {}.{}", v.0, v.1);
    for src in sources::all() {
        let c = compile_cubin(&src, "sm_90a").unwrap_or_else(|e| panic!("{}: {e}", src.name));
        eprintln!("{}: {} bytes of CUBIN\n{}", src.name, c.cubin.len(), c.log.trim());
        assert!(c.cubin.starts_with(b"\x7fELF"), "{}: not an ELF cubin", src.name);
        assert_eq!(c.spill_bytes(), 0, "{} spills registers:\n{}", src.name, c.log);
    }
}
