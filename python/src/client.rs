//! `t3fs.Client`: a connection to one cluster and the path API over it.
//!
//! Paths are absolute, `/`-separated, UTF-8 (`str` or `os.PathLike`); a malformed path raises
//! `ValueError` before anything is sent. Every call acts as the client's `uid`/`gid` (root unless
//! given, like `t3fs admin`) and blocks the calling Python thread with the GIL released (see
//! [`crate::runtime`]). Failures raise `OSError` subclasses by errno ([`crate::errors`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use t3fs_client::{Client, ClientConfig, Error, InodeId, RenameFlags, StatusCode, UserInfo};
use t3fs_common::proto::{Inode, InodeType};

use crate::batch;
use crate::buffer::as_bytes;
use crate::errors::{at, os_error};
use crate::file::PyFile;
use crate::runtime::Core;

/// A connected t3fs client (see the module note).
#[pyclass(name = "Client", module = "t3fs", frozen)]
pub(crate) struct PyClient {
    pub(crate) core: Arc<Core>,
}

/// `p` as an absolute UTF-8 path.
pub(crate) fn path_str(p: &Path) -> PyResult<&str> {
    let s = p.to_str().ok_or_else(|| PyValueError::new_err(format!("t3fs paths are UTF-8: {p:?}")))?;
    if !s.starts_with('/') {
        return Err(PyValueError::new_err(format!("t3fs paths are absolute (start with '/'): {s:?}")));
    }
    Ok(s)
}

/// Splits an absolute path into (parent path, last name); the root and `.`/`..` as the last
/// component have none.
pub(crate) fn split_path(path: &str) -> PyResult<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let bad = || PyValueError::new_err(format!("{path:?} names no entry in a directory"));
    let pos = trimmed.rfind('/').ok_or_else(bad)?;
    let name = &trimmed[pos + 1..];
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad());
    }
    Ok((if pos == 0 { "/" } else { &trimmed[..pos] }, name))
}

fn is_dir(i: &Inode) -> bool {
    i.inode_type == InodeType::Directory as i32
}

fn is_file(i: &Inode) -> bool {
    i.inode_type == InodeType::File as i32
}

/// Creates the regular file at `path` (mode 0644) or empties the existing one.
pub(crate) async fn create_truncated(c: &Client, user: &UserInfo, path: &str) -> Result<Inode, Error> {
    let (parent, name) = split_path(path).map_err(|_| Error::invalid("not a file path"))?;
    let dir = c.resolve_path(user, parent).await?;
    let inode = c.create(user, InodeId(dir.id), name.as_bytes(), 0o644, false).await?;
    if !is_file(&inode) {
        return Err(Error::new(StatusCode::IsDirectory, "exists and is not a regular file"));
    }
    if inode.length > 0 {
        return c.truncate(user, InodeId(inode.id), 0).await;
    }
    Ok(inode)
}

/// Resolves `path` and checks it is a regular file.
pub(crate) async fn resolve_file(c: &Client, user: &UserInfo, path: &str) -> Result<Inode, Error> {
    let inode = c.resolve_path(user, path).await?;
    if is_dir(&inode) {
        return Err(Error::new(StatusCode::IsDirectory, "is a directory"));
    }
    if !is_file(&inode) {
        return Err(Error::invalid("not a regular file"));
    }
    Ok(inode)
}

/// `mkdir` of one path; with `parents` every missing ancestor too. An existing directory at
/// `path` is fine only with `exist_ok`.
async fn make_dir(
    c: &Client,
    user: &UserInfo,
    path: &str,
    mode: u32,
    parents: bool,
    exist_ok: bool,
) -> Result<(), Error> {
    let (parent, name) = split_path(path).map_err(|_| Error::new(StatusCode::AlreadyExists, "the root exists"))?;
    let dir = if parents {
        let mut cur = c.resolve_path(user, "/").await?;
        for comp in parent.split('/').filter(|s| !s.is_empty() && *s != ".") {
            cur = lookup_or_mkdir(c, user, &cur, comp, mode).await?;
        }
        cur
    } else {
        c.resolve_path(user, parent).await?
    };
    match c.mkdir(user, InodeId(dir.id), name.as_bytes(), mode).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == StatusCode::AlreadyExists && exist_ok => {
            let existing = c.lookup(user, InodeId(dir.id), name.as_bytes()).await?;
            if is_dir(&existing) { Ok(()) } else { Err(e) }
        }
        Err(e) => Err(e),
    }
}

/// The directory `name` in `dir`, made if missing (mkdir -p semantics for one component).
async fn lookup_or_mkdir(c: &Client, user: &UserInfo, dir: &Inode, name: &str, mode: u32) -> Result<Inode, Error> {
    if name == ".." {
        return Err(Error::invalid("'..' in a mkdir(parents=True) path"));
    }
    let found = match c.lookup(user, InodeId(dir.id), name.as_bytes()).await {
        Ok(i) => i,
        Err(e) if e.code == StatusCode::NotFound => match c.mkdir(user, InodeId(dir.id), name.as_bytes(), mode).await {
            Ok(i) => i,
            // Made by someone else meanwhile.
            Err(e) if e.code == StatusCode::AlreadyExists => c.lookup(user, InodeId(dir.id), name.as_bytes()).await?,
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    if !is_dir(&found) {
        return Err(Error::new(StatusCode::NotDirectory, format!("{name} is not a directory")));
    }
    Ok(found)
}

/// The `stat` dict of an inode.
fn stat_dict<'py>(py: Python<'py>, i: &Inode) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let kind = match InodeType::try_from(i.inode_type) {
        Ok(InodeType::File) => "file",
        Ok(InodeType::Directory) => "dir",
        Ok(InodeType::Symlink) => "symlink",
        _ => "unknown",
    };
    let secs = |ns: i64| ns as f64 / 1e9;
    d.set_item("ino", i.id)?;
    d.set_item("type", kind)?;
    d.set_item("is_dir", is_dir(i))?;
    d.set_item("size", i.length)?;
    d.set_item("mode", i.mode)?;
    d.set_item("uid", i.uid)?;
    d.set_item("gid", i.gid)?;
    d.set_item("nlink", i.nlink)?;
    d.set_item("atime", secs(i.atime_ns))?;
    d.set_item("mtime", secs(i.mtime_ns))?;
    d.set_item("ctime", secs(i.ctime_ns))?;
    d.set_item("mtime_ns", i.mtime_ns)?;
    Ok(d)
}

/// `mgmtd_addr` and `token` from `DIR/cluster.toml` of a `t3fs local up` cluster.
fn read_cluster_file(dir: &Path) -> PyResult<(String, String)> {
    let p = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        pyo3::exceptions::PyOSError::new_err((
            errno,
            format!("{} is not a t3fs local cluster directory: {e}", dir.display()),
            p.display().to_string(),
        ))
    })?;
    let bad = |m: &str| PyValueError::new_err(format!("{}: {m}", p.display()));
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(&format!("not valid TOML: {e}")))?;
    let addr = match table.get("mgmtd_addr") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(bad("no `mgmtd_addr` string")),
    };
    let token = match table.get("token") {
        Some(toml::Value::String(s)) => s.clone(),
        None => String::new(),
        Some(_) => return Err(bad("`token` must be a string")),
    };
    Ok((addr, token))
}

#[pymethods]
impl PyClient {
    /// Connects to the cluster whose mgmtd is at `mgmtd` ("host:port", or several comma-separated).
    #[new]
    #[pyo3(signature = (mgmtd, token = String::new(), *, uid = 0, gid = 0, retry_timeout_ms = 30_000, routing_refresh_ms = 500))]
    fn new(
        py: Python<'_>,
        mgmtd: String,
        token: String,
        uid: u32,
        gid: u32,
        retry_timeout_ms: u64,
        routing_refresh_ms: u64,
    ) -> PyResult<Self> {
        let cfg =
            ClientConfig { mgmtd_addr: mgmtd, token, retry_timeout_ms, routing_refresh_ms, ..ClientConfig::default() };
        Ok(PyClient { core: Core::connect(py, cfg, UserInfo::new(uid, gid))? })
    }

    /// Connects to the local cluster of `t3fs local up --data-dir DATA_DIR` (its `cluster.toml`).
    #[staticmethod]
    #[pyo3(signature = (data_dir, *, uid = 0, gid = 0, retry_timeout_ms = 30_000))]
    fn from_data_dir(py: Python<'_>, data_dir: PathBuf, uid: u32, gid: u32, retry_timeout_ms: u64) -> PyResult<Self> {
        let (mgmtd, token) = read_cluster_file(&data_dir)?;
        Self::new(py, mgmtd, token, uid, gid, retry_timeout_ms, ClientConfig::default().routing_refresh_ms)
    }

    #[getter]
    fn mgmtd(&self) -> String {
        self.core.cfg.mgmtd_addr.clone()
    }

    #[getter]
    fn token(&self) -> String {
        self.core.cfg.token.clone()
    }

    #[getter]
    fn uid(&self) -> u32 {
        self.core.user.uid
    }

    #[getter]
    fn gid(&self) -> u32 {
        self.core.user.gid
    }

    #[getter]
    fn retry_timeout_ms(&self) -> u64 {
        self.core.cfg.retry_timeout_ms
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Stops the client's background routing poller; later calls raise `ValueError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.core.is_closed() { Ok(()) } else { self.core.close(py) }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "t3fs.Client(mgmtd={:?}, uid={}, gid={})",
            self.core.cfg.mgmtd_addr, self.core.user.uid, self.core.user.gid
        )
    }

    /// Makes a directory. `parents`: make missing ancestors too; `exist_ok`: an existing directory
    /// is not an error (as `pathlib.Path.mkdir`).
    #[pyo3(signature = (path, mode = 0o755, parents = false, exist_ok = false))]
    fn mkdir(&self, py: Python<'_>, path: PathBuf, mode: u32, parents: bool, exist_ok: bool) -> PyResult<()> {
        let path = path_str(&path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        self.core.wait(py, make_dir(c, u, path, mode, parents, exist_ok))?.map_err(at(path))
    }

    /// Attributes of `path`: a dict with ino, type ("file", "dir", "symlink"), is_dir, size, mode
    /// (permission bits), uid, gid, nlink, atime/mtime/ctime (seconds, float) and mtime_ns.
    fn stat<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
        let path = path_str(&path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        let inode = self.core.wait(py, c.resolve_path(u, path))?.map_err(at(path))?;
        stat_dict(py, &inode)
    }

    /// Whether `path` exists.
    fn exists(&self, py: Python<'_>, path: PathBuf) -> PyResult<bool> {
        let path = path_str(&path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        match self.core.wait(py, c.resolve_path(u, path))? {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code, StatusCode::NotFound | StatusCode::NotDirectory) => Ok(false),
            Err(e) => Err(os_error(&e, Some(path))),
        }
    }

    /// Names in the directory `path` (without "." and "..").
    #[pyo3(signature = (path = PathBuf::from("/")))]
    fn listdir<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyList>> {
        let path = path_str(&path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        let entries = self
            .core
            .wait(py, async move {
                let dir = c.resolve_path(u, path).await?;
                if !is_dir(&dir) {
                    return Err(Error::new(StatusCode::NotDirectory, "not a directory"));
                }
                c.readdir(u, InodeId(dir.id)).await
            })?
            .map_err(at(path))?;
        let names =
            entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).filter(|n| n != "." && n != "..");
        PyList::new(py, names)
    }

    /// Removes a file (or symlink) or an empty directory.
    fn remove(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let path = path_str(&path)?;
        let (parent, name) = split_path(path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        self.core
            .wait(py, async move {
                let dir = c.resolve_path(u, parent).await?;
                let entry = c.lookup(u, InodeId(dir.id), name.as_bytes()).await?;
                c.remove(u, InodeId(dir.id), name.as_bytes(), is_dir(&entry)).await.map(|_| ())
            })?
            .map_err(at(path))
    }

    /// Renames `src` to `dst`, replacing `dst` if it exists (POSIX rename).
    fn rename(&self, py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<()> {
        let (src, dst) = (path_str(&src)?, path_str(&dst)?);
        let ((sp, sn), (dp, dn)) = (split_path(src)?, split_path(dst)?);
        let (c, u) = (self.core.client()?, &self.core.user);
        self.core
            .wait(py, async move {
                let s = c.resolve_path(u, sp).await?;
                let d = if sp == dp { s.clone() } else { c.resolve_path(u, dp).await? };
                let flags = RenameFlags::default();
                c.rename(u, InodeId(s.id), sn.as_bytes(), InodeId(d.id), dn.as_bytes(), flags).await.map(|_| ())
            })?
            .map_err(at(src))
    }

    /// Writes `data` (any bytes-like object) as the whole content of `path` (created, or
    /// replaced); returns the bytes written.
    fn write_file(&self, py: Python<'_>, path: PathBuf, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let path = path_str(&path)?;
        let data = as_bytes(data)?;
        let bytes = data.as_bytes();
        let (c, u) = (self.core.client()?, &self.core.user);
        self.core
            .wait(py, async move {
                let inode = create_truncated(c, u, path).await?;
                c.write(&inode, 0, bytes).await?;
                c.close(u, InodeId(inode.id), bytes.len() as u64, true).await
            })?
            .map_err(at(path))?;
        Ok(bytes.len())
    }

    /// The whole content of the file `path`.
    fn read_file<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
        let path = path_str(&path)?;
        let (c, u) = (self.core.client()?, &self.core.user);
        let inode = Arc::new(self.core.wait(py, resolve_file(c, u, path))?.map_err(at(path))?);
        let data = batch::read_owned(py, &self.core, &inode, 0, inode.length)?.map_err(at(path))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Opens `path` for reading ("rb") or writing ("wb": created or emptied; the length is
    /// committed by `close`). Returns a `t3fs.File`; use it in a `with` block.
    #[pyo3(signature = (path, mode = "rb"))]
    fn open(&self, py: Python<'_>, path: PathBuf, mode: &str) -> PyResult<PyFile> {
        let path = path_str(&path)?;
        let writable = match mode {
            "rb" => false,
            "wb" => true,
            m => return Err(PyValueError::new_err(format!("mode must be 'rb' or 'wb', not {m:?}"))),
        };
        let (c, u) = (self.core.client()?, &self.core.user);
        let inode = if writable {
            self.core.wait(py, create_truncated(c, u, path))?
        } else {
            self.core.wait(py, resolve_file(c, u, path))?
        }
        .map_err(at(path))?;
        Ok(PyFile::new(self.core.clone(), path.to_string(), Arc::new(inode), writable))
    }

    /// Runs many reads concurrently (at most `depth` in flight). `reqs`: `(path or File, offset,
    /// length)` tuples. Without `buffers` returns one `bytes` per read (shorter at end of file);
    /// with `buffers` (one writable buffer per read, at least `length` bytes, no two sharing
    /// memory) each read fills its buffer in place and the result is the bytes read. Raises
    /// `OSError` for the first failed read after all reads finished.
    #[pyo3(signature = (reqs, buffers = None, *, depth = 128))]
    fn batch_read<'py>(
        &self,
        py: Python<'py>,
        reqs: &Bound<'py, PyAny>,
        buffers: Option<&Bound<'py, PyAny>>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        batch::batch_read(py, &self.core, reqs, buffers, depth)
    }
}
