//! Reading chunk data back from its engine slot, verified against the chunk's record (see the integrity
//! note of the parent module): whole chunks checked against every block CRC and the whole-chunk CRC, and
//! partial ranges read block by block (one `pread` of the covering blocks) with each block checked. Every
//! failure is `ChecksumMismatch` with an error log naming the chunk (and the block), never unverified bytes.
//!
//! Reads take no chunk lock: [`ChunkStore::read_with`] looks up the record and pins its slot under the
//! engine's read gate, so the slot is not reused before the read is done even if an update commits a new
//! version meanwhile (the reader then returns the version it found, complete).
use bytes::Bytes;
use t3fs_common::{ChunkId, Error, StatusCode};

use super::record::{BlockCrcs, Record};
use super::{ChunkMeta, ChunkStore, blocking};
use crate::engine::{Slot, SlotPin};

impl ChunkStore {
    /// Reads `[offset, min(offset + len, length))` of the committed version of a chunk; fails with
    /// `ChunkNotCommitted` while an update of the chunk is pending (see [`ChunkStore::read_with`]).
    pub async fn read(&self, chunk: ChunkId, offset: u32, len: u32) -> Result<(Bytes, ChunkMeta), Error> {
        self.read_with(chunk, offset, len, false).await
    }

    /// Reads `[offset, min(offset + len, length))` of a chunk. With a pending version: `relaxed` reads it,
    /// else the read fails with `ChunkNotCommitted` (the client retries). A range short of the whole chunk
    /// reads and verifies only the blocks it touches; the whole chunk is read and verified whole.
    pub async fn read_with(
        &self,
        chunk: ChunkId,
        offset: u32,
        len: u32,
        relaxed: bool,
    ) -> Result<(Bytes, ChunkMeta), Error> {
        let store = self.clone();
        blocking(move || {
            let (rec, _pin) = store.find_for_read(chunk, relaxed)?;
            let meta = rec.meta;
            let start = offset.min(meta.length);
            let end = offset.saturating_add(len).min(meta.length);
            let data = match &rec.blocks {
                Some(blocks) if (start, end) != (0, meta.length) => {
                    store.read_blocks(chunk, &rec, blocks, start, end)?
                }
                _ => store.read_verified(chunk, &rec)?.slice(start as usize..end as usize),
            };
            Ok((data, meta))
        })
        .await
    }

    /// The record a read returns and a pin on its slot (module note).
    fn find_for_read(&self, chunk: ChunkId, relaxed: bool) -> Result<(Record, Option<SlotPin>), Error> {
        let engine = self.engine();
        let _gate = engine.read_gate();
        let rec = match self.pending_record(chunk)? {
            Some(p) if relaxed => Some(p),
            Some(p) => {
                return Err(Error::new(
                    StatusCode::ChunkNotCommitted,
                    format!("chunk {chunk}: update version {} is not committed yet", p.meta.version),
                ));
            }
            None => self.record(chunk)?,
        };
        let Some(rec) = rec.filter(|r| !r.removed) else {
            return Err(Error::new(StatusCode::ChunkNotFound, format!("chunk {chunk} not found")));
        };
        let pin = rec.slot.and_then(Slot::decode).map(|s| engine.pin(s));
        Ok((rec, pin))
    }

    /// The slot of a live record, checked to hold its length.
    fn slot_of(&self, chunk: ChunkId, rec: &Record) -> Result<Option<Slot>, Error> {
        match rec.slot.map(Slot::decode) {
            None if rec.meta.length == 0 => Ok(None),
            Some(Some(s)) if u64::from(rec.meta.length) <= s.size() => Ok(Some(s)),
            _ => {
                tracing::error!(target_id = self.inner.target.0, %chunk, meta = ?rec.meta, slot = ?rec.slot,
                    "chunk has no valid slot");
                Err(Error::new(StatusCode::ChecksumMismatch, format!("chunk {chunk}: data missing (no valid slot)")))
            }
        }
    }

    /// Reads a live record's whole content and verifies it against its metadata: every block CRC and the
    /// whole-chunk CRC, in one CRC pass (the whole CRC is combined from the verified block CRCs). The
    /// caller holds the chunk lock or a pin on the slot.
    pub(super) fn read_verified(&self, chunk: ChunkId, rec: &Record) -> Result<Bytes, Error> {
        let meta = &rec.meta;
        let data = match self.slot_of(chunk, rec)? {
            Some(slot) => self.engine().read_bytes(slot, 0, meta.length as usize)?,
            None => Bytes::new(),
        };
        let crc = match &rec.blocks {
            Some(blocks) => {
                blocks.verify(0, &data).map_err(|m| self.block_mismatch(chunk, meta, blocks, m))?;
                blocks.whole_crc(meta.length)
            }
            None => crc32c::crc32c(&data),
        };
        if crc != meta.crc32c {
            let target_id = self.inner.target.0;
            tracing::error!(target_id, %chunk, crc, ?meta, "chunk data does not match its metadata");
            return Err(Error::new(
                StatusCode::ChecksumMismatch,
                format!("chunk {chunk}: data (crc {crc:#010x}) does not match metadata (crc {:#010x})", meta.crc32c),
            ));
        }
        Ok(data)
    }

    /// Reads bytes `[start, end)` (`end <= length`) of a live chunk with block CRCs: only the blocks
    /// covering the range (one `pread` from the first one's start), each verified. An empty range reads
    /// nothing.
    fn read_blocks(
        &self,
        chunk: ChunkId,
        rec: &Record,
        blocks: &BlockCrcs,
        start: u32,
        end: u32,
    ) -> Result<Bytes, Error> {
        let meta = &rec.meta;
        let slot = self.slot_of(chunk, rec)?;
        if start >= end {
            return Ok(Bytes::new());
        }
        let slot = slot.expect("a non-empty chunk has a slot");
        let (first, last) = blocks.covering(start, end);
        let (from, _) = blocks.block_range(first, meta.length);
        let (_, to) = blocks.block_range(last, meta.length);
        let buf = self.engine().read_bytes(slot, from, (to - from) as usize)?;
        blocks.verify(first, &buf).map_err(|m| self.block_mismatch(chunk, meta, blocks, m))?;
        let skip = (u64::from(start) - from) as usize;
        Ok(buf.slice(skip..skip + (end - start) as usize))
    }

    /// The error (and log) for block `block` whose bytes have CRC `crc` instead of the recorded `expected`.
    fn block_mismatch(
        &self,
        chunk: ChunkId,
        meta: &ChunkMeta,
        blocks: &BlockCrcs,
        (block, crc, expected): (usize, u32, u32),
    ) -> Error {
        let target_id = self.inner.target.0;
        let (from, to) = blocks.block_range(block, meta.length);
        tracing::error!(target_id, %chunk, block, from, to, crc, expected, ?meta,
            "chunk block does not match its metadata");
        Error::new(
            StatusCode::ChecksumMismatch,
            format!(
                "chunk {chunk}: block {block} (bytes {from}..{to}, crc {crc:#010x}) does not match metadata \
                 (crc {expected:#010x})"
            ),
        )
    }

    /// Where a chunk's committed content lies: its group file and byte offset (tests damage it there).
    pub fn data_location(&self, chunk: ChunkId) -> Result<Option<(std::path::PathBuf, u64)>, Error> {
        let slot = self.record(chunk)?.and_then(|r| r.slot).and_then(Slot::decode);
        Ok(slot.map(|s| (self.engine().group_path(s.class, s.group), s.offset())))
    }
}
