//! Embedded durable backend (the single-machine default): the shared in-process resolver
//! ([`crate::resolver`]) over fjall 3, a pure-Rust LSM store.
//!
//! Decision: we use a plain fjall `Database` with one data keyspace, **not** fjall's
//! `OptimisticTxDatabase`. Our resolver already provides what FoundationDB has and fjall's
//! optimistic transactions lack (explicit read/write conflict ranges, non-conflicting snapshot
//! reads, range-read conflicts bounded by the limit, the 5 s too-old rule, group commit with one
//! fsync per group), so fjall only has to be an ordered store with snapshots and atomic batches:
//! - read version = a fjall `Snapshot` taken by the committer right after a group became durable;
//! - one fjall `WriteBatch` per commit group, written with `PersistMode::SyncAll` (fsync) before
//!   any transaction of the group is answered or the new state is published;
//! - the newest commit version is written in every batch (keyspace `t3fs_meta`, so it can never
//!   collide with user keys) and read back at open, so versions stay monotonic across restarts.
//!
//! fjall calls are synchronous. Commits (and their fsync) run on the resolver's dedicated commit
//! thread; transaction reads call fjall directly, which is short (memtable/block-cache lookups
//! and page reads). Dropping the last handle joins the commit thread and closes the database,
//! releasing the directory lock so the same path can be reopened in this process.
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};

use crate::resolver::{Engine, Storage, WriteOp};
use crate::{KeyValue, KvEngine, KvError, Result, Transaction};

const DATA_KEYSPACE: &str = "t3fs_data";
const META_KEYSPACE: &str = "t3fs_meta";
const VERSION_KEY: &[u8] = b"commit_version";

/// A durable transactional store on local disk with FoundationDB semantics.
pub struct EmbeddedKv {
    engine: Arc<Engine<FjallStore>>,
    /// The store's directory (its file system's free space: [`KvEngine::space`]).
    path: std::path::PathBuf,
}

impl EmbeddedKv {
    /// Opens (creating if missing) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Arc<EmbeddedKv>> {
        let db = Database::builder(path).open().map_err(|e| backend(&format!("open {}", path.display()), e))?;
        let data = db.keyspace(DATA_KEYSPACE, KeyspaceCreateOptions::default).map_err(|e| backend("keyspace", e))?;
        let meta = db.keyspace(META_KEYSPACE, KeyspaceCreateOptions::default).map_err(|e| backend("keyspace", e))?;
        let version = match meta.get(VERSION_KEY).map_err(|e| backend("read the commit version", e))? {
            None => 0,
            Some(v) => u64::from_be_bytes(
                v.as_ref().try_into().map_err(|_| KvError::Backend("corrupt stored commit version".into()))?,
            ),
        };
        tracing::debug!(path = %path.display(), version, "opened embedded kv");
        let engine = Engine::start(FjallStore { db, data, meta }, version, "t3fs-kv-fjall")?;
        Ok(Arc::new(EmbeddedKv { engine, path: path.to_path_buf() }))
    }
}

#[async_trait::async_trait]
impl KvEngine for EmbeddedKv {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        Ok(self.engine.begin())
    }

    fn space(&self) -> Option<(u64, u64)> {
        t3fs_common::space::disk_space(&self.path)
    }
}

fn backend(what: &str, e: fjall::Error) -> KvError {
    KvError::Backend(format!("fjall: {what}: {e}"))
}

struct FjallStore {
    db: Database,
    data: Keyspace,
    meta: Keyspace,
}

impl Storage for FjallStore {
    type Snapshot = Snapshot;

    fn snapshot(&self) -> Snapshot {
        self.db.snapshot()
    }

    fn get(&self, snap: &Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(snap.get(&self.data, key).map_err(|e| backend("get", e))?.map(|v| v.to_vec()))
    }

    fn scan(&self, snap: &Snapshot, begin: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        let iter = snap.range(&self.data, begin..end);
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if reverse { Box::new(iter.rev()) } else { Box::new(iter) };
        let mut out = Vec::new();
        for guard in iter.take(limit) {
            let (key, value) = guard.into_inner().map_err(|e| backend("scan", e))?;
            out.push(KeyValue { key: key.to_vec(), value: value.to_vec() });
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<WriteOp>, version: u64) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (key, op) in ops {
            match op {
                Some(value) => batch.insert(&self.data, key, value),
                None => batch.remove(&self.data, key),
            }
        }
        batch.insert(&self.meta, VERSION_KEY, version.to_be_bytes());
        batch.commit().map_err(|e| backend("commit", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reopen_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedKv::open(dir.path()).unwrap();
        for i in 0..3u8 {
            let mut t = db.begin().await.unwrap();
            t.set(&[i], &[i]);
            t.commit().await.unwrap();
        }
        assert_eq!(db.engine.version(), 3);
        drop(db);
        let db = EmbeddedKv::open(dir.path()).unwrap();
        assert_eq!(db.engine.version(), 3);
        let mut t = db.begin().await.unwrap();
        assert_eq!(t.read_version(), 3);
        assert_eq!(t.get(&[2], false).await.unwrap(), Some(vec![2]));
    }

    #[tokio::test]
    async fn creates_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/kv");
        let db = EmbeddedKv::open(&path).unwrap();
        let mut t = db.begin().await.unwrap();
        t.set(b"k", b"v");
        t.commit().await.unwrap();
        assert!(path.is_dir());
    }

    #[tokio::test]
    async fn second_open_of_a_live_store_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _db = EmbeddedKv::open(dir.path()).unwrap();
        assert!(matches!(EmbeddedKv::open(dir.path()), Err(KvError::Backend(_))));
    }
}
