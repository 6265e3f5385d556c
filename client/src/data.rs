//! File data: chunk arithmetic and the read/write paths over the bulk plane.
//!
//! A file is a sequence of fixed-size chunks (`layout.chunk_size`, a power of two); chunk `i` holds
//! bytes `[i * cs, (i + 1) * cs)` and lives on chain `layout::chain_of(layout, table, i)`, under the
//! id `ChunkId::new(inode, i)`. Chunks are sparse: a missing chunk, or the part of a chunk past its
//! stored length, reads as zeros (a hole). The file length lives in meta, not in chunks; reads are
//! clamped to it.
//!
//! Reads go to one SERVING replica of the chain (round robin; on failure the next replica), with the
//! payload checked against the CRC32C the storage computed. Writes go to the chain head (the first
//! writable target), which applies them and forwards down the chain before acking, so an acked write
//! is on every replica. Each try re-reads the chain from the current routing snapshot, so a changed
//! head or chain version is picked up by the retry.
use bytes::Bytes;
use futures::StreamExt;
use t3fs_common::layout;
use t3fs_common::proto::{self, InodeType, UpdateType, bulk_request};
use t3fs_common::routing::{Routing, is_readable};
use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode, TargetId};

use crate::Client;

/// Chunk requests in flight per read/write call.
pub const MAX_CONCURRENT_CHUNKS: usize = 16;

/// One chunk's share of a byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPiece {
    /// Chunk index within the file.
    pub index: u32,
    /// Offset of the piece inside the chunk.
    pub offset: u32,
    /// Length of the piece (> 0).
    pub len: u32,
    /// Offset of the piece inside the caller's buffer.
    pub buf_offset: usize,
}

/// Splits `[offset, offset + len)` into per-chunk pieces, in file order. Empty for `len == 0`.
pub fn split_range(offset: u64, len: u64, chunk_size: u32) -> Result<Vec<ChunkPiece>> {
    if chunk_size == 0 {
        return Err(Error::invalid("chunk size is 0"));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let cs = u64::from(chunk_size);
    let end = offset.checked_add(len).ok_or_else(|| Error::invalid("offset + length overflows"))?;
    if (end - 1) / cs > u64::from(u32::MAX) {
        return Err(Error::invalid(format!("range end {end} is past the largest file size for chunk size {cs}")));
    }
    let mut pieces = Vec::with_capacity(((end - 1) / cs - offset / cs + 1) as usize);
    let mut pos = offset;
    while pos < end {
        let index = pos / cs;
        let in_chunk = pos % cs;
        let n = (cs - in_chunk).min(end - pos);
        pieces.push(ChunkPiece {
            index: index as u32,
            offset: in_chunk as u32,
            len: n as u32,
            buf_offset: (pos - offset) as usize,
        });
        pos += n;
    }
    Ok(pieces)
}

/// How many bytes of `[offset, offset + len)` lie inside a file of `file_len` bytes.
pub fn clamp_read(offset: u64, len: u64, file_len: u64) -> u64 {
    if offset >= file_len { 0 } else { len.min(file_len - offset) }
}

/// Number of chunks that cover `length` bytes.
pub fn chunk_count(length: u64, chunk_size: u32) -> u64 {
    if chunk_size == 0 { 0 } else { length.div_ceil(u64::from(chunk_size)) }
}

/// Checks a chunk read's payload: no longer than the piece asked for, and its CRC32C equal to the
/// one the storage node computed (`crc`).
pub(crate) fn check_read(data: &[u8], p: ChunkPiece, target: TargetId, chunk: ChunkId, crc: u32) -> Result<()> {
    if data.len() > p.len as usize {
        return Err(Error::internal(format!(
            "target {target} returned {} bytes for a {}-byte read",
            data.len(),
            p.len
        )));
    }
    let got = crc32c::crc32c(data);
    if got != crc {
        return Err(Error::new(
            StatusCode::ChecksumMismatch,
            format!("chunk {chunk} from target {target}: crc {got:#010x}, header says {crc:#010x}"),
        ));
    }
    Ok(())
}

/// A storage-side change to one chunk, as truncate and remove need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOp {
    /// Cut the chunk to `len` bytes (> 0).
    Truncate { index: u32, len: u32 },
    /// Delete the chunk.
    Remove { index: u32 },
}

/// The chunk changes that shrink a file from `old_len` to `new_len` (nothing when it grows: the
/// new bytes are a hole). The chunk holding the new end is cut to the part inside the file (deleted
/// if none); every later chunk up to the old length is deleted.
pub fn truncate_plan(old_len: u64, new_len: u64, chunk_size: u32) -> Result<Vec<ChunkOp>> {
    if chunk_size == 0 {
        return Err(Error::invalid("chunk size is 0"));
    }
    if new_len >= old_len {
        return Ok(Vec::new());
    }
    let cs = u64::from(chunk_size);
    let last = chunk_count(old_len, chunk_size);
    if last > u64::from(u32::MAX) + 1 {
        return Err(Error::invalid(format!("length {old_len} is past the largest file size for chunk size {cs}")));
    }
    let first = new_len / cs;
    let keep = (new_len % cs) as u32;
    let mut ops = Vec::with_capacity((last - first) as usize);
    ops.push(if keep > 0 {
        ChunkOp::Truncate { index: first as u32, len: keep }
    } else {
        ChunkOp::Remove { index: first as u32 }
    });
    ops.extend((first + 1..last).map(|i| ChunkOp::Remove { index: i as u32 }));
    Ok(ops)
}

/// The layout of a regular file, validated.
pub(crate) fn file_layout(inode: &proto::Inode) -> Result<&proto::Layout> {
    match InodeType::try_from(inode.inode_type) {
        Ok(InodeType::File) => {}
        Ok(InodeType::Directory) => {
            return Err(Error::new(StatusCode::IsDirectory, format!("inode {} is a directory", inode.id)));
        }
        _ => return Err(Error::invalid(format!("inode {} is not a regular file", inode.id))),
    }
    let l = inode.layout.as_ref().ok_or_else(|| Error::internal(format!("file {} has no layout", inode.id)))?;
    layout::validate(l)?;
    Ok(l)
}

/// The chain holding chunk `index` of a file with `layout`, in this routing snapshot.
pub(crate) fn chain_for<'r>(routing: &'r Routing, l: &proto::Layout, index: u32) -> Result<&'r proto::ChainInfo> {
    routing.chunk_chain(l, index)
}

/// The chain's replicas that may serve reads, in chain order; an error if there is none.
pub(crate) fn readable_targets(chain: &proto::ChainInfo) -> Result<Vec<TargetId>> {
    let targets: Vec<TargetId> =
        chain.targets.iter().filter(|t| is_readable(t.public_state)).map(|t| TargetId(t.target_id)).collect();
    if targets.is_empty() {
        return Err(Error::new(
            StatusCode::TargetNotServing,
            format!("chain {} has no serving target", chain.chain_id),
        ));
    }
    Ok(targets)
}

pub(crate) fn bulk_addr(routing: &Routing, target: TargetId) -> Result<String> {
    routing.bulk_addr(target)
}

impl Client {
    /// Reads up to `len` bytes at `offset`, clamped to `inode.length`. Holes read as zeros; the
    /// result is exactly `clamp_read(offset, len, inode.length)` bytes long.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.id, offset, len))]
    pub async fn read(&self, inode: &proto::Inode, offset: u64, len: u32) -> Result<Vec<u8>> {
        let l = file_layout(inode)?;
        let n = clamp_read(offset, u64::from(len), inode.length);
        if n == 0 {
            return Ok(Vec::new());
        }
        let pieces = split_range(offset, n, l.chunk_size)?;
        let id = InodeId(inode.id);
        let mut out = vec![0u8; n as usize];
        let mut reads = futures::stream::iter(pieces)
            .map(|p| async move { self.read_piece(l, id, p).await.map(|data| (p, data)) })
            .buffer_unordered(MAX_CONCURRENT_CHUNKS);
        while let Some(r) = reads.next().await {
            let (p, data) = r?;
            out[p.buf_offset..p.buf_offset + data.len()].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// Reads one piece; the result may be shorter than `p.len` (the rest is a hole).
    async fn read_piece(&self, l: &proto::Layout, inode: InodeId, p: ChunkPiece) -> Result<Bytes> {
        let chunk = ChunkId::new(inode, p.index);
        let request_id = t3fs_common::new_request_id();
        let request_id = &request_id;
        let read = |routing: &Routing, target| {
            let addr = bulk_addr(routing, target);
            async move { self.read_from(&addr?, target, chunk, p, request_id).await }
        };
        self.read_replicas("read chunk", l, chunk, &read).await.map(Option::unwrap_or_default)
    }

    /// Runs `read` against the serving replicas of `chunk` (starting round robin, the next replica
    /// on failure) inside the client's retry loop, re-reading the chain from routing on each try.
    /// `read` gets the routing snapshot and a target; its future must not borrow the snapshot.
    /// `Ok(None)` when a replica answers `ChunkNotFound`: the chunk is a hole.
    pub(crate) async fn read_replicas<T, F, Fut>(
        &self,
        what: &str,
        l: &proto::Layout,
        chunk: ChunkId,
        read: &F,
    ) -> Result<Option<T>>
    where
        F: Fn(&Routing, TargetId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retrying(what, move || async move {
            let routing = self.routing.get();
            let targets = readable_targets(chain_for(&routing, l, chunk.index)?)?;
            let start = self.next_rr();
            let mut last = None;
            for i in 0..targets.len() {
                let target = targets[(start + i) % targets.len()];
                match read(&routing, target).await {
                    Ok(data) => return Ok(Some(data)),
                    Err(e) if e.code == StatusCode::ChunkNotFound => return Ok(None),
                    Err(e) => {
                        tracing::debug!(%chunk, %target, error = %e, "chunk read failed; trying the next replica");
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| Error::internal("no replica tried")))
        })
        .await
    }

    /// The bulk request that reads piece `p` of `chunk` from `target`.
    pub(crate) fn read_request(
        &self,
        target: TargetId,
        chunk: ChunkId,
        p: ChunkPiece,
        request_id: &str,
    ) -> proto::BulkRequest {
        proto::BulkRequest {
            request_id: request_id.to_string(),
            token: self.cfg.token.clone(),
            op: Some(bulk_request::Op::Read(proto::ReadChunk {
                target_id: target.0,
                chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
                offset: p.offset,
                length: p.len,
                relaxed: false,
            })),
        }
    }

    /// Reads one piece from one replica and checks its CRC32C. A result shorter than `p.len` means
    /// the rest of the piece is a hole; `ChunkNotFound` means the whole piece is.
    pub(crate) async fn read_from(
        &self,
        addr: &str,
        target: TargetId,
        chunk: ChunkId,
        p: ChunkPiece,
        request_id: &str,
    ) -> Result<Bytes> {
        let req = self.read_request(target, chunk, p, request_id);
        let (rsp, data) = self.bulk.call(addr, &req, &[]).await?;
        check_read(&data, p, target, chunk, rsp.payload_crc32c)?;
        Ok(data)
    }

    /// Writes `data` at `offset`: one WRITE per chunk piece to the chain head, up to
    /// [`MAX_CONCURRENT_CHUNKS`] at a time. Does not change the length in meta (see [`Client::close`]).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.id, offset, len = data.len()))]
    pub async fn write(&self, inode: &proto::Inode, offset: u64, data: &[u8]) -> Result<()> {
        let l = file_layout(inode)?;
        let pieces = split_range(offset, data.len() as u64, l.chunk_size)?;
        let id = InodeId(inode.id);
        let mut writes = futures::stream::iter(pieces)
            .map(|p| {
                let payload = &data[p.buf_offset..p.buf_offset + p.len as usize];
                self.update_chunk(l, id, p.index, UpdateType::Write, p.offset, payload)
            })
            .buffer_unordered(MAX_CONCURRENT_CHUNKS);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(())
    }

    /// Applies truncate/remove ops to chunks, up to [`MAX_CONCURRENT_CHUNKS`] at a time.
    pub(crate) async fn apply_chunk_ops(&self, l: &proto::Layout, inode: InodeId, ops: &[ChunkOp]) -> Result<()> {
        let mut runs = futures::stream::iter(ops.iter().copied())
            .map(|op| match op {
                ChunkOp::Truncate { index, len } => self.update_chunk(l, inode, index, UpdateType::Truncate, len, &[]),
                ChunkOp::Remove { index } => self.update_chunk(l, inode, index, UpdateType::Remove, 0, &[]),
            })
            .buffer_unordered(MAX_CONCURRENT_CHUNKS);
        while let Some(r) = runs.next().await {
            r?;
        }
        Ok(())
    }

    /// Sends one update to the head of the chunk's chain, retrying until it is acked by the whole
    /// chain. TRUNCATE/REMOVE of a missing chunk succeed (nothing to do).
    async fn update_chunk(
        &self,
        l: &proto::Layout,
        inode: InodeId,
        index: u32,
        ty: UpdateType,
        offset: u32,
        payload: &[u8],
    ) -> Result<()> {
        let chunk = ChunkId::new(inode, index);
        let chunk_bytes = Bytes::copy_from_slice(&chunk.to_bytes());
        let crc = crc32c::crc32c(payload);
        let request_id = t3fs_common::new_request_id();
        let (request_id, chunk_bytes) = (&request_id, &chunk_bytes);
        // Every retry of this update goes out on the same channel with the same seq: exactly once.
        let channel = self.channels.acquire().await;
        let channel = &channel;
        self.retrying("update chunk", move || async move {
            let routing = self.routing.get();
            let chain = chain_for(&routing, l, index)?;
            let head = routing.write_head(chain)?;
            let addr = bulk_addr(&routing, head)?;
            let req = proto::BulkRequest {
                request_id: request_id.clone(),
                token: self.cfg.token.clone(),
                op: Some(bulk_request::Op::Update(proto::UpdateChunk {
                    chain_id: chain.chain_id,
                    chain_version: chain.chain_version,
                    target_id: head.0,
                    chunk_id: chunk_bytes.clone(),
                    update_type: ty as i32,
                    offset,
                    chunk_size: l.chunk_size,
                    payload_crc32c: crc,
                    update_version: 0,
                    sync: false,
                    client_id: channel.client_id().clone(),
                    channel_id: channel.channel_id(),
                    seq: channel.seq(),
                    repair: false,
                })),
            };
            match self.bulk.call(&addr, &req, payload).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == StatusCode::ChunkNotFound && ty != UpdateType::Write => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::new(e.code, format!("{ty:?} chunk {chunk}: {}", e.message)))
    }

    /// A chunk's metadata on one target (`None` if the target does not have it), via the storage
    /// node's admin gRPC service. For tests and tools that check replicas.
    pub async fn query_chunk(&self, target: TargetId, chunk: ChunkId) -> Result<Option<proto::ChunkMeta>> {
        let mut admin = self.storage_admin(target).await?;
        let req = proto::QueryChunkReq {
            header: Some(self.header(&crate::UserInfo::root(), &t3fs_common::new_request_id())),
            target_id: target.0,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
        };
        let rsp = admin.query_chunk(req).await.map_err(|st| Error::from_tonic(&st))?.into_inner();
        Ok(if rsp.found { rsp.meta } else { None })
    }

    /// Every live chunk on one target, in chunk id order (for tests and tools).
    pub async fn list_chunks(&self, target: TargetId) -> Result<Vec<proto::ChunkMeta>> {
        self.list_target_chunks(target, false).await
    }

    /// Every chunk record on one target, tombstones too if `include_removed` (`removed` set), in chunk
    /// id order; listed page by page.
    pub async fn list_target_chunks(&self, target: TargetId, include_removed: bool) -> Result<Vec<proto::ChunkMeta>> {
        let mut admin = self.storage_admin(target).await?;
        let header = || self.header(&crate::UserInfo::root(), &t3fs_common::new_request_id());
        t3fs_common::chunk_list::list_chunks(&mut admin, header, target, include_removed, 0).await
    }

    pub(crate) async fn storage_admin(
        &self,
        target: TargetId,
    ) -> Result<proto::storage_admin_client::StorageAdminClient<tonic::transport::Channel>> {
        let addr = self.routing.get().node_of_target(target)?.grpc_addr.clone();
        let ch = t3fs_common::routing::connect_channel(&addr).await?;
        Ok(proto::storage_admin_client::StorageAdminClient::new(ch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(index: u32, offset: u32, len: u32, buf_offset: usize) -> ChunkPiece {
        ChunkPiece { index, offset, len, buf_offset }
    }

    #[test]
    fn split_within_one_chunk() {
        assert_eq!(split_range(10, 20, 4096).unwrap(), vec![p(0, 10, 20, 0)]);
        assert_eq!(split_range(4096 * 3 + 5, 1, 4096).unwrap(), vec![p(3, 5, 1, 0)]);
    }

    #[test]
    fn split_zero_length_is_empty() {
        assert!(split_range(0, 0, 4096).unwrap().is_empty());
        assert!(split_range(123_456, 0, 4096).unwrap().is_empty());
    }

    #[test]
    fn split_on_exact_boundaries() {
        // Exactly one whole chunk.
        assert_eq!(split_range(4096, 4096, 4096).unwrap(), vec![p(1, 0, 4096, 0)]);
        // Two whole chunks.
        assert_eq!(split_range(0, 8192, 4096).unwrap(), vec![p(0, 0, 4096, 0), p(1, 0, 4096, 4096)]);
        // Ends exactly on a boundary: no empty trailing piece.
        assert_eq!(split_range(4000, 96, 4096).unwrap(), vec![p(0, 4000, 96, 0)]);
        // Starts exactly on a boundary.
        assert_eq!(split_range(4096, 1, 4096).unwrap(), vec![p(1, 0, 1, 0)]);
    }

    #[test]
    fn split_across_chunks() {
        let got = split_range(4000, 10_000, 4096).unwrap();
        assert_eq!(got, vec![p(0, 4000, 96, 0), p(1, 0, 4096, 96), p(2, 0, 4096, 4192), p(3, 0, 1712, 8288)]);
        assert_eq!(got.iter().map(|x| x.len as u64).sum::<u64>(), 10_000);
    }

    #[test]
    fn split_pieces_tile_the_range() {
        for (off, len, cs) in
            [(0u64, 1u64, 4096u32), (1, 1 << 20, 65536), (12345, 999_999, 4096), (1 << 30, 5, 1 << 20)]
        {
            let pieces = split_range(off, len, cs).unwrap();
            let mut pos = off;
            for x in &pieces {
                assert_eq!(u64::from(x.index) * u64::from(cs) + u64::from(x.offset), pos);
                assert_eq!(x.buf_offset as u64, pos - off);
                assert!(x.len > 0 && x.offset + x.len <= cs);
                pos += u64::from(x.len);
            }
            assert_eq!(pos, off + len);
        }
    }

    #[test]
    fn split_rejects_bad_input() {
        assert!(split_range(0, 1, 0).is_err());
        assert!(split_range(u64::MAX, 2, 4096).is_err());
        // Chunk index past u32.
        assert!(split_range(4096 * (u64::from(u32::MAX) + 1), 1, 4096).is_err());
        assert!(split_range(4096 * u64::from(u32::MAX), 4096, 4096).is_ok());
    }

    #[test]
    fn clamp_read_at_and_past_eof() {
        assert_eq!(clamp_read(0, 100, 1000), 100);
        assert_eq!(clamp_read(950, 100, 1000), 50);
        assert_eq!(clamp_read(1000, 100, 1000), 0);
        assert_eq!(clamp_read(5000, 100, 1000), 0);
        assert_eq!(clamp_read(0, 100, 0), 0);
        assert_eq!(clamp_read(999, u64::MAX, 1000), 1);
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(chunk_count(0, 4096), 0);
        assert_eq!(chunk_count(1, 4096), 1);
        assert_eq!(chunk_count(4096, 4096), 1);
        assert_eq!(chunk_count(4097, 4096), 2);
    }

    #[test]
    fn truncate_plans() {
        use ChunkOp::*;
        // Growing or same size: nothing on storage.
        assert!(truncate_plan(100, 100, 4096).unwrap().is_empty());
        assert!(truncate_plan(100, 1 << 20, 4096).unwrap().is_empty());
        // Inside one chunk.
        assert_eq!(truncate_plan(100, 50, 4096).unwrap(), vec![Truncate { index: 0, len: 50 }]);
        // To zero: every chunk goes.
        assert_eq!(
            truncate_plan(10_000, 0, 4096).unwrap(),
            vec![Remove { index: 0 }, Remove { index: 1 }, Remove { index: 2 }]
        );
        // New end on a chunk boundary: the chunk starting there goes, the one before stays whole.
        assert_eq!(truncate_plan(8192, 4096, 4096).unwrap(), vec![Remove { index: 1 }]);
        // New end mid-chunk, old end several chunks later.
        assert_eq!(
            truncate_plan(4 * 4096 + 1, 4096 + 10, 4096).unwrap(),
            vec![Truncate { index: 1, len: 10 }, Remove { index: 2 }, Remove { index: 3 }, Remove { index: 4 }]
        );
        assert!(truncate_plan(1, 0, 0).is_err());
    }

    #[test]
    fn file_layout_checks_type_and_layout() {
        let layout =
            proto::Layout { table_id: 1, table_version: 1, chunk_size: 4096, stripe: 1, base_index: 0, seed: 0 };
        let mut inode =
            proto::Inode { id: 7, inode_type: InodeType::File as i32, layout: Some(layout), ..Default::default() };
        assert_eq!(file_layout(&inode).unwrap().chunk_size, 4096);
        inode.inode_type = InodeType::Directory as i32;
        assert_eq!(file_layout(&inode).unwrap_err().code, StatusCode::IsDirectory);
        inode.inode_type = InodeType::File as i32;
        inode.layout.as_mut().unwrap().chunk_size = 1000;
        assert!(file_layout(&inode).is_err());
        inode.layout = None;
        assert!(file_layout(&inode).is_err());
    }
}
