//! The in-process conflict resolver and group committer shared by the `mem` and `embedded`
//! backends: FoundationDB's transaction model on top of any ordered store with snapshots.
//!
//! How it works:
//! - A global commit version counter. The *published* state is `(version, snapshot)`, where the
//!   snapshot shows exactly the data committed up to `version`. [`Engine::begin`] takes both
//!   under one mutex, so a transaction reads a consistent snapshot at its read version.
//! - Transactions ([`txn::Txn`]) buffer writes, record read/write conflict ranges and, at commit,
//!   send a [`CommitReq`] to the committer thread.
//! - The committer is one dedicated OS thread (never an async runtime thread, because it fsyncs).
//!   It drains every pending request (a *group*), resolves them in order against the log of
//!   recent commits, where each accepted one is logged at once so later ones in the same group
//!   are checked against it too, applies all accepted write sets in **one** storage batch with one
//!   durability sync, takes a snapshot of the new state, publishes it and only then answers.
//!   So no reader ever sees data that is not yet durable.
//! - The log holds `(commit version, write ranges)` for recent commits. It is pruned up to the
//!   oldest read version of a live transaction, and entries older than [`MAX_TXN_AGE`] are
//!   dropped regardless; a transaction whose read version predates the pruned part fails with
//!   [`KvError::TooOld`] (FoundationDB's 5 s limit).
//!
//! Invariants: versions only grow; every log entry with `version > floor` is present; log entries
//! are ordered by version; the storage is written only by the committer thread.
mod ranges;
#[cfg(test)]
mod tests;
mod txn;

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{KeyValue, KvError, Result, Transaction};
use ranges::{Range, intersects};

/// How long a transaction may live and still commit (FoundationDB's limit).
pub(crate) const MAX_TXN_AGE: Duration = Duration::from_secs(5);
/// Most commit requests resolved and applied as one group.
const MAX_GROUP: usize = 4096;
/// Batch size when the committer scans a `clear_range` to turn it into point deletes.
const CLEAR_SCAN_CHUNK: usize = 1024;

/// One buffered write: `Some(value)` sets the key, `None` deletes it.
pub(crate) type WriteOp = (Vec<u8>, Option<Vec<u8>>);

/// An ordered key-value store with cheap consistent snapshots, written only by the committer.
pub(crate) trait Storage: Send + Sync + 'static {
    type Snapshot: Clone + Send + Sync + 'static;

    /// A snapshot of the current state (everything applied so far).
    fn snapshot(&self) -> Self::Snapshot;

    fn get(&self, snap: &Self::Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` (> 0) pairs in `[begin, end)`, ascending, or descending if `reverse`.
    fn scan(
        &self,
        snap: &Self::Snapshot,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<KeyValue>>;

    /// Applies `ops` (sorted, unique keys) atomically and durably, recording `version` as the
    /// newest commit version. Returns only once the batch is durable.
    fn apply(&self, ops: Vec<WriteOp>, version: u64) -> Result<()>;
}

/// A transaction's request to commit, sent to the committer thread.
pub(crate) struct CommitReq {
    read_version: u64,
    /// Normalised read conflict ranges.
    reads: Vec<Range>,
    /// Normalised write conflict ranges.
    writes: Vec<Range>,
    /// Buffered `clear_range`s (disjoint); applied before `sets`.
    clears: Vec<Range>,
    /// Buffered point writes, sorted by key.
    sets: Vec<WriteOp>,
    reply: oneshot::Sender<Result<u64>>,
}

struct LogEntry {
    version: u64,
    writes: Vec<Range>,
    at: Instant,
}

struct State<Snap> {
    /// Newest published (durable and visible) commit version.
    version: u64,
    /// The store exactly as of `version`.
    snapshot: Snap,
    /// Last version handed out to an accepted commit (>= `version`).
    next_version: u64,
    log: VecDeque<LogEntry>,
    /// Commits with versions <= `floor` may be missing from `log`.
    floor: u64,
    /// Read versions of live transactions, with counts.
    live: BTreeMap<u64, usize>,
}

impl<Snap> State<Snap> {
    fn prune(&mut self, now: Instant) {
        let min_live = self.live.keys().next().copied().unwrap_or(self.version);
        while let Some(front) = self.log.front() {
            if front.version <= min_live || now.duration_since(front.at) > MAX_TXN_AGE {
                self.floor = self.floor.max(front.version);
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    fn resolve(&mut self, req: &CommitReq, now: Instant) -> Result<u64> {
        if !req.reads.is_empty() {
            if req.read_version < self.floor {
                return Err(KvError::TooOld);
            }
            let newer = self.log.iter().rev().take_while(|e| e.version > req.read_version);
            for entry in newer {
                if intersects(&req.reads, &entry.writes) {
                    return Err(KvError::Conflict);
                }
            }
        }
        self.next_version += 1;
        self.log.push_back(LogEntry { version: self.next_version, writes: req.writes.clone(), at: now });
        Ok(self.next_version)
    }
}

pub(crate) struct Core<S: Storage> {
    storage: S,
    state: Mutex<State<S::Snapshot>>,
}

impl<S: Storage> Core<S> {
    fn lock(&self) -> MutexGuard<'_, State<S::Snapshot>> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // breaks safety, and refusing all future transactions would be worse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unregister(&self, read_version: u64) {
        let mut st = self.lock();
        if let Some(n) = st.live.get_mut(&read_version) {
            *n -= 1;
            if *n == 0 {
                st.live.remove(&read_version);
            }
        }
    }
}

/// A backend-independent engine: the shared state plus the committer thread.
/// Dropping the last handle (engine or transaction) stops and joins the committer, then drops
/// the storage, so a disk store is released when this returns.
pub(crate) struct Engine<S: Storage> {
    core: Arc<Core<S>>,
    sender: Option<mpsc::Sender<CommitReq>>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Storage> Engine<S> {
    /// Starts an engine over `storage`, whose newest commit version is `version`.
    pub(crate) fn start(storage: S, version: u64, name: &str) -> Result<Arc<Self>> {
        let snapshot = storage.snapshot();
        let state = State {
            version,
            snapshot,
            next_version: version,
            log: VecDeque::new(),
            floor: version,
            live: BTreeMap::new(),
        };
        let core = Arc::new(Core { storage, state: Mutex::new(state) });
        let (sender, receiver) = mpsc::channel();
        let thread_core = core.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-commit"))
            .spawn(move || committer(thread_core, receiver))
            .map_err(|e| KvError::Backend(format!("cannot start the commit thread: {e}")))?;
        Ok(Arc::new(Engine { core, sender: Some(sender), thread: Some(thread) }))
    }

    /// Starts a transaction at the newest published version.
    pub(crate) fn begin(self: &Arc<Self>) -> Box<dyn Transaction> {
        let (read_version, snap) = {
            let mut st = self.core.lock();
            let rv = st.version;
            *st.live.entry(rv).or_insert(0) += 1;
            (rv, st.snapshot.clone())
        };
        Box::new(txn::Txn::new(self.clone(), snap, read_version))
    }

    pub(crate) fn storage(&self) -> &S {
        &self.core.storage
    }

    /// The newest published commit version.
    #[cfg(test)]
    pub(crate) fn version(&self) -> u64 {
        self.core.lock().version
    }

    fn submit(&self, req: CommitReq) -> Result<()> {
        let stopped = || KvError::Backend("the commit thread has stopped".into());
        self.sender.as_ref().ok_or_else(stopped)?.send(req).map_err(|_| stopped())
    }

    fn unregister(&self, read_version: u64) {
        self.core.unregister(read_version);
    }
}

impl<S: Storage> Drop for Engine<S> {
    fn drop(&mut self) {
        // Closing the channel ends the committer loop once it has answered what it holds.
        self.sender.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("kv commit thread panicked");
        }
    }
}

fn committer<S: Storage>(core: Arc<Core<S>>, receiver: mpsc::Receiver<CommitReq>) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        commit_group(&core, group);
    }
}

/// Resolves, applies (one batch, one sync), publishes, then answers every request of `group`.
fn commit_group<S: Storage>(core: &Core<S>, group: Vec<CommitReq>) {
    let now = Instant::now();
    let outcomes: Vec<Result<u64>> = {
        let mut st = core.lock();
        st.prune(now);
        group.iter().map(|req| st.resolve(req, now)).collect()
    };
    let Some(last_version) = outcomes.iter().filter_map(|o| o.as_ref().ok()).copied().max() else {
        answer(group, outcomes);
        return;
    };

    let applied = build_ops(&core.storage, &group, &outcomes)
        .and_then(|ops| core.storage.apply(ops, last_version))
        .map(|()| core.storage.snapshot());
    let outcomes = match applied {
        Ok(snapshot) => {
            let mut st = core.lock();
            st.version = last_version;
            st.snapshot = snapshot;
            outcomes
        }
        Err(e) => {
            tracing::error!(error = %e, "kv group commit failed");
            let mut st = core.lock();
            let published = st.version;
            while st.log.back().is_some_and(|entry| entry.version > published) {
                st.log.pop_back();
            }
            st.next_version = published;
            outcomes.into_iter().map(|o| o.and(Err(e.clone()))).collect()
        }
    };
    answer(group, outcomes);
}

fn answer(group: Vec<CommitReq>, outcomes: Vec<Result<u64>>) {
    for (req, outcome) in group.into_iter().zip(outcomes) {
        // The transaction may have been dropped (commit future cancelled): nothing to tell.
        let _ = req.reply.send(outcome);
    }
}

/// Folds the accepted requests, in order, into one set of point writes. `clear_range`s become
/// point deletes of the keys present in storage or written earlier in this group.
fn build_ops<S: Storage>(storage: &S, group: &[CommitReq], outcomes: &[Result<u64>]) -> Result<Vec<WriteOp>> {
    let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let snap = storage.snapshot();
    for (req, _) in group.iter().zip(outcomes).filter(|(_, o)| o.is_ok()) {
        for (begin, end) in &req.clears {
            let mut from = begin.clone();
            loop {
                let chunk = storage.scan(&snap, &from, end, false, CLEAR_SCAN_CHUNK)?;
                let full = chunk.len() == CLEAR_SCAN_CHUNK;
                if let Some(last) = chunk.last() {
                    from = crate::key_after(&last.key);
                }
                for kv in chunk {
                    merged.insert(kv.key, None);
                }
                if !full {
                    break;
                }
            }
            let range = (std::ops::Bound::Included(begin.as_slice()), std::ops::Bound::Excluded(end.as_slice()));
            for (_, op) in merged.range_mut::<[u8], _>(range) {
                *op = None;
            }
        }
        for (key, op) in &req.sets {
            merged.insert(key.clone(), op.clone());
        }
    }
    Ok(merged.into_iter().collect())
}
