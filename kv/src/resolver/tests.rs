//! Resolver-level tests: group commit batching, conflicts inside one group, the too-old rule and
//! log pruning. The backend-independent semantics are in the conformance suite.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::mem::MemStore;

/// MemStore whose `apply` is slow and counted, so concurrent commits pile up into groups.
#[derive(Default)]
struct SlowStore {
    inner: MemStore,
    applies: Arc<AtomicUsize>,
}

impl Storage for SlowStore {
    type Snapshot = <MemStore as Storage>::Snapshot;
    fn snapshot(&self) -> Self::Snapshot {
        self.inner.snapshot()
    }
    fn get(&self, snap: &Self::Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(snap, key)
    }
    fn scan(&self, snap: &Self::Snapshot, b: &[u8], e: &[u8], rev: bool, limit: usize) -> Result<Vec<KeyValue>> {
        self.inner.scan(snap, b, e, rev, limit)
    }
    fn apply(&self, ops: Vec<WriteOp>, version: u64) -> Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(ops, version)
    }
}

fn slow_engine() -> (Arc<Engine<SlowStore>>, Arc<AtomicUsize>) {
    let store = SlowStore::default();
    let applies = store.applies.clone();
    (Engine::start(store, 0, "test").unwrap(), applies)
}

#[tokio::test]
async fn concurrent_commits_share_one_batch() {
    let (engine, applies) = slow_engine();
    let commits = (0..40u8).map(|i| {
        let mut t = engine.begin();
        t.set(&[i], &[i]);
        t.commit()
    });
    for r in futures::future::join_all(commits).await {
        r.unwrap();
    }
    let n = applies.load(Ordering::SeqCst);
    assert!(n <= 5, "40 concurrent commits took {n} storage batches");
    assert_eq!(engine.version(), 40, "each accepted transaction gets its own version");
    let mut t = engine.begin();
    let all = t.get_range(&[0], &[255], crate::RangeOpts::default()).await.unwrap();
    assert_eq!(all.len(), 40);
}

#[tokio::test]
async fn conflicts_are_checked_within_a_group() {
    let (engine, _) = slow_engine();
    // Occupy the committer so the next two commits are queued into one group.
    let mut first = engine.begin();
    first.set(b"other", b"1");
    let first = tokio::spawn(first.commit());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut a = engine.begin();
    let mut b = engine.begin();
    for t in [&mut a, &mut b] {
        assert_eq!(t.get(b"k", false).await.unwrap(), None);
        t.set(b"k", b"x");
    }
    let (ra, rb) = futures::join!(a.commit(), b.commit());
    first.await.unwrap().unwrap();
    assert_eq!([ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(), 1, "exactly one wins: {ra:?} {rb:?}");
    assert!(ra == Err(KvError::Conflict) || rb == Err(KvError::Conflict));
}

fn req(read_version: u64, reads: &[(&[u8], &[u8])]) -> CommitReq {
    let (reply, _) = oneshot::channel();
    CommitReq {
        read_version,
        reads: reads.iter().map(|(b, e)| (b.to_vec(), e.to_vec())).collect(),
        writes: vec![(b"w".to_vec(), b"w\0".to_vec())],
        clears: Vec::new(),
        sets: Vec::new(),
        reply,
    }
}

fn state(version: u64) -> State<()> {
    State { version, snapshot: (), next_version: version, log: VecDeque::new(), floor: 0, live: BTreeMap::new() }
}

#[test]
fn old_log_entries_are_pruned_and_old_readers_fail_too_old() {
    let now = Instant::now();
    let Some(long_ago) = now.checked_sub(MAX_TXN_AGE + Duration::from_secs(1)) else {
        return; // the machine booted less than 6 s ago
    };
    let mut st = state(10);
    st.log.push_back(LogEntry { version: 8, writes: vec![(b"a".to_vec(), b"b".to_vec())], at: long_ago });
    st.log.push_back(LogEntry { version: 10, writes: vec![(b"x".to_vec(), b"y".to_vec())], at: now });
    st.live.insert(3, 1);
    st.prune(now);
    assert_eq!(st.floor, 8);
    assert_eq!(st.log.len(), 1, "the recent entry stays: a live reader at 3 needs it");
    assert_eq!(st.resolve(&req(3, &[(b"q", b"r")]), now), Err(KvError::TooOld));
    assert_eq!(st.resolve(&req(3, &[]), now), Ok(11), "blind writes never need the log");
    assert_eq!(st.resolve(&req(9, &[(b"x", b"x0")]), now), Err(KvError::Conflict));
    assert_eq!(st.resolve(&req(9, &[(b"q", b"r")]), now), Ok(12));
}

#[test]
fn entries_older_than_every_live_reader_are_pruned() {
    let now = Instant::now();
    let mut st = state(5);
    for v in 1..=5 {
        st.log.push_back(LogEntry { version: v, writes: vec![(vec![v as u8], vec![v as u8, 0])], at: now });
    }
    st.live.insert(3, 2);
    st.prune(now);
    assert_eq!(st.log.iter().map(|e| e.version).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(st.resolve(&req(3, &[(&[4], &[4, 0])]), now), Err(KvError::Conflict));
    assert_eq!(st.resolve(&req(3, &[(&[3], &[3, 0])]), now), Ok(6), "version 3 is not after read version 3");
    st.live.clear();
    st.version = 6;
    st.prune(now);
    assert!(st.log.is_empty(), "no live readers: nothing needs the log");
}

#[tokio::test]
async fn dropped_transactions_unregister_their_read_version() {
    let (engine, _) = slow_engine();
    let t1 = engine.begin();
    let t2 = engine.begin();
    assert_eq!(engine.core.lock().live.get(&0), Some(&2));
    drop(t1);
    drop(t2);
    assert!(engine.core.lock().live.is_empty());
}
