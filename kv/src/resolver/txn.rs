//! The transaction of the in-process resolver: a snapshot at the read version overlaid with the
//! transaction's buffered writes (read-your-writes), plus the conflict ranges it accumulates.
//!
//! Buffer invariants: `writes` holds the newest point write per key; a `clear_range` removes the
//! point writes it covers and adds its range to `cleared`, so a point write always post-dates any
//! cleared range containing its key. Hence "apply `cleared`, then `writes`" is the transaction's
//! effect, and a read consults `writes`, then `cleared`, then the snapshot.
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::ranges::{Range, RangeSet, normalize};
use super::{CommitReq, Engine, Storage};
use crate::{
    KeyValue, KvError, MAX_KEY_BYTES, MAX_TRANSACTION_BYTES, MAX_VALUE_BYTES, RangeOpts, Result, Transaction, key_after,
};

/// Storage pairs fetched per scan while merging a range read with the buffered writes.
const SCAN_CHUNK: usize = 512;

pub(crate) struct Txn<S: Storage> {
    engine: Arc<Engine<S>>,
    snap: S::Snapshot,
    read_version: u64,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    cleared: RangeSet,
    reads: Vec<Range>,
    explicit_writes: Vec<Range>,
    /// Bytes of every mutation made (FoundationDB counts overwritten ones too).
    bytes: usize,
    /// The first invalid mutation (oversized key or value); reported at commit.
    invalid: Option<KvError>,
}

impl<S: Storage> Txn<S> {
    pub(super) fn new(engine: Arc<Engine<S>>, snap: S::Snapshot, read_version: u64) -> Self {
        Txn {
            engine,
            snap,
            read_version,
            writes: BTreeMap::new(),
            cleared: RangeSet::default(),
            reads: Vec::new(),
            explicit_writes: Vec::new(),
            bytes: 0,
            invalid: None,
        }
    }

    fn check_key(&mut self, key: &[u8]) {
        if key.len() > MAX_KEY_BYTES && self.invalid.is_none() {
            self.invalid = Some(KvError::TooLarge(format!("key of {} bytes (limit {MAX_KEY_BYTES})", key.len())));
        }
    }

    /// Whether a stored key is hidden or replaced by this transaction's own writes.
    fn shadowed(&self, key: &[u8]) -> bool {
        self.writes.contains_key(key) || self.cleared.contains(key)
    }

    /// The write conflict ranges: every point write, every cleared range, every explicit range.
    fn write_ranges(&mut self) -> Vec<Range> {
        let mut all: Vec<Range> = self.writes.keys().map(|k| (k.clone(), key_after(k))).collect();
        all.extend(self.cleared.ranges().iter().cloned());
        all.append(&mut self.explicit_writes);
        normalize(all)
    }
}

/// Pages through the snapshot in `[lo, hi)`, in either direction.
struct Cursor {
    lo: Vec<u8>,
    hi: Vec<u8>,
    reverse: bool,
    chunk: usize,
    buf: VecDeque<KeyValue>,
    exhausted: bool,
}

impl Cursor {
    fn next<S: Storage>(&mut self, storage: &S, snap: &S::Snapshot) -> Result<Option<KeyValue>> {
        if self.buf.is_empty() && !self.exhausted {
            let page = storage.scan(snap, &self.lo, &self.hi, self.reverse, self.chunk)?;
            self.exhausted = page.len() < self.chunk;
            if let Some(last) = page.last() {
                if self.reverse {
                    self.hi = last.key.clone();
                } else {
                    self.lo = key_after(&last.key);
                }
            }
            self.buf.extend(page);
        }
        Ok(self.buf.pop_front())
    }
}

#[async_trait::async_trait]
impl<S: Storage> Transaction for Txn<S> {
    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        if !snapshot {
            self.reads.push((key.to_vec(), key_after(key)));
        }
        if let Some(op) = self.writes.get(key) {
            return Ok(op.clone());
        }
        if self.cleared.contains(key) {
            return Ok(None);
        }
        self.engine.storage().get(&self.snap, key)
    }

    async fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOpts) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        let limit = if opts.limit == 0 { usize::MAX } else { opts.limit };
        let bounds = (Bound::Included(begin), Bound::Excluded(end));
        let own: Vec<(&Vec<u8>, &Vec<u8>)> =
            self.writes.range::<[u8], _>(bounds).filter_map(|(k, v)| v.as_ref().map(|v| (k, v))).collect();
        let mut own: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)> + Send> =
            if opts.reverse { Box::new(own.into_iter().rev()) } else { Box::new(own.into_iter()) };
        let mut own_next = own.next();

        let mut cursor = Cursor {
            lo: begin.to_vec(),
            hi: end.to_vec(),
            reverse: opts.reverse,
            chunk: limit.clamp(1, SCAN_CHUNK),
            buf: VecDeque::new(),
            exhausted: false,
        };
        let storage = self.engine.storage();
        let mut stored_next = None;
        let mut out = Vec::new();
        while out.len() < limit {
            if stored_next.is_none() {
                while let Some(kv) = cursor.next(storage, &self.snap)? {
                    if !self.shadowed(&kv.key) {
                        stored_next = Some(kv);
                        break;
                    }
                }
            }
            let take_own = match (&own_next, &stored_next) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some(kv)) => (k.as_slice() < kv.key.as_slice()) != opts.reverse,
            };
            if take_own {
                if let Some((k, v)) = own_next.take() {
                    out.push(KeyValue { key: k.clone(), value: v.clone() });
                }
                own_next = own.next();
            } else if let Some(kv) = stored_next.take() {
                out.push(kv);
            }
        }
        drop(own);

        if !opts.snapshot {
            let range = match out.last() {
                Some(last) if out.len() == limit && !opts.reverse => (begin.to_vec(), key_after(&last.key)),
                Some(last) if out.len() == limit => (last.key.clone(), end.to_vec()),
                _ => (begin.to_vec(), end.to_vec()),
            };
            self.reads.push(range);
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.check_key(key);
        if value.len() > MAX_VALUE_BYTES && self.invalid.is_none() {
            self.invalid = Some(KvError::TooLarge(format!("value of {} bytes (limit {MAX_VALUE_BYTES})", value.len())));
        }
        self.bytes += key.len() + value.len();
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    fn clear(&mut self, key: &[u8]) {
        self.check_key(key);
        self.bytes += key.len();
        self.writes.insert(key.to_vec(), None);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        self.bytes += begin.len() + end.len();
        let bounds = (Bound::Included(begin), Bound::Excluded(end));
        let covered: Vec<Vec<u8>> = self.writes.range::<[u8], _>(bounds).map(|(k, _)| k.clone()).collect();
        for k in covered {
            self.writes.remove(&k);
        }
        self.cleared.insert(begin, end);
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.reads.push((begin.to_vec(), end.to_vec()));
        }
    }

    fn add_write_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.bytes += begin.len() + end.len();
            self.explicit_writes.push((begin.to_vec(), end.to_vec()));
        }
    }

    fn read_version(&self) -> u64 {
        self.read_version
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if let Some(e) = self.invalid.take() {
            return Err(e);
        }
        if self.bytes > MAX_TRANSACTION_BYTES {
            return Err(KvError::TransactionTooLarge(self.bytes));
        }
        if self.writes.is_empty() && self.cleared.is_empty() && self.explicit_writes.is_empty() {
            return Ok(()); // read-only: already serializable at its read version
        }
        let writes = self.write_ranges();
        let (reply, answer) = oneshot::channel();
        let req = CommitReq {
            read_version: self.read_version,
            reads: normalize(std::mem::take(&mut self.reads)),
            writes,
            clears: std::mem::take(&mut self.cleared).into_ranges(),
            sets: std::mem::take(&mut self.writes).into_iter().collect(),
            reply,
        };
        self.engine.submit(req)?;
        // `self` stays alive (its read version registered) until the committer has answered.
        match answer.await {
            Ok(outcome) => outcome.map(|_version| ()),
            Err(_) => Err(KvError::Backend("the commit thread stopped before answering".into())),
        }
    }
}

impl<S: Storage> Drop for Txn<S> {
    fn drop(&mut self) {
        self.engine.unregister(self.read_version);
    }
}
