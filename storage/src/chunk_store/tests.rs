//! Unit tests of the chunk store: update semantics, integrity checks, crash leftovers, reopen.
use super::*;
use t3fs_common::InodeId;

const CS: u32 = 1 << 20;

pub(super) fn w(offset: u32, data: &[u8]) -> Update {
    Update::Write { offset, data: Bytes::copy_from_slice(data), payload_crc32c: crc32c::crc32c(data), chunk_size: CS }
}

pub(super) fn id(i: u32) -> ChunkId {
    ChunkId::new(InodeId(42), i)
}

fn open(dir: &Path) -> ChunkStore {
    ChunkStore::open(TargetId(7), dir).unwrap().0
}

/// Flips bits `mask` of byte `at` of the chunk's committed content, on disk.
fn flip(s: &ChunkStore, c: ChunkId, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let (path, offset) = s.data_location(c).unwrap().expect("a chunk with data");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset + at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset + at).unwrap();
}

/// The slots the records reference, committed and pending.
pub(super) fn referenced(s: &ChunkStore) -> Vec<Slot> {
    let mut out: Vec<Slot> = s
        .with_db(|db| Ok([scan(&db.metas)?, scan(&db.pending)?].concat()))
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| r.slot.and_then(Slot::decode))
        .collect();
    out.sort();
    out
}

/// Every allocated slot is referenced by a record and vice versa.
pub(super) fn assert_no_leak(s: &ChunkStore) {
    assert_eq!(s.engine().allocated(), referenced(s), "allocated slots == referenced slots");
}

async fn apply(s: &ChunkStore, c: ChunkId, v: u64, u: Update) -> Result<Applied, Error> {
    let g = s.lock(c).await;
    s.apply(&g, v, 1, u).await
}

async fn content(s: &ChunkStore, c: ChunkId) -> Vec<u8> {
    s.read(c, 0, CS).await.unwrap().0.to_vec()
}

#[tokio::test]
async fn write_overwrite_and_ranged_reads() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let a = apply(&s, id(0), 1, w(0, b"hello")).await.unwrap();
    assert_eq!(
        a,
        Applied {
            meta: ChunkMeta { version: 1, length: 5, crc32c: crc32c::crc32c(b"hello"), chain_version: 1 },
            exists: true,
            duplicate: false
        }
    );
    let a = apply(&s, id(0), 2, w(0, b"J")).await.unwrap();
    assert_eq!((a.meta.version, a.meta.length), (2, 5));
    assert_eq!(content(&s, id(0)).await, b"Jello");
    let (part, meta) = s.read(id(0), 1, 3).await.unwrap();
    assert_eq!(&part[..], b"ell");
    assert_eq!(meta.crc32c, crc32c::crc32c(b"Jello"));
    assert_eq!(&s.read(id(0), 3, 100).await.unwrap().0[..], b"lo");
    assert!(s.read(id(0), 9, 100).await.unwrap().0.is_empty());
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 2);
    assert_eq!(s.used_bytes(), 5);
    // The old version's slot is free again.
    assert_no_leak(&s);
    assert_eq!(s.engine().allocated().len(), 1);
}

#[tokio::test]
async fn extend_zero_fills_the_gap() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(1), 1, w(0, b"abc")).await.unwrap();
    let a = apply(&s, id(1), 2, w(8, b"xy")).await.unwrap();
    assert_eq!(a.meta.length, 10);
    assert_eq!(content(&s, id(1)).await, b"abc\0\0\0\0\0xy");
    // A first write at an offset creates a chunk with a zero prefix.
    apply(&s, id(2), 1, w(4, b"z")).await.unwrap();
    assert_eq!(content(&s, id(2)).await, b"\0\0\0\0z");
}

#[tokio::test]
async fn truncate_cuts_and_extends() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"abcdef")).await.unwrap();
    apply(&s, id(0), 2, Update::Truncate { length: 2, chunk_size: CS }).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"ab");
    apply(&s, id(0), 3, Update::Truncate { length: 4, chunk_size: CS }).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"ab\0\0");
    let a = apply(&s, id(0), 4, Update::Truncate { length: 0, chunk_size: CS }).await.unwrap();
    assert!(a.exists && a.meta.length == 0);
    assert!(content(&s, id(0)).await.is_empty());
    let e = apply(&s, id(0), 5, Update::Truncate { length: CS + 1, chunk_size: CS }).await.unwrap_err();
    assert_eq!(e.code, StatusCode::ChunkTooLarge);
}

#[tokio::test]
async fn remove_leaves_a_tombstone_with_its_version() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"abc")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"keep")).await.unwrap();
    let a = apply(&s, id(0), 2, Update::Remove).await.unwrap();
    assert!(!a.exists);
    assert_eq!(s.read(id(0), 0, 10).await.unwrap_err().code, StatusCode::ChunkNotFound);
    assert_eq!(s.query(id(0)).unwrap(), None);
    assert_eq!(s.list().unwrap().iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![id(1)]);
    assert_eq!(s.engine().allocated().len(), 1, "the removed chunk's slot is free");
    assert_eq!(s.used_bytes(), 4);
    // Versions stay monotonic: an old update replayed after the removal is a duplicate.
    let g = s.lock(id(0)).await;
    assert_eq!(s.version(&g).unwrap(), 2);
    assert!(s.apply(&g, 1, 1, w(0, b"old")).await.unwrap().duplicate);
    let a = s.apply(&g, 3, 1, w(0, b"new")).await.unwrap();
    assert!(a.exists && !a.duplicate && a.meta.version == 3);
    drop(g);
    assert_eq!(content(&s, id(0)).await, b"new");
    // Removing a missing chunk is fine (and versioned).
    assert!(!apply(&s, id(9), 1, Update::Remove).await.unwrap().exists);
}

#[tokio::test]
async fn missing_chunk_is_not_found() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    assert_eq!(s.read(id(3), 0, 1).await.unwrap_err().code, StatusCode::ChunkNotFound);
    assert_eq!(s.query(id(3)).unwrap(), None);
    let g = s.lock(id(3)).await;
    assert_eq!(s.version(&g).unwrap(), 0);
}

#[tokio::test]
async fn bad_input_is_rejected_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"good")).await.unwrap();
    let bad_crc = Update::Write { offset: 0, data: Bytes::from_static(b"evil"), payload_crc32c: 1234, chunk_size: CS };
    assert_eq!(apply(&s, id(0), 2, bad_crc).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    let too_far = Update::Write {
        offset: CS - 1,
        data: Bytes::from_static(b"ab"),
        payload_crc32c: crc32c::crc32c(b"ab"),
        chunk_size: CS,
    };
    assert_eq!(apply(&s, id(0), 2, too_far).await.unwrap_err().code, StatusCode::ChunkTooLarge);
    let huge = Update::Write { offset: 0, data: Bytes::new(), payload_crc32c: 0, chunk_size: MAX_CHUNK_SIZE + 1 };
    assert_eq!(apply(&s, id(0), 2, huge).await.unwrap_err().code, StatusCode::InvalidArgument);
    let zero = Update::Write { offset: 0, data: Bytes::new(), payload_crc32c: 0, chunk_size: 0 };
    assert_eq!(apply(&s, id(0), 2, zero).await.unwrap_err().code, StatusCode::InvalidArgument);
    assert_eq!(apply(&s, id(0), 0, w(0, b"x")).await.unwrap_err().code, StatusCode::InvalidArgument);
    let meta = s.query(id(0)).unwrap().unwrap();
    assert_eq!((meta.version, meta.length), (1, 4));
    assert_eq!(content(&s, id(0)).await, b"good");
    assert_eq!(s.query(id(1)).unwrap(), None);
}

#[tokio::test]
async fn duplicate_versions_are_ignored() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"first")).await.unwrap();
    let a = apply(&s, id(0), 1, w(0, b"again")).await.unwrap();
    assert!(a.duplicate);
    assert_eq!(a.meta.version, 1);
    apply(&s, id(0), 3, w(0, b"third")).await.unwrap();
    assert!(apply(&s, id(0), 2, w(0, b"stale")).await.unwrap().duplicate);
    assert_eq!(content(&s, id(0)).await, b"third");
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 3);
}

fn replace(data: &[u8]) -> Update {
    Update::Replace { data: Bytes::copy_from_slice(data), payload_crc32c: crc32c::crc32c(data) }
}

#[tokio::test]
async fn replace_sets_the_whole_chunk_at_exactly_its_version() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    // Over a missing chunk, at a version far ahead: no earlier versions needed.
    let a = apply(&s, id(0), 7, replace(b"whole")).await.unwrap();
    assert!(a.exists && !a.duplicate && a.meta.version == 7 && a.meta.crc32c == crc32c::crc32c(b"whole"));
    assert_eq!(content(&s, id(0)).await, b"whole");
    // Shorter content replaces, not overwrites.
    apply(&s, id(0), 8, replace(b"ab")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"ab");
    assert_eq!(s.used_bytes(), 2);
    // Not newer: a duplicate, nothing changes.
    assert!(apply(&s, id(0), 8, replace(b"other")).await.unwrap().duplicate);
    assert!(apply(&s, id(0), 3, replace(b"older")).await.unwrap().duplicate);
    assert_eq!(content(&s, id(0)).await, b"ab");
    // Over a tombstone.
    apply(&s, id(0), 9, Update::Remove).await.unwrap();
    let a = apply(&s, id(0), 12, replace(b"back")).await.unwrap();
    assert!(a.exists && a.meta.version == 12);
    assert_eq!(content(&s, id(0)).await, b"back");
    // Empty content is a live, empty chunk.
    assert!(apply(&s, id(1), 1, replace(b"")).await.unwrap().exists);
    // A bad payload CRC or an oversized payload changes nothing.
    let bad = Update::Replace { data: Bytes::from_static(b"evil"), payload_crc32c: 1 };
    assert_eq!(apply(&s, id(0), 13, bad).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    let big = vec![0u8; MAX_CHUNK_SIZE as usize + 1];
    assert_eq!(apply(&s, id(0), 13, replace(&big)).await.unwrap_err().code, StatusCode::ChunkTooLarge);
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 12);
}

#[tokio::test]
async fn list_all_and_snapshot_include_tombstones() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"live")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"gone")).await.unwrap();
    apply(&s, id(1), 2, Update::Remove).await.unwrap();
    let all = s.list_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].chunk, all[0].removed, all[0].meta.version), (id(0), false, 1));
    assert_eq!((all[1].chunk, all[1].removed, all[1].meta.version), (id(1), true, 2));
    assert!(all[1].to_proto().removed && !all[0].to_proto().removed);
    assert_eq!(s.list().unwrap().len(), 1);
    let g = s.lock(id(0)).await;
    let (meta, data) = s.snapshot(&g).await.unwrap().unwrap();
    assert_eq!((meta.version, data.as_deref()), (1, Some(&b"live"[..])));
    drop(g);
    let g = s.lock(id(1)).await;
    assert_eq!(s.snapshot(&g).await.unwrap().map(|(m, d)| (m.version, d)), Some((2, None)));
    drop(g);
    let g = s.lock(id(2)).await;
    assert_eq!(s.snapshot(&g).await.unwrap(), None);
}

/// Every way of paging a listing (page sizes, scan bounds, with and without tombstones) yields the
/// unpaged listing, in order, each record once; pending versions come with their records.
#[tokio::test]
async fn paged_listings_equal_the_whole_listing() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    // Live chunks, a run of tombstones (3..=8), a pending update, another file's chunks.
    for i in 0..12 {
        apply(&s, id(i), 1, w(0, &[i as u8; 5])).await.unwrap();
    }
    for i in 3..=8 {
        apply(&s, id(i), 2, Update::Remove).await.unwrap();
    }
    let g = s.lock(id(10)).await;
    s.prepare(&g, 2, 1, w(1, b"x")).await.unwrap();
    drop(g);
    let other = ChunkId::new(InodeId(43), 0);
    apply(&s, other, 1, w(0, b"other")).await.unwrap();

    let all = s.list_all().unwrap();
    assert_eq!(all.len(), 13);
    assert_eq!(all.iter().find(|c| c.chunk == id(10)).unwrap().pending_version, 2);
    for include_removed in [true, false] {
        let want: Vec<_> = all.iter().filter(|c| include_removed || !c.removed).copied().collect();
        for limit in [1, 2, 3, 5, 13, 100] {
            for max_scan in [1, 2, 4, 1000] {
                let (mut got, mut from, mut pages) = (Vec::new(), None, 0);
                loop {
                    let (page, next) = s.list_page(from, None, limit, max_scan, include_removed).unwrap();
                    assert!(page.len() <= limit.min(max_scan));
                    got.extend(page);
                    pages += 1;
                    assert!(pages <= 20, "no progress");
                    match next {
                        None => break,
                        Some(n) => {
                            assert!(from.is_none_or(|f| f < n), "pages advance");
                            from = Some(n);
                        }
                    }
                }
                assert_eq!(got, want, "limit {limit}, max_scan {max_scan}, tombstones {include_removed}");
            }
        }
    }
    // A page that ends exactly at the last record says so (no empty page after it).
    assert_eq!(s.list_page(None, None, 13, 1000, true).unwrap().1, None);
    assert_eq!(s.list_page(None, None, 12, 1000, true).unwrap().1, Some(id(11)));
    // Starting after the last chunk (or past every chunk) lists nothing.
    assert_eq!(s.list_page(Some(other), None, 5, 5, true).unwrap(), (vec![], None));
    // One file's chunks only, in pages.
    let only = |inode: u64, limit| {
        let (mut got, mut from) = (Vec::new(), None);
        loop {
            let (page, next) = s.list_page(from, Some(InodeId(inode)), limit, 1000, true).unwrap();
            got.extend(page.iter().map(|c| c.chunk));
            match next {
                None => return got,
                Some(n) => from = Some(n),
            }
        }
    };
    assert_eq!(only(42, 5), (0..12).map(id).collect::<Vec<_>>());
    // A chunk with only a pending version: in its file's listing (last), not in the whole one.
    let g = s.lock(id(20)).await;
    s.prepare(&g, 1, 1, w(0, b"pending only")).await.unwrap();
    drop(g);
    assert_eq!(only(42, 5), (0..12).chain([20]).map(id).collect::<Vec<_>>());
    let (page, _) = s.list_page(None, Some(InodeId(42)), 100, 1000, false).unwrap();
    let last = page.last().unwrap();
    assert_eq!((last.chunk, last.meta.version, last.pending_version), (id(20), 0, 1));
    assert_eq!(s.list_all().unwrap().len(), 13);
    assert_eq!(only(43, 1), vec![other]);
    assert!(only(41, 3).is_empty() && only(u64::MAX, 3).is_empty());
}

#[tokio::test]
async fn purge_drops_only_a_committed_tombstone_within_its_bound() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"live")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"gone")).await.unwrap();
    apply(&s, id(1), 2, Update::Remove).await.unwrap();
    apply(&s, id(2), 1, Update::Remove).await.unwrap();
    let g = s.lock(id(2)).await;
    s.prepare(&g, 2, 1, w(0, b"pending")).await.unwrap();
    drop(g);
    let purge = |c, at_most| {
        let s = s.clone();
        async move {
            let g = s.lock(c).await;
            s.purge(&g, at_most).await.unwrap()
        }
    };
    // A live chunk, a tombstone above the bound, a tombstone with a pending update: all kept.
    let live = purge(id(0), u64::MAX).await.unwrap();
    assert_eq!((live.meta.version, live.removed), (1, false));
    assert_eq!(purge(id(1), 1).await.unwrap().meta.version, 2);
    let kept = purge(id(2), u64::MAX).await.unwrap();
    assert_eq!((kept.meta.version, kept.removed, kept.pending_version), (1, true, 2));
    // The tombstone within the bound goes, durably; a chunk without records stays without.
    assert_eq!(purge(id(1), 2).await, None);
    assert_eq!(purge(id(1), 2).await, None);
    assert_eq!(purge(id(9), u64::MAX).await, None);
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!((report.live_chunks, report.tombstones), (1, 1), "{report:?}");
    let listed: Vec<_> = s.list_all().unwrap().iter().map(|c| c.chunk).collect();
    assert_eq!(listed, vec![id(0), id(2)]);
    // Written again, the chunk starts over at version 1.
    let a = apply(&s, id(1), 1, w(0, b"new")).await.unwrap();
    assert!(!a.duplicate && a.exists);
    assert_eq!(content(&s, id(1)).await, b"new");
    assert_no_leak(&s);
}

#[tokio::test]
async fn update_barrier_waits_for_permits() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let permit = s.update_permit().await;
    let s2 = s.clone();
    let barrier = tokio::spawn(async move { s2.update_barrier().await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!barrier.is_finished());
    drop(permit);
    barrier.await.unwrap();
}

#[tokio::test]
async fn corrupted_data_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"precious data")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"fine")).await.unwrap();
    // Flip one byte on disk (same length, so only the CRC can tell).
    flip(&s, id(0), 3, 0x40);
    assert_eq!(s.read(id(0), 0, 4).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    // A partial update must not build on damaged data.
    assert_eq!(apply(&s, id(0), 2, w(1, b"x")).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    let bad = s.scrub().await.unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].0, bad[0].1.code), (id(0), StatusCode::ChecksumMismatch));
    // A full overwrite repairs it.
    apply(&s, id(0), 2, w(0, b"replacement!!")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"replacement!!");
    assert!(s.scrub().await.unwrap().is_empty());
}

#[tokio::test]
async fn reopen_keeps_data_and_versions() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for v in 1..=5u64 {
        apply(&s, id(0), v, w((v as u32 - 1) * 2, b"ab")).await.unwrap();
    }
    apply(&s, id(1), 1, w(0, b"x")).await.unwrap();
    apply(&s, id(1), 2, Update::Remove).await.unwrap();
    s.close();
    assert_eq!(s.query(id(0)).unwrap_err().code, StatusCode::Unavailable);
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report, OpenReport { live_chunks: 1, tombstones: 1, ..Default::default() });
    assert_eq!(content(&s, id(0)).await, b"ababababab");
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 5);
    assert_eq!(s.used_bytes(), 10);
    let g = s.lock(id(1)).await;
    assert_eq!(s.version(&g).unwrap(), 2);
}

#[tokio::test]
async fn open_reports_damaged_slots() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"fine")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"lost")).await.unwrap();
    apply(&s, id(2), 1, w(0, b"")).await.unwrap();
    // A record naming a slot in a group that does not exist, as if its data file had been lost.
    let mut rec = s.record(id(1)).unwrap().unwrap();
    rec.slot = Some(Slot { class: 18, group: 77, index: 0 }.encode());
    s.with_db(|db| db.metas.insert(id(1).to_bytes(), rec.encode()).map_err(kv_err)).unwrap();
    // A record naming the slot of another chunk.
    let mut rec = s.record(id(0)).unwrap().unwrap();
    rec.meta.version = 9;
    s.with_db(|db| db.metas.insert(id(3).to_bytes(), rec.encode()).map_err(kv_err)).unwrap();
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report.damaged, vec![id(0), id(1), id(3)]);
    assert_eq!(report.live_chunks, 4);
    // Repairing the chunk that shares a slot does not free the slot the other one still uses.
    apply(&s, id(3), 10, w(0, b"mine")).await.unwrap();
    apply(&s, id(3), 11, w(0, b"MINE")).await.unwrap();
    assert_eq!(content(&s, id(3)).await, b"MINE");
    assert_eq!(content(&s, id(0)).await, b"fine");
    assert_eq!(content(&s, id(2)).await, b"", "an empty chunk has no slot and is fine");
    let e = s.read(id(1), 0, 4).await.unwrap_err();
    assert_eq!(e.code, StatusCode::ChecksumMismatch, "{e:?}");
    // A full overwrite repairs it.
    apply(&s, id(1), 2, w(0, b"back")).await.unwrap();
    assert_eq!(content(&s, id(1)).await, b"back");
}

#[tokio::test]
async fn chunk_lock_serialises_and_cleans_up() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let g = s.lock(id(0)).await;
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        let _g = s2.lock(id(0)).await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    // Another chunk is independent.
    drop(s.lock(id(1)).await);
    drop(g);
    waiter.await.unwrap();
    // A waiter cancelled while queued leaves nothing behind either.
    let g = s.lock(id(2)).await;
    let s3 = s.clone();
    let cancelled = tokio::spawn(async move { drop(s3.lock(id(2)).await) });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    cancelled.abort();
    let _ = cancelled.await;
    drop(g);
    assert!(s.inner.locks.lock().unwrap().is_empty());
}

async fn apply_sync(s: &ChunkStore, c: ChunkId, v: u64, u: Update) -> Result<Applied, Error> {
    let g = s.lock(c).await;
    s.apply_sync(&g, v, 1, u).await
}

#[tokio::test]
async fn sync_updates_force_lower_and_same_versions() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"a")).await.unwrap();
    apply(&s, id(0), 2, w(1, b"b")).await.unwrap();
    apply(&s, id(0), 3, w(2, b"c")).await.unwrap();
    // A lower version: taken exactly (a plain update would be a duplicate).
    assert!(apply(&s, id(0), 2, replace(b"XY")).await.unwrap().duplicate);
    let a = apply_sync(&s, id(0), 2, replace(b"XY")).await.unwrap();
    assert_eq!((a.meta.version, a.meta.length, a.exists, a.duplicate), (2, 2, true, false));
    assert_eq!(content(&s, id(0)).await, b"XY");
    assert_no_leak(&s);
    // The same state again: a no-op duplicate.
    let a = apply_sync(&s, id(0), 2, replace(b"XY")).await.unwrap();
    assert!(a.duplicate && a.meta.version == 2);
    // The same version with other bytes: a new slot, the old one is freed.
    let a = apply_sync(&s, id(0), 2, replace(b"ZZZ")).await.unwrap();
    assert_eq!((a.meta.version, a.meta.length, a.meta.crc32c, a.duplicate), (2, 3, crc32c::crc32c(b"ZZZ"), false));
    assert_eq!(content(&s, id(0)).await, b"ZZZ");
    apply_sync(&s, id(0), 2, replace(b"QQQQ")).await.unwrap();
    assert_eq!(s.engine().allocated().len(), 1);
    assert_eq!(s.used_bytes(), 4);
    // Same length and version but another CRC is a difference too.
    apply_sync(&s, id(0), 2, replace(b"RRRR")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"RRRR");
    // A higher version, as a plain update.
    apply(&s, id(0), 3, w(0, b"S")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"SRRR");
    assert_no_leak(&s);
    // Sync REMOVE: a tombstone at exactly that version, even a lower one; again: duplicate.
    let a = apply_sync(&s, id(0), 2, Update::Remove).await.unwrap();
    assert_eq!((a.meta.version, a.exists, a.duplicate), (2, false, false));
    assert!(apply_sync(&s, id(0), 2, Update::Remove).await.unwrap().duplicate);
    assert_eq!(s.used_bytes(), 0);
    // A tombstone is replaced by a live chunk at a lower version.
    apply_sync(&s, id(0), 1, replace(b"one")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"one");
    // After which plain updates work from there.
    apply(&s, id(0), 2, w(3, b"+")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"one+");
    // Sync updates are REPLACE/REMOVE at a version > 0; bad input changes nothing.
    assert_eq!(apply_sync(&s, id(0), 1, w(0, b"x")).await.unwrap_err().code, StatusCode::InvalidArgument);
    let trunc = Update::Truncate { length: 1, chunk_size: CS };
    assert_eq!(apply_sync(&s, id(0), 1, trunc).await.unwrap_err().code, StatusCode::InvalidArgument);
    assert_eq!(apply_sync(&s, id(0), 0, replace(b"x")).await.unwrap_err().code, StatusCode::InvalidArgument);
    let bad = Update::Replace { data: Bytes::from_static(b"evil"), payload_crc32c: 1 };
    assert_eq!(apply_sync(&s, id(0), 1, bad).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 2);
    assert_eq!(content(&s, id(0)).await, b"one+");
    // A same-version replacement survives a reopen.
    apply_sync(&s, id(1), 5, replace(b"five")).await.unwrap();
    apply_sync(&s, id(1), 5, replace(b"FIVE")).await.unwrap();
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report, OpenReport { live_chunks: 2, tombstones: 0, ..Default::default() });
    assert_eq!(content(&s, id(1)).await, b"FIVE");
    assert_eq!(s.used_bytes(), 8);
    apply_sync(&s, id(1), 5, replace(b"5")).await.unwrap();
    assert_eq!(content(&s, id(1)).await, b"5");
    assert_no_leak(&s);
}

#[tokio::test]
async fn forget_drops_the_record() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 6, replace(b"ahead")).await.unwrap();
    apply(&s, id(1), 4, Update::Remove).await.unwrap();
    for c in [id(0), id(1)] {
        let g = s.lock(c).await;
        let a = s.forget(&g).await.unwrap();
        assert_eq!((a.exists, a.duplicate, a.meta.version), (false, false, 0));
        assert_eq!(s.version(&g).unwrap(), 0);
        assert_eq!(s.snapshot(&g).await.unwrap(), None);
        // Nothing left to forget.
        assert!(s.forget(&g).await.unwrap().duplicate);
    }
    assert!(s.list_all().unwrap().is_empty());
    assert!(s.engine().allocated().is_empty());
    assert_eq!(s.used_bytes(), 0);
    // The chunk starts over at version 1 like on a replica that never had it.
    let a = apply(&s, id(0), 1, w(0, b"new")).await.unwrap();
    assert!(!a.duplicate && a.meta.version == 1);
    assert_eq!(content(&s, id(0)).await, b"new");
}

/// A chunk of 3 full blocks and a short fourth one (1000 bytes), pseudo-random bytes.
fn four_blocks() -> Vec<u8> {
    let data: Vec<u8> = (0..3 * B + 1000).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    assert_eq!(crc_block_size(data.len()), B);
    data
}

/// The block size of chunks this small.
const B: u32 = MIN_CRC_BLOCK_SIZE;

async fn read_range(s: &ChunkStore, c: ChunkId, offset: u32, len: u32) -> Result<Vec<u8>, Error> {
    s.read(c, offset, len).await.map(|(d, _)| d.to_vec())
}

fn raw_record(s: &ChunkStore, c: ChunkId) -> Vec<u8> {
    s.with_db(|db| Ok(db.metas.get(c.to_bytes()).map_err(kv_err)?.expect("record").to_vec())).unwrap()
}

#[tokio::test]
async fn partial_reads_touch_only_their_blocks() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let data = four_blocks();
    let a = apply(&s, id(0), 1, replace(&data)).await.unwrap();
    assert_eq!(a.meta.crc32c, crc32c::crc32c(&data), "whole-chunk CRC combined from the block CRCs");
    let rec = s.record(id(0)).unwrap().unwrap();
    let blocks = rec.blocks.as_ref().expect("new records carry block CRCs");
    assert_eq!((blocks.block_size, blocks.crcs.len()), (B, 4));
    assert_eq!(blocks.crcs[3], crc32c::crc32c(&data[3 * B as usize..]));
    assert_eq!(raw_record(&s, id(0)).len(), 34 + 4 * 4);
    let len = data.len() as u32;
    let cases = [
        (0, B),          // exactly block 0
        (B, B),          // exactly block 1
        (B - 1, 2),      // across the 0/1 boundary
        (100, 2 * B),    // across three blocks
        (3 * B, 1000),   // exactly the short last block
        (3 * B - 5, 10), // into the short last block
        (len - 1, 1),    // the last byte
        (len - 5, 100),  // past EOF: cut at the length
        (len, 10),       // at EOF: empty
        (len + 7, 10),   // beyond EOF: empty
        (0, len),        // the whole chunk
        (5, u32::MAX),   // to the end, with a length that overflows
        (B, 0),          // empty range inside the chunk
    ];
    for (offset, n) in cases {
        let end = offset.saturating_add(n).min(len) as usize;
        let want = &data[(offset as usize).min(end)..end];
        assert_eq!(read_range(&s, id(0), offset, n).await.unwrap(), want, "offset {offset} len {n}");
    }
    // A chunk of exactly two blocks: no short tail, reads at its end are empty.
    apply(&s, id(1), 1, replace(&data[..2 * B as usize])).await.unwrap();
    assert_eq!(s.record(id(1)).unwrap().unwrap().blocks.unwrap().crcs.len(), 2);
    assert_eq!(read_range(&s, id(1), B, B).await.unwrap(), &data[B as usize..2 * B as usize]);
    assert!(read_range(&s, id(1), 2 * B, 1).await.unwrap().is_empty());
    // A partial update keeps the block CRCs right (it reads the old content, verified).
    apply(&s, id(0), 2, w(2 * B - 2, b"XXXX")).await.unwrap();
    let mut updated = data.clone();
    updated[2 * B as usize - 2..2 * B as usize + 2].copy_from_slice(b"XXXX");
    assert_eq!(read_range(&s, id(0), 2 * B - 3, 6).await.unwrap(), &updated[2 * B as usize - 3..2 * B as usize + 3]);
    assert_eq!(content(&s, id(0)).await, updated);
    // Block CRCs survive a reopen; tombstones are format 4 too.
    apply(&s, id(1), 2, Update::Remove).await.unwrap();
    assert_eq!(raw_record(&s, id(1))[0], 4);
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report, OpenReport { live_chunks: 1, tombstones: 1, ..Default::default() });
    assert_eq!(
        read_range(&s, id(0), 3 * B + 10, 20).await.unwrap(),
        &updated[3 * B as usize + 10..3 * B as usize + 30]
    );
    assert!(s.scrub().await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupted_block_is_detected_only_by_reads_touching_it() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let data = four_blocks();
    apply(&s, id(0), 1, replace(&data)).await.unwrap();
    flip(&s, id(0), 3 * B as u64 + 10, 0x01); // in block 3, the short one
    // Block 0 (or everything before block 3) is intact and still served.
    assert_eq!(read_range(&s, id(0), 0, B).await.unwrap(), &data[..B as usize]);
    assert_eq!(read_range(&s, id(0), B, 2 * B).await.unwrap(), &data[B as usize..3 * B as usize]);
    // Any read touching block 3, even one byte of it far from the damage, fails and names the block.
    for (offset, n) in [(3 * B - 1, 2), (3 * B + 500, 1), (3 * B + 10, 1), (0, 3 * B + 1)] {
        let e = s.read(id(0), offset, n).await.unwrap_err();
        assert_eq!(e.code, StatusCode::ChecksumMismatch, "offset {offset} len {n}");
        assert!(e.message.contains("block 3"), "{}", e.message);
    }
    // A full read and a scrub detect it; a partial update must not build on it.
    assert_eq!(s.read(id(0), 0, CS).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    assert_eq!(apply(&s, id(0), 2, w(0, b"x")).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    let bad = s.scrub().await.unwrap();
    assert_eq!((bad.len(), bad[0].1.code), (1, StatusCode::ChecksumMismatch));
    // So does a resync snapshot (full-chunk read).
    let g = s.lock(id(0)).await;
    assert_eq!(s.snapshot(&g).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    drop(g);
}

#[tokio::test]
async fn last_chunk_skips_tombstones_and_other_files() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let inode = id(0).inode;
    assert_eq!(s.last_chunk(inode).unwrap(), None);
    apply(&s, id(0), 1, w(0, b"abc")).await.unwrap();
    apply(&s, id(5), 1, w(0, b"fifth")).await.unwrap();
    apply(&s, id(7), 1, w(0, b"seventh")).await.unwrap();
    // Another file with higher ids does not count.
    let other = ChunkId::new(InodeId(inode.0 + 1), 99);
    apply(&s, other, 1, w(0, b"x")).await.unwrap();
    let (c, m) = s.last_chunk(inode).unwrap().unwrap();
    assert_eq!((c, m.length), (id(7), 7));
    apply(&s, id(7), 2, Update::Remove).await.unwrap();
    let (c, m) = s.last_chunk(inode).unwrap().unwrap();
    assert_eq!((c, m.length), (id(5), 5), "a removed chunk is not the last one");
}

/// The block size is chosen per version: a chunk written big (64 KiB blocks), cut small (4 KiB
/// blocks) and grown again reads right at every step, partial reads included, and the old
/// version's blocks verify the content a partial update starts from.
#[tokio::test]
async fn block_size_changes_between_versions_of_one_chunk() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    let block_size = |s: &ChunkStore| s.record(id(0)).unwrap().unwrap().blocks.unwrap().block_size;
    apply(&s, id(0), 1, replace(&big)).await.unwrap();
    assert_eq!(block_size(&s), MAX_CRC_BLOCK_SIZE);
    assert_eq!(read_range(&s, id(0), 70_000, 5).await.unwrap(), &big[70_000..70_005]);
    // A partial update of the 64 KiB-block version (its old content verified with 64 KiB blocks).
    apply(&s, id(0), 2, w(65_530, b"0123456789")).await.unwrap();
    let mut want = big.clone();
    want[65_530..65_540].copy_from_slice(b"0123456789");
    assert_eq!(block_size(&s), MAX_CRC_BLOCK_SIZE);
    assert_eq!(read_range(&s, id(0), 65_520, 30).await.unwrap(), &want[65_520..65_550]);
    // Cut to 1 MiB: the new version has 4 KiB blocks.
    let cut = Update::Truncate { length: 1 << 20, chunk_size: 64 << 20 };
    apply(&s, id(0), 3, cut).await.unwrap();
    want.truncate(1 << 20);
    assert_eq!(block_size(&s), MIN_CRC_BLOCK_SIZE);
    for (off, n) in [(0u32, 1u32), (4095, 2), (65_530, 10), ((1 << 20) - 3, 100)] {
        let end = (off + n).min(1 << 20) as usize;
        assert_eq!(read_range(&s, id(0), off, n).await.unwrap(), &want[off as usize..end], "offset {off}");
    }
    // Grown back past 1 MiB by a write: 8 KiB blocks, and every byte still right.
    let grow = Update::Write {
        offset: (1 << 20) + 10,
        data: Bytes::from_static(b"tail"),
        payload_crc32c: crc32c::crc32c(b"tail"),
        chunk_size: 64 << 20,
    };
    apply(&s, id(0), 4, grow).await.unwrap();
    want.extend_from_slice(&[0u8; 10]);
    want.extend_from_slice(b"tail");
    assert_eq!(block_size(&s), 8 << 10);
    let got = read_range(&s, id(0), 0, u32::MAX).await.unwrap();
    assert!(got == want, "whole chunk after growing: {} bytes, want {}", got.len(), want.len());
    assert!(s.scrub().await.unwrap().is_empty());
}
