//! Reading chunk data back, verified against the chunk's record (see the integrity note of the parent
//! module): whole files checked against every block CRC and the whole-chunk CRC, and partial ranges read
//! block by block (one `pread` of the covering blocks) with each block checked. Every failure is
//! `ChecksumMismatch` with an error log naming the chunk (and the block), never unverified bytes.
use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use t3fs_common::{ChunkId, Error, StatusCode};

use super::record::{BlockCrcs, Record};
use super::{ChunkMeta, ChunkStore, blocking, io_err};

impl ChunkStore {
    /// Reads `[offset, min(offset + len, length))` of a chunk. A range short of the whole chunk reads and
    /// verifies only the blocks it touches (format 3 records); the whole chunk, or any range of a chunk
    /// whose record has no block CRCs, is read and verified whole first.
    pub async fn read(&self, chunk: ChunkId, offset: u32, len: u32) -> Result<(Bytes, ChunkMeta), Error> {
        let _guard = self.lock(chunk).await;
        let store = self.clone();
        blocking(move || {
            let Some(rec) = store.record(chunk)?.filter(|r| !r.removed) else {
                return Err(Error::new(StatusCode::ChunkNotFound, format!("chunk {chunk} not found")));
            };
            let meta = rec.meta;
            let start = offset.min(meta.length);
            let end = offset.saturating_add(len).min(meta.length);
            let data = match &rec.blocks {
                Some(blocks) if (start, end) != (0, meta.length) => {
                    store.read_blocks(chunk, &rec, blocks, start, end)?
                }
                _ => Bytes::from(store.read_verified(chunk, &rec)?).slice(start as usize..end as usize),
            };
            Ok((data, meta))
        })
        .await
    }

    /// Reads a live record's whole file and verifies it against its metadata: every block CRC (format 3)
    /// and the whole-chunk CRC, in one CRC pass (the whole CRC is combined from the verified block CRCs).
    pub(super) fn read_verified(&self, chunk: ChunkId, rec: &Record) -> Result<Vec<u8>, Error> {
        let meta = &rec.meta;
        let path = self.path(chunk, meta.version, rec.file_gen);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(data_file_missing(chunk)),
            Err(e) => return Err(Error::io(&format!("reading {}", path.display()), e)),
        };
        let crc = match &rec.blocks {
            Some(blocks) if data.len() == meta.length as usize => {
                blocks.verify(0, &data).map_err(|m| self.block_mismatch(chunk, meta, blocks, m))?;
                blocks.whole_crc(meta.length)
            }
            _ => crc32c::crc32c(&data),
        };
        if data.len() != meta.length as usize || crc != meta.crc32c {
            let target_id = self.inner.target.0;
            tracing::error!(target_id, %chunk, len = data.len(), crc, ?meta, "chunk data does not match its metadata");
            return Err(Error::new(
                StatusCode::ChecksumMismatch,
                format!(
                    "chunk {chunk}: data ({} bytes, crc {crc:#010x}) does not match metadata ({} bytes, crc {:#010x})",
                    data.len(),
                    meta.length,
                    meta.crc32c
                ),
            ));
        }
        Ok(data)
    }

    /// Reads bytes `[start, end)` (`end <= length`) of a live chunk with block CRCs: checks the file's
    /// length, then reads only the blocks covering the range (one `pread` from the first one's start) and
    /// verifies each of them. An empty range reads nothing.
    fn read_blocks(
        &self,
        chunk: ChunkId,
        rec: &Record,
        blocks: &BlockCrcs,
        start: u32,
        end: u32,
    ) -> Result<Bytes, Error> {
        let meta = &rec.meta;
        let path = self.path(chunk, meta.version, rec.file_gen);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(data_file_missing(chunk)),
            Err(e) => return Err(Error::io(&format!("opening {}", path.display()), e)),
        };
        let file_len = file.metadata().map_err(io_err(format!("stat {}", path.display())))?.len();
        if file_len != u64::from(meta.length) {
            return Err(self.length_mismatch(chunk, meta, file_len));
        }
        if start >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = blocks.covering(start, end);
        let (from, _) = blocks.block_range(first, meta.length);
        let (_, to) = blocks.block_range(last, meta.length);
        let mut buf = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut buf, from).map_err(|e| match e.kind() {
            // The file shrank under us (it never should: version files are never rewritten).
            std::io::ErrorKind::UnexpectedEof => self.length_mismatch(chunk, meta, from + buf.len() as u64 - 1),
            _ => Error::io(&format!("reading {}", path.display()), e),
        })?;
        blocks.verify(first, &buf).map_err(|m| self.block_mismatch(chunk, meta, blocks, m))?;
        let skip = (u64::from(start) - from) as usize;
        Ok(Bytes::from(buf).slice(skip..skip + (end - start) as usize))
    }

    fn length_mismatch(&self, chunk: ChunkId, meta: &ChunkMeta, file_len: u64) -> Error {
        let target_id = self.inner.target.0;
        tracing::error!(target_id, %chunk, file_len, ?meta, "chunk file length does not match its metadata");
        Error::new(
            StatusCode::ChecksumMismatch,
            format!("chunk {chunk}: data file has {file_len} bytes, metadata {} bytes", meta.length),
        )
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
}

fn data_file_missing(chunk: ChunkId) -> Error {
    Error::new(StatusCode::ChecksumMismatch, format!("chunk {chunk}: data file missing"))
}
