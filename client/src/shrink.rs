//! The storage side of shrinking a file and of punching a hole in it: which chunks are cut, zeroed
//! and removed.
//!
//! Why: the plan by index ([`truncate_plan`]) sends one REMOVE per chunk index between the new and
//! the old length. For a sparse file that is work for data that does not exist:
//! `truncate -s 1P f; truncate -s 0 f` would send 2^28 removals (4 MiB chunks) and hold the truncate
//! for days. When a cut or a hole removes more than [`LIST_ABOVE`] chunks, the client asks storage
//! instead: one paged `ListChunks` of the file from the first index removed, on the write head of
//! each chain of the file's stripe, and removes exactly the chunks listed.
//!
//! Invariants: the head of a chain is where every update of the chain is applied first, so its
//! listing holds every chunk any replica of the chain has committed or has pending (a pending-only
//! chunk is listed too). The chunk holding the new end is cut (or removed) as in the plan by index,
//! whether or not it is listed. Chunks listed past the old length are removed as well: they are
//! data past the new end that meta did not know of (a writer's unreported extension), and leaving
//! them would let a later length probe grow the file back over them. A listed tombstone with no
//! pending version is skipped (nothing to remove). A punched hole never changes the length: the
//! chunks wholly inside it are removed, the parts of the chunks at its two ends get zeros written.
use std::collections::{BTreeSet, HashSet};

use t3fs_common::{ChainId, ChunkId, Error, InodeId, Result, TargetId, proto};

use crate::Client;
use crate::data::{ChunkOp, chain_for, file_layout, truncate_plan};

/// Above this many removals, a shrink lists the file's chunks on storage rather than removing every
/// index (a list costs one call per chain of the stripe; a removal is a replicated update).
pub const LIST_ABOVE: usize = 64;

impl Client {
    /// The chunk changes that shrink the file `inode` (with `layout`) from `old_len` to `new_len`:
    /// [`truncate_plan`], or when that removes more than [`LIST_ABOVE`] chunks, the cut of the chunk
    /// holding the new end and a removal of each chunk storage lists past it.
    pub(crate) async fn shrink_plan(
        &self,
        layout: &proto::Layout,
        inode: InodeId,
        old_len: u64,
        new_len: u64,
    ) -> Result<Vec<ChunkOp>> {
        let plan = truncate_plan(old_len, new_len, layout.chunk_size)?;
        if plan.len() <= LIST_ABOVE + 1 {
            return Ok(plan);
        }
        let first = match plan[0] {
            ChunkOp::Truncate { index, .. } | ChunkOp::Remove { index } => index,
        };
        let mut ops = vec![plan[0]];
        let Some(from) = first.checked_add(1) else { return Ok(ops) };
        ops.extend(self.listed_chunks(layout, inode, from).await?.into_iter().map(|index| ChunkOp::Remove { index }));
        Ok(ops)
    }

    /// Makes bytes `[offset, offset + len)` of the file read as zeros (fallocate's punch hole and
    /// zero range): the chunks wholly inside are removed (those storage lists, when more than
    /// [`LIST_ABOVE`]), the parts of the chunks at the two ends are overwritten with zeros. The
    /// length in meta does not change; the caller keeps the range inside the file (zeros written past
    /// its end would be data there) and tells meta of the change (mtime).
    pub async fn punch_hole(&self, inode: &proto::Inode, offset: u64, len: u64) -> Result<()> {
        let layout = file_layout(inode)?;
        let end = offset.checked_add(len).ok_or_else(|| Error::invalid("hole ends past 2^64"))?;
        let cs = u64::from(layout.chunk_size);
        // Chunks [first, last) lie wholly inside the hole.
        let (first, last) = (offset.div_ceil(cs), end / cs);
        if first >= last {
            // Inside one chunk, or over a chunk boundary without covering a whole chunk.
            return self.write(inode, offset, &vec![0u8; len as usize]).await;
        }
        let index = |i: u64| {
            u32::try_from(i).map_err(|_| Error::invalid(format!("offset {end} is past the largest file size")))
        };
        let (first, last) = (index(first)?, u64::from(index(last - 1)?) + 1);
        let head = u64::from(first) * cs - offset;
        let tail = end - last * cs;
        let id = InodeId(inode.id);
        let ops: Vec<ChunkOp> = if last - u64::from(first) <= LIST_ABOVE as u64 {
            (u64::from(first)..last).map(|i| ChunkOp::Remove { index: i as u32 }).collect()
        } else {
            let listed = self.listed_chunks(layout, id, first).await?;
            listed.into_iter().filter(|&i| u64::from(i) < last).map(|index| ChunkOp::Remove { index }).collect()
        };
        let zero_head = async {
            match head {
                0 => Ok(()),
                n => self.write(inode, offset, &vec![0u8; n as usize]).await,
            }
        };
        let zero_tail = async {
            match tail {
                0 => Ok(()),
                n => self.write(inode, last * cs, &vec![0u8; n as usize]).await,
            }
        };
        let (a, b, c) = tokio::join!(zero_head, zero_tail, self.apply_chunk_ops(layout, id, &ops));
        a.and(b).and(c)
    }

    /// The indexes (track 0) from `from` on of the file's chunks that hold data or a pending update,
    /// as the write head of each chain of the stripe lists them, in order. Retried (with fresh
    /// routing) while a chain changes its head.
    async fn listed_chunks(&self, layout: &proto::Layout, inode: InodeId, from: u32) -> Result<BTreeSet<u32>> {
        self.retrying("list a file's chunks", || self.listed_chunks_once(layout, inode, from)).await
    }

    /// Each distinct chain of the file's stripe with its write head, in stripe order (where a file's
    /// chunks are listed: the head has every chunk any replica of its chain has).
    pub(crate) fn stripe_heads(&self, layout: &proto::Layout) -> Result<Vec<(ChainId, TargetId)>> {
        let routing = self.routing.get();
        let mut chains = HashSet::new();
        let mut heads = Vec::new();
        for i in 0..layout.stripe.max(1) {
            let chain = chain_for(&routing, layout, i)?;
            if chains.insert(ChainId(chain.chain_id)) {
                heads.push((ChainId(chain.chain_id), routing.write_head(chain)?));
            }
        }
        Ok(heads)
    }

    async fn listed_chunks_once(&self, layout: &proto::Layout, inode: InodeId, from: u32) -> Result<BTreeSet<u32>> {
        let lists = self.stripe_heads(layout)?.into_iter().map(|(_, head)| async move {
            let mut admin = self.storage_admin(head).await?;
            let header = || self.header(&crate::UserInfo::root(), &t3fs_common::new_request_id());
            t3fs_common::chunk_list::list_file_chunks(&mut admin, header, head, inode, from, true).await
        });
        let mut indexes = BTreeSet::new();
        for listed in futures::future::join_all(lists).await {
            for m in listed? {
                let chunk = ChunkId::from_bytes(&m.chunk_id)?;
                if chunk.track == 0 && chunk.index >= from && t3fs_common::chunk_list::needs_removal(&m) {
                    indexes.insert(chunk.index);
                }
            }
        }
        Ok(indexes)
    }
}
