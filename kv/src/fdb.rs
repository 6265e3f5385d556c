//! FoundationDB backend (feature `fdb`): the production metadata store for many meta servers.
//! FoundationDB *is* the model of this crate's traits, so this is a thin mapping:
//! `begin` creates a transaction and fetches its read version; reads, writes, conflict ranges and
//! commit go straight to the client library, which provides read-your-writes, conflict ranges
//! (including limit-bounded range-read conflicts) and durability itself.
//!
//! Errors: `not_committed` (1020) => [`KvError::Conflict`], `transaction_too_old` (1007) =>
//! [`KvError::TooOld`], any other retryable error => `Conflict` (so [`crate::run`] retries it),
//! `transaction_too_large` (2101) => [`KvError::TransactionTooLarge`], `key_too_large` /
//! `value_too_large` (2102/2103) => [`KvError::TooLarge`], everything else => `Backend`.
//! Key and value sizes are also checked here first, so the error is the same as the other
//! backends' whatever the client library version.
//!
//! The client network thread is started once per process (FoundationDB allows only one) by the
//! first [`FdbKv::open`]; call [`stop_network`] before the process exits, after dropping every
//! handle. Needs `libfdb_c` at link and run time; only `cargo check --features fdb` runs in CI.
use std::sync::{Arc, Mutex};

use foundationdb::api::{FdbApiBuilder, NetworkAutoStop};
use foundationdb::options::{ConflictRangeType, StreamingMode};
use foundationdb::{Database, FdbError, KeySelector, RangeOption};

use crate::{
    KeyValue, KvEngine, KvError, MAX_KEY_BYTES, MAX_TRANSACTION_BYTES, MAX_VALUE_BYTES, RangeOpts, Result, Transaction,
};

enum Network {
    NotStarted,
    Running(NetworkAutoStop),
    Stopped,
}

/// The process-wide FoundationDB client network (it can be started only once per process).
static NETWORK: Mutex<Network> = Mutex::new(Network::NotStarted);

fn ensure_network() -> Result<()> {
    let mut net = NETWORK.lock().unwrap_or_else(|p| p.into_inner());
    match *net {
        Network::Running(_) => Ok(()),
        Network::Stopped => {
            Err(KvError::Backend("the FoundationDB network was already stopped in this process".into()))
        }
        Network::NotStarted => {
            let builder = FdbApiBuilder::default().build().map_err(|e| fdb_backend("select the API version", e))?;
            // SAFETY: `boot` requires that it runs once per process and that the returned guard is
            // dropped before the process exits. It runs once: we hold the NETWORK lock and move to
            // `Running`, never back to `NotStarted`. The guard lives in this static until
            // `stop_network` drops it; a process that exits without calling `stop_network` merely
            // skips the orderly network shutdown, the case FoundationDB documents for aborts.
            let guard = unsafe { builder.boot() }.map_err(|e| fdb_backend("start the network", e))?;
            *net = Network::Running(guard);
            Ok(())
        }
    }
}

/// Stops the FoundationDB client network (joins its thread). Call once before exiting, after
/// every [`FdbKv`] and transaction is dropped; the network cannot be restarted afterwards.
pub fn stop_network() {
    let mut net = NETWORK.lock().unwrap_or_else(|p| p.into_inner());
    if let Network::Running(guard) = std::mem::replace(&mut *net, Network::Stopped) {
        drop(guard);
    }
}

/// A FoundationDB database handle.
pub struct FdbKv {
    db: Database,
}

impl FdbKv {
    /// Connects using `cluster_file` (empty = FoundationDB's default cluster file).
    pub fn open(cluster_file: &str) -> Result<Arc<FdbKv>> {
        ensure_network()?;
        let path = if cluster_file.is_empty() { None } else { Some(cluster_file) };
        let db = Database::new(path).map_err(|e| fdb_backend("open the database", e))?;
        Ok(Arc::new(FdbKv { db }))
    }
}

#[async_trait::async_trait]
impl KvEngine for FdbKv {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let trx = self.db.create_trx().map_err(map_err)?;
        let read_version = trx.get_read_version().await.map_err(map_err)?;
        Ok(Box::new(FdbTxn { trx, read_version: read_version.max(0) as u64, bytes: 0, invalid: None }))
    }

    /// FoundationDB manages its own space (its storage servers refuse commits when full).
    fn space(&self) -> Option<(u64, u64)> {
        None
    }
}

struct FdbTxn {
    trx: foundationdb::Transaction,
    read_version: u64,
    /// Bytes of mutations made, for the error message and the client-side size check.
    bytes: usize,
    invalid: Option<KvError>,
}

impl FdbTxn {
    fn check(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        if self.invalid.is_some() {
            return false;
        }
        if key.len() > MAX_KEY_BYTES {
            self.invalid = Some(KvError::TooLarge(format!("key of {} bytes (limit {MAX_KEY_BYTES})", key.len())));
        } else if let Some(v) = value.filter(|v| v.len() > MAX_VALUE_BYTES) {
            self.invalid = Some(KvError::TooLarge(format!("value of {} bytes (limit {MAX_VALUE_BYTES})", v.len())));
        }
        self.invalid.is_none()
    }
}

fn fdb_backend(what: &str, e: FdbError) -> KvError {
    KvError::Backend(format!("foundationdb: {what}: {} ({})", e.message(), e.code()))
}

/// Maps a FoundationDB error onto the crate's error (see the module docs).
fn map_err(e: FdbError) -> KvError {
    match e.code() {
        1020 => KvError::Conflict,
        1007 => KvError::TooOld,
        2101 => KvError::TransactionTooLarge(0),
        2102 | 2103 => KvError::TooLarge(e.message().to_string()),
        _ if e.is_retryable() => KvError::Conflict,
        _ => fdb_backend("transaction", e),
    }
}

#[async_trait::async_trait]
impl Transaction for FdbTxn {
    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        let value = self.trx.get(key, snapshot).await.map_err(map_err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOpts) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        let mut range = Some(RangeOption {
            begin: KeySelector::first_greater_or_equal(begin.to_vec()),
            end: KeySelector::first_greater_or_equal(end.to_vec()),
            limit: if opts.limit == 0 { None } else { Some(opts.limit) },
            reverse: opts.reverse,
            mode: StreamingMode::WantAll,
            ..RangeOption::default()
        });
        let mut out = Vec::new();
        while let Some(page_opts) = range.take() {
            let page = self.trx.get_range(&page_opts, 1, opts.snapshot).await.map_err(map_err)?;
            out.extend(page.iter().map(|kv| KeyValue { key: kv.key().to_vec(), value: kv.value().to_vec() }));
            range = page_opts.next_range(&page);
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.bytes += key.len() + value.len();
        if self.check(key, Some(value)) {
            self.trx.set(key, value);
        }
    }

    fn clear(&mut self, key: &[u8]) {
        self.bytes += key.len();
        if self.check(key, None) {
            self.trx.clear(key);
        }
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.bytes += begin.len() + end.len();
            self.trx.clear_range(begin, end);
        }
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.add_conflict(begin, end, ConflictRangeType::Read);
    }

    fn add_write_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.bytes += begin.len() + end.len();
        self.add_conflict(begin, end, ConflictRangeType::Write);
    }

    fn read_version(&self) -> u64 {
        self.read_version
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let FdbTxn { trx, bytes, invalid, .. } = *self;
        if let Some(e) = invalid {
            return Err(e);
        }
        if bytes > MAX_TRANSACTION_BYTES {
            return Err(KvError::TransactionTooLarge(bytes));
        }
        match trx.commit().await {
            Ok(_) => Ok(()),
            Err(e) => Err(match map_err(*e) {
                KvError::TransactionTooLarge(_) => KvError::TransactionTooLarge(bytes),
                other => other,
            }),
        }
    }
}

impl FdbTxn {
    fn add_conflict(&mut self, begin: &[u8], end: &[u8], ty: ConflictRangeType) {
        if begin >= end || self.invalid.is_some() {
            return;
        }
        if let Err(e) = self.trx.add_conflict_range(begin, end, ty) {
            self.invalid = Some(map_err(e));
        }
    }
}
