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
    // Format 1 (every record with file_gen 0, i.e. all records written before file generations existed).
    let meta = ChunkMeta { version: 0x0102, length: 3, crc32c: 0xAABBCCDD, chain_version: 9 };
    let r = Record { meta, removed: true, file_gen: 0 };
    let b = r.encode();
    assert_eq!(hex::encode(&b), "0101020100000000000003000000ddccbbaa09000000");
    assert_eq!(Record::decode(&b).unwrap(), r);
    // The old encoding as stored on disk still decodes (file_gen 0).
    let old = hex::decode("0100020100000000000003000000ddccbbaa09000000").unwrap();
    assert_eq!(Record::decode(&old).unwrap(), Record { removed: false, ..r });
    assert!(Record::decode(&b[..21]).is_err());
    let mut bad = b.clone();
    bad[0] = 2;
    assert!(Record::decode(&bad).is_err(), "format 2 needs 26 bytes");
    bad[0] = 3;
    assert!(Record::decode(&bad).is_err());
    let mut bad_flags = b.clone();
    bad_flags[1] = 2;
    assert!(Record::decode(&bad_flags).is_err());
    // Format 2: a file generation after the format 1 fields.
    let r2 = Record { meta, removed: false, file_gen: 0x01020304 };
    let b2 = r2.encode();
    assert_eq!(hex::encode(&b2), "0200020100000000000003000000ddccbbaa0900000004030201");
    assert_eq!(Record::decode(&b2).unwrap(), r2);
    assert!(Record::decode(&b2[..25]).is_err());
    let mut b2_as_v1 = b2.clone();
    b2_as_v1[0] = 1;
    assert!(Record::decode(&b2_as_v1).is_err(), "format 1 is exactly 22 bytes");
}

#[test]
fn file_names_parse() {
    let c = id(5);
    let hexid = hex::encode(c.to_bytes());
    assert_eq!(parse_file_name(&format!("{hexid}.000000000000000a")), Some((c, 10, 0)));
    assert_eq!(parse_file_name(&format!("{hexid}.000000000000000a.0000000b")), Some((c, 10, 11)));
    // Generation 0 is never written with a suffix; anything else malformed is not ours.
    for bad in [
        format!("{hexid}.000000000000000a.00000000"),
        format!("{hexid}.000000000000000a.b"),
        format!("{hexid}.000000000000000a.0000000b.x"),
        format!("{hexid}.a"),
        hexid.clone(),
        "notes.txt".to_string(),
    ] {
        assert_eq!(parse_file_name(&bad), None, "{bad}");
    }
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
    assert!(!s.file_path(id(0), 3).exists() && s.file_path(id(0), 2).exists());
    // The same state again: a no-op duplicate.
    let a = apply_sync(&s, id(0), 2, replace(b"XY")).await.unwrap();
    assert!(a.duplicate && a.meta.version == 2);
    // The same version with other bytes: a new file generation, the old file goes.
    let a = apply_sync(&s, id(0), 2, replace(b"ZZZ")).await.unwrap();
    assert_eq!((a.meta.version, a.meta.length, a.meta.crc32c, a.duplicate), (2, 3, crc32c::crc32c(b"ZZZ"), false));
    assert_eq!(content(&s, id(0)).await, b"ZZZ");
    assert!(!s.file_path(id(0), 2).exists() && s.file_path_gen(id(0), 2, 1).exists());
    apply_sync(&s, id(0), 2, replace(b"QQQQ")).await.unwrap();
    assert!(!s.file_path_gen(id(0), 2, 1).exists() && s.file_path_gen(id(0), 2, 2).exists());
    assert_eq!(s.used_bytes(), 4);
    // Same length and version but another CRC is a difference too.
    apply_sync(&s, id(0), 2, replace(b"RRRR")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"RRRR");
    // A higher version over a same-version generation, as a plain update: back to generation 0.
    apply(&s, id(0), 3, w(0, b"S")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"SRRR");
    assert!(s.file_path(id(0), 3).exists() && !s.file_path_gen(id(0), 2, 3).exists());
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
    // A generation survives a reopen and is not taken for an orphan.
    apply_sync(&s, id(1), 5, replace(b"five")).await.unwrap();
    apply_sync(&s, id(1), 5, replace(b"FIVE")).await.unwrap();
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report, OpenReport { live_chunks: 2, tombstones: 0, orphans_removed: 0, damaged: vec![] });
    assert_eq!(content(&s, id(1)).await, b"FIVE");
    assert_eq!(s.used_bytes(), 8);
    apply_sync(&s, id(1), 5, replace(b"5")).await.unwrap();
    assert!(s.file_path_gen(id(1), 5, 2).exists() && !s.file_path_gen(id(1), 5, 1).exists());
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
    assert!(!s.file_path(id(0), 6).exists());
    assert_eq!(s.used_bytes(), 0);
    // The chunk starts over at version 1 like on a replica that never had it.
    let a = apply(&s, id(0), 1, w(0, b"new")).await.unwrap();
    assert!(!a.duplicate && a.meta.version == 1);
    assert_eq!(content(&s, id(0)).await, b"new");
}

#[tokio::test]
async fn same_version_replace_is_crash_safe() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    apply(&s, id(0), 2, replace(b"old")).await.unwrap();
    apply(&s, id(1), 7, replace(b"old one")).await.unwrap();
    apply(&s, id(2), 7, replace(b"old two")).await.unwrap();
    // Crash after writing the new generation's file, before the metadata commit: old state.
    let uncommitted = s.file_path_gen(id(0), 2, 1);
    fs::write(&uncommitted, b"new!").unwrap();
    // Crash after the commit of a same-version replacement, before the old file was deleted: new state.
    apply_sync(&s, id(1), 7, replace(b"new one")).await.unwrap();
    let stale = s.file_path(id(1), 7);
    fs::write(&stale, b"old one").unwrap();
    // The same for a forced lower version.
    apply_sync(&s, id(2), 3, replace(b"new two")).await.unwrap();
    let stale_higher = s.file_path(id(2), 7);
    fs::write(&stale_higher, b"old two").unwrap();
    s.close();
    let (s, report) = ChunkStore::open(TargetId(7), d.path()).unwrap();
    assert_eq!(report, OpenReport { live_chunks: 3, tombstones: 0, orphans_removed: 3, damaged: vec![] });
    assert!(!uncommitted.exists() && !stale.exists() && !stale_higher.exists());
    assert_eq!(content(&s, id(0)).await, b"old");
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 2);
    assert_eq!(content(&s, id(1)).await, b"new one");
    assert!(s.file_path_gen(id(1), 7, 1).exists());
    assert_eq!(content(&s, id(2)).await, b"new two");
    assert_eq!(s.query(id(2)).unwrap().unwrap().version, 3);
    // The orphan name was free again: a later same-version replacement reuses generation 1 safely.
    apply_sync(&s, id(0), 2, replace(b"newer")).await.unwrap();
    assert_eq!(content(&s, id(0)).await, b"newer");
    assert!(s.scrub().await.unwrap().is_empty());
}
