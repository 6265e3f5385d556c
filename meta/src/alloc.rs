//! Inode id allocation from sharded KV counters.
//!
//! Like 3FS, a server takes a batch of [`ID_BATCH`] ids per counter transaction and hands them out
//! locally. The counter is split into `shards` counters (config `inode_alloc_shards`, default
//! [`DEFAULT_SHARDS`], as 3FS's 32) and each batch is taken from a shard picked at random, so meta
//! servers taking batches at the same time rarely touch the same key (one conflict retries).
//!
//! **Id layout.** Ids come in batches: batch number `b` is ids `[b * ID_BATCH, (b + 1) * ID_BATCH)`.
//! Shard `s` hands out the batches `base + k * shards + s` for `k = 0, 1, ..` (its counter key holds
//! the next `k`). The shards' batch sets are disjoint, so ids are unique across shards, servers and
//! restarts (each batch is taken in a serializable transaction). `shards` and `base` are fixed when a
//! store first uses sharded allocation and kept in `SINGinode-alloc-meta`: the config's shard count
//! applies only then (a different value later is ignored with a warning, as changing it would
//! overlap the shards' sequences).
//!
//! **Migration from the single counter** (`SINGinode-alloc`, the next unallocated id): the first
//! server that opens such a store sets `base` to the first batch at or after that counter, so no id
//! the old counter handed out (or could still be handing out from a cached batch) is reused, and sets
//! the old counter to `u64::MAX`: an old server still running fails to take its next batch
//! ("inode ids exhausted") instead of handing out ids twice. A fresh store starts at
//! [`FIRST_ALLOC_ID`]. Ids of a batch not used before a restart, and ids taken for a create that
//! then failed, are skipped, never reused.
use t3fs_common::{Error, InodeId};
use t3fs_kv::KvEngine;
use tokio::sync::Mutex;

use crate::keys::{
    FIRST_ALLOC_ID, ID_BATCH, INODE_ALLOC_KEY, INODE_ALLOC_META_KEY, decode_alloc_meta, decode_counter,
    encode_alloc_meta, shard_counter_key,
};

/// Default number of counter shards (3FS: 32).
pub const DEFAULT_SHARDS: u32 = 32;
/// Most counter shards a store may use.
pub const MAX_SHARDS: u32 = 1024;

/// The fixed parameters of a store's sharded allocation (`SINGinode-alloc-meta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocMeta {
    /// Number of shard counters.
    pub shards: u32,
    /// First batch number of shard 0 (shard `s` starts at `base + s`).
    pub base: u64,
}

/// Hands out inode ids from locally cached batches.
#[derive(Debug)]
pub struct IdAllocator {
    /// Shard count wanted by the config (used only when the store has none yet).
    want_shards: u32,
    /// The store's parameters, read (or written) by the first batch.
    meta: Mutex<Option<AllocMeta>>,
    /// `[next, end)`: ids of the current batch not handed out yet.
    batch: Mutex<(u64, u64)>,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new(DEFAULT_SHARDS)
    }
}

impl IdAllocator {
    /// An allocator that sets up `shards` counters in a store that has no sharded allocation yet
    /// (clamped to `1..=MAX_SHARDS`).
    pub fn new(shards: u32) -> Self {
        Self { want_shards: shards.clamp(1, MAX_SHARDS), meta: Mutex::new(None), batch: Mutex::new((0, 0)) }
    }

    /// Reads the store's allocation parameters, setting them up (and migrating the single counter)
    /// if missing. Idempotent; called at open and cached.
    pub async fn init(&self, db: &dyn KvEngine) -> Result<AllocMeta, Error> {
        let mut cached = self.meta.lock().await;
        if let Some(m) = *cached {
            return Ok(m);
        }
        let want = self.want_shards;
        let (meta, migrated) = t3fs_kv::run(db, move |txn| {
            Box::pin(async move {
                if let Some(v) = txn.get(INODE_ALLOC_META_KEY, false).await? {
                    return Ok((decode_alloc_meta(&v)?, None));
                }
                // First batch at or after every id the single counter may have handed out.
                let old = match txn.get(INODE_ALLOC_KEY, false).await? {
                    Some(v) => Some(decode_counter(&v)?),
                    None => None,
                };
                let next = old.unwrap_or(FIRST_ALLOC_ID).max(FIRST_ALLOC_ID);
                let base = next.div_ceil(ID_BATCH);
                let meta = AllocMeta { shards: want, base };
                txn.set(INODE_ALLOC_META_KEY, &encode_alloc_meta(&meta));
                if old.is_some() {
                    txn.set(INODE_ALLOC_KEY, &u64::MAX.to_le_bytes());
                }
                Ok((meta, old))
            })
        })
        .await?;
        if let Some(old) = migrated {
            tracing::info!(old_next = old, base = meta.base, shards = meta.shards, "migrated the inode id counter");
        }
        if meta.shards != want {
            tracing::warn!(
                store = meta.shards,
                config = want,
                "inode_alloc_shards differs from the store's; the store's count stays in use"
            );
        }
        *cached = Some(meta);
        Ok(meta)
    }

    /// Takes one batch from a random shard: the ids `[start, start + ID_BATCH)`.
    pub async fn take_batch(&self, db: &dyn KvEngine) -> Result<u64, Error> {
        let meta = self.init(db).await?;
        let shard = rand::random_range(0..meta.shards);
        let key = shard_counter_key(shard);
        let start = t3fs_kv::run(db, |txn| {
            let key = key.clone();
            Box::pin(async move {
                let k = match txn.get(&key, false).await? {
                    Some(v) => decode_counter(&v)?,
                    None => 0,
                };
                let exhausted = || Error::internal("inode ids exhausted");
                let batch = k
                    .checked_mul(u64::from(meta.shards))
                    .and_then(|x| x.checked_add(meta.base))
                    .and_then(|x| x.checked_add(u64::from(shard)))
                    .ok_or_else(exhausted)?;
                let start = batch.checked_mul(ID_BATCH).filter(|s| s.checked_add(ID_BATCH).is_some());
                let start = start.ok_or_else(exhausted)?;
                txn.set(&key, &(k + 1).to_le_bytes());
                Ok(start)
            })
        })
        .await?;
        tracing::debug!(start, shard, "took a batch of inode ids");
        Ok(start)
    }

    /// A fresh, never used inode id.
    pub async fn alloc(&self, db: &dyn KvEngine) -> Result<InodeId, Error> {
        let mut batch = self.batch.lock().await;
        if batch.0 >= batch.1 {
            let start = self.take_batch(db).await?;
            *batch = (start, start + ID_BATCH);
        }
        let id = batch.0;
        batch.0 += 1;
        Ok(InodeId(id))
    }

    /// `n` fresh ids.
    pub async fn alloc_many(&self, db: &dyn KvEngine, n: usize) -> Result<Vec<InodeId>, Error> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.alloc(db).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use t3fs_kv::Db;
    use t3fs_kv::mem::MemKv;

    use super::*;

    async fn get(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
        let key = key.to_vec();
        t3fs_kv::run(&**db, move |txn| {
            let key = key.clone();
            Box::pin(async move { txn.get(&key, true).await })
        })
        .await
        .unwrap()
    }

    async fn set(db: &Db, key: &[u8], value: &[u8]) {
        let (key, value) = (key.to_vec(), value.to_vec());
        t3fs_kv::run(&**db, move |txn| {
            let (key, value) = (key.clone(), value.clone());
            Box::pin(async move {
                txn.set(&key, &value);
                Ok(())
            })
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn fresh_store_starts_at_the_first_id_and_keeps_its_shard_count() {
        let db: Db = MemKv::new();
        let a = IdAllocator::new(4);
        assert_eq!(a.init(&*db).await.unwrap(), AllocMeta { shards: 4, base: FIRST_ALLOC_ID / ID_BATCH });
        let first = a.alloc(&*db).await.unwrap().0;
        assert!(first >= FIRST_ALLOC_ID && first % ID_BATCH == 0, "{first:#x}");
        assert!(first < FIRST_ALLOC_ID + 4 * ID_BATCH, "one of the four shards' first batches");
        assert_eq!(a.alloc(&*db).await.unwrap().0, first + 1);
        // Another server configured with 8 shards uses the store's 4.
        let b = IdAllocator::new(8);
        assert_eq!(b.init(&*db).await.unwrap().shards, 4);
        assert_eq!(get(&db, INODE_ALLOC_KEY).await, None, "a fresh store never gets the old counter");
    }

    #[tokio::test]
    async fn old_counter_is_migrated_and_poisoned() {
        let db: Db = MemKv::new();
        // An old store whose single counter handed out ids up to 0x5_0123.
        set(&db, INODE_ALLOC_KEY, &0x5_0124u64.to_le_bytes()).await;
        let a = IdAllocator::new(32);
        let meta = a.init(&*db).await.unwrap();
        assert_eq!(meta, AllocMeta { shards: 32, base: 0x5_0124u64.div_ceil(ID_BATCH) });
        for _ in 0..64 {
            let start = a.take_batch(&*db).await.unwrap();
            assert!(start >= 0x5_0124, "batch {start:#x} overlaps ids the old counter handed out");
        }
        // An old server taking its next batch from the single counter fails instead of reusing ids.
        let old = decode_counter(&get(&db, INODE_ALLOC_KEY).await.unwrap()).unwrap();
        assert!(old.checked_add(ID_BATCH).is_none());
        // Opening again changes nothing.
        let again = IdAllocator::new(32).init(&*db).await.unwrap();
        assert_eq!(again, meta);
    }

    #[tokio::test]
    async fn concurrent_allocators_never_share_an_id() {
        let db: Db = MemKv::new();
        set(&db, INODE_ALLOC_KEY, &(FIRST_ALLOC_ID + 7).to_le_bytes()).await;
        // Eight "servers" (few shards, so they often collide on one) take batches at once, each
        // batch its own transaction; plus single ids through `alloc`.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (db, a) = (db.clone(), Arc::new(IdAllocator::new(3)));
            tasks.push(tokio::spawn(async move {
                let mut starts = Vec::new();
                for _ in 0..40 {
                    starts.push(a.take_batch(&*db).await.unwrap());
                    tokio::task::yield_now().await;
                }
                let ids = a.alloc_many(&*db, 100).await.unwrap();
                (starts, ids)
            }));
        }
        let mut batches = HashSet::new();
        let mut ids = HashSet::new();
        for t in tasks {
            let (starts, got) = t.await.unwrap();
            for s in starts {
                assert!(s >= FIRST_ALLOC_ID + ID_BATCH, "batch {s:#x} below the migrated counter");
                assert!(batches.insert(s), "batch {s:#x} handed out twice");
            }
            for id in got {
                assert!(ids.insert(id), "id {id} handed out twice");
            }
        }
        // Single ids come from batches of their own, never from one another's.
        for id in &ids {
            assert!(!batches.contains(&(id.0 / ID_BATCH * ID_BATCH)), "id {id} inside a taken batch");
        }
        assert_eq!((batches.len(), ids.len()), (320, 800));
    }
}
