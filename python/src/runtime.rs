//! The tokio runtime behind the blocking Python API, and how a Python call waits on it.
//!
//! - One multi-thread runtime per process, made on first use and never dropped. A process forked
//!   from one that had a runtime (multiprocessing, PyTorch `DataLoader` workers) has none of its
//!   threads, so the child makes its own and leaks the parent's (dropping it would wait for
//!   threads that do not exist there). A [`Core`] (one connected client) belongs to the process
//!   that made it: in a forked child every call raises `RuntimeError` ([`Core::client`]), and the
//!   child connects its own client.
//! - A call releases the GIL while it waits (`Python::detach`), so other Python threads run (and
//!   other calls proceed in parallel on the runtime). It wakes every [`SIGNAL_POLL`] to let Python
//!   run signal handlers, so Ctrl-C raises `KeyboardInterrupt` within that time:
//!   - [`Core::wait`] then drops the operation. Only for operations whose reads own their buffers
//!     (a dropped read still finishes in the background, into its own memory).
//!   - [`Core::wait_lent`] is for operations that lend caller memory to reads (`readinto_at`,
//!     `batch_read` into buffers): it sets the operation's `stop` flag (no new reads start), waits
//!     for every read already started, then raises. So no read writes into a buffer once Python
//!     has it back.
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use t3fs_client::{Client, ClientConfig, UserInfo};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::routing::RoutingCache;
use tokio::runtime::Runtime;

use crate::errors::os_error;

/// How often a waiting call lets Python handle signals.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The process's runtime and the pid it belongs to.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// This process's runtime (made on first use, or after a fork).
fn runtime() -> PyResult<Arc<Runtime>> {
    let mut g = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((p, rt)) = g.as_ref()
        && *p == pid
    {
        return Ok(rt.clone());
    }
    // Made by the parent before a fork: its worker threads are not in this process.
    if let Some(parent) = g.take() {
        std::mem::forget(parent);
    }
    // Logs only when RUST_LOG asks for them. Once per process image: a forked child inherits the
    // subscriber and does as little as it can before its own runtime exists.
    static LOGS: std::sync::Once = std::sync::Once::new();
    LOGS.call_once(|| t3fs_common::telemetry::init("off"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("t3fs-io")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("starting the t3fs I/O runtime: {e}")))?;
    let rt = Arc::new(rt);
    *g = Some((pid, rt.clone()));
    Ok(rt)
}

/// One connected client, shared by a `Client` object and everything opened through it (files,
/// record files, loaders).
pub(crate) struct Core {
    /// `None` only after `Drop` in a forked child took it out to leak it.
    client: Option<Arc<Client>>,
    pub(crate) cfg: ClientConfig,
    pub(crate) user: UserInfo,
    rt: Arc<Runtime>,
    pid: u32,
    closed: AtomicBool,
}

impl Core {
    /// Connects (blocking, GIL released) to the cluster behind `cfg.mgmtd_addr`.
    pub(crate) fn connect(py: Python<'_>, cfg: ClientConfig, user: UserInfo) -> PyResult<Arc<Core>> {
        let rt = runtime()?;
        let fail = |e: t3fs_common::Error| {
            let e = t3fs_common::Error::new(e.code, format!("connecting to mgmtd {}: {}", cfg.mgmtd_addr, e.message));
            os_error(&e, None)
        };
        // One direct request first, so a wrong token or address fails at once with mgmtd's answer
        // instead of after the retry timeout; an unreachable mgmtd is left to `connect`'s retries.
        let (addr, token) = (cfg.mgmtd_addr.as_str(), cfg.token.as_str());
        let probe = async move { RoutingCache::new().refresh_via(&MgmtdConn::new(addr)?, token).await };
        if let Err(e) = wait_on(py, &rt, probe, None)?
            && !e.is_retryable()
        {
            return Err(fail(e));
        }
        let client = wait_on(py, &rt, Client::connect(cfg.clone()), None)?.map_err(fail)?;
        Ok(Arc::new(Core {
            client: Some(client),
            cfg,
            user,
            rt,
            pid: std::process::id(),
            closed: AtomicBool::new(false),
        }))
    }

    /// The client, unless it was closed or this is a forked child of the process that made it.
    pub(crate) fn client(&self) -> PyResult<&Arc<Client>> {
        if std::process::id() != self.pid {
            return Err(PyRuntimeError::new_err(
                "this t3fs client was created in the parent process; connect a new t3fs.Client after fork \
                 (e.g. in a DataLoader worker)",
            ));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(PyValueError::new_err("I/O operation on a closed t3fs.Client"));
        }
        self.client.as_ref().ok_or_else(|| PyRuntimeError::new_err("t3fs client is gone"))
    }

    /// Runs `fut` to completion with the GIL released; a signal (Ctrl-C) drops it and raises.
    pub(crate) fn wait<F>(&self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        wait_on(py, &self.rt, fut, None)
    }

    /// Like [`Core::wait`] for an operation that lends caller memory to reads: on a signal it sets
    /// `stop` and still waits for `fut` to finish (the operation must then start no new read and
    /// return once its started reads are done) before it raises.
    pub(crate) fn wait_lent<F>(&self, py: Python<'_>, stop: &AtomicBool, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        wait_on(py, &self.rt, fut, Some(stop))
    }

    /// Starts `fut` in the background (used to finish a write file dropped without `close`).
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if std::process::id() == self.pid {
            self.rt.spawn(fut);
        }
    }

    /// Stops the routing poller; later calls raise `ValueError`. Idempotent.
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client()?.clone();
        self.closed.store(true, Ordering::SeqCst);
        self.wait(py, async move { client.shutdown().await })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // Its connections and tasks live in the parent's runtime; do not touch them here.
            std::mem::forget(self.client.take());
        }
    }
}

/// Polls `fut` on `rt` with the GIL released, waking every [`SIGNAL_POLL`] for Python's signal
/// handlers (see the module note for what happens to `fut` when one raises).
fn wait_on<F>(py: Python<'_>, rt: &Runtime, fut: F, stop: Option<&AtomicBool>) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut fut = std::pin::pin!(fut);
    loop {
        // The timer is made inside `block_on`: it needs the runtime's context.
        let polled = py.detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_POLL, fut.as_mut()).await }));
        match polled {
            Ok(out) => return Ok(out),
            Err(_elapsed) => {
                if let Err(e) = py.check_signals() {
                    if let Some(stop) = stop {
                        stop.store(true, Ordering::SeqCst);
                        py.detach(|| rt.block_on(fut.as_mut()));
                    }
                    return Err(e);
                }
            }
        }
    }
}
