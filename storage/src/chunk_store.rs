//! The chunk store of one target: chunk data in plain files, chunk metadata in a fjall keyspace.
//!
//! Layout of a target directory:
//! - `chunks/<fan-out>/<32 hex chunk id>.<16 hex version>[.<8 hex file generation>]`: the full content of
//!   one chunk version (`fan-out` = low byte of the CRC32C of the chunk id, two hex digits, so directories
//!   stay small; the generation suffix only for a forced same-version replacement, see below);
//! - `meta/`: a fjall database with keyspace `chunks`: chunk id (16 bytes) -> its record (`chunk_store/record.rs`).
//!
//! **Copy-on-write, crash-safe updates.** An update builds the chunk's complete new content (old content
//! with the write applied, gaps zero-filled; or cut/extended; or nothing for a removal), writes it to a
//! *new* file named after the new version, fsyncs the file and its directory, and only then commits the
//! metadata record (fjall `persist(SyncAll)`), which is the atomic switch. The old version's file is
//! deleted after the commit. Because a version's file is never rewritten in place, a crash at any point
//! leaves the chunk at its old or its new version; files not referenced by a record are orphans of such
//! crashes and [`ChunkStore::open`] deletes them. (Rename-over-the-old-file would not be crash-safe here:
//! between the rename and the metadata commit the file would already be new while the record is old.)
//!
//! **Integrity.** Every record holds the CRC32C of the whole chunk and (format 3, `record.rs`) the CRC32C
//! of every [`CRC_BLOCK_SIZE`] block of it. A read of part of a chunk reads only the blocks it touches
//! (one `pread` at the block-aligned offset) and verifies each of them; a read of the whole chunk, a
//! partial update (which reads the old content), a resync snapshot and [`ChunkStore::scrub`] read the
//! whole file and verify every block CRC and the whole-chunk CRC (one CRC pass). Any mismatch fails with
//! `ChecksumMismatch`, so damaged bytes are detected, never served; bytes a read does not touch are not
//! checked by it. Chunks whose record predates block CRCs (formats 1 and 2) are read and verified whole,
//! as before; their next update writes a format 3 record. `open` checks that every live chunk's file
//! exists with the recorded length, and so does every read (`fstat`).
//!
//! **Versions.** Each record carries the update version that produced it. Removals leave a *tombstone*
//! record so versions of a chunk id stay monotonic across remove/re-create, which is what lets chain
//! successors recognise a replayed update as a duplicate (`version <= local version`). Tombstones are
//! never purged yet (left for the chunk engine issue).
//!
//! **Replacements.** [`Update::Replace`] sets the whole content at exactly the update's version; through
//! [`ChunkStore::apply`] it applies only if its version is newer than the local one, over a missing chunk
//! or a tombstone too. **Sync updates** ([`ChunkStore::apply_sync`]: REPLACE or REMOVE from the SERVING
//! predecessor of a SYNCING target, see `crate::sync`) set exactly the given version and content even if
//! the local version is higher, or equal with other content (a no-op only if the state is already equal);
//! [`ChunkStore::forget`] drops a record altogether (the predecessor has none). A lower version gets a new
//! file name anyway; a *same*-version replacement must not overwrite the file the committed record
//! references, so the record carries a file generation (`Record::file_gen`, file name suffix `.<gen>`) and
//! the replacement writes generation + 1, commits, then deletes the old file — after a crash the chunk is
//! in its old or its new state, and `open` deletes whichever file is unreferenced.
//! [`ChunkStore::list_all`] lists tombstones as well, for resync diffs.
//!
//! **Concurrency.** Updates and reads of one chunk are serialised by a per-chunk async lock
//! ([`ChunkStore::lock`]); the replication layer holds it across apply + forward so updates to one chunk
//! reach every replica in the same order. [`ChunkStore::update_permit`] / [`ChunkStore::update_barrier`]
//! let resync wait out every update in flight on the target. Errors are `t3fs_common::Error` directly: every failure here maps
//! onto exactly one wire status code.
//!
//! Shortcut of this skeleton: every partial update rewrites the whole chunk (up to 64 MiB). The size-class
//! chunk engine (issue 3) replaces the file-per-chunk layout.
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use t3fs_common::proto;
use t3fs_common::{ChunkId, Error, InodeId, StatusCode, TargetId};

/// Largest chunk a target stores.
pub const MAX_CHUNK_SIZE: u32 = t3fs_common::layout::MAX_CHUNK_SIZE;

mod read;
mod record;

pub use record::CRC_BLOCK_SIZE;
use record::{BlockCrcs, Record};

const CHUNKS_DIR: &str = "chunks";
const META_DIR: &str = "meta";
const KEYSPACE: &str = "chunks";

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
}

impl ListedChunk {
    pub fn to_proto(&self) -> proto::ChunkMeta {
        proto::ChunkMeta { removed: self.removed, ..self.meta.to_proto(self.chunk) }
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
    /// Unreferenced chunk files (left by crashes mid-update) that were deleted.
    pub orphans_removed: usize,
    /// Live chunks whose file is missing or has the wrong length (reads fail with ChecksumMismatch).
    pub damaged: Vec<ChunkId>,
}

struct Db {
    db: fjall::Database,
    metas: fjall::Keyspace,
}

struct Inner {
    target: TargetId,
    chunks_dir: PathBuf,
    /// `None` once closed: the fjall database is dropped (releasing its directory lock) even if handles
    /// to this store are still alive in connection tasks.
    db: RwLock<Option<Db>>,
    locks: Mutex<HashMap<ChunkId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held shared by every replicated update from before its chain check until it is acknowledged;
    /// taken exclusively by [`ChunkStore::update_barrier`].
    updates: tokio::sync::RwLock<()>,
    used_bytes: AtomicU64,
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

fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(format!("fsync {}", dir.display())))
}

/// Parses `<32 hex id>.<16 hex version>` or `<32 hex id>.<16 hex version>.<8 hex file_gen>`.
fn parse_file_name(name: &str) -> Option<(ChunkId, u64, u32)> {
    let mut parts = name.split('.');
    let (id, ver, generation) = (parts.next()?, parts.next()?, parts.next());
    if id.len() != 32 || ver.len() != 16 || parts.next().is_some() {
        return None;
    }
    let file_gen = match generation {
        None => 0,
        Some(g) if g.len() == 8 => u32::from_str_radix(g, 16).ok().filter(|g| *g != 0)?,
        Some(_) => return None,
    };
    let chunk = ChunkId::from_bytes(&hex::decode(id).ok()?).ok()?;
    Some((chunk, u64::from_str_radix(ver, 16).ok()?, file_gen))
}

impl ChunkStore {
    /// Opens (creating if needed) the target directory `path`, deletes orphan chunk files and checks that
    /// every live chunk's file exists with its recorded length.
    pub fn open(target: TargetId, path: &Path) -> Result<(Self, OpenReport), Error> {
        let chunks_dir = path.join(CHUNKS_DIR);
        fs::create_dir_all(&chunks_dir).map_err(io_err(format!("creating {}", chunks_dir.display())))?;
        let db = fjall::Database::builder(path.join(META_DIR)).worker_threads(1).open().map_err(kv_err)?;
        let metas = db.keyspace(KEYSPACE, fjall::KeyspaceCreateOptions::default).map_err(kv_err)?;
        let store = Self {
            inner: Arc::new(Inner {
                target,
                chunks_dir,
                db: RwLock::new(Some(Db { db, metas })),
                locks: Mutex::default(),
                updates: tokio::sync::RwLock::new(()),
                used_bytes: AtomicU64::new(0),
            }),
        };
        let report = store.recover()?;
        if !report.damaged.is_empty() || report.orphans_removed > 0 {
            let (orphans, damaged) = (report.orphans_removed, report.damaged.len());
            tracing::warn!(target_id = %target, orphans, damaged, "target recovered");
        }
        Ok((store, report))
    }

    fn recover(&self) -> Result<OpenReport, Error> {
        let mut report = OpenReport::default();
        let mut live: HashMap<ChunkId, Record> = HashMap::new();
        for (chunk, rec) in self.records()? {
            if rec.removed {
                report.tombstones += 1;
            } else {
                live.insert(chunk, rec);
            }
        }
        report.live_chunks = live.len();
        let mut seen = std::collections::HashSet::new();
        let dir = &self.inner.chunks_dir;
        for fan in fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))? {
            let fan = fan.map_err(io_err(format!("listing {}", dir.display())))?.path();
            if !fan.is_dir() {
                continue;
            }
            for f in fs::read_dir(&fan).map_err(io_err(format!("listing {}", fan.display())))? {
                let f = f.map_err(io_err(format!("listing {}", fan.display())))?.path();
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let Some((chunk, version, file_gen)) = parse_file_name(&name) else {
                    tracing::warn!(file = %f.display(), "unknown file in chunk directory, left alone");
                    continue;
                };
                let referenced = live.get(&chunk).is_some_and(|r| r.meta.version == version && r.file_gen == file_gen);
                if referenced && f == self.path(chunk, version, file_gen) {
                    seen.insert(chunk);
                    continue;
                }
                fs::remove_file(&f).map_err(io_err(format!("removing orphan {}", f.display())))?;
                report.orphans_removed += 1;
            }
        }
        let mut used = 0u64;
        for (chunk, rec) in &live {
            let meta = &rec.meta;
            let len = if seen.contains(chunk) {
                fs::metadata(self.path(*chunk, meta.version, rec.file_gen)).ok().map(|m| m.len())
            } else {
                None
            };
            if len != Some(u64::from(meta.length)) {
                let target_id = self.inner.target.0;
                tracing::error!(target_id, %chunk, ?len, expected = meta.length, "chunk file missing or wrong length");
                report.damaged.push(*chunk);
            }
            used += u64::from(meta.length);
        }
        report.damaged.sort();
        self.inner.used_bytes.store(used, Ordering::Relaxed);
        Ok(report)
    }

    pub fn target(&self) -> TargetId {
        self.inner.target
    }

    /// The directory holding the chunk files (on the target's disk).
    pub fn chunks_dir(&self) -> &Path {
        &self.inner.chunks_dir
    }

    /// Sum of the lengths of all live chunks.
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
            Some(db) => f(db),
            None => Err(Error::unavailable(format!("target {} is closed", self.inner.target))),
        }
    }

    fn record(&self, chunk: ChunkId) -> Result<Option<Record>, Error> {
        self.with_db(|db| db.metas.get(chunk.to_bytes()).map_err(kv_err)?.map(|v| Record::decode(&v)).transpose())
    }

    /// Every record, without block CRCs (see [`Record::decode_head`]).
    fn records(&self) -> Result<Vec<(ChunkId, Record)>, Error> {
        self.with_db(|db| {
            let mut out = Vec::new();
            for kv in db.metas.iter() {
                let (k, v) = kv.into_inner().map_err(kv_err)?;
                out.push((ChunkId::from_bytes(&k)?, Record::decode_head(&v)?));
            }
            Ok(out)
        })
    }

    fn commit(&self, chunk: ChunkId, rec: &Record) -> Result<(), Error> {
        self.with_db(|db| {
            db.metas.insert(chunk.to_bytes(), rec.encode()).map_err(kv_err)?;
            db.db.persist(fjall::PersistMode::SyncAll).map_err(kv_err)
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

    /// Every record, live chunks and tombstones, in chunk id order (resync diffs).
    pub fn list_all(&self) -> Result<Vec<ListedChunk>, Error> {
        Ok(self
            .records()?
            .into_iter()
            .map(|(chunk, r)| ListedChunk { chunk, meta: r.meta, removed: r.removed })
            .collect())
    }

    /// The chunk's current state under the caller's lock: `None` if it never existed, else its record and,
    /// for a live chunk, its whole verified content (`None` for a tombstone).
    pub async fn snapshot(&self, guard: &ChunkGuard) -> Result<Option<(ChunkMeta, Option<Bytes>)>, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || match store.record(chunk)? {
            None => Ok(None),
            Some(r) if r.removed => Ok(Some((r.meta, None))),
            Some(r) => Ok(Some((r.meta, Some(Bytes::from(store.read_verified(chunk, &r)?))))),
        })
        .await
    }

    /// The chunk's current version (0 if it never existed; a removed chunk keeps its version).
    pub fn version(&self, guard: &ChunkGuard) -> Result<u64, Error> {
        Ok(self.record(guard.chunk())?.map_or(0, |r| r.meta.version))
    }

    /// The data file of a chunk version (`file_gen`: see [`Record::file_gen`]).
    fn path(&self, chunk: ChunkId, version: u64, file_gen: u32) -> PathBuf {
        let id = chunk.to_bytes();
        let fan = crc32c::crc32c(&id) as u8;
        let name = match file_gen {
            0 => format!("{}.{version:016x}", hex::encode(id)),
            g => format!("{}.{version:016x}.{g:08x}", hex::encode(id)),
        };
        self.inner.chunks_dir.join(format!("{fan:02x}")).join(name)
    }

    /// Applies `update` as version `version` (must be > 0) under the caller's chunk lock. If the local
    /// version is already >= `version` the update is a duplicate and nothing changes.
    pub async fn apply(
        &self,
        guard: &ChunkGuard,
        version: u64,
        chain_version: u32,
        update: Update,
    ) -> Result<Applied, Error> {
        let store = self.clone();
        let chunk = guard.chunk();
        blocking(move || store.apply_blocking(chunk, version, chain_version, update, false)).await
    }

    /// Applies a *sync* update (resync, forwarding to a SYNCING target) under the caller's chunk lock: a
    /// [`Update::Replace`] or [`Update::Remove`] that sets the chunk to exactly `version` (> 0) and that
    /// content, even if the local version is higher or equal with other content (the sender is
    /// authoritative; the local state may hold writes that were never acknowledged). It is a duplicate only
    /// if the chunk is already at `version` in the same state (same length and CRC, or both removed).
    ///
    /// Crash safety holds as for every update: the new content goes to a file name no record references
    /// (same version: the next `Record::file_gen`), the metadata commit switches, the old file goes last.
    pub async fn apply_sync(
        &self,
        guard: &ChunkGuard,
        version: u64,
        chain_version: u32,
        update: Update,
    ) -> Result<Applied, Error> {
        let store = self.clone();
        let chunk = guard.chunk();
        blocking(move || store.apply_blocking(chunk, version, chain_version, update, true)).await
    }

    /// Drops the chunk's record (live or tombstone) and data under the caller's chunk lock, leaving no
    /// trace: the chunk's version is 0 again. Only for resync, when the authoritative predecessor has no
    /// record of the chunk (see `crate::sync`). A duplicate if there is no record.
    pub async fn forget(&self, guard: &ChunkGuard) -> Result<Applied, Error> {
        let store = self.clone();
        let chunk = guard.chunk();
        blocking(move || store.forget_blocking(chunk)).await
    }

    fn forget_blocking(&self, chunk: ChunkId) -> Result<Applied, Error> {
        let gone = Applied { meta: ChunkMeta::default(), exists: false, duplicate: false };
        let Some(old) = self.record(chunk)? else {
            return Ok(Applied { duplicate: true, ..gone });
        };
        tracing::warn!(target_id = %self.inner.target, %chunk, ?old, "sync: dropping a chunk the predecessor lacks");
        // Record first: a crash before the file is deleted leaves an orphan that `open` removes.
        self.with_db(|db| {
            db.metas.remove(chunk.to_bytes()).map_err(kv_err)?;
            db.db.persist(fjall::PersistMode::SyncAll).map_err(kv_err)
        })?;
        if !old.removed {
            self.remove_old_file(chunk, &old);
            let len = u64::from(old.meta.length);
            let _ = self
                .inner
                .used_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(len)));
        }
        Ok(gone)
    }

    fn remove_old_file(&self, chunk: ChunkId, old: &Record) {
        let old_path = self.path(chunk, old.meta.version, old.file_gen);
        if let Err(e) = fs::remove_file(&old_path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            // Harmless: an unreferenced file is deleted by the next open.
            tracing::warn!(file = %old_path.display(), error = %e, "could not delete old chunk version");
        }
    }

    fn apply_blocking(
        &self,
        chunk: ChunkId,
        version: u64,
        chain_version: u32,
        update: Update,
        sync: bool,
    ) -> Result<Applied, Error> {
        update.validate()?;
        if version == 0 {
            return Err(Error::invalid("update version must be > 0"));
        }
        let old = self.record(chunk)?;
        let old_version = old.as_ref().map_or(0, |r| r.meta.version);
        if sync {
            let same = match (&old, &update) {
                (Some(r), Update::Remove) => r.removed,
                (Some(r), Update::Replace { data, payload_crc32c }) => {
                    // `validate` checked the payload against `payload_crc32c`.
                    !r.removed && r.meta.length as usize == data.len() && r.meta.crc32c == *payload_crc32c
                }
                (_, Update::Write { .. } | Update::Truncate { .. }) => {
                    return Err(Error::invalid("a sync update must be REPLACE or REMOVE"));
                }
                (None, _) => false,
            };
            if let Some(rec) = old.as_ref().filter(|r| r.meta.version == version && same) {
                return Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: true });
            }
            if old_version >= version {
                tracing::warn!(target_id = %self.inner.target, %chunk, ?old, version,
                    "sync: replacing local state the predecessor does not have");
            }
        } else if old_version >= version {
            let rec = old.as_ref().expect("version > 0 implies a record");
            return Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: true });
        }
        if version > old_version + 1 && !matches!(update, Update::Replace { .. }) && !sync {
            // No resync yet: a replica that missed updates (e.g. a retried write whose first attempt never
            // reached us) takes the newest one on top of what it has.
            tracing::warn!(target_id = %self.inner.target, %chunk, old_version, version, "update version gap");
        }
        let old_live = old.as_ref().filter(|r| !r.removed);
        // The old content, unless the update replaces all of it (so a damaged chunk can be overwritten).
        let needs_old = match &update {
            Update::Write { offset, data, .. } => {
                old_live.is_some_and(|r| !(*offset == 0 && data.len() >= r.meta.length as usize))
            }
            Update::Truncate { length, .. } => *length > 0 && old_live.is_some(),
            Update::Remove | Update::Replace { .. } => false,
        };
        let mut content = match old_live {
            Some(r) if needs_old => self.read_verified(chunk, r)?,
            _ => Vec::new(),
        };
        let new_content = match update {
            Update::Write { offset, data, .. } => {
                let (start, end) = (offset as usize, offset as usize + data.len());
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[start..end].copy_from_slice(&data);
                Some(content)
            }
            Update::Truncate { length, .. } => {
                content.resize(length as usize, 0);
                Some(content)
            }
            Update::Remove => None,
            Update::Replace { data, .. } => Some(data.to_vec()),
        };
        // Never write over the file the committed record references: a same-version replacement (sync
        // only) takes the next file generation.
        let file_gen = match old_live {
            Some(r) if r.meta.version == version => r.file_gen.wrapping_add(1),
            _ => 0,
        };
        let rec = match &new_content {
            Some(c) => {
                let (blocks, crc32c) = BlockCrcs::compute(c, CRC_BLOCK_SIZE);
                Record {
                    meta: ChunkMeta { version, length: c.len() as u32, crc32c, chain_version },
                    removed: false,
                    file_gen,
                    blocks: Some(blocks),
                }
            }
            None => Record {
                meta: ChunkMeta { version, length: 0, crc32c: 0, chain_version },
                removed: true,
                file_gen: 0,
                blocks: Some(BlockCrcs { block_size: CRC_BLOCK_SIZE, crcs: Vec::new() }),
            },
        };
        let new_path = self.path(chunk, version, rec.file_gen);
        if let Some(c) = &new_content {
            write_durably(&new_path, c)?;
        }
        if let Err(e) = self.commit(chunk, &rec) {
            if new_content.is_some() {
                let _ = fs::remove_file(&new_path);
            }
            return Err(e);
        }
        if let Some(r) = old_live {
            self.remove_old_file(chunk, r);
        }
        let old_len = u64::from(old_live.map_or(0, |r| r.meta.length));
        let _ = self.inner.used_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            Some(u.saturating_sub(old_len) + u64::from(rec.meta.length))
        });
        Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: false })
    }

    /// Verifies every live chunk's CRC; returns the damaged ones with their errors.
    pub async fn scrub(&self) -> Result<Vec<(ChunkId, Error)>, Error> {
        let mut bad = Vec::new();
        for (chunk, _) in self.list()? {
            let store = self.clone();
            let guard = self.lock(chunk).await;
            let res = blocking(move || match store.record(chunk)?.filter(|r| !r.removed) {
                Some(r) => store.read_verified(chunk, &r).map(|_| ()),
                None => Ok(()),
            })
            .await;
            drop(guard);
            if let Err(e) = res {
                bad.push((chunk, e));
            }
        }
        Ok(bad)
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
        }
    }

    #[cfg(test)]
    fn file_path(&self, chunk: ChunkId, version: u64) -> PathBuf {
        self.path(chunk, version, 0)
    }

    #[cfg(test)]
    fn file_path_gen(&self, chunk: ChunkId, version: u64, file_gen: u32) -> PathBuf {
        self.path(chunk, version, file_gen)
    }
}

/// Writes a new chunk file and makes it (and its directory entry) durable.
fn write_durably(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().expect("chunk paths have a parent");
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        fsync_dir(dir.parent().expect("fan-out directories have a parent"))?;
    }
    let mut f = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io_err(format!("writing {}", path.display())))?;
    fsync_dir(dir)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("chunk store task failed: {e}")))?
}

#[cfg(test)]
mod tests;
