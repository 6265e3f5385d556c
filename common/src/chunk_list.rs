//! Listing every chunk of one storage target through the `ListChunks` RPC, page by page.
//!
//! Why: one message holding a whole target's listing passed tonic's 4 MiB decoding limit at about
//! 120,000 chunks (about 34 bytes each on the wire), far below a real disk: 1 TB of 4 MiB chunks is
//! 250,000. Resync of such a target failed at its first step. The server caps a page (16384 chunks, about 1 MiB); this
//! loop asks again from `next_start_after` until the server says the listing is complete. Pages are
//! not one snapshot: a chunk updated while the listing runs is listed once, in the state its page saw
//! (callers either diff again under locks, as resync does, or only report).
use tonic::transport::Channel;

use crate::proto::{self, storage_admin_client::StorageAdminClient};
use crate::{ChunkId, Error, InodeId, TargetId};

/// Whether a listed chunk record still needs a REMOVE to be gone: it holds data, or has a pending
/// update (which may become data: the head completes a pending version before a removal applies).
/// A tombstone with nothing pending only needs a PURGE (GC, `t3fs admin gc-orphans`) or nothing
/// (a shrink).
pub fn needs_removal(m: &proto::ChunkMeta) -> bool {
    !m.removed || m.pending_version != 0
}

/// Every chunk of `target` (tombstones too if `include_removed`), in chunk id order. `header` makes
/// the request header of each page (a fresh request id per call); `page` is the most chunks asked for
/// per call (0: the server's page size).
pub async fn list_chunks(
    admin: &mut StorageAdminClient<Channel>,
    header: impl Fn() -> proto::RequestHeader,
    target: TargetId,
    include_removed: bool,
    page: u32,
) -> Result<Vec<proto::ChunkMeta>, Error> {
    list(admin, header, target, None, None, include_removed, page).await
}

/// [`list_chunks`] of one file's chunks only: every chunk of `inode` from index `from_index` of track
/// 0 on (later tracks too), and the file's chunks that only have a pending version (version 0).
pub async fn list_file_chunks(
    admin: &mut StorageAdminClient<Channel>,
    header: impl Fn() -> proto::RequestHeader,
    target: TargetId,
    inode: InodeId,
    from_index: u32,
    include_removed: bool,
) -> Result<Vec<proto::ChunkMeta>, Error> {
    let start_after = before_index(inode, from_index);
    let mut chunks = list(admin, header, target, Some(inode), start_after, include_removed, 0).await?;
    if let Some(start) = start_after {
        // The pending-only chunks come from the whole file; keep the asked range.
        let start = start.to_bytes();
        chunks.retain(|m| m.chunk_id.as_ref() > start.as_slice());
    }
    Ok(chunks)
}

/// The listing position just before chunk `from_index` (track 0) of `inode` (`None`: the start).
fn before_index(inode: InodeId, from_index: u32) -> Option<ChunkId> {
    from_index.checked_sub(1).map(|i| ChunkId::new(inode, i))
}

/// `start_after` on the wire (empty: from the start).
fn key(start_after: Option<ChunkId>) -> bytes::Bytes {
    start_after.map_or_else(bytes::Bytes::new, |c| bytes::Bytes::copy_from_slice(&c.to_bytes()))
}

async fn list(
    admin: &mut StorageAdminClient<Channel>,
    header: impl Fn() -> proto::RequestHeader,
    target: TargetId,
    inode: Option<InodeId>,
    start_after: Option<ChunkId>,
    include_removed: bool,
    page: u32,
) -> Result<Vec<proto::ChunkMeta>, Error> {
    let mut out = Vec::new();
    let mut start_after = key(start_after);
    loop {
        let (chunks, next) = fetch(admin, header(), target, inode, &start_after, include_removed, page).await?;
        out.extend(chunks);
        match next {
            None => return Ok(out),
            Some(next) => start_after = next,
        }
    }
}

/// One `ListChunks` call: the page after `start_after` (empty: from the start) and where the next
/// page starts (`None`: the listing is complete).
async fn fetch(
    admin: &mut StorageAdminClient<Channel>,
    header: proto::RequestHeader,
    target: TargetId,
    inode: Option<InodeId>,
    start_after: &bytes::Bytes,
    include_removed: bool,
    limit: u32,
) -> Result<(Vec<proto::ChunkMeta>, Option<bytes::Bytes>), Error> {
    let req = proto::ListChunksReq {
        header: Some(header),
        target_id: target.0,
        include_removed,
        start_after: start_after.clone(),
        limit,
        inode: inode.map(|i| i.0),
    };
    let page = admin.list_chunks(req).await.map_err(|st| Error::from_tonic(&st))?.into_inner();
    if page.next_start_after.is_empty() {
        return Ok((page.chunks, None));
    }
    if page.next_start_after <= start_after && !start_after.is_empty() {
        return Err(Error::internal("ListChunks did not advance: the server sent a page start it was given"));
    }
    Ok((page.chunks, Some(page.next_start_after)))
}

/// One file's committed live chunks on one target, in index order, fetched a page at a time as the
/// caller walks them (a seek usually needs only the first page). The chunks that only have a
/// pending version (listed out of order at the end of the last page) are left out: reads do not
/// see them either.
pub struct FileChunks {
    admin: StorageAdminClient<Channel>,
    target: TargetId,
    inode: InodeId,
    start_after: bytes::Bytes,
    more: bool,
    page: std::collections::VecDeque<proto::ChunkMeta>,
}

impl FileChunks {
    /// The walk over `inode`'s chunks from index `from_index` (track 0) on.
    pub fn new(admin: StorageAdminClient<Channel>, target: TargetId, inode: InodeId, from_index: u32) -> Self {
        let start_after = key(before_index(inode, from_index));
        Self { admin, target, inode, start_after, more: true, page: Default::default() }
    }

    /// The next chunk (`None`: none left); `header` makes a request header if a page is fetched.
    pub async fn next(&mut self, header: impl Fn() -> proto::RequestHeader) -> Result<Option<proto::ChunkMeta>, Error> {
        loop {
            if let Some(m) = self.page.pop_front() {
                if m.version != 0 && !m.removed {
                    return Ok(Some(m));
                }
                continue;
            }
            if !self.more {
                return Ok(None);
            }
            let (admin, inode) = (&mut self.admin, Some(self.inode));
            let (chunks, next) = fetch(admin, header(), self.target, inode, &self.start_after, false, 0).await?;
            self.page.extend(chunks);
            match next {
                Some(next) => self.start_after = next,
                None => self.more = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_needs_a_removal() {
        let m =
            |removed: bool, pending_version: u64| proto::ChunkMeta { removed, pending_version, ..Default::default() };
        assert!(needs_removal(&m(false, 0)), "live data");
        assert!(needs_removal(&m(false, 3)), "live data with a pending update");
        assert!(needs_removal(&m(true, 3)), "a tombstone (or nothing) with a pending update");
        assert!(!needs_removal(&m(true, 0)), "a tombstone only: a PURGE, no REMOVE");
    }
}
