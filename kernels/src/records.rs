//! The record-file format for training samples (in the spirit of 3FS's FFRecord): many samples in
//! one file, each readable with one random read and checked with its own CRC32C.
//!
//! Layout (all integers little-endian; `docs/loaders.md` has the same table):
//!
//! | bytes | field |
//! |---|---|
//! | 32 | header: magic `b"T3RECORD"`, version u32 = 1, flags u32 = 0, 16 reserved bytes = 0 |
//! | .. | the samples, back to back (sample `i` at `offset_i`, `len_i` bytes) |
//! | 16 × n | the index: per sample `offset u64, len u32, crc32c u32` (CRC32C of the sample bytes) |
//! | 32 | footer: magic `b"T3RECIDX"`, count u64, index_offset u64, index_crc32c u32, reserved u32 = 0 |
//!
//! Why this shape: a writer streams samples without knowing their count (the index and footer go
//! last), and a reader opens a file with one read of the footer and one of the index (plus the
//! header, read alongside the index, for the version). After that every sample is one read of
//! exactly its bytes, which is what the batch-read API is built for.
//!
//! Invariants a parsed [`RecordIndex`] guarantees (anything else is [`KernelError::Format`]):
//! the footer sits at `file_len - 32`, the index fills `[index_offset, file_len - 32)` exactly,
//! its CRC32C matches, and every sample lies inside the data area `[32, index_offset)`. The writer
//! places samples back to back; readers accept any placement inside the data area (so a later
//! writer may align samples without a version change).
use std::io::Write;
use std::sync::Arc;

use t3fs_client::{Client, InodeId, UserInfo};
use t3fs_common::proto::{self, InodeType};

use crate::{KernelError, Result};

/// Header magic, at byte 0.
pub const HEADER_MAGIC: [u8; 8] = *b"T3RECORD";
/// Footer magic, at `file_len - 32`.
pub const FOOTER_MAGIC: [u8; 8] = *b"T3RECIDX";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Header length in bytes; the data area starts here.
pub const HEADER_LEN: u64 = 32;
/// Footer length in bytes.
pub const FOOTER_LEN: u64 = 32;
/// One index entry in bytes.
pub const ENTRY_LEN: u64 = 16;

/// How much [`write_record_file`] buffers before writing to t3fs (one write per 4 MiB).
const WRITE_BUF: usize = 4 << 20;
/// Largest single read [`RecordFile::open`] issues for the index (the client reads take u32 lengths).
const MAX_READ: u64 = 1 << 30;

fn format_err(msg: impl Into<String>) -> KernelError {
    KernelError::Format(msg.into())
}

/// A client error with the path it is about in front of its message (the code is kept).
pub(crate) fn client_err(path: &str, e: t3fs_client::Error) -> KernelError {
    KernelError::Client(t3fs_client::Error::new(e.code, format!("{path}: {}", e.message)))
}

/// The 32-byte header of a version-1 file.
pub fn encode_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&HEADER_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // flags (12..16) and reserved (16..32) stay zero.
    h
}

/// Checks a file's first 32 bytes: magic, version 1, zero flags and reserved bytes.
pub fn check_header(header: &[u8]) -> Result<()> {
    if header.len() != HEADER_LEN as usize {
        return Err(format_err(format!("record header is {} bytes, expected {HEADER_LEN}", header.len())));
    }
    if header[..8] != HEADER_MAGIC {
        return Err(format_err(format!("bad record header magic {:?}", &header[..8])));
    }
    let version = u32_at(header, 8);
    if version != VERSION {
        return Err(format_err(format!("record file version {version}, this reader knows {VERSION}")));
    }
    let flags = u32_at(header, 12);
    if flags != 0 || header[16..].iter().any(|&b| b != 0) {
        return Err(format_err(format!("record header has unknown flags {flags:#x} or non-zero reserved bytes")));
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Where one sample lives and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    pub offset: u64,
    pub len: u32,
    /// CRC32C of the sample's bytes.
    pub crc: u32,
}

impl RecordEntry {
    fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut e = [0u8; ENTRY_LEN as usize];
        e[..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.len.to_le_bytes());
        e[12..].copy_from_slice(&self.crc.to_le_bytes());
        e
    }

    fn decode(b: &[u8]) -> RecordEntry {
        RecordEntry { offset: u64_at(b, 0), len: u32_at(b, 8), crc: u32_at(b, 12) }
    }

    /// One past the sample's last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The decoded 32-byte footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub count: u64,
    pub index_offset: u64,
    pub index_crc: u32,
}

impl Footer {
    fn encode(&self) -> [u8; FOOTER_LEN as usize] {
        let mut f = [0u8; FOOTER_LEN as usize];
        f[..8].copy_from_slice(&FOOTER_MAGIC);
        f[8..16].copy_from_slice(&self.count.to_le_bytes());
        f[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        f[24..28].copy_from_slice(&self.index_crc.to_le_bytes());
        f
    }

    /// Decodes and checks a footer against the file length: magic, zero reserved word, and the
    /// index exactly filling `[index_offset, file_len - 32)` after the header.
    pub fn parse(footer: &[u8], file_len: u64) -> Result<Footer> {
        let (foot_at, _) = footer_range(file_len)?;
        if footer.len() != FOOTER_LEN as usize {
            return Err(format_err(format!("record footer is {} bytes, expected {FOOTER_LEN}", footer.len())));
        }
        if footer[..8] != FOOTER_MAGIC {
            return Err(format_err(format!(
                "bad record footer magic {:?} (truncated or not a record file)",
                &footer[..8]
            )));
        }
        if u32_at(footer, 28) != 0 {
            return Err(format_err("record footer has a non-zero reserved word"));
        }
        let f = Footer { count: u64_at(footer, 8), index_offset: u64_at(footer, 16), index_crc: u32_at(footer, 24) };
        let index_len =
            f.count.checked_mul(ENTRY_LEN).ok_or_else(|| format_err(format!("count {} overflows", f.count)))?;
        if f.index_offset < HEADER_LEN || f.index_offset.checked_add(index_len) != Some(foot_at) {
            return Err(format_err(format!(
                "record index of {} entries at {} does not end at the footer ({foot_at}) of a {file_len}-byte file",
                f.count, f.index_offset
            )));
        }
        Ok(f)
    }

    /// Byte range `(offset, len)` of the index this footer describes.
    pub fn index_range(&self) -> (u64, u64) {
        (self.index_offset, self.count * ENTRY_LEN)
    }
}

/// Byte range `(offset, len)` of the footer of a `file_len`-byte record file; an error if the file
/// is too short to hold a header and a footer.
pub fn footer_range(file_len: u64) -> Result<(u64, u64)> {
    if file_len < HEADER_LEN + FOOTER_LEN {
        return Err(format_err(format!("a {file_len}-byte file is too short for a record file (at least 64 bytes)")));
    }
    Ok((file_len - FOOTER_LEN, FOOTER_LEN))
}

/// The parsed index of one record file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordIndex {
    entries: Vec<RecordEntry>,
}

impl RecordIndex {
    /// Parses and validates the footer and index bytes of a `file_len`-byte file (see the module
    /// note for what is checked).
    pub fn parse(footer: &[u8], index: &[u8], file_len: u64) -> Result<RecordIndex> {
        let f = Footer::parse(footer, file_len)?;
        if index.len() as u64 != f.count * ENTRY_LEN {
            return Err(format_err(format!(
                "record index is {} bytes, the footer says {} entries ({} bytes)",
                index.len(),
                f.count,
                f.count * ENTRY_LEN
            )));
        }
        let crc = crc32c::crc32c(index);
        if crc != f.index_crc {
            return Err(format_err(format!("record index crc {crc:#010x}, the footer says {:#010x}", f.index_crc)));
        }
        let entries: Vec<RecordEntry> = index.chunks_exact(ENTRY_LEN as usize).map(RecordEntry::decode).collect();
        for (i, e) in entries.iter().enumerate() {
            if e.offset < HEADER_LEN || e.offset.checked_add(u64::from(e.len)).is_none_or(|end| end > f.index_offset) {
                return Err(format_err(format!(
                    "record {i} ({} bytes at {}) lies outside the data area [{HEADER_LEN}, {})",
                    e.len, e.offset, f.index_offset
                )));
            }
        }
        Ok(RecordIndex { entries })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sample `i`'s entry, `None` past the end.
    pub fn entry(&self, i: usize) -> Option<RecordEntry> {
        self.entries.get(i).copied()
    }

    /// Every entry, in sample order.
    pub fn entries(&self) -> &[RecordEntry] {
        &self.entries
    }

    /// Checks that `bytes` are sample `i`: the right length and CRC32C.
    pub fn verify(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let e = self
            .entry(i)
            .ok_or_else(|| KernelError::InvalidArgument(format!("sample {i} of {}", self.entries.len())))?;
        if bytes.len() != e.len as usize {
            return Err(format_err(format!("sample {i}: {} bytes, the index says {}", bytes.len(), e.len)));
        }
        let crc = crc32c::crc32c(bytes);
        if crc != e.crc {
            return Err(format_err(format!("sample {i}: crc {crc:#010x}, the index says {:#010x}", e.crc)));
        }
        Ok(())
    }
}

/// The bookkeeping every writer shares: where the next sample goes and the index so far.
#[derive(Debug)]
struct IndexBuilder {
    next_offset: u64,
    entries: Vec<RecordEntry>,
}

impl IndexBuilder {
    fn new() -> Self {
        IndexBuilder { next_offset: HEADER_LEN, entries: Vec::new() }
    }

    /// The entry `sample` gets if it is placed at the current end.
    fn next_entry(&self, sample: &[u8]) -> Result<RecordEntry> {
        let len = u32::try_from(sample.len())
            .map_err(|_| KernelError::InvalidArgument(format!("a {}-byte sample (at most 4 GiB - 1)", sample.len())))?;
        Ok(RecordEntry { offset: self.next_offset, len, crc: crc32c::crc32c(sample) })
    }

    /// Records an entry from [`Self::next_entry`]; returns its index.
    fn push(&mut self, e: RecordEntry) -> u64 {
        self.next_offset = e.end();
        self.entries.push(e);
        self.entries.len() as u64 - 1
    }

    /// The index and footer that end the file.
    fn tail(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN as usize + FOOTER_LEN as usize);
        for e in &self.entries {
            out.extend_from_slice(&e.encode());
        }
        let footer = Footer {
            count: self.entries.len() as u64,
            index_offset: self.next_offset,
            index_crc: crc32c::crc32c(&out),
        };
        out.extend_from_slice(&footer.encode());
        out
    }
}

/// Streams a record file into any [`Write`]: header now, samples as they come, index and footer
/// at [`finish`](Self::finish). A file whose writer was not finished has no footer and does not
/// open.
pub struct RecordWriter<W: Write> {
    w: W,
    index: IndexBuilder,
}

impl<W: Write> RecordWriter<W> {
    /// Writes the header.
    pub fn new(mut w: W) -> Result<Self> {
        w.write_all(&encode_header())?;
        Ok(RecordWriter { w, index: IndexBuilder::new() })
    }

    /// Appends one sample (at most `u32::MAX` bytes); returns its index.
    pub fn append(&mut self, sample: &[u8]) -> Result<u64> {
        // Checked before writing, so a rejected sample leaves the file consistent.
        let e = self.index.next_entry(sample)?;
        self.w.write_all(sample)?;
        Ok(self.index.push(e))
    }

    /// Samples appended so far.
    pub fn count(&self) -> u64 {
        self.index.entries.len() as u64
    }

    /// Writes the index and footer, flushes, and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.w.write_all(&self.index.tail())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A whole record file in memory.
///
/// # Panics
/// If a sample is longer than `u32::MAX` bytes (use [`RecordWriter`] to get an error instead).
pub fn encode_records(samples: &[&[u8]]) -> Vec<u8> {
    let mut w = RecordWriter::new(Vec::new()).expect("writing to a Vec cannot fail");
    for s in samples {
        w.append(s).expect("encode_records: every sample must be shorter than 4 GiB");
    }
    w.finish().expect("writing to a Vec cannot fail")
}

/// Splits an absolute t3fs path into (parent path, final name).
fn split_path(path: &str) -> Result<(&str, &str)> {
    let bad = || KernelError::InvalidArgument(format!("{path:?} is not an absolute path to a file"));
    if !path.starts_with('/') {
        return Err(bad());
    }
    let trimmed = path.trim_end_matches('/');
    let pos = trimmed.rfind('/').ok_or_else(bad)?;
    let name = &trimmed[pos + 1..];
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad());
    }
    Ok((if pos == 0 { "/" } else { &trimmed[..pos] }, name))
}

/// Creates the regular file at `path` (as root, mode 0644), or empties it if it exists. The
/// parent directory must exist. Shared by the record and KV-cache writers.
pub(crate) async fn create_empty(client: &Client, path: &str) -> Result<proto::Inode> {
    let (parent, name) = split_path(path)?;
    let user = UserInfo::root();
    let dir = client.resolve_path(&user, parent).await?;
    let inode = client.create(&user, InodeId(dir.id), name.as_bytes(), 0o644, false).await?;
    if inode.inode_type != InodeType::File as i32 {
        return Err(KernelError::InvalidArgument(format!("{path} exists and is not a regular file")));
    }
    if inode.length > 0 {
        return Ok(client.truncate(&user, InodeId(inode.id), 0).await?);
    }
    Ok(inode)
}

/// Tells meta the file written through `inode` is `len` bytes long now.
pub(crate) async fn close_written(client: &Client, inode: &proto::Inode, len: u64) -> Result<proto::Inode> {
    Ok(client.close(&UserInfo::root(), InodeId(inode.id), len, true).await?)
}

/// Resolves `path` (as root) and checks it is a regular file.
pub(crate) async fn open_file(client: &Client, path: &str) -> Result<Arc<proto::Inode>> {
    let inode = client.resolve_path(&UserInfo::root(), path).await.map_err(|e| client_err(path, e))?;
    if inode.inode_type != InodeType::File as i32 {
        return Err(KernelError::InvalidArgument(format!("{path} is not a regular file")));
    }
    Ok(Arc::new(inode))
}

/// Reads exactly `len` bytes at `offset` (several reads if longer than the client's u32 limit);
/// a short result means the file is shorter than its own metadata says.
async fn read_exact(client: &Client, inode: &proto::Inode, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let take = (len - out.len() as u64).min(MAX_READ) as u32;
        let got = client.read(inode, offset + out.len() as u64, take).await.map_err(|e| client_err(path, e))?;
        if got.len() != take as usize {
            return Err(format_err(format!("{path}: {} of {len} bytes at {offset} (file truncated?)", got.len())));
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

/// Writes a record file of `samples` to `path` in t3fs (created, or emptied if it exists),
/// streaming: samples are buffered and written 4 MiB at a time, then the index and footer, then
/// the length is committed in meta.
pub async fn write_record_file<S: AsRef<[u8]>>(
    client: &Client,
    path: &str,
    samples: impl IntoIterator<Item = S>,
) -> Result<()> {
    let inode = create_empty(client, path).await?;
    let mut index = IndexBuilder::new();
    let mut buf = encode_header().to_vec();
    let mut written = 0u64;
    for s in samples {
        let s = s.as_ref();
        index.push(index.next_entry(s)?);
        buf.extend_from_slice(s);
        if buf.len() >= WRITE_BUF {
            client.write(&inode, written, &buf).await?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    buf.extend_from_slice(&index.tail());
    client.write(&inode, written, &buf).await?;
    written += buf.len() as u64;
    close_written(client, &inode, written).await?;
    Ok(())
}

/// An opened record file in t3fs: its inode (for reads) and its validated index.
#[derive(Clone, Debug)]
pub struct RecordFile {
    path: String,
    inode: Arc<proto::Inode>,
    index: RecordIndex,
}

impl RecordFile {
    /// Opens `path`: stat, read the footer, then the header and index together, and validate them.
    pub async fn open(client: &Arc<Client>, path: &str) -> Result<RecordFile> {
        let inode = open_file(client, path).await?;
        let ctx = |e: KernelError| match e {
            KernelError::Format(m) => format_err(format!("{path}: {m}")),
            e => e,
        };
        let (foot_at, foot_len) = footer_range(inode.length).map_err(ctx)?;
        let footer = read_exact(client, &inode, path, foot_at, foot_len).await?;
        let f = Footer::parse(&footer, inode.length).map_err(ctx)?;
        let (idx_at, idx_len) = f.index_range();
        let (header, index) = tokio::try_join!(
            read_exact(client, &inode, path, 0, HEADER_LEN),
            read_exact(client, &inode, path, idx_at, idx_len)
        )?;
        check_header(&header).map_err(ctx)?;
        let index = RecordIndex::parse(&footer, &index, inode.length).map_err(ctx)?;
        Ok(RecordFile { path: path.to_string(), inode, index })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The inode as opened (its `length` is where reads are clamped).
    pub fn inode(&self) -> &Arc<proto::Inode> {
        &self.inode
    }

    pub fn index(&self) -> &RecordIndex {
        &self.index
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Reads sample `i` and checks its CRC32C.
    pub async fn read_sample(&self, client: &Client, i: usize) -> Result<Vec<u8>> {
        let e = self.index.entry(i).ok_or_else(|| {
            KernelError::InvalidArgument(format!("{}: sample {i} of {}", self.path, self.index.len()))
        })?;
        let bytes = read_exact(client, &self.inode, &self.path, e.offset, u64::from(e.len)).await?;
        self.index.verify(i, &bytes).map_err(|e| match e {
            KernelError::Format(m) => format_err(format!("{}: {m}", self.path)),
            e => e,
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// Splits a file image into (footer, index) the way a reader fetches them.
    fn parse_image(file: &[u8]) -> Result<RecordIndex> {
        let (at, len) = footer_range(file.len() as u64)?;
        let footer = &file[at as usize..(at + len) as usize];
        let f = Footer::parse(footer, file.len() as u64)?;
        let (io, il) = f.index_range();
        check_header(&file[..HEADER_LEN as usize])?;
        RecordIndex::parse(footer, &file[io as usize..(io + il) as usize], file.len() as u64)
    }

    fn samples_of(file: &[u8], idx: &RecordIndex) -> Vec<Vec<u8>> {
        idx.entries().iter().map(|e| file[e.offset as usize..e.end() as usize].to_vec()).collect()
    }

    fn expect_format(r: Result<RecordIndex>, needle: &str) {
        match r {
            Err(KernelError::Format(m)) => assert!(m.contains(needle), "message {m:?} lacks {needle:?}"),
            other => panic!("expected a Format error containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_through_a_vec_with_exact_layout() {
        let samples: Vec<Vec<u8>> = vec![sample(0, 5), Vec::new(), sample(2, 300)];
        let refs: Vec<&[u8]> = samples.iter().map(|s| &s[..]).collect();
        let file = encode_records(&refs);
        // 32 header + 305 data + 3 * 16 index + 32 footer.
        assert_eq!(file.len(), 32 + 305 + 48 + 32);
        assert_eq!(&file[..8], b"T3RECORD");
        assert_eq!(&file[8..12], &[1, 0, 0, 0]);
        assert_eq!(&file[file.len() - 32..file.len() - 24], b"T3RECIDX");
        assert_eq!(u64_at(&file, file.len() - 24), 3);
        assert_eq!(u64_at(&file, file.len() - 16), 337);
        let idx = parse_image(&file).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.entry(0), Some(RecordEntry { offset: 32, len: 5, crc: crc32c::crc32c(&samples[0]) }));
        assert_eq!(idx.entry(1).unwrap().offset, 37);
        assert_eq!(idx.entry(2).unwrap().offset, 37);
        assert_eq!(idx.entry(3), None);
        assert_eq!(samples_of(&file, &idx), samples);
        for (i, s) in samples.iter().enumerate() {
            idx.verify(i, s).unwrap();
        }
        // An empty file set is valid too.
        let empty = encode_records(&[]);
        assert_eq!(empty.len(), 64);
        assert!(parse_image(&empty).unwrap().is_empty());
        // The streaming writer counts and hands back its writer.
        let mut w = RecordWriter::new(Vec::new()).unwrap();
        assert_eq!(w.append(b"ab").unwrap(), 0);
        assert_eq!(w.append(b"").unwrap(), 1);
        assert_eq!(w.count(), 2);
        assert_eq!(w.finish().unwrap(), encode_records(&[b"ab", b""]));
    }

    #[test]
    fn every_kind_of_corruption_is_detected() {
        let samples: Vec<Vec<u8>> = (0..4).map(|i| sample(i, 100 + i)).collect();
        let refs: Vec<&[u8]> = samples.iter().map(|s| &s[..]).collect();
        let good = encode_records(&refs);
        let n = good.len();
        let foot = n - 32;
        let index_at = foot - 4 * 16;

        let mut f = good.clone();
        f[0] ^= 1;
        assert!(matches!(check_header(&f[..32]), Err(KernelError::Format(m)) if m.contains("header magic")));
        let mut f = good.clone();
        f[8] = 2;
        assert!(matches!(check_header(&f[..32]), Err(KernelError::Format(m)) if m.contains("version 2")));
        let mut f = good.clone();
        f[20] = 1;
        assert!(matches!(check_header(&f[..32]), Err(KernelError::Format(m)) if m.contains("reserved")));

        let mut f = good.clone();
        f[foot + 3] ^= 0x40;
        expect_format(parse_image(&f), "footer magic");
        // Truncated anywhere: the footer is gone (or misplaced), or the file is too short.
        for cut in [1, 16, 32, 100, n - 64, n - 1] {
            expect_format(parse_image(&good[..n - cut]), "");
        }
        expect_format(parse_image(&good[..10]), "too short");
        // Index crc: flip a bit in an entry.
        let mut f = good.clone();
        f[index_at + 9] ^= 1;
        expect_format(parse_image(&f), "index crc");
        // Count inconsistent with the footer position.
        let mut f = good.clone();
        f[foot + 8] = 5;
        expect_format(parse_image(&f), "does not end at the footer");
        // Reserved word.
        let mut f = good.clone();
        f[n - 1] = 1;
        expect_format(parse_image(&f), "reserved");

        // An entry outside the data area, with a matching index crc (a buggy writer, not bit rot).
        let rewrite = |entry: usize, e: RecordEntry| {
            let mut f = good.clone();
            f[index_at + 16 * entry..index_at + 16 * entry + 16].copy_from_slice(&e.encode());
            let crc = crc32c::crc32c(&f[index_at..foot]);
            f[foot + 24..foot + 28].copy_from_slice(&crc.to_le_bytes());
            f
        };
        let e = RecordEntry { offset: index_at as u64 - 10, len: 11, crc: 0 };
        expect_format(parse_image(&rewrite(2, e)), "record 2");
        expect_format(parse_image(&rewrite(0, RecordEntry { offset: 31, len: 1, crc: 0 })), "outside the data area");
        expect_format(parse_image(&rewrite(1, RecordEntry { offset: u64::MAX, len: 2, crc: 0 })), "record 1");

        // Sample crc and length.
        let idx = parse_image(&good).unwrap();
        let mut s = samples[3].clone();
        s[50] ^= 0x80;
        assert!(matches!(idx.verify(3, &s), Err(KernelError::Format(m)) if m.contains("sample 3: crc")));
        assert!(matches!(idx.verify(3, &samples[3][1..]), Err(KernelError::Format(_))));
        assert!(matches!(idx.verify(9, &[]), Err(KernelError::InvalidArgument(_))));
        // The index and footer lengths themselves.
        let footer = &good[foot..];
        expect_format(RecordIndex::parse(footer, &good[index_at..foot - 1], n as u64), "index is 63 bytes");
        expect_format(RecordIndex::parse(&footer[..31], &good[index_at..foot], n as u64), "footer is 31 bytes");
    }

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_path("/a").unwrap(), ("/", "a"));
        assert_eq!(split_path("/a/b/c.rec").unwrap(), ("/a/b", "c.rec"));
        assert_eq!(split_path("/a/b/").unwrap(), ("/a", "b"));
        for bad in ["", "a/b", "/", "/a/..", "/a/."] {
            assert!(matches!(split_path(bad), Err(KernelError::InvalidArgument(_))), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn round_trip_random_sizes(sizes in proptest::collection::vec(prop_oneof![Just(0usize), 0usize..3000], 0..40), seed in any::<u8>()) {
            let samples: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| sample(i + seed as usize, n)).collect();
            let refs: Vec<&[u8]> = samples.iter().map(|s| &s[..]).collect();
            let file = encode_records(&refs);
            prop_assert_eq!(file.len(), 64 + sizes.iter().sum::<usize>() + 16 * sizes.len());
            let idx = parse_image(&file).unwrap();
            prop_assert_eq!(samples_of(&file, &idx), samples.clone());
            for (i, s) in samples.iter().enumerate() {
                prop_assert!(idx.verify(i, s).is_ok());
            }
        }
    }
}
