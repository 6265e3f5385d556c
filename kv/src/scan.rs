//! Paged range scans: read a key range of any size as a sequence of pages, each page one snapshot
//! range read in its own short transaction.
//!
//! Why: a transaction must stay small and short (FoundationDB: 5 s, 10 MB), so a scan over a range
//! that may hold millions of keys (every write session, every lock, every inode for statfs) cannot
//! be one read. Background jobs page through it instead.
//!
//! What a caller gets: every key that existed in `[begin, end)` for the whole scan is returned
//! exactly once, in ascending order; keys written or cleared during the scan may or may not be
//! seen, and different pages are read at different versions. Whoever acts on a page must therefore
//! re-check what it changes in its own transaction (with conflicting reads), as the meta pruners do.
use crate::{KeyValue, KvEngine, RangeOpts, Result, key_after, run};

/// A scan of `[begin, end)` in pages of at most `page` pairs; see the module note.
#[derive(Clone, Debug)]
pub struct PageScan {
    begin: Vec<u8>,
    end: Vec<u8>,
    page: usize,
    done: bool,
}

impl PageScan {
    /// A scan of `range` (`[begin, end)`) returning at most `page` (at least 1) pairs per page.
    pub fn new(range: (Vec<u8>, Vec<u8>), page: usize) -> PageScan {
        PageScan { begin: range.0, end: range.1, page: page.max(1), done: false }
    }

    /// The next page, read in its own snapshot transaction (retried like [`run`]); `None` once the
    /// range is exhausted. A page is never empty.
    pub async fn next(&mut self, db: &dyn KvEngine) -> Result<Option<Vec<KeyValue>>> {
        if self.done {
            return Ok(None);
        }
        let (b, e, limit) = (self.begin.clone(), self.end.clone(), self.page);
        let page = run(db, move |txn| {
            let (b, e) = (b.clone(), e.clone());
            Box::pin(async move { txn.get_range(&b, &e, RangeOpts { limit, reverse: false, snapshot: true }).await })
        })
        .await?;
        match page.last() {
            Some(last) if page.len() == limit => self.begin = key_after(&last.key),
            _ => self.done = true,
        }
        Ok(if page.is_empty() { None } else { Some(page) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemKv;

    async fn fill(db: &dyn KvEngine, n: u32) {
        run(db, move |txn| {
            for i in 0..n {
                txn.set(format!("k{i:05}").as_bytes(), &i.to_be_bytes());
            }
            txn.set(b"z-outside", b"x");
            Box::pin(async { Ok(()) })
        })
        .await
        .expect("fill a fresh in-memory store");
    }

    async fn collect(db: &dyn KvEngine, page: usize) -> (Vec<Vec<u8>>, usize) {
        let mut scan = PageScan::new((b"k".to_vec(), b"l".to_vec()), page);
        let (mut keys, mut pages) = (Vec::new(), 0);
        while let Some(p) = scan.next(db).await.expect("scan the in-memory store") {
            assert!(!p.is_empty() && p.len() <= page.max(1));
            pages += 1;
            keys.extend(p.into_iter().map(|kv| kv.key));
        }
        (keys, pages)
    }

    #[tokio::test]
    async fn every_key_once_in_order_for_any_page_size() {
        let db = MemKv::new();
        fill(&*db, 250).await;
        let want: Vec<Vec<u8>> = (0..250).map(|i| format!("k{i:05}").into_bytes()).collect();
        for (page, pages) in [(0, 250), (1, 250), (7, 36), (125, 2), (250, 1), (1000, 1)] {
            let (keys, n) = collect(&*db, page).await;
            assert_eq!(keys, want, "page size {page}");
            // An exact multiple costs one extra (empty) read, which ends the scan without a page.
            assert_eq!(n, pages, "pages for page size {page}");
        }
    }

    #[tokio::test]
    async fn an_empty_range_yields_nothing_and_stays_done() {
        let db = MemKv::new();
        fill(&*db, 0).await;
        let mut scan = PageScan::new((b"k".to_vec(), b"l".to_vec()), 10);
        assert!(scan.next(&*db).await.expect("scan").is_none());
        assert!(scan.next(&*db).await.expect("scan").is_none());
    }
}
