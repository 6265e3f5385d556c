//! How t3fs errors become Python exceptions.
//!
//! A t3fs error is a stable [`StatusCode`] plus a message; Python code expects `OSError` with an
//! errno. [`os_error`] builds `OSError(errno, strerror[, filename])` from
//! [`StatusCode::errno`] (the same mapping FUSE uses), and Python turns that into the matching
//! subclass by itself: `ENOENT` is a `FileNotFoundError`, `EEXIST` a `FileExistsError`, `ENOTDIR` a
//! `NotADirectoryError`, `EACCES`/`EPERM` a `PermissionError`, and so on. The strerror keeps the
//! t3fs code name and the server's message, e.g. `NotFound(3): no entry "x" in directory 1`.
//!
//! Kernel-crate errors (records, loader): a client error is mapped as above, a bad record
//! (checksum, format) is `OSError(EIO)`, a bad argument `ValueError`, anything else `RuntimeError`.
use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use t3fs_common::{Error, StatusCode};
use t3fs_kernels::KernelError;

/// `OSError(errno, "<code>: <message>"[, path])` for a t3fs error.
pub(crate) fn os_error(e: &Error, path: Option<&str>) -> PyErr {
    let errno = match e.code {
        // `Ok` never arrives as an error; keep the exception an OSError with a real errno anyway.
        StatusCode::Ok => libc::EIO,
        c => c.errno(),
    };
    let msg = format!("{}: {}", e.code, e.message);
    match path {
        Some(p) => PyOSError::new_err((errno, msg, p.to_string())),
        None => PyOSError::new_err((errno, msg)),
    }
}

/// A closure for `map_err` that names `path` in the exception.
pub(crate) fn at(path: &str) -> impl FnOnce(Error) -> PyErr + '_ {
    move |e| os_error(&e, Some(path))
}

/// The exception for a `t3fs-kernels` error (record files, the sample loader).
pub(crate) fn kernel_error(e: KernelError) -> PyErr {
    match e {
        KernelError::Client(e) => os_error(&e, None),
        KernelError::Format(m) => PyOSError::new_err((libc::EIO, format!("bad data: {m}"))),
        KernelError::InvalidArgument(m) => PyValueError::new_err(m),
        KernelError::Io(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            PyOSError::new_err((errno, e.to_string()))
        }
        e => PyRuntimeError::new_err(e.to_string()),
    }
}
