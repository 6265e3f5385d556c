//! In-memory backend (tests, `KvConfig::Mem`): the shared resolver over a copy-on-write
//! `Arc<BTreeMap>`. A snapshot is an `Arc` clone; a commit group clones the map only if a
//! snapshot still references it (`Arc::make_mut`), so readers never block writers.
//! Nothing survives the process.
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::resolver::{Engine, Storage, WriteOp};
use crate::{KeyValue, KvEngine, Result, Transaction};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory transactional store with FoundationDB semantics (not durable).
pub struct MemKv {
    engine: Arc<Engine<MemStore>>,
}

impl MemKv {
    /// A new, empty store.
    ///
    /// # Panics
    /// If the OS refuses to start the commit thread (like `std::thread::spawn`).
    pub fn new() -> Arc<MemKv> {
        let engine = Engine::start(MemStore::default(), 0, "t3fs-kv-mem")
            .expect("the OS refused to start the in-memory kv commit thread");
        Arc::new(MemKv { engine })
    }
}

#[async_trait::async_trait]
impl KvEngine for MemKv {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        Ok(self.engine.begin())
    }

    /// No disk.
    fn space(&self) -> Option<(u64, u64)> {
        None
    }
}

/// The copy-on-write map behind [`MemKv`] (also used by the resolver's tests).
#[derive(Default)]
pub(crate) struct MemStore {
    map: Mutex<Arc<Map>>,
}

impl MemStore {
    fn current(&self) -> std::sync::MutexGuard<'_, Arc<Map>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemStore {
    type Snapshot = Arc<Map>;

    fn snapshot(&self) -> Arc<Map> {
        self.current().clone()
    }

    fn get(&self, snap: &Arc<Map>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(snap.get(key).cloned())
    }

    fn scan(&self, snap: &Arc<Map>, begin: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        let range = snap.range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)));
        let pair = |(k, v): (&Vec<u8>, &Vec<u8>)| KeyValue { key: k.clone(), value: v.clone() };
        Ok(if reverse { range.rev().take(limit).map(pair).collect() } else { range.take(limit).map(pair).collect() })
    }

    fn apply(&self, ops: Vec<WriteOp>, _version: u64) -> Result<()> {
        let mut current = self.current();
        let map = Arc::make_mut(&mut current);
        for (key, op) in ops {
            match op {
                Some(value) => {
                    map.insert(key, value);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_commit_get() {
        let db = MemKv::new();
        let mut t = db.begin().await.unwrap();
        t.set(b"k", b"v");
        t.commit().await.unwrap();
        let mut t = db.begin().await.unwrap();
        assert_eq!(t.read_version(), 1);
        assert_eq!(t.get(b"k", false).await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(db.engine.version(), 1);
    }
}
