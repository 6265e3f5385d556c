//! Reads for the Python API, all through the client's [`BatchReader`]: `Client.batch_read`,
//! `File.read_at`/`readinto_at` and `RecordFile.get_many`.
//!
//! [`run_reads`] submits a list of reads with a bounded queue depth and gathers every completion,
//! each into an owned `Vec` (returned to Python as `bytes`, one copy) or into a range of caller
//! memory lent as an [`ExternalBuf`] (no copy besides the client's own from the TCP frame). It
//! returns only once every read it started has completed, and with `stop` set it starts no new
//! read: that is what lets `Core::wait_lent` hand buffers back to Python safely on Ctrl-C.
//!
//! `Client.batch_read` ([`batch_read`]) parses `(path | File, offset, length)` tuples, resolves
//! each distinct path once (concurrently), checks every buffer (writable, large enough, no two
//! overlapping), runs the reads, and raises `OSError` for the first failed read (by position) only
//! after all of them have finished.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use t3fs_client::{BatchConfig, Client, Error, ExternalBuf, ReadBuf, ReadReq, StatusCode, UserInfo};
use t3fs_common::proto::{Inode, InodeType};
use tokio::task::JoinSet;

use crate::buffer::{Region, check_disjoint};
use crate::errors::os_error;
use crate::file::PyFile;
use crate::runtime::Core;

/// Largest single read handed to the batch reader (its lengths are u32); longer ranges are split.
pub(crate) const MAX_PIECE: u64 = 1 << 30;
/// Default queue depth of `batch_read` (the client's default).
pub(crate) const DEFAULT_DEPTH: usize = 128;

/// Where one read lands.
pub(crate) enum Dest {
    /// A fresh `Vec` of the read's length, truncated to the bytes read.
    Owned,
    /// Caller memory (exactly the read's length).
    Lent(ExternalBuf),
}

/// One read: `len` bytes at `offset` of `inode` (clamped at its `length`).
pub(crate) struct Read {
    pub inode: Arc<Inode>,
    pub offset: u64,
    pub len: u32,
    pub dest: Dest,
}

/// What one read returned: the bytes read, and the data for [`Dest::Owned`].
pub(crate) type Outcome = Result<(usize, Option<Vec<u8>>), Error>;

/// Runs `reads` with at most `depth` in flight; one outcome per read, in order. Returns after
/// every started read completed; reads not started because `stop` was set fail with `Timeout`.
pub(crate) async fn run_reads(client: Arc<Client>, reads: Vec<Read>, depth: usize, stop: &AtomicBool) -> Vec<Outcome> {
    let n = reads.len();
    let cfg = BatchConfig { max_in_flight_requests: depth.max(1), ..BatchConfig::default() };
    let mut reader = client.batch_reader(cfg);
    let mut out: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    for (i, r) in reads.into_iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let buf = match r.dest {
            Dest::Owned => ReadBuf::Owned(vec![0u8; r.len as usize]),
            Dest::Lent(e) => ReadBuf::External(e),
        };
        reader.submit(ReadReq { inode: r.inode, offset: r.offset, len: r.len, buf, user_data: i as u64 }).await;
    }
    while let Some(c) = reader.next().await {
        let data = match c.buf {
            ReadBuf::Owned(mut v) => {
                v.truncate(*c.result.as_ref().unwrap_or(&0));
                Some(v)
            }
            _ => None,
        };
        out[c.user_data as usize] = Some(c.result.map(|k| (k, data)));
    }
    out.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::new(StatusCode::Timeout, "interrupted")))).collect()
}

/// Reads `len` bytes at `offset` (fewer at end of file) into a new `Vec`, in pieces of at most
/// [`MAX_PIECE`] read concurrently. The outer error is Python's (interrupted, closed client), the
/// inner one the first failed read's.
pub(crate) fn read_owned(
    py: Python<'_>,
    core: &Core,
    inode: &Arc<Inode>,
    offset: u64,
    len: u64,
) -> PyResult<Result<Vec<u8>, Error>> {
    let client = core.client()?.clone();
    let reads = pieces(offset, len)
        .map(|(off, l)| Read { inode: inode.clone(), offset: off, len: l, dest: Dest::Owned })
        .collect();
    let stop = AtomicBool::new(false);
    let outcomes = core.wait(py, run_reads(client, reads, DEFAULT_DEPTH, &stop))?;
    let mut data: Vec<u8> = Vec::new();
    for o in outcomes {
        let piece = match o {
            Ok((_, piece)) => piece.unwrap_or_default(),
            Err(e) => return Ok(Err(e)),
        };
        if data.is_empty() {
            data = piece;
        } else {
            data.extend_from_slice(&piece);
        }
    }
    Ok(Ok(data))
}

/// Reads into all of `region` from `offset` (less at end of file); returns the bytes read. Errors
/// as in [`read_owned`].
pub(crate) fn read_into(
    py: Python<'_>,
    core: &Core,
    inode: &Arc<Inode>,
    offset: u64,
    region: &Region,
) -> PyResult<Result<usize, Error>> {
    let client = core.client()?.clone();
    let mut reads = Vec::new();
    let mut at = 0usize;
    for (off, l) in pieces(offset, region.len() as u64) {
        // SAFETY: the pieces are disjoint ranges of one region, and this call waits (wait_lent)
        // until every read into them has completed before it returns to Python.
        let buf = unsafe { region.lend(at, l as usize)? };
        reads.push(Read { inode: inode.clone(), offset: off, len: l, dest: Dest::Lent(buf) });
        at += l as usize;
    }
    let stop = AtomicBool::new(false);
    let outcomes = core.wait_lent(py, &stop, run_reads(client, reads, DEFAULT_DEPTH, &stop))?;
    let mut total = 0;
    for o in outcomes {
        match o {
            Ok((n, _)) => total += n,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(total))
}

/// `(offset, len)` pieces of at most [`MAX_PIECE`] bytes covering `len` bytes at `offset`
/// (one empty piece for an empty range).
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, u32)> {
    let count = len.div_ceil(MAX_PIECE).max(1);
    (0..count).map(move |i| {
        let start = i * MAX_PIECE;
        (offset.saturating_add(start), (len - start.min(len)).min(MAX_PIECE) as u32)
    })
}

/// A request's file: a path to resolve, or an opened `File`.
enum Target {
    Path(String),
    Inode(Arc<Inode>, String),
}

/// `Client.batch_read(reqs, buffers=None, depth=128)` (see the module note).
pub(crate) fn batch_read<'py>(
    py: Python<'py>,
    core: &Core,
    reqs: &Bound<'py, PyAny>,
    buffers: Option<&Bound<'py, PyAny>>,
    depth: usize,
) -> PyResult<Bound<'py, PyList>> {
    let client = core.client()?.clone();
    let mut parsed: Vec<(Target, u64, u32)> = Vec::new();
    for (i, item) in reqs.try_iter()?.enumerate() {
        parsed.push(parse_req(i, &item?)?);
    }
    let regions: Option<Vec<Region>> = match buffers {
        None => None,
        Some(b) => {
            let regions = b.try_iter()?.map(|o| Region::of(&o?)).collect::<PyResult<Vec<_>>>()?;
            if regions.len() != parsed.len() {
                return Err(PyValueError::new_err(format!(
                    "{} requests but {} buffers; give one buffer per request",
                    parsed.len(),
                    regions.len()
                )));
            }
            let mut ranges = Vec::with_capacity(regions.len());
            for (i, (r, (_, _, len))) in regions.iter().zip(&parsed).enumerate() {
                if (*len as usize) > r.len() {
                    return Err(PyValueError::new_err(format!(
                        "buffer {i} holds {} bytes; request {i} reads {len}",
                        r.len()
                    )));
                }
                ranges.push((r.addr(), *len as usize, i));
            }
            check_disjoint(&mut ranges, "buffer")?;
            Some(regions)
        }
    };

    // Resolve each distinct path once, concurrently.
    let mut paths: Vec<String> = parsed
        .iter()
        .filter_map(|(t, ..)| match t {
            Target::Path(p) => Some(p.clone()),
            Target::Inode(..) => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    let resolved = core.wait(py, resolve_all(client.clone(), core.user.clone(), paths.clone()))?;
    let mut inodes: std::collections::HashMap<String, Arc<Inode>> = std::collections::HashMap::new();
    for (p, r) in paths.into_iter().zip(resolved) {
        let inode = r.map_err(|e| os_error(&e, Some(&p)))?;
        if inode.inode_type != InodeType::File as i32 {
            let code = if inode.inode_type == InodeType::Directory as i32 {
                StatusCode::IsDirectory
            } else {
                StatusCode::InvalidArgument
            };
            return Err(os_error(&Error::new(code, "batch_read reads regular files"), Some(&p)));
        }
        inodes.insert(p, Arc::new(inode));
    }

    let mut reads = Vec::with_capacity(parsed.len());
    let mut names = Vec::with_capacity(parsed.len());
    for (i, (target, offset, len)) in parsed.into_iter().enumerate() {
        let (inode, name) = match target {
            Target::Path(p) => (inodes[&p].clone(), p),
            Target::Inode(inode, p) => (inode, p),
        };
        let dest = match &regions {
            // SAFETY: each buffer is lent once, over its first `len` bytes, and those ranges were
            // checked disjoint above; wait_lent below returns only after every read completed.
            Some(r) => Dest::Lent(unsafe { r[i].lend(0, len as usize)? }),
            None => Dest::Owned,
        };
        reads.push(Read { inode, offset, len, dest });
        names.push((name, offset, len));
    }
    let stop = AtomicBool::new(false);
    let outcomes = match &regions {
        Some(_) => core.wait_lent(py, &stop, run_reads(client, reads, depth, &stop))?,
        None => core.wait(py, run_reads(client, reads, depth, &stop))?,
    };
    let out = PyList::empty(py);
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok((_, Some(data))) if regions.is_none() => out.append(PyBytes::new(py, &data))?,
            Ok((n, _)) => out.append(n)?,
            Err(e) => {
                let (name, offset, len) = &names[i];
                let e = Error::new(e.code, format!("batch read {i} ({len} bytes at {offset}): {}", e.message));
                return Err(os_error(&e, Some(name)));
            }
        }
    }
    drop(regions); // the buffer exports end here, with the GIL held
    Ok(out)
}

/// Parses request `i`: `(path or File, offset, length)`.
fn parse_req(i: usize, item: &Bound<'_, PyAny>) -> PyResult<(Target, u64, u32)> {
    let t = item
        .cast::<PyTuple>()
        .map_err(|_| PyValueError::new_err(format!("request {i} must be a tuple (path or File, offset, length)")))?;
    if t.len() != 3 {
        return Err(PyValueError::new_err(format!("request {i} must be a tuple (path or File, offset, length)")));
    }
    let what = t.get_item(0)?;
    let target = if let Ok(f) = what.cast::<PyFile>() {
        let f = f.try_borrow()?;
        let (inode, path) = f.read_target()?;
        Target::Inode(inode, path)
    } else {
        let p: std::path::PathBuf = what.extract().map_err(|_| {
            PyValueError::new_err(format!("request {i}: the first item must be a path (str) or a t3fs.File"))
        })?;
        Target::Path(crate::client::path_str(&p)?.to_string())
    };
    let offset: i128 = t.get_item(1)?.extract()?;
    let len: i128 = t.get_item(2)?.extract()?;
    let (offset, len) = check_range(offset, len).map_err(|m| PyValueError::new_err(format!("request {i}: {m}")))?;
    Ok((target, offset, len))
}

/// A read's `(offset, length)` as the batch reader takes them, or why not.
pub(crate) fn check_range(offset: i128, len: i128) -> Result<(u64, u32), String> {
    let off = u64::try_from(offset).map_err(|_| format!("offset {offset} is not in 0..2**64"))?;
    let l = u32::try_from(len).map_err(|_| format!("length {len} is not in 0..2**32"))?;
    if off.checked_add(u64::from(l)).is_none() {
        return Err(format!("range {offset}+{len} passes 2**64"));
    }
    Ok((off, l))
}

/// Resolves every path (as `user`), concurrently; results in the order of `paths`.
async fn resolve_all(client: Arc<Client>, user: UserInfo, paths: Vec<String>) -> Vec<Result<Inode, Error>> {
    let mut set = JoinSet::new();
    for (i, p) in paths.iter().enumerate() {
        let (c, u, p) = (client.clone(), user.clone(), p.clone());
        set.spawn(async move { (i, c.resolve_path(&u, &p).await) });
    }
    let mut out: Vec<Option<Result<Inode, Error>>> = (0..paths.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, res)) => out[i] = Some(res),
            // A panic in the client is passed on as it is; tasks are never cancelled here.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    out.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::internal("path not resolved")))).collect()
}
