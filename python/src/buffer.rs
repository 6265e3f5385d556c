//! Caller memory for reads (`readinto_at`, `batch_read(..., buffers)`) and data for writes.
//!
//! Reads land straight in the caller's buffer: the t3fs batch reader copies each chunk from its
//! TCP frame into the destination, and that destination is the caller's `bytearray`, `memoryview`,
//! NumPy array or any other writable, C-contiguous buffer-protocol object. No copy of our own.
//!
//! How we get the address: the binding is built for the stable ABI of CPython 3.9+, and the
//! buffer protocol (`PyObject_GetBuffer`) entered the stable ABI only in 3.11. So we let `ctypes`
//! (standard library) take the export: `ctypes.c_char.from_buffer(memoryview(obj))` checks that
//! the buffer is writable and C-contiguous and returns an object that holds a buffer export on
//! `obj` for as long as it lives; `ctypes.addressof` gives the start address. While an export is
//! held, CPython objects refuse to move or free their memory (`bytearray` cannot resize, `mmap`
//! cannot close, NumPy arrays cannot resize in place), so the memory stays valid while we hold
//! that ctypes object, which is the `owner` of the [`ExternalBuf`] we make over it.
//!
//! Invariants: a [`Region`] is only turned into an [`ExternalBuf`] over at most its own length;
//! callers that lend several regions at once check they do not overlap ([`check_disjoint`]); as
//! with `io.RawIOBase.readinto`, the caller must not use a buffer from another thread while a call
//! is filling it.
use std::any::Any;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};
use t3fs_client::ExternalBuf;

/// A writable, C-contiguous buffer of a Python object, kept exported by `keep`.
pub(crate) struct Region {
    ptr: *mut u8,
    len: usize,
    /// The ctypes object holding the buffer export (or, for an empty buffer, the memoryview).
    keep: Arc<dyn Any + Send + Sync>,
}

impl Region {
    /// The buffer of `obj`, which must be writable and C-contiguous.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> PyResult<Region> {
        let py = obj.py();
        let mv = PyMemoryView::from(obj)
            .map_err(|_| PyTypeError::new_err(format!("a writable buffer is required, not {}", type_name(obj))))?;
        if mv.getattr("readonly")?.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "{} is read-only; reads need a writable buffer (bytearray, memoryview of one, numpy array)",
                type_name(obj)
            )));
        }
        if !mv.getattr("c_contiguous")?.is_truthy()? {
            return Err(PyValueError::new_err("the buffer is not C-contiguous"));
        }
        let len: usize = mv.getattr("nbytes")?.extract()?;
        if len == 0 {
            // `from_buffer` needs at least one byte; an empty region is never written.
            return Ok(Region { ptr: std::ptr::null_mut(), len: 0, keep: Arc::new(mv.unbind()) });
        }
        let ctypes = py.import("ctypes")?;
        let held = ctypes.getattr("c_char")?.call_method1("from_buffer", (&mv,))?;
        let addr: usize = ctypes.getattr("addressof")?.call1((&held,))?.extract()?;
        Ok(Region { ptr: addr as *mut u8, len, keep: Arc::new(held.unbind()) })
    }

    /// Bytes in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Start address (for overlap checks).
    pub(crate) fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// A read destination over `len` bytes of the buffer starting at `at`.
    ///
    /// # Safety
    /// No other [`ExternalBuf`] over any of these bytes may be alive at the same time (check with
    /// [`check_disjoint`]), and the caller must not hand the buffer back to Python code until the
    /// `ExternalBuf` is dropped (the reads are waited for, see `runtime::Core::wait_lent`).
    pub(crate) unsafe fn lend(&self, at: usize, len: usize) -> PyResult<ExternalBuf> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(PyValueError::new_err(format!("{len} bytes at {at} of a {}-byte buffer", self.len)));
        }
        if len == 0 {
            // SAFETY: a zero-length ExternalBuf needs no valid pointer (see `ExternalBuf::new`).
            return Ok(unsafe { ExternalBuf::new(std::ptr::null_mut(), 0, self.keep.clone()) });
        }
        // SAFETY: `ptr..ptr + self.len` is the exported buffer of a Python object and `keep`
        // holds that export (see the module note): the memory stays allocated and in place while
        // any clone of `keep` lives, and the ExternalBuf holds one. `at + len <= self.len` was
        // checked above, so the range is inside it. Exclusive use is this function's contract.
        // Python buffer memory is initialized as far as Rust is concerned (it came from C).
        Ok(unsafe { ExternalBuf::new(self.ptr.add(at), len, self.keep.clone()) })
    }
}

/// Fails if two of the byte ranges `(addr, len)` overlap (reads into them would race); `what`
/// names a range by its index.
pub(crate) fn check_disjoint(ranges: &mut Vec<(usize, usize, usize)>, what: &str) -> PyResult<()> {
    ranges.retain(|r| r.1 > 0);
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        let ((a, alen, ai), (b, _, bi)) = (w[0], w[1]);
        if a + alen > b {
            return Err(PyValueError::new_err(format!(
                "{what} {ai} and {what} {bi} share memory; concurrent reads need disjoint buffers"
            )));
        }
    }
    Ok(())
}

/// `data` as a `bytes` object: the object itself for `bytes`, a copy for any other buffer
/// (`bytearray`, `memoryview`, NumPy array). Objects without the buffer protocol (`str`, `int`,
/// lists) are refused.
pub(crate) fn as_bytes<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    let mv = PyMemoryView::from(data)
        .map_err(|_| PyTypeError::new_err(format!("a bytes-like object is required, not {}", type_name(data))))?;
    Ok(mv.call_method0("tobytes")?.cast_into::<PyBytes>()?)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| format!("'{n}'")).unwrap_or_else(|_| "this object".into())
}
