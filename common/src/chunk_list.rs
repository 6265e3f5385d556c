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
    let start_after = match from_index {
        0 => None,
        i => Some(ChunkId::new(inode, i - 1)),
    };
    let mut chunks = list(admin, header, target, Some(inode), start_after, include_removed, 0).await?;
    if let Some(start) = start_after {
        // The pending-only chunks come from the whole file; keep the asked range.
        let start = start.to_bytes();
        chunks.retain(|m| m.chunk_id.as_ref() > start.as_slice());
    }
    Ok(chunks)
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
    let mut start_after = start_after.map_or_else(bytes::Bytes::new, |c| bytes::Bytes::copy_from_slice(&c.to_bytes()));
    loop {
        let req = proto::ListChunksReq {
            header: Some(header()),
            target_id: target.0,
            include_removed,
            start_after: start_after.clone(),
            limit: page,
            inode: inode.map(|i| i.0),
        };
        let page = admin.list_chunks(req).await.map_err(|st| Error::from_tonic(&st))?.into_inner();
        out.extend(page.chunks);
        if page.next_start_after.is_empty() {
            return Ok(out);
        }
        if page.next_start_after <= start_after && !start_after.is_empty() {
            return Err(Error::internal("ListChunks did not advance: the server sent a page start it was given"));
        }
        start_after = page.next_start_after;
    }
}
