//! The kernels crate's error type: one enum for shape checks, GPU availability, run-time
//! compilation, driver calls, file formats and the t3fs client, so callers match on the kind of
//! failure instead of parsing strings.

/// Everything that can go wrong in `t3fs-kernels`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Shapes or arguments that the operation does not accept; nothing was launched.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No usable GPU (no driver library, no device, or built without the `cuda` feature).
    #[error("no GPU: {0}")]
    NoGpu(String),
    /// The GPU exists but cannot run this kernel (e.g. not compute capability 9.0 for sm_90a code).
    #[error("unsupported device: {0}")]
    Unsupported(String),
    /// NVRTC is missing or rejected a kernel source; the log says why.
    #[error("kernel compilation failed: {0}")]
    Compile(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// A stored file (record file, KV-cache file) is malformed or fails its checksum.
    #[error("bad data: {0}")]
    Format(String),
    /// Local file I/O (kernel cache, record files on a local path).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The t3fs client failed (metadata or storage).
    #[error(transparent)]
    Client(#[from] t3fs_common::Error),
}

/// Result with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for KernelError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        KernelError::Driver(e.to_string())
    }
}

/// Returns `InvalidArgument(msg)` unless `cond` holds.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(KernelError::InvalidArgument(msg())) }
}
