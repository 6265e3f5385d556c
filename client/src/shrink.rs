//! The storage side of shrinking a file: which chunks a truncate cuts and removes.
//!
//! Why: the plan by index ([`truncate_plan`]) sends one REMOVE per chunk index between the new and
//! the old length. For a sparse file that is work for data that does not exist:
//! `truncate -s 1P f; truncate -s 0 f` would send 2^28 removals (4 MiB chunks) and hold the truncate
//! for days. When the plan removes more than [`LIST_ABOVE`] chunks, the client asks storage instead:
//! one paged `ListChunks` of the file from the first index past the new end, on the write head of
//! each chain of the file's stripe, and removes exactly the chunks listed.
//!
//! Invariants: the head of a chain is where every update of the chain is applied first, so its
//! listing holds every chunk any replica of the chain has committed or has pending (a pending-only
//! chunk is listed too). The chunk holding the new end is cut (or removed) as in the plan by index,
//! whether or not it is listed. Chunks listed past the old length are removed as well: they are
//! data past the new end that meta did not know of (a writer's unreported extension), and leaving
//! them would let a later length probe grow the file back over them. A listed tombstone with no
//! pending version is skipped (nothing to remove).
use std::collections::{BTreeSet, HashSet};

use t3fs_common::{ChainId, ChunkId, InodeId, Result, proto};

use crate::Client;
use crate::data::{ChunkOp, chain_for, truncate_plan};

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

    /// The indexes (track 0) from `from` on of the file's chunks that hold data or a pending update,
    /// as the write head of each chain of the stripe lists them, in order.
    async fn listed_chunks(&self, layout: &proto::Layout, inode: InodeId, from: u32) -> Result<BTreeSet<u32>> {
        let heads = {
            let routing = self.routing.get();
            let mut chains = HashSet::new();
            let mut heads = Vec::new();
            for i in 0..layout.stripe.max(1) {
                let chain = chain_for(&routing, layout, i)?;
                if chains.insert(ChainId(chain.chain_id)) {
                    heads.push(routing.write_head(chain)?);
                }
            }
            heads
        };
        let lists = heads.into_iter().map(|head| async move {
            let mut admin = self.storage_admin(head).await?;
            let header = || self.header(&crate::UserInfo::root(), &t3fs_common::new_request_id());
            t3fs_common::chunk_list::list_file_chunks(&mut admin, header, head, inode, from, true).await
        });
        let mut indexes = BTreeSet::new();
        for listed in futures::future::join_all(lists).await {
            for m in listed? {
                let chunk = ChunkId::from_bytes(&m.chunk_id)?;
                if chunk.track == 0 && chunk.index >= from && (!m.removed || m.pending_version != 0) {
                    indexes.insert(chunk.index);
                }
            }
        }
        Ok(indexes)
    }
}
