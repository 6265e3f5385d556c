//! Applying updates to the chunk store: copy-on-write into a fresh engine slot, then one fjall batch that
//! switches the record, then the free of the replaced slot (see the parent module note).
//!
//! The order of every update, and the failpoints the crash tests stop at ([`Failpoint`]):
//! 1. build the new content from the committed one (partial writes read and verify the old content);
//! 2. allocate a slot — `SlotAllocated` — `pwrite` — `DataWritten` — `fdatasync` — `DataSynced`;
//! 3. commit one fjall batch with `SyncAll` (committed record, or pending record) — `MetaCommitted`;
//! 4. free the slots the batch unreferenced (old committed version, replaced pending version).
//!
//! A crash before 3 leaves the old records, and the new slot is free again at the next open (allocation is
//! derived from the records); a crash after 3 leaves the new records, and the old slot is free again at
//! the next open. Either way the chunk reads as exactly one version, fully written and synced.
//!
//! **Pending versions** (two-phase CRAQ). [`ChunkStore::prepare`] stores the update as the chunk's pending
//! version; the committed version is the base of the content and stays what normal reads see. Rules for a
//! chunk that already has a pending version `p` when a non-sync update at version `v` arrives:
//! - `v <= committed`: a duplicate; nothing changes (the pending version stays);
//! - `v > p`: the predecessor only sends `v` after committing `p`, so `p` is committed here first and the
//!   update applies on top of it;
//! - `committed < v <= p`: the predecessor is authoritative: the pending version is replaced (its slot freed
//!   after the new record is durable).
//!
//! Sync updates ([`ChunkStore::apply_sync`]) and [`ChunkStore::forget`] drop any pending version.
use t3fs_common::{ChunkId, Error, StatusCode};

use super::record::{BlockCrcs, Record, crc_block_size};
use super::{Applied, ChunkGuard, ChunkMeta, ChunkStore, RecordState, Update, blocking, kv_err};
use crate::engine::aligned::{AlignedBuf, align_up};
use crate::engine::{Claim, Slot};

/// A chunk's new content: `len` bytes at the start of `buf` (zeros after them).
struct Content {
    buf: AlignedBuf,
    len: usize,
}

impl Content {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Points in the update path where a test can make the store stop as if the process had crashed: the
/// update returns an error at that point and does nothing more (the test then drops the store and
/// reopens the directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failpoint {
    /// The new slot is allocated, nothing written.
    SlotAllocated,
    /// The data is written, not synced.
    DataWritten,
    /// The data is synced, the metadata not committed.
    DataSynced,
    /// The metadata is committed, the old slot not freed.
    MetaCommitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Commit at once (the tail; a chain of one).
    Commit,
    /// Store as the pending version.
    Pending,
    /// A sync update: commit exactly this version and content, dropping any pending version.
    Sync,
}

impl ChunkStore {
    /// Applies `update` as version `version` (> 0) and commits it at once, under the caller's chunk lock.
    /// If the committed version is already >= `version` the update is a duplicate and nothing changes.
    pub async fn apply(
        &self,
        guard: &ChunkGuard,
        version: u64,
        chain_version: u32,
        update: Update,
    ) -> Result<Applied, Error> {
        self.run(guard, version, chain_version, update, Mode::Commit).await
    }

    /// Applies `update` as the chunk's *pending* version `version` under the caller's chunk lock (see the
    /// module note for the rules against an existing pending version); [`ChunkStore::commit`] makes it
    /// the committed one. A duplicate (`version <=` committed) changes nothing.
    pub async fn prepare(
        &self,
        guard: &ChunkGuard,
        version: u64,
        chain_version: u32,
        update: Update,
    ) -> Result<Applied, Error> {
        self.run(guard, version, chain_version, update, Mode::Pending).await
    }

    /// Applies a *sync* update (resync, forwarding to a SYNCING target) under the caller's chunk lock: a
    /// [`Update::Replace`] or [`Update::Remove`] that sets the chunk to exactly `version` (> 0) and that
    /// content, even if the local version is higher or equal with other content (the sender is
    /// authoritative; the local state may hold writes that were never acknowledged). It is a duplicate only
    /// if the chunk is already at `version` in the same state (same length and CRC, or both removed). Any
    /// pending version is dropped.
    pub async fn apply_sync(
        &self,
        guard: &ChunkGuard,
        version: u64,
        chain_version: u32,
        update: Update,
    ) -> Result<Applied, Error> {
        self.run(guard, version, chain_version, update, Mode::Sync).await
    }

    async fn run(
        &self,
        guard: &ChunkGuard,
        version: u64,
        cv: u32,
        update: Update,
        mode: Mode,
    ) -> Result<Applied, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || store.apply_blocking(chunk, version, cv, update, mode)).await
    }

    /// Commits the pending version `version` under the caller's chunk lock. A duplicate if the committed
    /// version is already >= `version` (and no such pending version exists).
    pub async fn commit(&self, guard: &ChunkGuard, version: u64) -> Result<Applied, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || store.commit_blocking(chunk, version)).await
    }

    /// Drops the chunk's records (committed or tombstone, and pending) and data under the caller's chunk
    /// lock, leaving no trace: the chunk's version is 0 again. Only for resync, when the authoritative
    /// predecessor has no record of the chunk (see `crate::sync`). A duplicate if there is no record.
    pub async fn forget(&self, guard: &ChunkGuard) -> Result<Applied, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || store.forget_blocking(chunk)).await
    }

    /// Drops the chunk's record if it is a committed tombstone at or below `at_most` with no pending
    /// version (PURGE, `service/purge.rs`); anything else is left as it is. Returns what is left
    /// ([`ChunkStore::state`] after the call).
    pub async fn purge(&self, guard: &ChunkGuard, at_most: u64) -> Result<Option<RecordState>, Error> {
        let (store, chunk) = (self.clone(), guard.chunk());
        blocking(move || store.purge_blocking(chunk, at_most)).await
    }

    fn purge_blocking(&self, chunk: ChunkId, at_most: u64) -> Result<Option<RecordState>, Error> {
        match self.state_of(chunk)? {
            Some(s) if s.removed && s.pending_version == 0 && s.meta.version <= at_most => {}
            left => return Ok(left),
        }
        self.with_db(|db| {
            let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
            batch.remove(&db.metas, chunk.to_bytes());
            batch.commit().map_err(kv_err)
        })?;
        self.fail(Failpoint::MetaCommitted)?;
        Ok(None)
    }

    #[cfg(test)]
    pub(crate) fn set_failpoint(&self, at: Option<Failpoint>) {
        *self.inner.failpoint.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Fails (test builds only) if the failpoint `at` is set.
    fn fail(&self, at: Failpoint) -> Result<(), Error> {
        #[cfg(test)]
        if *self.inner.failpoint.lock().unwrap_or_else(|p| p.into_inner()) == Some(at) {
            return Err(Error::internal(format!("failpoint {at:?}")));
        }
        let _ = at;
        Ok(())
    }

    fn forget_blocking(&self, chunk: ChunkId) -> Result<Applied, Error> {
        let gone = Applied { meta: ChunkMeta::default(), exists: false, duplicate: false };
        let (old, pending) = (self.record(chunk)?, self.pending_record(chunk)?);
        if old.is_none() && pending.is_none() {
            return Ok(Applied { duplicate: true, ..gone });
        }
        tracing::warn!(target_id = %self.inner.target, %chunk, ?old, "sync: dropping a chunk the predecessor lacks");
        self.with_db(|db| {
            let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
            batch.remove(&db.metas, chunk.to_bytes());
            batch.remove(&db.pending, chunk.to_bytes());
            batch.commit().map_err(kv_err)
        })?;
        self.fail(Failpoint::MetaCommitted)?;
        self.free_slots([old.as_ref(), pending.as_ref()]);
        self.account(old.as_ref(), None);
        Ok(gone)
    }

    /// Frees the slots of records that a committed batch no longer references.
    fn free_slots<'a>(&self, recs: impl IntoIterator<Item = Option<&'a Record>>) {
        for slot in recs.into_iter().flatten().filter_map(|r| r.slot.and_then(Slot::decode)) {
            if !self.inner.invalid_slots.contains(&slot) {
                self.inner.engine.free(slot);
            }
        }
    }

    /// Adjusts `used_bytes` for a committed record replaced by another (or by none).
    fn account(&self, old: Option<&Record>, new: Option<&Record>) {
        let len = |r: Option<&Record>| u64::from(r.filter(|r| !r.removed).map_or(0, |r| r.meta.length));
        let (old_len, new_len) = (len(old), len(new));
        let used = &self.inner.used_bytes;
        let _ = used.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |u| {
            Some(u.saturating_sub(old_len) + new_len)
        });
    }

    fn commit_blocking(&self, chunk: ChunkId, version: u64) -> Result<Applied, Error> {
        let old = self.record(chunk)?;
        let pending = self.pending_record(chunk)?.filter(|p| p.meta.version == version);
        let Some(p) = pending else {
            return match old {
                Some(r) if r.meta.version >= version => {
                    Ok(Applied { meta: r.meta, exists: !r.removed, duplicate: true })
                }
                _ => Err(Error::new(
                    StatusCode::ChunkNotCommitted,
                    format!("chunk {chunk}: no pending version {version} to commit"),
                )),
            };
        };
        self.with_db(|db| {
            let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
            batch.insert(&db.metas, chunk.to_bytes(), p.encode());
            batch.remove(&db.pending, chunk.to_bytes());
            batch.commit().map_err(kv_err)
        })?;
        self.fail(Failpoint::MetaCommitted)?;
        self.free_slots([old.as_ref()]);
        self.account(old.as_ref(), Some(&p));
        Ok(Applied { meta: p.meta, exists: !p.removed, duplicate: false })
    }

    fn apply_blocking(
        &self,
        chunk: ChunkId,
        version: u64,
        cv: u32,
        update: Update,
        mode: Mode,
    ) -> Result<Applied, Error> {
        update.validate()?;
        if version == 0 {
            return Err(Error::invalid("update version must be > 0"));
        }
        let mut old = self.record(chunk)?;
        let mut pending = self.pending_record(chunk)?;
        let committed = |old: &Option<Record>| old.as_ref().map_or(0, |r| r.meta.version);
        if mode != Mode::Sync
            && let Some(p) = pending.as_ref().filter(|p| p.meta.version < version && p.meta.version > committed(&old))
        {
            // The predecessor sends `version` only after committing `p`: commit it here too.
            tracing::debug!(target_id = %self.inner.target, %chunk, pending = p.meta.version, version,
                "committing the pending version a newer update builds on");
            self.commit_blocking(chunk, p.meta.version)?;
            (old, pending) = (self.record(chunk)?, None);
        }
        let old_version = committed(&old);
        if mode == Mode::Sync {
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
                if let Some(p) = &pending {
                    self.drop_pending(chunk, p)?;
                }
                return Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: true });
            }
            if old_version >= version {
                tracing::warn!(target_id = %self.inner.target, %chunk, ?old, version,
                    "sync: replacing local state the predecessor does not have");
            }
        } else if old_version >= version {
            let rec = old.as_ref().expect("version > 0 implies a record");
            return Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: true });
        } else if version > old_version + 1 && !matches!(update, Update::Replace { .. }) {
            // A replica that missed updates (e.g. a retried write whose first attempt never reached us)
            // takes the newest one on top of what it has; resync repairs such replicas.
            tracing::warn!(target_id = %self.inner.target, %chunk, old_version, version, "update version gap");
        }
        let claim = claim_of(&update, old.as_ref());
        let content = self.new_content(chunk, old.as_ref(), update)?;
        let rec = match &content {
            Some(c) => {
                let (blocks, crc32c) = BlockCrcs::compute(c.bytes(), crc_block_size(c.bytes().len()));
                let meta = ChunkMeta { version, length: c.len as u32, crc32c, chain_version: cv };
                Record { meta, removed: false, file_gen: 0, slot: None, blocks: Some(blocks) }
            }
            None => Record {
                meta: ChunkMeta { version, length: 0, crc32c: 0, chain_version: cv },
                removed: true,
                file_gen: 0,
                slot: None,
                blocks: Some(BlockCrcs { block_size: crc_block_size(0), crcs: Vec::new() }),
            },
        };
        let slot = match &content {
            Some(c) if c.len > 0 => Some(self.write_slot(c, claim)?),
            _ => None,
        };
        let rec = Record { slot: slot.map(Slot::encode), ..rec };
        let committed_now = mode != Mode::Pending;
        let res = self.with_db(|db| {
            let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
            if committed_now {
                batch.insert(&db.metas, chunk.to_bytes(), rec.encode());
                batch.remove(&db.pending, chunk.to_bytes());
            } else {
                batch.insert(&db.pending, chunk.to_bytes(), rec.encode());
            }
            batch.commit().map_err(kv_err)
        });
        if let Err(e) = res {
            if let Some(s) = slot {
                self.inner.engine.free(s);
            }
            return Err(e);
        }
        self.fail(Failpoint::MetaCommitted)?;
        if committed_now {
            self.free_slots([old.as_ref(), pending.as_ref()]);
            self.account(old.as_ref(), Some(&rec));
        } else {
            self.free_slots([pending.as_ref()]);
        }
        Ok(Applied { meta: rec.meta, exists: !rec.removed, duplicate: false })
    }

    /// Removes a pending record (durably) and frees its slot.
    fn drop_pending(&self, chunk: ChunkId, p: &Record) -> Result<(), Error> {
        self.with_db(|db| {
            let mut batch = db.db.batch().durability(Some(fjall::PersistMode::SyncAll));
            batch.remove(&db.pending, chunk.to_bytes());
            batch.commit().map_err(kv_err)
        })?;
        self.free_slots([Some(p)]);
        Ok(())
    }

    /// The chunk's content after `update` on top of the committed record `old` (`None`: removed), built
    /// once in an aligned buffer (zero padded to 4 KiB) that an O_DIRECT write takes as it is.
    fn new_content(&self, chunk: ChunkId, old: Option<&Record>, update: Update) -> Result<Option<Content>, Error> {
        let old_live = old.filter(|r| !r.removed);
        let old_len = old_live.map_or(0, |r| r.meta.length as usize);
        // The old content, unless the update replaces all of it (so a damaged chunk can be overwritten).
        let needs_old = match &update {
            Update::Write { offset, data, .. } => old_live.is_some() && !(*offset == 0 && data.len() >= old_len),
            Update::Truncate { length, .. } => *length > 0 && old_live.is_some(),
            Update::Remove | Update::Replace { .. } => false,
        };
        let len = match &update {
            Update::Write { offset, data, .. } => old_len.max(*offset as usize + data.len()),
            Update::Truncate { length, .. } => *length as usize,
            Update::Replace { data, .. } => data.len(),
            Update::Remove => return Ok(None),
        };
        let mut buf = AlignedBuf::zeroed(align_up(len));
        if let Some(r) = old_live.filter(|_| needs_old) {
            let old = self.read_verified(chunk, r)?;
            let keep = old.len().min(len);
            buf[..keep].copy_from_slice(&old[..keep]);
        }
        match update {
            Update::Write { offset, data, .. } => {
                buf[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            }
            Update::Replace { data, .. } => buf[..len].copy_from_slice(&data),
            Update::Truncate { .. } | Update::Remove => {}
        }
        Ok(Some(Content { buf, len }))
    }

    /// Writes `data` into a fresh slot (taken for `claim`) and syncs it; the slot is freed again on
    /// failure.
    fn write_slot(&self, data: &Content, claim: Claim) -> Result<Slot, Error> {
        let engine = &self.inner.engine;
        let slot = engine.allocate_for(data.len as u32, claim)?;
        let res = (|| {
            self.fail(Failpoint::SlotAllocated)?;
            engine.write_aligned_unsynced(slot, &data.buf, data.len)?;
            self.fail(Failpoint::DataWritten)?;
            engine.sync(slot)?;
            self.fail(Failpoint::DataSynced)
        })();
        if let Err(e) = res {
            engine.free(slot);
            if e.code == StatusCode::Io {
                // Not a full disk (NoSpace), not a test failpoint (Internal): the disk is failing.
                self.mark_failed(&format!("writing chunk data failed: {e}"));
            }
            return Err(e);
        }
        Ok(slot)
    }
}

/// Whose space an update's new slot takes (`crate::engine::space`): new client data (a write, or a
/// truncate that grows the chunk) must leave the disk's reserve alone; a shrink, and a replacement
/// from resync, repair or a pending version being completed, may use it.
fn claim_of(update: &Update, old: Option<&Record>) -> Claim {
    let old_len = old.filter(|r| !r.removed).map_or(0, |r| r.meta.length);
    match update {
        Update::Write { .. } => Claim::Client,
        Update::Truncate { length, .. } if *length > old_len => Claim::Client,
        Update::Truncate { .. } | Update::Remove | Update::Replace { .. } => Claim::Reserve,
    }
}
