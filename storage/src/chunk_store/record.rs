//! The chunk metadata record (the value of the `chunks` keyspace) and its per-block CRC32Cs.
//!
//! A record holds a chunk version's metadata and, since format 3, the CRC32C of every block of its
//! data (the last block may be short; the block size is stored in the record, chosen by
//! [`crc_block_size`] when the version is written), so a partial read reads and verifies only the
//! blocks it touches instead of the whole chunk. The whole-chunk CRC stays in the record
//! (it is on the wire, in QueryChunk/ListChunks and in fsck); it is derived from the block CRCs with
//! `crc32c_combine`'s algebra, so writing a version costs one CRC pass over its data, and so does verifying
//! a whole chunk against both its block CRCs and its whole-chunk CRC.
//!
//! Invariants: a decoded format 3 record has exactly `ceil(length / block_size)` block CRCs (decoding
//! checks it against the record's own length before allocating anything); formats 1 and 2 have none and
//! their chunks are verified as a whole. On-disk formats: add a new format byte, never change an existing
//! one (docs/formats.md).
use t3fs_common::crc::shift;
use t3fs_common::{Error, StatusCode};

use super::ChunkMeta;

/// Smallest block a CRC covers in records written now: the O_DIRECT alignment, so a small read costs
/// at most the 4 KiB blocks around it.
pub const MIN_CRC_BLOCK_SIZE: u32 = 4 * 1024;
/// Largest block a CRC covers in records written now (a 64 MiB chunk has 1,024 block CRCs, 4 KiB).
pub const MAX_CRC_BLOCK_SIZE: u32 = 64 * 1024;

/// Bytes covered by one block CRC for a chunk version of `len` bytes: the smallest power of two that
/// gives at most 256 blocks, within [`MIN_CRC_BLOCK_SIZE`, `MAX_CRC_BLOCK_SIZE`]. A 1 MiB chunk gets
/// 4 KiB blocks (256 CRCs, 1 KiB of record), 4 MiB 16 KiB, 16 MiB and more 64 KiB. Records store the
/// size they were written with (formats 3 and 4), so this can change without a new format; before
/// 2026-12-03 it was always 64 KiB, which made every small read cost a 64 KiB device read.
pub fn crc_block_size(len: usize) -> u32 {
    let per_block = len.div_ceil(256).next_power_of_two();
    per_block.clamp(MIN_CRC_BLOCK_SIZE as usize, MAX_CRC_BLOCK_SIZE as usize) as u32
}

/// Record encodings, little-endian.
/// - format 1 (22 bytes): `[1][flags u8: bit0 removed][version u64][length u32][crc u32][chain_version u32]`,
///   `file_gen` 0, no block CRCs;
/// - format 2 (26 bytes): format 1's fields, then `[file_gen u32]`, no block CRCs;
/// - format 3 (30 + 4n bytes): format 2's fields, then `[block_size u32]` and `n = ceil(length /
///   block_size)` block CRCs `[crc u32]`, block `i` covering bytes `[i * block_size, min((i + 1) *
///   block_size, length))`.
///
/// - format 4 (34 + 4n bytes, the chunk engine): `[4][flags u8][version u64][length u32][crc u32]
///   [chain_version u32][slot u64]` (`crate::engine::Slot::encode`, 0 = no slot: a tombstone or an empty
///   chunk), then `[block_size u32]` and the block CRCs as in format 3.
///
/// Every record written now is format 4 (tombstones too: length 0, no block CRCs). Formats 1 to 3 belong
/// to the file-per-chunk layout: they are read only to migrate such a target into the engine
/// (`chunk_store/migrate.rs`), which rewrites every record as format 4.
const RECORD_FORMAT_V1: u8 = 1;
const RECORD_FORMAT_V2: u8 = 2;
const RECORD_FORMAT_V3: u8 = 3;
const RECORD_FORMAT_V4: u8 = 4;
const RECORD_LEN_V1: usize = 22;
const RECORD_LEN_V2: usize = 26;
const RECORD_HEAD_V3: usize = 30;
const RECORD_HEAD_V4: usize = 34;

/// The CRC32C of every block of one chunk version's data.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct BlockCrcs {
    /// Bytes per block (> 0); the last block may be shorter.
    pub block_size: u32,
    /// One CRC per block, `ceil(length / block_size)` of them.
    pub crcs: Vec<u32>,
}

/// Summarised: a 64 MiB chunk has 1,024 block CRCs, too many for a log line.
impl std::fmt::Debug for BlockCrcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCrcs").field("block_size", &self.block_size).field("blocks", &self.crcs.len()).finish()
    }
}

impl BlockCrcs {
    /// Block CRCs of `data` and the CRC32C of the whole of it (combined from the block CRCs, one pass).
    pub fn compute(data: &[u8], block_size: u32) -> (Self, u32) {
        assert!(block_size > 0, "block size must be positive");
        let blocks = Self { block_size, crcs: data.chunks(block_size as usize).map(crc32c::crc32c).collect() };
        let whole = blocks.whole_crc(u32::try_from(data.len()).expect("chunks are at most 64 MiB"));
        (blocks, whole)
    }

    /// The CRC32C of the whole chunk (`length` bytes) these are the block CRCs of:
    /// `crc(A || B) = shift(crc(A), |B|) ^ crc(B)`, block by block (see [`shift`], precomputed operators).
    pub fn whole_crc(&self, length: u32) -> u32 {
        (0..self.crcs.len()).fold(0, |acc, i| {
            let (start, end) = self.block_range(i, length);
            shift(acc, (end - start) as u32) ^ self.crcs[i]
        })
    }

    /// Indices `[first, last]` of the blocks covering the non-empty byte range `[start, end)`.
    pub fn covering(&self, start: u32, end: u32) -> (usize, usize) {
        debug_assert!(start < end, "empty ranges touch no block");
        ((start / self.block_size) as usize, ((end - 1) / self.block_size) as usize)
    }

    /// Byte range `[start, end)` of block `i` in a chunk of `length` bytes.
    pub fn block_range(&self, i: usize, length: u32) -> (u64, u64) {
        let start = i as u64 * u64::from(self.block_size);
        (start, (start + u64::from(self.block_size)).min(u64::from(length)))
    }

    /// Checks `data`, the bytes of blocks `first..` read from the chunk's file (each block whole, the last
    /// one possibly short), against their CRCs. On a mismatch: the block index, its CRC and the recorded one.
    pub fn verify(&self, first: usize, data: &[u8]) -> Result<(), (usize, u32, u32)> {
        for (j, block) in data.chunks(self.block_size as usize).enumerate() {
            let (i, crc) = (first + j, crc32c::crc32c(block));
            let expected = self.crcs.get(i).copied();
            if expected != Some(crc) {
                return Err((i, crc, expected.unwrap_or_default()));
            }
        }
        Ok(())
    }
}

/// The stored record: a chunk's metadata, or a tombstone keeping the version of a removed chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub meta: ChunkMeta,
    pub removed: bool,
    /// File-per-chunk layout (formats 1-3) only: discriminates the data file of a live chunk among files
    /// of the same version: 0 is `<chunk>.<version>`, n > 0 is `<chunk>.<version>.<n as 8 hex>`. 0 in
    /// format 4.
    pub file_gen: u32,
    /// Format 4: the engine slot holding the content (`Slot::encode`); `None` for a tombstone, an empty
    /// chunk, or a chunk of an older format.
    pub slot: Option<u64>,
    /// Per-block CRCs (format 3). `None`: a format 1/2 record, whose chunk is only verified as a whole, or
    /// a record decoded by [`Record::decode_head`].
    pub blocks: Option<BlockCrcs>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let format = match (&self.blocks, self.file_gen) {
            (Some(_), _) => RECORD_FORMAT_V4,
            (None, 0) => RECORD_FORMAT_V1,
            (None, _) => RECORD_FORMAT_V2,
        };
        let n = self.blocks.as_ref().map_or(0, |b| b.crcs.len());
        let mut b = Vec::with_capacity(RECORD_HEAD_V4 + 4 * n);
        b.push(format);
        b.push(u8::from(self.removed));
        b.extend_from_slice(&self.meta.version.to_le_bytes());
        b.extend_from_slice(&self.meta.length.to_le_bytes());
        b.extend_from_slice(&self.meta.crc32c.to_le_bytes());
        b.extend_from_slice(&self.meta.chain_version.to_le_bytes());
        if format == RECORD_FORMAT_V4 {
            b.extend_from_slice(&self.slot.unwrap_or(0).to_le_bytes());
        } else if format != RECORD_FORMAT_V1 {
            b.extend_from_slice(&self.file_gen.to_le_bytes());
        }
        if let Some(blocks) = &self.blocks {
            b.extend_from_slice(&blocks.block_size.to_le_bytes());
            for crc in &blocks.crcs {
                b.extend_from_slice(&crc.to_le_bytes());
            }
        }
        b
    }

    /// Decodes a record of any format.
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        Self::decode_inner(b, true)
    }

    /// Decodes and checks a record like [`Record::decode`] but leaves out the block CRCs (`blocks: None`):
    /// for listings, which need only the metadata (a 64 MiB chunk's record holds 4 KiB of them).
    pub fn decode_head(b: &[u8]) -> Result<Self, Error> {
        Self::decode_inner(b, false)
    }

    fn decode_inner(b: &[u8], keep_blocks: bool) -> Result<Self, Error> {
        let corrupt = || Error::new(StatusCode::Io, format!("corrupt chunk record ({} bytes)", b.len()));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4-byte slice"));
        let format = b.first().copied();
        let ok = match format {
            Some(RECORD_FORMAT_V1) => b.len() == RECORD_LEN_V1,
            Some(RECORD_FORMAT_V2) => b.len() == RECORD_LEN_V2,
            Some(RECORD_FORMAT_V3) => b.len() >= RECORD_HEAD_V3,
            Some(RECORD_FORMAT_V4) => b.len() >= RECORD_HEAD_V4,
            _ => false,
        };
        if !ok || b[1] > 1 {
            return Err(corrupt());
        }
        let meta = ChunkMeta {
            version: u64::from_le_bytes(b[2..10].try_into().expect("8-byte slice")),
            length: u32_at(10),
            crc32c: u32_at(14),
            chain_version: u32_at(18),
        };
        let v4 = format == Some(RECORD_FORMAT_V4);
        let blocks = if format == Some(RECORD_FORMAT_V3) || v4 {
            let head = if v4 { RECORD_HEAD_V4 } else { RECORD_HEAD_V3 };
            let block_size = u32_at(head - 4);
            if block_size == 0 {
                return Err(corrupt());
            }
            let n = meta.length.div_ceil(block_size) as usize;
            if n.checked_mul(4).and_then(|crcs| crcs.checked_add(head)) != Some(b.len()) {
                return Err(corrupt());
            }
            keep_blocks.then(|| BlockCrcs { block_size, crcs: (0..n).map(|i| u32_at(head + 4 * i)).collect() })
        } else {
            None
        };
        let (file_gen, slot) = match format {
            Some(RECORD_FORMAT_V4) => {
                let raw = u64::from_le_bytes(b[22..30].try_into().expect("8-byte slice"));
                (0, (raw != 0).then_some(raw))
            }
            Some(RECORD_FORMAT_V1) => (0, None),
            _ => (u32_at(22), None),
        };
        Ok(Self { removed: b[1] == 1, meta, file_gen, slot, blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_encoding_is_stable() {
        // Format 1 (every record with file_gen 0 written before format 3).
        let meta = ChunkMeta { version: 0x0102, length: 3, crc32c: 0xAABBCCDD, chain_version: 9 };
        let r = Record { meta, removed: true, file_gen: 0, slot: None, blocks: None };
        let b = r.encode();
        assert_eq!(hex::encode(&b), "0101020100000000000003000000ddccbbaa09000000");
        assert_eq!(Record::decode(&b).unwrap(), r);
        // The old encoding as stored on disk still decodes (file_gen 0).
        let old = hex::decode("0100020100000000000003000000ddccbbaa09000000").unwrap();
        assert_eq!(Record::decode(&old).unwrap(), Record { removed: false, ..r.clone() });
        assert!(Record::decode(&b[..21]).is_err());
        let mut bad = b.clone();
        bad[0] = 2;
        assert!(Record::decode(&bad).is_err(), "format 2 needs 26 bytes");
        bad[0] = 4;
        assert!(Record::decode(&bad).is_err());
        let mut bad_flags = b.clone();
        bad_flags[1] = 2;
        assert!(Record::decode(&bad_flags).is_err());
        // Format 2: a file generation after the format 1 fields.
        let r2 = Record { meta, removed: false, file_gen: 0x01020304, slot: None, blocks: None };
        let b2 = r2.encode();
        assert_eq!(hex::encode(&b2), "0200020100000000000003000000ddccbbaa0900000004030201");
        assert_eq!(Record::decode(&b2).unwrap(), r2);
        assert!(Record::decode(&b2[..25]).is_err());
        let mut b2_as_v1 = b2.clone();
        b2_as_v1[0] = 1;
        assert!(Record::decode(&b2_as_v1).is_err(), "format 1 is exactly 22 bytes");
    }

    #[test]
    fn formats_3_and_4_carry_block_crcs() {
        // 3 bytes in blocks of 2: two CRCs. Format 3, as the file-per-chunk layout wrote it.
        let meta = ChunkMeta { version: 0x0102, length: 3, crc32c: 0xAABBCCDD, chain_version: 9 };
        let blocks = BlockCrcs { block_size: 2, crcs: vec![0x11223344, 0x55667788] };
        let v3 = hex::decode(
            "0300020100000000000003000000ddccbbaa09000000050000000200000044332211\
             88776655",
        )
        .unwrap();
        let r3 = Record { meta, removed: false, file_gen: 5, slot: None, blocks: Some(blocks.clone()) };
        assert_eq!(Record::decode(&v3).unwrap(), r3);
        for bad in [&v3[..v3.len() - 4], &v3[..29]] {
            assert!(Record::decode(bad).is_err());
        }
        // Format 4: the slot instead of the file generation.
        let r = Record { meta, removed: false, file_gen: 0, slot: Some(0x0014_0000_0002_0003), blocks: Some(blocks) };
        let b = r.encode();
        assert_eq!(
            hex::encode(&b),
            "0400020100000000000003000000ddccbbaa090000000300020000001400\
             0200000044332211\
             88776655"
        );
        assert_eq!(Record::decode(&b).unwrap(), r);
        let head = Record::decode_head(&b).unwrap();
        assert_eq!(head, Record { blocks: None, ..r.clone() });
        // The number of CRCs must match the length; the block size must be positive.
        for bad in [&b[..b.len() - 4], &b[..b.len() - 1], &[&b[..], &[0u8; 4]].concat(), &b[..33]] {
            assert!(Record::decode(bad).is_err(), "{}", hex::encode(bad));
            assert!(Record::decode_head(bad).is_err());
        }
        let mut zero_block = b.clone();
        zero_block[30..34].copy_from_slice(&0u32.to_le_bytes());
        assert!(Record::decode(&zero_block).is_err());
        // A tombstone (and an empty chunk): no block CRCs, 30 bytes.
        let t = Record {
            meta: ChunkMeta { version: 7, length: 0, crc32c: 0, chain_version: 1 },
            removed: true,
            file_gen: 0,
            slot: None,
            blocks: Some(BlockCrcs { block_size: crc_block_size(0), crcs: vec![] }),
        };
        let tb = t.encode();
        assert_eq!(tb.len(), 34);
        assert_eq!(Record::decode(&tb).unwrap(), t);
        // A length that would need 2^32 / 1 CRCs is rejected without allocating them.
        let mut huge = tb.clone();
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[30..34].copy_from_slice(&1u32.to_le_bytes());
        assert!(Record::decode(&huge).is_err());
        assert_eq!(format!("{:?}", r.blocks.unwrap()), "BlockCrcs { block_size: 2, blocks: 2 }");
    }

    #[test]
    fn block_size_grows_with_the_chunk_within_its_bounds() {
        let cases = [
            (0, 4096),
            (1, 4096),
            (16 << 10, 4096),
            (1 << 20, 4096),
            ((1 << 20) + 1, 8192),
            (4 << 20, 16 << 10),
            (16 << 20, 64 << 10),
            (64 << 20, 64 << 10),
        ];
        for (len, bs) in cases {
            assert_eq!(crc_block_size(len), bs, "len {len}");
            assert!(len.div_ceil(bs as usize) <= 1024, "len {len}: at most 1,024 CRCs");
        }
    }

    #[test]
    fn block_crcs_combine_to_the_whole_crc() {
        let data: Vec<u8> = (0..(1u32 << 20) + 7).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 100, 1 << 20, (1 << 20) + 7] {
            for bs in [MIN_CRC_BLOCK_SIZE, crc_block_size(len), MAX_CRC_BLOCK_SIZE] {
                let d = &data[..len];
                let (blocks, whole) = BlockCrcs::compute(d, bs);
                assert_eq!(whole, crc32c::crc32c(d), "len {len} block size {bs}");
                assert_eq!(blocks.crcs.len(), len.div_ceil(bs as usize));
                for (i, c) in blocks.crcs.iter().enumerate() {
                    let (s, e) = blocks.block_range(i, len as u32);
                    assert_eq!(*c, crc32c::crc32c(&d[s as usize..e as usize]));
                }
                assert_eq!(blocks.verify(0, d), Ok(()));
            }
        }
        // (`shift` itself is tested against `crc32c_combine` in t3fs_common::crc.)
        let (blocks, _) = BlockCrcs::compute(&data[..10_000], 4096);
        assert_eq!(blocks.covering(0, 1), (0, 0));
        assert_eq!(blocks.covering(4095, 4097), (0, 1));
        assert_eq!(blocks.covering(4096, 8192), (1, 1));
        assert_eq!(blocks.covering(8192, 10_000), (2, 2));
        assert_eq!(blocks.block_range(2, 10_000), (8192, 10_000));
        // Verification from a later block, and a damaged one.
        assert_eq!(blocks.verify(1, &data[4096..10_000]), Ok(()));
        let mut bad = data[4096..10_000].to_vec();
        bad[5000] ^= 1;
        let (i, crc, expected) = blocks.verify(1, &bad).unwrap_err();
        assert_eq!((i, crc, expected), (2, crc32c::crc32c(&bad[4096..]), blocks.crcs[2]));
        // More data than blocks is a mismatch, never a panic.
        assert!(blocks.verify(2, &data[..8192]).is_err());
    }
}
