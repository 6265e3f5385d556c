//! Record files and the training-sample loader (`t3fs-kernels`), for Python.
//!
//! - `write_records(client, path, samples)` writes a record file (`docs/loaders.md` has the
//!   format): samples back to back, then an index with a CRC32C per sample.
//! - `RecordFile(client, path)` opens one (footer, header and index are checked); `len(f)`,
//!   `f[i]` (one read, CRC-checked) and `f.get_many(indices)` (all reads concurrent).
//! - `SampleLoader(client, paths, batch_size, ...)` opens a set of record files once;
//!   `.epoch(e)` iterates the batches of epoch `e` (each a `list[bytes]`), read by the Rust
//!   loader: shuffled per (seed, epoch), read with the batch reader, `prefetch` batches ahead, every
//!   sample CRC-checked. `loader(...)` is `SampleLoader(...).epoch(epoch)`.
//!
//! A bad record (CRC, length, format) raises `OSError(EIO)`; a missing file `FileNotFoundError`.
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use t3fs_kernels::KernelError;
use t3fs_kernels::records::{RecordFile, write_record_file};
use t3fs_kernels::sample_loader::{EpochStream, LoaderConfig, SampleLoader, VecBuffers};

use crate::batch::{DEFAULT_DEPTH, Dest, Read, run_reads};
use crate::buffer::as_bytes;
use crate::client::{PyClient, path_str};
use crate::errors::{kernel_error, os_error};
use crate::runtime::Core;

/// Writes `samples` (an iterable of bytes-like objects) as the record file `path` (created or
/// replaced); returns the number of samples.
#[pyfunction]
pub(crate) fn write_records(
    py: Python<'_>,
    client: &Bound<'_, PyClient>,
    path: std::path::PathBuf,
    samples: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let path = path_str(&path)?;
    let core = &client.get().core;
    let held = samples.try_iter()?.map(|s| as_bytes(&s?)).collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
    let n = slices.len();
    let c = core.client()?;
    core.wait(py, write_record_file(c, path, slices))?.map_err(kernel_error)?;
    Ok(n)
}

/// An opened record file (see the module note).
#[pyclass(name = "RecordFile", module = "t3fs", frozen)]
pub(crate) struct PyRecordFile {
    core: Arc<Core>,
    file: RecordFile,
}

impl PyRecordFile {
    /// `i` as an index into the file (negative counts from the end), or `IndexError`.
    fn index(&self, i: isize) -> PyResult<usize> {
        let n = self.file.len();
        let j = if i < 0 { i.checked_add(n as isize) } else { Some(i) };
        j.and_then(|j| usize::try_from(j).ok())
            .filter(|j| *j < n)
            .ok_or_else(|| PyIndexError::new_err(format!("record {i} of {n} in {}", self.file.path())))
    }
}

#[pymethods]
impl PyRecordFile {
    #[new]
    fn new(py: Python<'_>, client: &Bound<'_, PyClient>, path: std::path::PathBuf) -> PyResult<Self> {
        let path = path_str(&path)?;
        let core = client.get().core.clone();
        let c = core.client()?;
        let file = core.wait(py, RecordFile::open(c, path))?.map_err(kernel_error)?;
        Ok(PyRecordFile { core, file })
    }

    fn __len__(&self) -> usize {
        self.file.len()
    }

    /// Sample `i` (CRC-checked).
    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyBytes>> {
        let i = self.index(i)?;
        let c = self.core.client()?;
        let data = self.core.wait(py, self.file.read_sample(c, i))?.map_err(kernel_error)?;
        Ok(PyBytes::new(py, &data))
    }

    /// The samples at `indices`, read concurrently (CRC-checked), in the order given.
    fn get_many<'py>(&self, py: Python<'py>, indices: Vec<isize>) -> PyResult<Bound<'py, PyList>> {
        let idx = indices.iter().map(|&i| self.index(i)).collect::<PyResult<Vec<_>>>()?;
        let entries = self.file.index().entries();
        let reads = idx
            .iter()
            .map(|&i| Read {
                inode: self.file.inode().clone(),
                offset: entries[i].offset,
                len: entries[i].len,
                dest: Dest::Owned,
            })
            .collect();
        let stop = AtomicBool::new(false);
        let outcomes = self.core.wait(py, run_reads(self.core.client()?.clone(), reads, DEFAULT_DEPTH, &stop))?;
        let out = PyList::empty(py);
        for (&i, o) in idx.iter().zip(outcomes) {
            let (_, data) = o.map_err(|e| os_error(&e, Some(self.file.path())))?;
            let data = data.unwrap_or_default();
            self.file.index().verify(i, &data).map_err(|e| match e {
                KernelError::Format(m) => kernel_error(KernelError::Format(format!("{}: {m}", self.file.path()))),
                e => kernel_error(e),
            })?;
            out.append(PyBytes::new(py, &data))?;
        }
        Ok(out)
    }

    /// Length in bytes of each sample, from the index (no I/O).
    #[getter]
    fn lengths(&self) -> Vec<u32> {
        self.file.index().entries().iter().map(|e| e.len).collect()
    }

    #[getter]
    fn path(&self) -> String {
        self.file.path().to_string()
    }

    fn __repr__(&self) -> String {
        format!("<t3fs.RecordFile {:?} records={}>", self.file.path(), self.file.len())
    }
}

/// A set of record files opened for epochs of batches (see the module note).
#[pyclass(name = "SampleLoader", module = "t3fs", frozen)]
pub(crate) struct PySampleLoader {
    core: Arc<Core>,
    loader: SampleLoader<VecBuffers>,
}

#[pymethods]
impl PySampleLoader {
    #[new]
    #[pyo3(signature = (client, paths, batch_size, shuffle = true, seed = 0, drop_last = false, prefetch = 2))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        client: &Bound<'_, PyClient>,
        paths: Vec<std::path::PathBuf>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        drop_last: bool,
        prefetch: usize,
    ) -> PyResult<Self> {
        if batch_size == 0 || prefetch == 0 {
            return Err(PyValueError::new_err("batch_size and prefetch must be at least 1"));
        }
        let paths = paths.iter().map(|p| path_str(p).map(str::to_string)).collect::<PyResult<Vec<_>>>()?;
        let core = client.get().core.clone();
        let cfg = LoaderConfig {
            batch_size,
            seed,
            shuffle,
            drop_last,
            prefetch_batches: prefetch,
            ..LoaderConfig::default()
        };
        let c = core.client()?.clone();
        let loader = core.wait(py, SampleLoader::new(c, &paths, cfg, VecBuffers))?.map_err(kernel_error)?;
        Ok(PySampleLoader { core, loader })
    }

    /// Iterates the batches of epoch `epoch` (a `list[bytes]` each).
    #[pyo3(signature = (epoch = 0))]
    fn epoch(&self, py: Python<'_>, epoch: u64) -> PyResult<PyEpoch> {
        self.core.client()?;
        let loader = &self.loader;
        // The producer task is spawned on the runtime, so start it from inside it.
        let stream = self.core.wait(py, async move { loader.epoch(epoch) })?;
        Ok(PyEpoch {
            core: self.core.clone(),
            stream: Mutex::new(Some(stream)),
            epoch,
            batches: self.loader.num_batches(),
        })
    }

    /// Samples in one epoch (before `drop_last`).
    #[getter]
    fn num_samples(&self) -> usize {
        self.loader.num_samples()
    }

    /// Batches in one epoch.
    fn __len__(&self) -> usize {
        self.loader.num_batches()
    }
}

/// The batches of one epoch, as an iterator (from `SampleLoader.epoch` or `loader`).
#[pyclass(name = "Epoch", module = "t3fs")]
pub(crate) struct PyEpoch {
    core: Arc<Core>,
    /// `None` once the epoch ended (after the last batch or an error). The mutex only makes the
    /// stream `Sync`; it is reached through `&mut self`.
    stream: Mutex<Option<EpochStream<Vec<u8>>>>,
    epoch: u64,
    batches: usize,
}

#[pymethods]
impl PyEpoch {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let slot = self.stream.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = slot.as_mut() else { return Ok(None) };
        self.core.client()?;
        match self.core.wait(py, stream.next())? {
            None => {
                *slot = None;
                Ok(None)
            }
            Some(Err(e)) => {
                *slot = None;
                Err(kernel_error(e))
            }
            Some(Ok(batch)) => {
                let samples = (0..batch.samples.len()).map(|i| PyBytes::new(py, batch.sample(i)));
                Ok(Some(PyList::new(py, samples)?))
            }
        }
    }

    /// Batches in the epoch.
    fn __len__(&self) -> usize {
        self.batches
    }

    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// `SampleLoader(client, paths, batch_size, shuffle, seed, drop_last, prefetch).epoch(epoch)`:
/// an iterator over the batches of one epoch, each a `list[bytes]`.
#[pyfunction]
#[pyo3(signature = (client, paths, batch_size, shuffle = true, seed = 0, epoch = 0, drop_last = false, prefetch = 2))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn loader(
    py: Python<'_>,
    client: &Bound<'_, PyClient>,
    paths: Vec<std::path::PathBuf>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    drop_last: bool,
    prefetch: usize,
) -> PyResult<PyEpoch> {
    PySampleLoader::new(py, client, paths, batch_size, shuffle, seed, drop_last, prefetch)?.epoch(py, epoch)
}
