//! Per-handle write coalescing under a mount-wide memory budget.
//!
//! A [`WriteBuffer`] accumulates the contiguous writes of one open file handle and hands them to
//! storage as one `Client::write`, which sends the chunks it covers in parallel. Large buffers are
//! what make sequential writes through the mount fast: each chunk is a replicated, fsync'ed update
//! on a whole chain, so a writer that sent one chunk at a time would wait for one chain round trip
//! per chunk; a 16 MiB buffer keeps 16 chunks (of 1 MiB) in flight at once.
//!
//! When a buffer goes out ([`WriteBuffer::should_flush`]):
//! - it holds `max_bytes` (the mount's `write_buffer_bytes`), or
//! - the mount-wide [`WriteBudget`] is spent (all handles together hold `write_buffer_memory_bytes`
//!   or more): then every write goes out as soon as it arrived, so thousands of writing handles
//!   cannot take the daemon's memory; the budget is back once buffers drained;
//! - and, decided by the caller, on a non-contiguous write, read, truncate, flush, fsync, release
//!   and every `flush_interval_ms` (see `crate::fs`).
//!
//! Invariant: the budget's count equals the bytes held by live buffers: [`WriteBuffer::append`]
//! adds, [`WriteBuffer::take`] and drop subtract.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes buffered by all handles of a mount, and how many they may hold before every write goes
/// straight out.
#[derive(Debug)]
pub struct WriteBudget {
    used: AtomicU64,
    limit: u64,
}

impl WriteBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { used: AtomicU64::new(0), limit })
    }

    /// Bytes held by live buffers now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether buffers together hold the limit or more.
    pub fn spent(&self) -> bool {
        self.used() >= self.limit
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
        crate::metrics::metrics().write_buffer_memory.inc_by(n as i64);
    }

    fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
        crate::metrics::metrics().write_buffer_memory.dec_by(n as i64);
    }
}

/// Coalesces contiguous writes of one handle.
#[derive(Debug)]
pub struct WriteBuffer {
    start: u64,
    data: Vec<u8>,
    max_bytes: usize,
    budget: Arc<WriteBudget>,
}

impl WriteBuffer {
    /// A buffer that goes out at `max_bytes`, counted in `budget`.
    pub fn new(max_bytes: usize, budget: Arc<WriteBudget>) -> Self {
        Self { start: 0, data: Vec::new(), max_bytes: max_bytes.max(1), budget }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// One past the last buffered byte (meaningless when empty).
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// Whether a write at `offset` may extend the buffer: it is empty or the write starts at its end.
    pub fn can_append(&self, offset: u64) -> bool {
        self.data.is_empty() || offset == self.end()
    }

    /// Appends a write; the caller checked [`can_append`](Self::can_append) (else it flushes first).
    pub fn append(&mut self, offset: u64, data: &[u8]) {
        debug_assert!(self.can_append(offset), "non-contiguous append");
        if self.data.is_empty() {
            self.start = offset;
        }
        self.data.extend_from_slice(data);
        self.budget.add(data.len() as u64);
    }

    /// Whether the buffer should go to storage now: it holds `max_bytes`, or the mount's budget is
    /// spent.
    pub fn should_flush(&self) -> bool {
        !self.data.is_empty() && (self.data.len() >= self.max_bytes || self.budget.spent())
    }

    /// Empties the buffer, returning `(offset, bytes)` if it held anything.
    pub fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.data.is_empty() {
            return None;
        }
        self.budget.sub(self.data.len() as u64);
        Some((self.start, std::mem::take(&mut self.data)))
    }
}

impl Drop for WriteBuffer {
    fn drop(&mut self) {
        self.budget.sub(self.data.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(max: usize) -> (WriteBuffer, Arc<WriteBudget>) {
        let budget = WriteBudget::new(1 << 30);
        (WriteBuffer::new(max, budget.clone()), budget)
    }

    #[test]
    fn coalesces_contiguous_writes() {
        let (mut b, budget) = buf(1 << 20);
        assert!(b.is_empty() && b.can_append(12345));
        b.append(100, &[1; 50]);
        assert!(b.can_append(150));
        assert!(!b.can_append(149) && !b.can_append(151) && !b.can_append(0));
        b.append(150, &[2; 50]);
        assert_eq!((b.len(), b.end(), budget.used()), (100, 200, 100));
        assert!(!b.should_flush());
        let (off, data) = b.take().unwrap();
        assert_eq!(off, 100);
        assert_eq!(&data[..50], &[1; 50]);
        assert_eq!(&data[50..], &[2; 50]);
        assert!(b.is_empty() && b.take().is_none());
        assert_eq!(budget.used(), 0);
        // After a take the next write may start anywhere.
        assert!(b.can_append(7));
    }

    #[test]
    fn goes_out_at_its_size_limit_across_chunk_boundaries() {
        // Chunk boundaries do not matter: a sequential writer fills the whole buffer, and the
        // client sends the chunks it covers in parallel.
        let (mut b, _) = buf(3 << 20);
        b.append(0, &vec![0; (2 << 20) + 5]);
        assert!(!b.should_flush());
        b.append((2 << 20) + 5, &vec![0; (1 << 20) - 5]);
        assert!(b.should_flush());
        let (mut big, _) = buf(1000);
        big.append(5, &[0; 5000]);
        assert!(big.should_flush());
    }

    #[test]
    fn a_spent_budget_sends_every_write_at_once_until_it_drained() {
        let budget = WriteBudget::new(1000);
        let mut a = WriteBuffer::new(1 << 20, budget.clone());
        let mut b = WriteBuffer::new(1 << 20, budget.clone());
        a.append(0, &[0; 600]);
        assert!(!a.should_flush());
        b.append(0, &[0; 400]);
        assert!(budget.spent());
        assert!(a.should_flush() && b.should_flush());
        a.take();
        assert!(!budget.spent() && !b.should_flush());
        // Dropping a buffer that still holds data gives its bytes back.
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
