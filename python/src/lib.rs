//! `t3fs`, the Python binding of the t3fs native client (PyO3, built by maturin:
//! `pip install ./python`).
//!
//! What Python sees (the pure-Python package `python/python/t3fs` re-exports it and adds
//! `RecordDataset`):
//! - `client.rs`: `t3fs.Client(mgmtd, token)` / `Client.from_data_dir(dir)` and the path API:
//!   `mkdir`, `stat`, `exists`, `listdir`, `remove`, `rename`, `write_file`, `read_file`, `open`,
//!   and `batch_read` (many concurrent reads through the client's batch reader, into `bytes` or
//!   in place into caller buffers).
//! - `file.rs`: `t3fs.File`, an open file (`read`, `read_at`, `readinto_at`, `write`, `seek`...).
//! - `records.rs`: `write_records`, `RecordFile`, `SampleLoader` and `loader` over the record-file
//!   format and sample loader of `t3fs-kernels`.
//!
//! Design: every call blocks the calling Python thread on one tokio runtime per process with the
//! GIL released, and stays interruptible by Ctrl-C (`runtime.rs`); reads into caller memory go
//! through `ExternalBuf`s over the buffer's exported memory (`buffer.rs`); t3fs status codes become
//! `OSError`s with the matching errno (`errors.rs`). The crate depends on the client and kernels
//! crates only (never on daemons or kv: `.ci/check-layering`).
use pyo3::prelude::*;

mod batch;
mod buffer;
mod client;
mod errors;
mod file;
mod records;
mod runtime;

/// Python binding of the t3fs native client.
#[pymodule]
fn t3fs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyClient>()?;
    m.add_class::<file::PyFile>()?;
    m.add_class::<records::PyRecordFile>()?;
    m.add_class::<records::PySampleLoader>()?;
    m.add_class::<records::PyEpoch>()?;
    m.add_function(wrap_pyfunction!(records::write_records, m)?)?;
    m.add_function(wrap_pyfunction!(records::loader, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
