//! The chunk store of one target: chunk data in the size-class chunk engine ([`crate::engine`]), chunk
//! metadata in a fjall keyspace, and two-phase (pending / committed) versions for CRAQ.
//!
//! Layout of a target directory (formats 2 and 3, see [`migrate`]):
//! - `FORMAT`: `t3fs-target <n>` (format 3 adds `disk <id>`); a directory with an unknown format is refused;
//! - format 2 only: `engine/<class>/<group>`, the data files of the target's private chunk engine; a
//!   format 3 target keeps its data in the shared engine of its disk (`crate::disk`);
//! - `meta/`: a fjall database with keyspaces `chunks` (chunk id (16 bytes) -> its *committed* record,
//!   `chunk_store/record.rs`, naming the engine slot of its content) and `pending` (chunk id -> the record
//!   of at most one *pending* version: an update applied here but not yet committed down the chain).
//!
//! **Copy-on-write, crash-safe updates** (`chunk_store/apply.rs`). An update builds the chunk's complete
//! new content (old content with the write applied, gaps zero-filled; or cut/extended; or nothing for a
//! removal), writes it into a *fresh* slot (`pwrite` + `fdatasync`) and only then commits the record that
//! names the slot (one fjall batch, `persist(SyncAll)`), which is the atomic switch. The slot of the
//! version it replaces is freed after that commit, and only once no reader pins it. Slot allocation is
//! derived from the records at open, so after a crash at any point every chunk reads as its old or its
//! new version and a slot written by an uncommitted update, or not yet freed, is free again.
//!
//! **Two phases** (research/3fs.md §4, service.rs): [`ChunkStore::prepare`] stores an update as the
//! chunk's pending version (its own slot; the committed version stays readable), [`ChunkStore::commit`]
//! promotes it (one batch: committed record := pending record, pending removed). [`ChunkStore::apply`]
//! does both at once (the tail, tests), [`ChunkStore::apply_sync`] too (sync updates; they also drop any
//! pending version). Normal reads return the committed version and fail with `ChunkNotCommitted` while a
//! pending version exists; relaxed reads return the pending one.
//!
//! **Integrity.** Every record holds the CRC32C of the whole chunk and the CRC32C of every
//! [`CRC_BLOCK_SIZE`] block of it. A read of part of a chunk reads only the blocks it touches and verifies
//! each of them; a read of the whole chunk, a partial update (which reads the old content), a resync
//! snapshot and [`ChunkStore::scrub`] read the whole slot and verify every block CRC and the whole-chunk
//! CRC (one CRC pass). Any mismatch fails with `ChecksumMismatch`, so damaged bytes are never served.
//!
//! **Versions.** Each record carries the update version that produced it. Removals leave a *tombstone*
//! record so versions of a chunk id stay monotonic across remove/re-create, which is what lets chain
//! successors recognise a replayed update as a duplicate (`version <= local version`). The tombstones
//! of deleted files' chunks are dropped by [`ChunkStore::purge`] (`service/purge.rs` says when that is
//! safe). **Sync updates** ([`ChunkStore::apply_sync`]: REPLACE or REMOVE from the SERVING
//! predecessor of a SYNCING target, see `crate::sync`) set exactly the given version and content even if
//! the local version is higher, or equal with other content; [`ChunkStore::forget`] drops a record
//! altogether. [`ChunkStore::list_all`] lists tombstones and pending versions as well, for resync diffs.
//!
//! **Concurrency.** Updates of one chunk are serialised by a per-chunk async lock ([`ChunkStore::lock`]);
//! the replication layer holds it across prepare + forward + commit so updates to one chunk reach every
//! replica in the same order. Reads take no chunk lock: they pin the slot of the record they found
//! (`Engine::pin`), which keeps it from being reused until the read is done. [`ChunkStore::update_permit`]
//! / [`ChunkStore::update_barrier`] let resync wait out every update in flight on the target. Errors are
//! `t3fs_common::Error` directly: every failure here maps onto exactly one wire status code.
//!
//! Shortcut: every partial update rewrites the whole chunk into its new slot (up to 64 MiB; 3FS appends
//! in place when a write only extends a chunk).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use t3fs_common::proto;
use t3fs_common::{ChunkId, Error, InodeId, StatusCode, TargetId};

use crate::disk::Disk;
use crate::engine::{Engine, EngineOptions, Slot};

/// Largest chunk a target stores.
pub const MAX_CHUNK_SIZE: u32 = t3fs_common::layout::MAX_CHUNK_SIZE;

mod apply;
pub mod migrate;
mod read;
mod record;

#[cfg(test)]
pub(crate) use apply::Failpoint;
use record::Record;
pub use record::{MAX_CRC_BLOCK_SIZE, MIN_CRC_BLOCK_SIZE, crc_block_size};

const META_DIR: &str = "meta";
const ENGINE_DIR: &str = "engine";
const KEYSPACE: &str = "chunks";
const PENDING_KEYSPACE: &str = "pending";

/// Committed metadata of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChunkMeta {
    /// Update version that produced this content.
    pub version: u64,
    /// Length in bytes.
    pub length: u32,
    /// CRC32C of the `length` bytes.
    pub crc32c: u32,
    /// Chain version of the update that produced this content.
    pub chain_version: u32,
}

impl ChunkMeta {
    pub fn to_proto(&self, chunk: ChunkId) -> proto::ChunkMeta {
        proto::ChunkMeta {
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            version: self.version,
            length: self.length,
            crc32c: self.crc32c,
            chain_version: self.chain_version,
            removed: false,
            pending_version: 0,
        }
    }
}

/// One entry of [`ChunkStore::list_all`]: a live chunk or a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedChunk {
    pub chunk: ChunkId,
    /// For a tombstone: the removal's version (length and CRC 0).
    pub meta: ChunkMeta,
    pub removed: bool,
    /// The version of a pending (not yet committed) update of the chunk, 0 if none.
    pub pending_version: u64,
}

impl ListedChunk {
    pub fn to_proto(&self) -> proto::ChunkMeta {
        proto::ChunkMeta {
            removed: self.removed,
            pending_version: self.pending_version,
            ..self.meta.to_proto(self.chunk)
        }
    }
}

/// One update of one chunk.
#[derive(Clone, Debug)]
pub enum Update {
    /// Write `data` at `offset`, extending the chunk (zero-filling any gap) if needed.
    Write { offset: u32, data: Bytes, payload_crc32c: u32, chunk_size: u32 },
    /// Cut (or zero-extend) the chunk to `length` bytes; creates it if missing.
    Truncate { length: u32, chunk_size: u32 },
    /// Delete the chunk (a tombstone keeps its version).
    Remove,
    /// Replace the whole chunk with `data` (resync, forwarding to a SYNCING successor). Applies over a
    /// missing chunk or a tombstone too; the version rule is that of [`ChunkStore::apply`] or
    /// [`ChunkStore::apply_sync`].
    Replace { data: Bytes, payload_crc32c: u32 },
}

impl Update {
    /// Checks the update against its own payload and limits. Bad input changes nothing.
    fn validate(&self) -> Result<(), Error> {
        let check_size = |end: u64, chunk_size: u32| {
            if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
                return Err(Error::invalid(format!("chunk size {chunk_size} not in [1, {MAX_CHUNK_SIZE}]")));
            }
            if end > u64::from(chunk_size) {
                return Err(Error::new(
                    StatusCode::ChunkTooLarge,
                    format!("update ends at {end}, beyond the chunk size {chunk_size}"),
                ));
            }
            Ok(())
        };
        match self {
            Update::Write { offset, data, payload_crc32c, chunk_size } => {
                check_size(u64::from(*offset) + data.len() as u64, *chunk_size)?;
                check_crc(data, *payload_crc32c)
            }
            Update::Truncate { length, chunk_size } => check_size(u64::from(*length), *chunk_size),
            Update::Remove => Ok(()),
            Update::Replace { data, payload_crc32c } => {
                check_size(data.len() as u64, MAX_CHUNK_SIZE)?;
                check_crc(data, *payload_crc32c)
            }
        }
    }
}

fn check_crc(data: &[u8], expected: u32) -> Result<(), Error> {
    let actual = crc32c::crc32c(data);
    if actual != expected {
        return Err(Error::new(
            StatusCode::ChecksumMismatch,
            format!("payload crc32c {actual:#010x} != request {expected:#010x}"),
        ));
    }
    Ok(())
}

/// A chunk's records on this target ([`ChunkStore::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordState {
    /// The committed record's metadata (all 0 when only a pending version exists).
    pub meta: ChunkMeta,
    /// The committed record is a tombstone.
    pub removed: bool,
    /// The version of a pending update, 0 if none.
    pub pending_version: u64,
}

/// Result of [`ChunkStore::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The chunk's metadata after the call (for a removed chunk: its tombstone, length 0).
    pub meta: ChunkMeta,
    /// Whether the chunk exists after the call.
    pub exists: bool,
    /// Nothing changed: the local version was already >= the update's version (sync updates: already
    /// at exactly that version and state).
    pub duplicate: bool,
}

/// What [`ChunkStore::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub live_chunks: usize,
    pub tombstones: usize,
    /// Pending versions kept (updates applied here but not committed when the target closed).
    pub pending: usize,
    /// Pending records dropped because their version was already committed (a crash between the two).
    pub orphans_removed: usize,
    /// Chunks imported from the file-per-chunk layout (format 1) by this open.
    pub migrated: usize,
    /// Live chunks whose data is missing (slot or file) or whose slot is invalid (reads fail with
    /// ChecksumMismatch).
    pub damaged: Vec<ChunkId>,
}

struct Db {
    db: fjall::Database,
    metas: fjall::Keyspace,
    pending: fjall::Keyspace,
}

struct Inner {
    target: TargetId,
    dir: PathBuf,
    engine: Arc<Engine>,
    /// Slots named by records that the engine could not mark at open (no such group, or already named
    /// by another record): never freed through those records, so a repair of a damaged chunk cannot free
    /// a slot another chunk owns.
    invalid_slots: Vec<Slot>,
    /// `None` once closed: the fjall database is dropped (releasing its directory lock) even if handles
    /// to this store are still alive in connection tasks.
    db: RwLock<Option<Db>>,
    locks: Mutex<HashMap<ChunkId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held shared by every replicated update from before its chain check until it is acknowledged;
    /// taken exclusively by [`ChunkStore::update_barrier`].
    updates: tokio::sync::RwLock<()>,
    used_bytes: AtomicU64,
    /// Set once the metadata store has poisoned itself (a journal write or sync failed, e.g. a
    /// disk that filled up or failed; every later update fails until the process restarts and
    /// reopens it) or chunk data could not be written for a reason other than a full disk: the
    /// target reports itself OFFLINE ([`ChunkStore::failed`]).
    failed: std::sync::atomic::AtomicBool,
    /// Test-only crash points in the update path (`apply.rs`).
    #[cfg(test)]
    failpoint: Mutex<Option<Failpoint>>,
}

/// Which engine a target's data goes to (see [`ChunkStore::begin_open`]).
#[derive(Clone)]
pub enum EngineChoice {
    /// `<target>/engine`, opened for this target alone.
    Private(EngineOptions),
    /// The shared engine of a disk. A format 2 target keeps its private engine even so.
    Shared(Arc<Disk>),
}

/// A target between [`ChunkStore::begin_open`] and [`OpeningStore::finish`].
pub struct OpeningStore {
    store: ChunkStore,
    report: OpenReport,
    layout: migrate::Layout,
    invalid: Vec<Slot>,
    /// The shared engine's disk id, when the target uses one.
    disk: Option<u64>,
}

impl OpeningStore {
    /// Migrates a file-per-chunk target, records the format and checks every record. For a shared engine,
    /// call this only after the engine is sealed (allocation is refused before).
    pub fn finish(self) -> Result<(ChunkStore, OpenReport), Error> {
        let Self { store, mut report, layout, invalid, disk } = self;
        let target = store.inner.target;
        if layout == migrate::Layout::FilePerChunk {
            report.migrated = store.migrate_files()?;
        }
        migrate::finish(&store.inner.dir, layout, disk)?;
        store.check(&mut report, &invalid)?;
        if !report.damaged.is_empty() || report.orphans_removed > 0 || report.migrated > 0 {
            let (stale, damaged, migrated) = (report.orphans_removed, report.damaged.len(), report.migrated);
            tracing::warn!(target_id = %target, stale, damaged, migrated, "target recovered");
        }
        Ok((store, report))
    }
}

/// The chunk store of one target. Cheap to clone.
#[derive(Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

fn kv_err(e: fjall::Error) -> Error {
    Error::new(StatusCode::Io, format!("chunk metadata store: {e}"))
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(&context, e)
}

/// Holds the lock of one chunk; dropping it releases the lock.
pub struct ChunkGuard {
    // Field order matters: the mutex guard is released before the map entry is cleaned up.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    entry: LockEntry,
}

impl ChunkGuard {
    pub fn chunk(&self) -> ChunkId {
        self.entry.chunk
    }
}

/// A reference to a per-chunk lock in the map; the last reference removes the map entry.
struct LockEntry {
    chunk: ChunkId,
    store: Arc<Inner>,
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for LockEntry {
    fn drop(&mut self) {
        drop(self.mutex.take());
        let mut locks = self.store.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Anyone else holding or waiting for this lock holds a clone (taken under the map lock).
        if locks.get(&self.chunk).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.chunk);
        }
    }
}

impl ChunkStore {
    /// Opens (creating if needed) the target directory `path` with a private engine: checks its format
    /// (migrating a file-per-chunk target into the engine), rebuilds the slot allocation from the records
    /// and checks that every live chunk's slot is valid.
    pub fn open(target: TargetId, path: &Path) -> Result<(Self, OpenReport), Error> {
        Self::open_with(target, path, EngineOptions::default())
    }

    /// [`ChunkStore::open`] with engine options.
    pub fn open_with(target: TargetId, path: &Path, options: EngineOptions) -> Result<(Self, OpenReport), Error> {
        Self::begin_open(target, path, &EngineChoice::Private(options))?.finish()
    }

    /// The first half of opening a target: format check, metadata store, and the target's slots marked in
    /// its engine (for a shared engine: attached, see `Engine::attach`). [`OpeningStore::finish`] does the
    /// rest, which may allocate: for a shared engine, only after every target of the disk has begun and
    /// the engine is sealed.
    pub fn begin_open(target: TargetId, path: &Path, choice: &EngineChoice) -> Result<OpeningStore, Error> {
        let layout = migrate::check_format(path)?;
        let db = fjall::Database::builder(path.join(META_DIR)).worker_threads(1).open().map_err(|e| match e {
            fjall::Error::Locked => Error::new(
                StatusCode::Busy,
                format!("target directory {} is in use by another storage process", path.display()),
            ),
            e => kv_err(e),
        })?;
        let metas = db.keyspace(KEYSPACE, fjall::KeyspaceCreateOptions::default).map_err(kv_err)?;
        let pending = db.keyspace(PENDING_KEYSPACE, fjall::KeyspaceCreateOptions::default).map_err(kv_err)?;
        let db = Db { db, metas, pending };
        let mut report = OpenReport::default();
        let referenced = referenced_slots(&db, &mut report)?;
        let private = |options| Engine::open_single(&path.join(ENGINE_DIR), options, target.0, &referenced);
        let (engine, invalid, disk) = match (layout, choice) {
            (migrate::Layout::Shared(id), EngineChoice::Shared(disk)) if id == disk.id() => {
                (disk.engine().clone(), disk.engine().attach(target.0, &referenced)?, Some(id))
            }
            (migrate::Layout::Shared(id), choice) => {
                let configured = match choice {
                    EngineChoice::Shared(d) => {
                        format!("disk {} ({}) has id {:016x}", d.index(), d.path().display(), d.id())
                    }
                    EngineChoice::Private(_) => "no shared disk is configured for it".into(),
                };
                return Err(Error::invalid(format!(
                    "target {target} at {} keeps its data in the engine of disk {id:016x}, but {configured}",
                    path.display()
                )));
            }
            (migrate::Layout::Engine, EngineChoice::Shared(disk)) => {
                tracing::info!(target_id = %target, disk = disk.index(),
                    "format 2 target keeps its private engine (not the disk's shared one)");
                let (e, invalid) = private(disk.options())?;
                (e, invalid, None)
            }
            (_, EngineChoice::Private(options)) => {
                let (e, invalid) = private(*options)?;
                (e, invalid, None)
            }
            (_, EngineChoice::Shared(disk)) => {
                disk.register(target, path)?;
                (disk.engine().clone(), disk.engine().attach(target.0, &referenced)?, Some(disk.id()))
            }
        };
        let store = Self {
            inner: Arc::new(Inner {
                target,
                dir: path.to_path_buf(),
                engine,
                invalid_slots: invalid.clone(),
                db: RwLock::new(Some(db)),
                locks: Mutex::default(),
                updates: tokio::sync::RwLock::new(()),
                used_bytes: AtomicU64::new(0),
                failed: std::sync::atomic::AtomicBool::new(false),
                #[cfg(test)]
                failpoint: Mutex::new(None),
            }),
        };
        Ok(OpeningStore { store, report, layout, invalid, disk })
    }

    /// Counts records, finds damaged live chunks (no slot for a non-empty chunk, an undecodable slot, a
    /// slot the engine could not mark, a length beyond the slot) and sums `used_bytes`.
    fn check(&self, report: &mut OpenReport, invalid: &[Slot]) -> Result<(), Error> {
        let (mut used, mut live, mut tombstones) = (0u64, 0, 0);
        let mut damaged = Vec::new();
        for (chunk, rec) in self.records()? {
            if rec.removed {
                tombstones += 1;
                continue;
            }
            live += 1;
            used += u64::from(rec.meta.length);
            let ok = match rec.slot.map(Slot::decode) {
                None => rec.meta.length == 0,
                Some(None) => false,
                Some(Some(s)) => !invalid.contains(&s) && u64::from(rec.meta.length) <= s.size(),
            };
            if !ok {
                tracing::error!(target_id = self.inner.target.0, %chunk, meta = ?rec.meta, slot = ?rec.slot,
                    "chunk data missing or slot invalid");
                damaged.push(chunk);
            }
        }
        (report.live_chunks, report.tombstones, report.damaged) = (live, tombstones, damaged);
        report.pending = self.with_db(|db| db.pending.len().map_err(kv_err))?;
        self.inner.used_bytes.store(used, Ordering::Relaxed);
        Ok(())
    }

    pub fn target(&self) -> TargetId {
        self.inner.target
    }

    /// The target directory (on the target's disk).
    pub fn chunks_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The chunk engine holding the data.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Sum of the lengths of all live committed chunks.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    /// Takes the lock of `chunk`; updates and reads of one chunk are serialised by it.
    pub async fn lock(&self, chunk: ChunkId) -> ChunkGuard {
        let mutex = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(chunk).or_default().clone()
        };
        // If this future is dropped while waiting, `entry` still cleans up the map.
        let entry = LockEntry { chunk, store: self.inner.clone(), mutex: Some(mutex.clone()) };
        let guard = mutex.lock_owned().await;
        ChunkGuard { _guard: guard, entry }
    }

    /// Taken by an update for its whole duration (chain check, apply, forward), before the chunk lock.
    pub async fn update_permit(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.inner.updates.read().await
    }

    /// Waits until every update that holds an [`ChunkStore::update_permit`] now has finished. Resync
    /// uses it so that no update checked against an older routing snapshot is still in flight when it
    /// lists the chunks.
    pub async fn update_barrier(&self) {
        drop(self.inner.updates.write().await);
    }

    fn with_db<T>(&self, f: impl FnOnce(&Db) -> Result<T, Error>) -> Result<T, Error> {
        let g = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(db) => f(db).inspect_err(|e| {
                if e.code == StatusCode::Io {
                    self.check_poisoned(db);
                }
            }),
            None => Err(Error::unavailable(format!("target {} is closed", self.inner.target))),
        }
    }

    /// After an I/O error of the metadata store: whether fjall poisoned itself (it then refuses
    /// every write, and a persist of nothing says so). Logged once; the heartbeat then reports the
    /// target OFFLINE, so mgmtd takes it out of its chain instead of letting writes fail on it.
    fn check_poisoned(&self, db: &Db) {
        if matches!(db.db.persist(fjall::PersistMode::Buffer), Err(fjall::Error::Poisoned)) {
            self.mark_failed("chunk metadata store poisoned after an I/O error (a full or failing disk)");
        }
    }

    /// Marks the target failed (logged once): its heartbeat reports it OFFLINE from now on, so
    /// mgmtd takes it out of its chain and the other replicas carry on; a restart of the storage
    /// process reopens it, and it returns through resync.
    pub(crate) fn mark_failed(&self, why: &str) {
        if !self.inner.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(target_id = %self.inner.target, dir = %self.inner.dir.display(), why,
                "target failed: it reports OFFLINE until the storage process restarts");
        }
    }

    /// Whether the target has failed for good: its metadata store poisoned itself
    /// ([`ChunkStore::check_poisoned`]), or writing or syncing chunk data failed with an I/O error
    /// other than a full disk (a failing disk).
    pub fn failed(&self) -> bool {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// The committed record of `chunk`.
    fn record(&self, chunk: ChunkId) -> Result<Option<Record>, Error> {
        self.with_db(|db| db.metas.get(chunk.to_bytes()).map_err(kv_err)?.map(|v| Record::decode(&v)).transpose())
    }

    /// The pending record of `chunk`.
    fn pending_record(&self, chunk: ChunkId) -> Result<Option<Record>, Error> {
        self.with_db(|db| db.pending.get(chunk.to_bytes()).map_err(kv_err)?.map(|v| Record::decode(&v)).transpose())
    }

    /// Every committed record, without block CRCs (see [`Record::decode_head`]).
    fn records(&self) -> Result<Vec<(ChunkId, Record)>, Error> {
        self.with_db(|db| scan(&db.metas))
    }

    /// The chunk's records under the caller's lock: `None` if it has none (never written, or purged).
    pub fn state(&self, guard: &ChunkGuard) -> Result<Option<RecordState>, Error> {
        self.state_of(guard.chunk())
    }

    fn state_of(&self, chunk: ChunkId) -> Result<Option<RecordState>, Error> {
        let (rec, pending) = (self.record(chunk)?, self.pending_record(chunk)?);
        let pending_version = pending.as_ref().map_or(0, |p| p.meta.version);
        Ok(match rec {
            None if pending.is_none() => None,
            None => Some(RecordState { meta: ChunkMeta::default(), removed: false, pending_version }),
            Some(r) => Some(RecordState { meta: r.meta, removed: r.removed, pending_version }),
        })
    }

    /// Metadata of a live chunk (`None` if missing or removed).
    pub fn query(&self, chunk: ChunkId) -> Result<Option<ChunkMeta>, Error> {
        Ok(self.record(chunk)?.filter(|r| !r.removed).map(|r| r.meta))
    }

    /// Metadata of every live chunk, in chunk id order.
    pub fn list(&self) -> Result<Vec<(ChunkId, ChunkMeta)>, Error> {
        Ok(self.records()?.into_iter().filter(|(_, r)| !r.removed).map(|(c, r)| (c, r.meta)).collect())
    }

    /// The live chunk of `inode` with the highest index (track 0), if any: what meta asks to learn a
    /// file's exact length. One reverse prefix scan; tombstones are skipped.
    pub fn last_chunk(&self, inode: InodeId) -> Result<Option<(ChunkId, ChunkMeta)>, Error> {
        let prefix = ChunkId::new(inode, 0).to_bytes();
        // Tenant bytes, inode and track 0: every index of the file's data.
        let prefix = prefix[..12].to_vec();
        self.with_db(|db| {
            for kv in db.metas.prefix(&prefix).rev() {
                let (k, v) = kv.into_inner().map_err(kv_err)?;
                let r = Record::decode_head(&v)?;
                if !r.removed {
                    return Ok(Some((ChunkId::from_bytes(&k)?, r.meta)));
                }
            }
            Ok(None)
        })
    }

    /// Every record, live chunks and tombstones, with the version of any pending update, in chunk id
    /// order (resync diffs).
    pub fn list_all(&self) -> Result<Vec<ListedChunk>, Error> {
        let pending: HashMap<ChunkId, u64> =
            self.with_db(|db| scan(&db.pending))?.into_iter().map(|(c, r)| (c, r.meta.version)).collect();
        Ok(self
            .records()?
            .into_iter()
            .map(|(chunk, r)| ListedChunk {
                chunk,
                meta: r.meta,
                removed: r.removed,
                pending_version: pending.get(&chunk).copied().unwrap_or(0),
            })
            .collect())
    }

    /// One page of [`ChunkStore::list_all`] (the `ListChunks` RPC): the records after `start_after`
    /// (exclusive; `None`: from the first), only `inode`'s if set, at most `limit` of them,
    /// tombstones only if `include_removed`. At most `max_scan` records are looked at, so a long run
    /// of skipped tombstones cannot make one page unbounded. The second value is where the next page
    /// starts (`None`: the listing is complete). With `inode`, the last page also lists the file's
    /// chunks that have only a pending version (version 0, after the others).
    pub fn list_page(
        &self,
        start_after: Option<ChunkId>,
        inode: Option<InodeId>,
        limit: usize,
        max_scan: usize,
        include_removed: bool,
    ) -> Result<(Vec<ListedChunk>, Option<ChunkId>), Error> {
        use std::ops::Bound;
        let (limit, max_scan) = (limit.max(1), max_scan.max(1));
        let key = |inode: u64| ChunkId { inode: InodeId(inode), track: 0, index: 0 }.to_bytes().to_vec();
        let from = match (start_after, inode) {
            (Some(c), _) => Bound::Excluded(c.to_bytes().to_vec()),
            (None, Some(i)) => Bound::Included(key(i.0)),
            (None, None) => Bound::Unbounded,
        };
        let to = match inode {
            Some(i) if i.0 < u64::MAX => Bound::Excluded(key(i.0 + 1)),
            _ => Bound::Unbounded,
        };
        self.with_db(|db| {
            let (mut out, mut scanned, mut last) = (Vec::new(), 0, None);
            for kv in db.metas.range::<Vec<u8>, _>((from, to.clone())) {
                if out.len() == limit || scanned == max_scan {
                    return Ok((out, last));
                }
                let (k, v) = kv.into_inner().map_err(kv_err)?;
                let (chunk, r) = (ChunkId::from_bytes(&k)?, Record::decode_head(&v)?);
                scanned += 1;
                last = Some(chunk);
                if r.removed && !include_removed {
                    continue;
                }
                let pending_version = match db.pending.get(k).map_err(kv_err)? {
                    Some(p) => Record::decode_head(&p)?.meta.version,
                    None => 0,
                };
                out.push(ListedChunk { chunk, meta: r.meta, removed: r.removed, pending_version });
            }
            if inode.is_some() {
                // One file's listing also names its chunks that only have a pending version (a
                // write whose forward failed and was never retried), after the rest, in the last
                // page: GC must remove them too. There are few; they carry version 0.
                let from = inode.map_or(Bound::Unbounded, |i| Bound::Included(key(i.0)));
                for kv in db.pending.range::<Vec<u8>, _>((from, to)) {
                    let (k, v) = kv.into_inner().map_err(kv_err)?;
                    if db.metas.get(&k).map_err(kv_err)?.is_none() {
                        let pending_version = Record::decode_head(&v)?.meta.version;
                        let chunk = ChunkId::from_bytes(&k)?;
                        out.push(ListedChunk { chunk, meta: ChunkMeta::default(), removed: false, pending_version });
                    }
                }
            }
            Ok((out, None))
        })
    }

    /// The chunk's committed state under the caller's lock: `None` if it never existed, else its record
    /// and, for a live chunk, its whole verified content (`None` for a tombstone).
    pub async fn snapshot(&self, guard: &ChunkGuard) -> Result<Option<(ChunkMeta, Option<Bytes>)>, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || store.snapshot_of(chunk, store.record(chunk)?)).await
    }

    /// Like [`ChunkStore::snapshot`], but of the pending version if there is one (what a hop forwards to
    /// a SYNCING successor after preparing an update).
    pub async fn snapshot_latest(&self, guard: &ChunkGuard) -> Result<Option<(ChunkMeta, Option<Bytes>)>, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || {
            let rec = match store.pending_record(chunk)? {
                Some(p) => Some(p),
                None => store.record(chunk)?,
            };
            store.snapshot_of(chunk, rec)
        })
        .await
    }

    fn snapshot_of(&self, chunk: ChunkId, rec: Option<Record>) -> Result<Option<(ChunkMeta, Option<Bytes>)>, Error> {
        match rec {
            None => Ok(None),
            Some(r) if r.removed => Ok(Some((r.meta, None))),
            Some(r) => Ok(Some((r.meta, Some(self.read_verified(chunk, &r)?)))),
        }
    }

    /// The chunk's committed version (0 if it never existed; a removed chunk keeps its version).
    pub fn version(&self, guard: &ChunkGuard) -> Result<u64, Error> {
        Ok(self.record(guard.chunk())?.map_or(0, |r| r.meta.version))
    }

    /// The version of the chunk's pending update, if any.
    pub fn pending_version(&self, guard: &ChunkGuard) -> Result<Option<u64>, Error> {
        Ok(self.pending_record(guard.chunk())?.map(|r| r.meta.version))
    }

    /// Verifies every live chunk's CRC; returns the damaged ones with their errors.
    pub async fn scrub(&self) -> Result<Vec<(ChunkId, Error)>, Error> {
        let mut bad = Vec::new();
        for (chunk, _) in self.list()? {
            if let Err(e) = self.verify(chunk).await {
                bad.push((chunk, e));
            }
        }
        Ok(bad)
    }

    /// Reads the chunk's committed data under its lock and checks every block CRC and the whole
    /// chunk's; returns the bytes read (0 for a tombstone or a missing chunk), or the damage.
    pub async fn verify(&self, chunk: ChunkId) -> Result<u64, Error> {
        let store = self.clone();
        let guard = self.lock(chunk).await;
        let res = blocking(move || match store.record(chunk)?.filter(|r| !r.removed) {
            Some(r) => store.read_verified(chunk, &r).map(|d| d.len() as u64),
            None => Ok(0),
        })
        .await;
        drop(guard);
        res
    }

    /// Drops the metadata database (blocking: waits for fjall's workers), releasing its directory lock
    /// so the target can be reopened. Later calls on any handle fail with `Unavailable`.
    pub fn close(&self) {
        let db = self.inner.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(db) = db {
            if let Err(e) = db.db.persist(fjall::PersistMode::SyncAll) {
                tracing::warn!(target_id = %self.inner.target, error = %e, "persisting chunk metadata on close");
            }
            drop(db);
            self.inner.engine.detach(self.inner.target.0);
        }
    }
}

/// Every record of a keyspace, without block CRCs.
fn scan(ks: &fjall::Keyspace) -> Result<Vec<(ChunkId, Record)>, Error> {
    let mut out = Vec::new();
    for kv in ks.iter() {
        let (k, v) = kv.into_inner().map_err(kv_err)?;
        out.push((ChunkId::from_bytes(&k)?, Record::decode_head(&v)?));
    }
    Ok(out)
}

/// The slots the records reference (committed and pending), for the engine's allocation. A pending
/// record whose version is not above the committed one is left from a crash between a commit's two
/// halves (impossible with one batch, but cheap to repair): it is dropped and its slot not counted.
fn referenced_slots(db: &Db, report: &mut OpenReport) -> Result<Vec<Slot>, Error> {
    let mut slots = Vec::new();
    let committed = scan(&db.metas)?;
    let versions: HashMap<ChunkId, u64> = committed.iter().map(|(c, r)| (*c, r.meta.version)).collect();
    slots.extend(committed.iter().filter_map(|(_, r)| r.slot.and_then(Slot::decode)));
    let mut stale = Vec::new();
    for (chunk, r) in scan(&db.pending)? {
        if versions.get(&chunk).is_some_and(|v| *v >= r.meta.version) {
            stale.push(chunk);
        } else {
            slots.extend(r.slot.and_then(Slot::decode));
        }
    }
    if !stale.is_empty() {
        let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for chunk in &stale {
            batch.remove(&db.pending, chunk.to_bytes());
        }
        batch.commit().map_err(kv_err)?;
        report.orphans_removed = stale.len();
    }
    Ok(slots)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("chunk store task failed: {e}")))?
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod full_tests;
#[cfg(test)]
mod tests;
