//! Unit tests of the chunk store: update semantics, integrity checks, crash leftovers, reopen.
use super::*;
use t3fs_common::InodeId;

const CS: u32 = 1 << 20;

fn w(offset: u32, data: &[u8]) -> Update {
    Update::Write { offset, data: Bytes::copy_from_slice(data), payload_crc32c: crc32c::crc32c(data), chunk_size: CS }
}

fn id(i: u32) -> ChunkId {
    ChunkId::new(InodeId(42), i)
}

fn open(dir: &Path) -> ChunkStore {
    ChunkStore::open(TargetId(7), dir).unwrap().0
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
    // The old version's file is gone, the new one exists.
    assert!(!s.file_path(id(0), 1).exists());
    assert!(s.file_path(id(0), 2).exists());
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
    assert!(!s.file_path(id(0), 1).exists());
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

#[tokio::test]
async fn corrupted_data_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"precious data")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"fine")).await.unwrap();
    // Flip one byte on disk (same length, so only the CRC can tell).
    let p = s.file_path(id(0), 1);
    let mut bytes = fs::read(&p).unwrap();
    bytes[3] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
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
    assert_eq!(report, OpenReport { live_chunks: 1, tombstones: 1, orphans_removed: 0, damaged: vec![] });
    assert_eq!(content(&s, id(0)).await, b"ababababab");
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 5);
    assert_eq!(s.used_bytes(), 10);
    let g = s.lock(id(1)).await;
    assert_eq!(s.version(&g).unwrap(), 2);
}

#[tokio::test]
async fn open_cleans_crash_leftovers_and_reports_damage() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 1, w(0, b"old")).await.unwrap();
    apply(&s, id(1), 1, w(0, b"lost")).await.unwrap();
    // Crash before the metadata commit of version 2: its file exists but nothing references it.
    let uncommitted = s.file_path(id(0), 2);
    fs::write(&uncommitted, b"new!").unwrap();
    // Crash after a commit but before the old file was deleted.
    let stale = s.file_path(id(1), 0);
    fs::write(&stale, b"older").unwrap();
    // A live chunk whose file vanished.
    fs::remove_file(s.file_path(id(1), 1)).unwrap();
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report.orphans_removed, 2);
    assert_eq!(report.damaged, vec![id(1)]);
    assert!(!uncommitted.exists() && !stale.exists());
    assert_eq!(content(&s, id(0)).await, b"old");
    assert_eq!(s.read(id(1), 0, 4).await.unwrap_err().code, StatusCode::ChecksumMismatch);
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

#[test]
fn record_encoding_is_stable() {
    let r =
        Record { meta: ChunkMeta { version: 0x0102, length: 3, crc32c: 0xAABBCCDD, chain_version: 9 }, removed: true };
    let b = r.encode();
    assert_eq!(hex::encode(b), "0101020100000000000003000000ddccbbaa09000000");
    assert_eq!(Record::decode(&b).unwrap(), r);
    assert!(Record::decode(&b[..21]).is_err());
    let mut bad = b;
    bad[0] = 2;
    assert!(Record::decode(&bad).is_err());
}
