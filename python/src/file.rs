//! `t3fs.File`: an open file, from `Client.open(path, "rb" | "wb")`.
//!
//! - "rb": reads are clamped to the length the file had when it was opened (as `t3fs admin get`
//!   does); `read`/`readinto` move the position, `read_at`/`readinto_at` do not. `readinto*` fill
//!   the caller's writable buffer in place (see [`crate::buffer`]).
//! - "wb": the file was created or emptied by `open`; `write` writes at the position (each write
//!   is on every replica when it returns). Meta learns the new length only at `close` (t3fs
//!   reports lengths lazily, like 3FS), so readers see the data after `close`. A file dropped
//!   without `close` is closed in the background, best effort: use `with`.
//!
//! Methods take the object mutably, so one `File` used from two threads at once raises
//! `RuntimeError` (already borrowed) instead of racing.
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use t3fs_client::InodeId;
use t3fs_common::proto::Inode;

use crate::batch::{self, check_range};
use crate::buffer::{Region, as_bytes};
use crate::errors::at;
use crate::runtime::Core;

/// An open t3fs file (see the module note).
#[pyclass(name = "File", module = "t3fs")]
pub(crate) struct PyFile {
    core: Arc<Core>,
    path: String,
    inode: Arc<Inode>,
    writable: bool,
    pos: u64,
    /// One past the highest byte written (write mode): the length `close` reports.
    end: u64,
    closed: bool,
}

/// `io.UnsupportedOperation` (an `OSError` and a `ValueError`), as Python's own files raise it.
fn unsupported(py: Python<'_>, what: &str) -> PyErr {
    match py.import("io").and_then(|io| io.getattr("UnsupportedOperation")) {
        Ok(t) => PyErr::from_type(t.cast_into().expect("io.UnsupportedOperation is a type"), what.to_string()),
        Err(e) => e,
    }
}

impl PyFile {
    pub(crate) fn new(core: Arc<Core>, path: String, inode: Arc<Inode>, writable: bool) -> PyFile {
        PyFile { core, path, inode, writable, pos: 0, end: 0, closed: false }
    }

    /// The inode and path to read, for `batch_read` requests naming this file.
    pub(crate) fn read_target(&self) -> PyResult<(Arc<Inode>, String)> {
        if self.closed {
            return Err(PyValueError::new_err(format!("{}: I/O operation on a closed file", self.path)));
        }
        if self.writable {
            return Err(PyValueError::new_err(format!("{}: batch_read needs a file opened with 'rb'", self.path)));
        }
        Ok((self.inode.clone(), self.path.clone()))
    }

    fn check_read(&self, py: Python<'_>) -> PyResult<()> {
        self.check_open()?;
        if self.writable { Err(unsupported(py, "File not readable (opened with 'wb')")) } else { Ok(()) }
    }

    fn check_write(&self, py: Python<'_>) -> PyResult<()> {
        self.check_open()?;
        if self.writable { Ok(()) } else { Err(unsupported(py, "File not writable (opened with 'rb')")) }
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed { Err(PyValueError::new_err("I/O operation on a closed file")) } else { Ok(()) }
    }

    /// Bytes from `offset` up to `n` (all when negative), clamped at the end of the file.
    fn read_range(&self, py: Python<'_>, offset: u64, n: i64) -> PyResult<Vec<u8>> {
        let left = self.inode.length.saturating_sub(offset);
        let want = if n < 0 { left } else { (n as u64).min(left) };
        batch::read_owned(py, &self.core, &self.inode, offset, want)?.map_err(at(&self.path))
    }

    fn fill(&self, py: Python<'_>, offset: u64, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let region = Region::of(buffer)?;
        if offset.checked_add(region.len() as u64).is_none() {
            return Err(PyValueError::new_err(format!("offset {offset} + {} bytes passes 2**64", region.len())));
        }
        batch::read_into(py, &self.core, &self.inode, offset, &region)?.map_err(at(&self.path))
    }

    fn size(&self) -> u64 {
        if self.writable { self.end } else { self.inode.length }
    }
}

#[pymethods]
impl PyFile {
    /// Up to `n` bytes from the position (the rest of the file when `n` is negative); advances it.
    #[pyo3(signature = (n = -1))]
    fn read<'py>(&mut self, py: Python<'py>, n: i64) -> PyResult<Bound<'py, PyBytes>> {
        self.check_read(py)?;
        let data = self.read_range(py, self.pos, n)?;
        self.pos += data.len() as u64;
        Ok(PyBytes::new(py, &data))
    }

    /// Fills `buffer` (writable buffer) from the position; returns the bytes read and advances.
    fn readinto(&mut self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.check_read(py)?;
        let n = self.fill(py, self.pos, buffer)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Up to `n` bytes at `offset` (fewer at end of file); the position does not move.
    fn read_at<'py>(&self, py: Python<'py>, offset: i128, n: i128) -> PyResult<Bound<'py, PyBytes>> {
        self.check_read(py)?;
        let (offset, _) = check_range(offset, 0).map_err(PyValueError::new_err)?;
        let n = i64::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| PyValueError::new_err(format!("length {n} is not in 0..2**63")))?;
        Ok(PyBytes::new(py, &self.read_range(py, offset, n)?))
    }

    /// Fills `buffer` (any writable buffer: bytearray, memoryview, NumPy array) with the bytes at
    /// `offset`, in place; returns how many were read (fewer than `len(buffer)` at end of file).
    /// The position does not move.
    fn readinto_at(&self, py: Python<'_>, offset: i128, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.check_read(py)?;
        let (offset, _) = check_range(offset, 0).map_err(PyValueError::new_err)?;
        self.fill(py, offset, buffer)
    }

    /// Writes `data` (bytes-like) at the position; returns its length and advances.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.check_write(py)?;
        let data = as_bytes(data)?;
        let bytes = data.as_bytes();
        let end = self.pos.checked_add(bytes.len() as u64).ok_or_else(|| PyValueError::new_err("file too large"))?;
        let (c, inode, pos) = (self.core.client()?, &self.inode, self.pos);
        self.core.wait(py, c.write(inode, pos, bytes))?.map_err(at(&self.path))?;
        self.pos = end;
        self.end = self.end.max(end);
        Ok(bytes.len())
    }

    /// Moves the position: `whence` 0 from the start, 1 from the position, 2 from the end.
    #[pyo3(signature = (offset, whence = 0))]
    fn seek(&mut self, offset: i64, whence: i32) -> PyResult<u64> {
        self.check_open()?;
        let base = match whence {
            0 => 0,
            1 => self.pos as i128,
            2 => self.size() as i128,
            w => return Err(PyValueError::new_err(format!("whence must be 0, 1 or 2, not {w}"))),
        };
        let to = base + offset as i128;
        self.pos = u64::try_from(to).map_err(|_| PyValueError::new_err(format!("negative seek position {to}")))?;
        Ok(self.pos)
    }

    fn tell(&self) -> PyResult<u64> {
        self.check_open()?;
        Ok(self.pos)
    }

    /// Writes are on storage when `write` returns; nothing to flush. The length is committed by
    /// `close`.
    fn flush(&self) -> PyResult<()> {
        self.check_open()
    }

    /// Commits the length of a written file to meta. Idempotent.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if self.writable {
            let (c, u, id, end) = (self.core.client()?, &self.core.user, InodeId(self.inode.id), self.end);
            self.core.wait(py, c.close(u, id, end, true))?.map_err(at(&self.path))?;
        }
        Ok(())
    }

    fn readable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(!self.writable)
    }

    fn writable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(self.writable)
    }

    fn seekable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(true)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed
    }

    /// The path the file was opened with.
    #[getter]
    fn name(&self) -> String {
        self.path.clone()
    }

    #[getter]
    fn mode(&self) -> &'static str {
        if self.writable { "wb" } else { "rb" }
    }

    /// Length: as opened ("rb"), or the end of what was written so far ("wb").
    #[getter(size)]
    fn size_py(&self) -> u64 {
        self.size()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<t3fs.File {:?} mode={:?}{}>", self.path, self.mode(), if self.closed { " closed" } else { "" })
    }
}

impl Drop for PyFile {
    fn drop(&mut self) {
        if self.writable && !self.closed {
            // Report the length in the background; nobody can wait for it any more.
            if let Ok(c) = self.core.client() {
                let (c, u, id, end) = (c.clone(), self.core.user.clone(), InodeId(self.inode.id), self.end);
                self.core.spawn(async move {
                    if let Err(e) = c.close(&u, id, end, true).await {
                        tracing::warn!(inode = id.0, error = %e, "closing a t3fs.File dropped without close() failed");
                    }
                });
            }
        }
    }
}
