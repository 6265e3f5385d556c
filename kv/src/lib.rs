//! t3fs-kv: transactional key-value store traits that model FoundationDB exactly.
//!
//! Semantics every backend must provide (checked by the shared conformance suite in
//! [`conformance`]):
//! - **Serializable optimistic transactions.** A transaction reads a consistent snapshot at its
//!   read version; writes are buffered and applied atomically at commit.
//! - **Read-your-writes** within a transaction (point and range reads see buffered sets/clears).
//! - **Conflicts.** Commit fails with [`KvError::Conflict`] (retryable) if any key or range the
//!   transaction read (with a conflicting read) was written by a transaction that committed after
//!   this one's read version. Range reads conflict on the whole range read, so phantoms conflict.
//! - **Snapshot reads** (`snapshot = true`) add no read conflict ranges.
//! - **Explicit conflict ranges** can be added for reads and writes.
//! - **Size limit.** A transaction whose writes exceed [`MAX_TRANSACTION_BYTES`] fails with
//!   [`KvError::TransactionTooLarge`] (not retryable).
//! - **Durability.** A transaction whose commit returned `Ok` survives process restart.
//!
//! Use [`run`] for the retry loop: it retries retryable errors with backoff.
mod error;
mod retry;

pub mod conformance;
pub mod embedded;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod mem;
mod resolver;
mod scan;

use std::sync::Arc;

pub use error::KvError;
pub use retry::{RetryPolicy, run, run_with};
pub use scan::PageScan;

pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// Largest total size of keys + values written by one transaction (FoundationDB's limit).
pub const MAX_TRANSACTION_BYTES: usize = 10_000_000;
/// Largest key (FoundationDB's limit).
pub const MAX_KEY_BYTES: usize = 10_000;
/// Largest value (FoundationDB's limit).
pub const MAX_VALUE_BYTES: usize = 100_000;

/// A key-value pair returned by range reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A range read: keys in `[begin, end)`, at most `limit` pairs (0 = no limit), in ascending order
/// unless `reverse`.
#[derive(Clone, Debug, Default)]
pub struct RangeOpts {
    pub limit: usize,
    pub reverse: bool,
    /// Snapshot read: adds no read conflict range.
    pub snapshot: bool,
}

/// A database handle. Cheap to share (`Arc<dyn KvEngine>`).
#[async_trait::async_trait]
pub trait KvEngine: Send + Sync + 'static {
    /// Starts a transaction at the newest committed read version.
    async fn begin(&self) -> Result<Box<dyn Transaction>>;

    /// Free and total bytes of the local file system holding the store, for a store that keeps its
    /// data on this machine (the embedded backend); `None` where the backend manages its own space
    /// (FoundationDB) or has no disk (mem). Meta keeps a reserve on it (docs/meta.md). Required (no
    /// default), so a wrapper cannot hide the store's answer by forgetting to forward it.
    fn space(&self) -> Option<(u64, u64)>;
}

/// A read-write transaction. Dropping it without commit discards its writes.
#[async_trait::async_trait]
pub trait Transaction: Send {
    /// Point read. `snapshot = false` adds `key` to the read conflict set.
    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>>;

    /// Range read over `[begin, end)`. A non-snapshot read adds the range actually covered to the
    /// read conflict set (the whole range if the limit was not hit, otherwise up to the last key
    /// returned), so inserts into it by others conflict (no phantoms).
    async fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOpts) -> Result<Vec<KeyValue>>;

    /// Buffers a write of `key`.
    fn set(&mut self, key: &[u8], value: &[u8]);

    /// Buffers a delete of `key`.
    fn clear(&mut self, key: &[u8]);

    /// Buffers a delete of every key in `[begin, end)`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]);

    /// Adds `[begin, end)` to the read conflict set.
    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]);

    /// Adds `[begin, end)` to the write conflict set (others reading it will conflict).
    fn add_write_conflict_range(&mut self, begin: &[u8], end: &[u8]);

    /// The read version this transaction reads at.
    fn read_version(&self) -> u64;

    /// Commits atomically and durably. `Err(Conflict)` means nothing was written: retry.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Shared engine handle.
pub type Db = Arc<dyn KvEngine>;

/// The smallest key strictly greater than every key starting with `prefix` (for prefix ranges).
/// Returns `None` when no such key exists (prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `key` followed by a zero byte: the smallest key strictly greater than `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// Which backend a daemon's metadata lives in (the `[kv]` table of mgmtd/meta configs).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum KvConfig {
    /// In-memory; lost on exit. Tests only.
    Mem,
    /// fjall on local disk with the in-process conflict resolver (the single-machine default).
    Embedded {
        /// Directory holding the store; created if missing.
        path: std::path::PathBuf,
    },
    /// FoundationDB (build with `--features fdb`).
    Fdb {
        /// Cluster file; empty = the FoundationDB default.
        #[serde(default)]
        cluster_file: String,
    },
}

/// Opens the configured backend.
pub async fn open(cfg: &KvConfig) -> Result<Db> {
    match cfg {
        KvConfig::Mem => Ok(mem::MemKv::new()),
        KvConfig::Embedded { path } => Ok(embedded::EmbeddedKv::open(path)?),
        #[cfg(feature = "fdb")]
        KvConfig::Fdb { cluster_file } => Ok(fdb::FdbKv::open(cluster_file)?),
        #[cfg(not(feature = "fdb"))]
        KvConfig::Fdb { .. } => Err(KvError::Backend(
            "this binary was built without FoundationDB support; rebuild with --features fdb".into(),
        )),
    }
}
