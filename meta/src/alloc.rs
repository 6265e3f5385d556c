//! Inode id allocation.
//!
//! Ids come from one KV counter (`SING` + `inode-alloc`, see [`crate::keys`]). Like 3FS, a server
//! takes [`ID_BATCH`] ids per counter transaction and hands them out locally, so creates do not all
//! conflict on the counter key. Ids are unique across servers and restarts because every batch is
//! taken in a serializable transaction; ids of a batch not used before a restart are skipped, never
//! reused. An id taken for a create that then fails is simply skipped too.
use t3fs_common::{Error, InodeId};
use t3fs_kv::KvEngine;
use tokio::sync::Mutex;

use crate::keys::{FIRST_ALLOC_ID, ID_BATCH, INODE_ALLOC_KEY, decode_counter};

/// Hands out inode ids from locally cached batches.
#[derive(Debug, Default)]
pub struct IdAllocator {
    /// `[next, end)`: ids of the current batch not handed out yet.
    batch: Mutex<(u64, u64)>,
}

impl IdAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh, never used inode id.
    pub async fn alloc(&self, db: &dyn KvEngine) -> Result<InodeId, Error> {
        let mut batch = self.batch.lock().await;
        if batch.0 >= batch.1 {
            let start = t3fs_kv::run(db, |txn| {
                Box::pin(async move {
                    let next = match txn.get(INODE_ALLOC_KEY, false).await? {
                        Some(v) => decode_counter(&v)?,
                        None => FIRST_ALLOC_ID,
                    };
                    let end = next.checked_add(ID_BATCH).ok_or_else(|| Error::internal("inode ids exhausted"))?;
                    txn.set(INODE_ALLOC_KEY, &end.to_le_bytes());
                    Ok(next)
                })
            })
            .await?;
            *batch = (start, start + ID_BATCH);
            tracing::debug!(start, "took a batch of inode ids");
        }
        let id = batch.0;
        batch.0 += 1;
        Ok(InodeId(id))
    }
}
