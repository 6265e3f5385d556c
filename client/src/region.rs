//! Reads into registered regions the host may not address: the GPUDirect RDMA path of the GPU
//! loaders (`t3fs-kernels`), where a storage node writes file bytes straight into GPU memory.
//!
//! [`Client::read_to_region`] reads a byte range of a file into `reg` at an offset, where `reg` is
//! a [`Registration`] from the bulk transport, usually of device memory
//! ([`t3fs_common::bulk::BulkClient::register_dmabuf`]). The client never touches that memory.
//! Instead it returns a [`RegionRead`]: the parts that tile the destination range, each saying
//! where its bytes are now:
//!
//! - [`RegionPart::Written`]: the storage node wrote them in place (RDMA with a registration);
//! - [`RegionPart::Inline`]: they came back to the host (TCP, or a payload the node sent in its
//!   frame); the caller copies them in (a host-to-device copy);
//! - [`RegionPart::Zero`]: a hole (a missing chunk, or the part of a chunk past its stored end);
//!   the caller zeroes it (a device memset), so reused memory never shows stale bytes.
//!
//! The caller's result is then exactly what [`Client::read`] returns. Each chunk piece goes to a
//! serving replica with failover and retries, as [`Client::read`] does.
//!
//! Checksums: inline payloads are checked against the CRC32C the storage node sends, as every
//! read is. Bytes written in place cannot be read by the host, so their part carries the node's
//! CRC32C and the caller checks it where the bytes are (`t3fs-kernels` does, with a CRC32C
//! kernel). The node also verified them against the chunk's stored block CRCs when it read them,
//! and the RDMA link checks every packet (ICRC).
//!
//! Invariants: parts are in destination order, do not overlap, and tile
//! `[reg_offset, reg_offset + len)` where `len` is the clamped read length; nothing outside that
//! range of the region is named by any request.
use bytes::Bytes;
use futures::StreamExt;
use t3fs_common::bulk::{Placed, Registration};
use t3fs_common::proto;
use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode};

use crate::Client;
use crate::data::{ChunkPiece, MAX_CONCURRENT_CHUNKS, bulk_addr, check_read, clamp_read, file_layout, split_range};

/// One part of a [`RegionRead`]; offsets are in the registered region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionPart {
    /// `len` bytes at `offset` were written into the region by the storage node, whose CRC32C
    /// the node computed as `crc` (the caller checks it where the bytes are, e.g. on the GPU).
    Written { offset: usize, len: usize, crc: u32 },
    /// These bytes belong at `offset`; the caller puts them there.
    Inline { offset: usize, data: Bytes },
    /// `len` bytes at `offset` are a hole; the caller zeroes them.
    Zero { offset: usize, len: usize },
}

impl RegionPart {
    /// Where the part starts in the region, and how long it is.
    pub fn span(&self) -> (usize, usize) {
        match self {
            RegionPart::Written { offset, len, .. } | RegionPart::Zero { offset, len } => (*offset, *len),
            RegionPart::Inline { offset, data } => (*offset, data.len()),
        }
    }
}

/// The result of [`Client::read_to_region`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionRead {
    /// Bytes read (clamped at end of file); the parts tile exactly this many bytes.
    pub len: usize,
    /// In destination order.
    pub parts: Vec<RegionPart>,
}

impl RegionRead {
    /// Bytes that crossed the host (inline parts).
    pub fn inline_bytes(&self) -> usize {
        self.parts.iter().map(|p| if let RegionPart::Inline { data, .. } = p { data.len() } else { 0 }).sum()
    }

    /// Applies the read to a host buffer standing for the region (`region[i]` is byte `i` of it):
    /// inline bytes are copied, holes zeroed, and parts written in place are checked against
    /// their CRC32C (`ChecksumMismatch`). What a caller whose region is host memory does.
    pub fn apply_to_host(&self, region: &mut [u8]) -> Result<()> {
        for part in &self.parts {
            let (at, n) = part.span();
            let dst = region
                .get_mut(at..at + n)
                .ok_or_else(|| Error::invalid(format!("part of {n} bytes at {at} is outside the region")))?;
            match part {
                RegionPart::Written { crc, .. } => {
                    let got = crc32c::crc32c(dst);
                    if got != *crc {
                        return Err(Error::new(
                            StatusCode::ChecksumMismatch,
                            format!("{n} bytes written at {at}: crc {got:#010x}, the storage node sent {crc:#010x}"),
                        ));
                    }
                }
                RegionPart::Inline { data, .. } => dst.copy_from_slice(data),
                RegionPart::Zero { .. } => dst.fill(0),
            }
        }
        Ok(())
    }
}

/// The parts one piece of `want` bytes at region offset `at` turns into, given where its first
/// bytes went (and the CRC32C the node sent for them).
fn piece_parts(at: usize, want: usize, placed: Option<(Placed, u32)>) -> Result<Vec<RegionPart>> {
    let (mut parts, got) = match placed {
        None => (Vec::new(), 0),
        Some((Placed::Written(n), crc)) => (vec![RegionPart::Written { offset: at, len: n, crc }], n),
        Some((Placed::Inline(data), _)) => {
            let n = data.len();
            (vec![RegionPart::Inline { offset: at, data }], n)
        }
    };
    if got > want {
        return Err(Error::internal(format!("{got} bytes for a {want}-byte piece")));
    }
    parts.retain(|p| p.span().1 > 0);
    if got < want {
        parts.push(RegionPart::Zero { offset: at + got, len: want - got });
    }
    Ok(parts)
}

impl Client {
    /// Reads up to `len` bytes at `offset` of `inode` (clamped to its length) into `reg` at
    /// `reg_offset`; see the module note for what the caller does with the result.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.id, offset, len, reg_offset))]
    pub async fn read_to_region(
        &self,
        inode: &proto::Inode,
        offset: u64,
        len: u32,
        reg: &Registration,
        reg_offset: usize,
    ) -> Result<RegionRead> {
        let l = file_layout(inode)?;
        let n = clamp_read(offset, u64::from(len), inode.length) as usize;
        if !reg.contains(reg_offset, n) {
            return Err(Error::invalid(format!(
                "a {n}-byte read at offset {reg_offset} of a {}-byte registered region",
                reg.len()
            )));
        }
        let id = InodeId(inode.id);
        let mut reads = futures::stream::iter(split_range(offset, n as u64, l.chunk_size)?)
            .map(|p| async move {
                let chunk = ChunkId::new(id, p.index);
                let request_id = t3fs_common::new_request_id();
                let read = |routing: &t3fs_common::routing::Routing, target| {
                    let addr = bulk_addr(routing, target);
                    let request_id = &request_id;
                    async move {
                        let addr = addr?;
                        let req = self.read_request(target, chunk, p, request_id);
                        let at = reg_offset + p.buf_offset;
                        let (rsp, placed) =
                            self.bulk.call_into_region(&addr, &req, &[], reg, at, p.len as usize).await?;
                        if let Placed::Inline(data) = &placed {
                            check_read(data, p, target, chunk, rsp.payload_crc32c)?;
                        }
                        Ok((placed, rsp.payload_crc32c))
                    }
                };
                let placed = self.read_replicas("read chunk into a region", l, chunk, &read).await?;
                Ok::<_, Error>((p, placed))
            })
            .buffer_unordered(MAX_CONCURRENT_CHUNKS);
        let mut pieces: Vec<(ChunkPiece, Vec<RegionPart>)> = Vec::new();
        while let Some(r) = reads.next().await {
            let (p, placed) = r?;
            pieces.push((p, piece_parts(reg_offset + p.buf_offset, p.len as usize, placed)?));
        }
        pieces.sort_by_key(|(p, _)| p.buf_offset);
        Ok(RegionRead { len: n, parts: pieces.into_iter().flat_map(|(_, parts)| parts).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_its_placed_bytes_then_a_hole() {
        assert_eq!(piece_parts(10, 5, None).unwrap(), vec![RegionPart::Zero { offset: 10, len: 5 }]);
        assert_eq!(
            piece_parts(10, 5, Some((Placed::Written(3), 9))).unwrap(),
            vec![RegionPart::Written { offset: 10, len: 3, crc: 9 }, RegionPart::Zero { offset: 13, len: 2 }]
        );
        assert_eq!(
            piece_parts(0, 2, Some((Placed::Inline(Bytes::from_static(b"ab")), 0))).unwrap(),
            vec![RegionPart::Inline { offset: 0, data: Bytes::from_static(b"ab") }]
        );
        assert_eq!(
            piece_parts(4, 2, Some((Placed::Inline(Bytes::new()), 0))).unwrap(),
            vec![RegionPart::Zero { offset: 4, len: 2 }],
            "an empty payload is all hole"
        );
        assert!(piece_parts(0, 2, Some((Placed::Written(3), 0))).is_err());
    }

    #[test]
    fn apply_copies_inline_zeroes_holes_and_leaves_written_bytes() {
        let read = RegionRead {
            len: 6,
            parts: vec![
                RegionPart::Written { offset: 1, len: 2, crc: crc32c::crc32c(b"bc") },
                RegionPart::Inline { offset: 3, data: Bytes::from_static(b"xy") },
                RegionPart::Zero { offset: 5, len: 2 },
            ],
        };
        let mut region = *b"abcdefgh";
        read.apply_to_host(&mut region).unwrap();
        assert_eq!(&region, b"abcxy\0\0h");
        assert_eq!(read.inline_bytes(), 2);
        assert!(read.apply_to_host(&mut [0u8; 6]).is_err(), "a part past the region is refused");
        let mut bad = *b"aXcdefgh";
        let e = read.apply_to_host(&mut bad).unwrap_err();
        assert_eq!(e.code, StatusCode::ChecksumMismatch, "bytes written in place are checked");
    }
}
