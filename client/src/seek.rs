//! `SEEK_DATA` / `SEEK_HOLE`: where the next data or the next hole of a file starts.
//!
//! Why: `cp`, `tar`, `rsync`, backup tools and data loaders skip holes with these; without them a
//! sparse file of 1 TB holding a few chunks is read (as zeros) end to end.
//!
//! How: the file's data is what its committed live chunks hold: chunk `i` with stored length `L`
//! covers bytes `[i * chunk_size, i * chunk_size + L)`; everything else below the file's size reads
//! as zeros and is a hole, and so is the end of the file. The chunks are walked in index order on
//! the write head of each chain of the file's stripe (paged `ListChunks` filtered to the file,
//! fetched as the walk goes: a seek in a sparse file costs one call per chain). Reporting data where
//! there is a hole is always allowed; a hole is reported only where no committed chunk has data, so
//! a reader that skips it loses nothing that a read would have returned.
use std::collections::HashMap;

use t3fs_common::chunk_list::FileChunks;
use t3fs_common::{ChainId, ChunkId, Error, InodeId, Result, proto};

use crate::Client;
use crate::data::{chain_for, file_layout};

/// What to look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The first byte at or after the offset that holds data (`SEEK_DATA`).
    Data,
    /// The first byte at or after the offset in a hole, the file's end counting as one (`SEEK_HOLE`).
    Hole,
}

/// A walk over one chain's chunks of the file, with the next chunk looked at but not yet taken.
struct Cursor {
    chunks: FileChunks,
    peeked: Option<(u32, u32)>,
    done: bool,
}

impl Client {
    /// Where the next data (or hole) at or after `offset` starts in `inode`, a file of `size` bytes
    /// (the size the caller reports, which may be past meta's length). `None` when `offset` is at or
    /// past `size`, or for [`Seek::Data`] when no data follows (`ENXIO`).
    pub async fn seek(&self, inode: &proto::Inode, offset: u64, size: u64, what: Seek) -> Result<Option<u64>> {
        let layout = file_layout(inode)?;
        if offset >= size {
            return Ok(None);
        }
        // Retried (with fresh routing) while a chain changes its head.
        self.retrying("seek", || self.seek_once(layout, InodeId(inode.id), offset, size, what)).await
    }

    async fn seek_once(
        &self,
        layout: &proto::Layout,
        inode: InodeId,
        offset: u64,
        size: u64,
        what: Seek,
    ) -> Result<Option<u64>> {
        let cs = u64::from(layout.chunk_size);
        let first = u32::try_from(offset / cs)
            .map_err(|_| Error::invalid(format!("offset {offset} is past the largest file size")))?;
        let mut cursors = self.cursors(layout, inode, first).await?;
        match what {
            Seek::Data => {
                let mut best: Option<u64> = None;
                let found = cursors.values_mut().map(|c| self.first_data(c, cs, offset));
                for pos in futures::future::join_all(found).await {
                    if let Some(pos) = pos? {
                        best = Some(best.map_or(pos, |b| b.min(pos)));
                    }
                }
                Ok(best.filter(|&p| p < size))
            }
            Seek::Hole => {
                let (mut index, mut pos) = (first, offset);
                loop {
                    if pos >= size {
                        return Ok(Some(size));
                    }
                    let chain = ChainId(chain_for(&self.routing.get(), layout, index)?.chain_id);
                    let cursor = cursors.get_mut(&chain).ok_or_else(|| Error::internal("chain left the stripe"))?;
                    let start = u64::from(index) * cs;
                    match self.peek_from(cursor, index).await? {
                        Some((i, len)) if i == index => {
                            let data_end = start + u64::from(len);
                            if pos >= data_end || u64::from(len) < cs {
                                return Ok(Some(pos.max(data_end).min(size)));
                            }
                        }
                        _ => return Ok(Some(pos)),
                    }
                    let Some(next) = index.checked_add(1) else { return Ok(Some(size)) };
                    (index, pos) = (next, start + cs);
                }
            }
        }
    }

    /// A cursor from index `from` on the write head of each chain of the stripe.
    async fn cursors(&self, layout: &proto::Layout, inode: InodeId, from: u32) -> Result<HashMap<ChainId, Cursor>> {
        let mut cursors = HashMap::new();
        for (chain, head) in self.stripe_heads(layout)? {
            let chunks = FileChunks::new(self.storage_admin(head).await?, head, inode, from);
            cursors.insert(chain, Cursor { chunks, peeked: None, done: false });
        }
        Ok(cursors)
    }

    /// The cursor's next chunk with index `>= index`, as `(index, stored length)`, left in place.
    async fn peek_from(&self, c: &mut Cursor, index: u32) -> Result<Option<(u32, u32)>> {
        loop {
            match c.peeked {
                Some((i, _)) if i < index => c.peeked = None,
                Some(p) => return Ok(Some(p)),
                None if c.done => return Ok(None),
                None => {
                    let header = || self.header(&crate::UserInfo::root(), &t3fs_common::new_request_id());
                    match c.chunks.next(header).await? {
                        Some(m) => {
                            let chunk = ChunkId::from_bytes(&m.chunk_id)?;
                            if chunk.track == 0 {
                                c.peeked = Some((chunk.index, m.length));
                            }
                        }
                        None => c.done = true,
                    }
                }
            }
        }
    }

    /// The first byte at or after `offset` that the cursor's chunks hold.
    async fn first_data(&self, c: &mut Cursor, cs: u64, offset: u64) -> Result<Option<u64>> {
        let mut index = 0;
        while let Some((i, len)) = self.peek_from(c, index).await? {
            let start = u64::from(i) * cs;
            if len > 0 && start + u64::from(len) > offset {
                return Ok(Some(start.max(offset)));
            }
            match i.checked_add(1) {
                Some(next) => index = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
