//! Crash-consistency (failpoint), two-phase (pending/commit), concurrent-reader and migration tests of
//! the chunk store on the chunk engine.
use std::sync::atomic::AtomicBool;

use super::tests::{assert_no_leak, id, referenced, w};
use super::*;

const POINTS: [Failpoint; 4] =
    [Failpoint::SlotAllocated, Failpoint::DataWritten, Failpoint::DataSynced, Failpoint::MetaCommitted];

fn open(dir: &Path) -> (ChunkStore, OpenReport) {
    ChunkStore::open(TargetId(7), dir).unwrap()
}

fn replace(data: &[u8]) -> Update {
    Update::Replace { data: Bytes::copy_from_slice(data), payload_crc32c: crc32c::crc32c(data) }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The chunk's committed content (verified), `None` if it does not exist.
async fn content(s: &ChunkStore, c: ChunkId) -> Option<Vec<u8>> {
    let g = s.lock(c).await;
    s.snapshot(&g).await.unwrap_or_else(|e| panic!("reading {c}: {e:?}")).and_then(|(_, d)| d.map(|d| d.to_vec()))
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A partial write (reads the old content).
    Write,
    /// A replacement into another size class.
    GrowReplace,
    /// A removal (no data written).
    Remove,
    /// A sync replacement at the same version.
    SyncSameVersion,
    /// Committing a prepared version (only the free follows the commit).
    CommitPending,
    /// Preparing a pending version over an older pending one (same version: replaced).
    Prepare,
}

#[tokio::test]
async fn a_crash_at_any_failpoint_leaves_the_old_or_the_new_version() {
    let old = pattern(100_000, 1);
    for op in [Op::Write, Op::GrowReplace, Op::Remove, Op::SyncSameVersion, Op::CommitPending, Op::Prepare] {
        for fp in POINTS {
            let d = tempfile::tempdir().unwrap();
            let (s, _) = open(d.path());
            let g = s.lock(id(0)).await;
            s.apply(&g, 1, 1, replace(&old)).await.unwrap();
            drop(g);
            let g1 = s.lock(id(1)).await;
            s.apply(&g1, 1, 1, replace(b"bystander")).await.unwrap();
            drop(g1);
            let mut new = old.clone();
            let g = s.lock(id(0)).await;
            if matches!(op, Op::CommitPending | Op::Prepare) {
                s.prepare(&g, 2, 1, w(10, b"pending")).await.unwrap();
            }
            s.set_failpoint(Some(fp));
            let res = match op {
                Op::Write => s.apply(&g, 2, 1, w(10, b"new bytes")).await,
                Op::GrowReplace => s.apply(&g, 2, 1, replace(&pattern(300_000, 2))).await,
                Op::Remove => s.apply(&g, 2, 1, Update::Remove).await,
                Op::SyncSameVersion => s.apply_sync(&g, 1, 1, replace(b"other")).await,
                Op::CommitPending => s.commit(&g, 2).await,
                Op::Prepare => s.prepare(&g, 2, 1, w(10, b"replaced")).await,
            };
            let new = match op {
                Op::Write => {
                    new[10..19].copy_from_slice(b"new bytes");
                    Some(new)
                }
                Op::GrowReplace => Some(pattern(300_000, 2)),
                Op::Remove => None,
                Op::SyncSameVersion => Some(b"other".to_vec()),
                Op::CommitPending => {
                    new[10..17].copy_from_slice(b"pending");
                    Some(new)
                }
                // The committed version stays; the pending one is checked below.
                Op::Prepare => Some(old.clone()),
            };
            // Removals and commits write no data: only the last failpoint is on their path.
            let reached = !matches!(op, Op::Remove | Op::CommitPending) || fp == Failpoint::MetaCommitted;
            assert_eq!(res.is_err(), reached, "{op:?} at {fp:?}: {res:?}");
            drop(g);
            // "Crash": drop the store without any cleanup (close only releases the database lock; every
            // commit was already durable).
            s.close();
            drop(s);
            let (s, report) = open(d.path());
            assert!(report.damaged.is_empty(), "{op:?} at {fp:?}: {report:?}");
            let committed = !reached || fp == Failpoint::MetaCommitted;
            let want = if committed { new } else { Some(old.clone()) };
            assert!(content(&s, id(0)).await == want, "{op:?} at {fp:?}: wrong version after the crash");
            assert_eq!(content(&s, id(1)).await.as_deref(), Some(&b"bystander"[..]));
            assert!(s.scrub().await.unwrap().is_empty(), "{op:?} at {fp:?}: checksums");
            assert_no_leak(&s);
            // A prepared version whose commit crashed is still pending after the reopen.
            let g = s.lock(id(0)).await;
            let pending = s.pending_version(&g).unwrap();
            let want_pending = matches!(op, Op::CommitPending) && !committed || matches!(op, Op::Prepare);
            assert_eq!(pending.is_some(), want_pending, "{op:?} at {fp:?}");
            if matches!(op, Op::Prepare) {
                // The old pending content before the commit point, the new one after it.
                let (d, _) = s.read_with(id(0), 10, 8, true).await.unwrap();
                let want: &[u8] = if committed { b"replaced" } else { b"pending\0" };
                assert_eq!(&d[..7], &want[..7], "{op:?} at {fp:?}");
            }
            // The store goes on working.
            s.apply(&g, 5, 1, w(0, b"after")).await.unwrap();
            drop(g);
            assert_eq!(&content(&s, id(0)).await.unwrap()[..5], b"after");
            assert_no_leak(&s);
        }
    }
}

/// Opens targets 1 and 2 (directories `a`, `b` under `root`) on the shared engine of disk `root/disk`.
fn open_shared(root: &Path) -> (ChunkStore, ChunkStore) {
    let disk = Disk::open(0, &root.join("disk"), EngineOptions::default()).unwrap();
    let choice = EngineChoice::Shared(disk.clone());
    let a = ChunkStore::begin_open(TargetId(1), &root.join("a"), &choice).unwrap();
    let b = ChunkStore::begin_open(TargetId(2), &root.join("b"), &choice).unwrap();
    disk.engine().seal();
    let ((a, ra), (b, rb)) = (a.finish().unwrap(), b.finish().unwrap());
    assert!(ra.damaged.is_empty() && rb.damaged.is_empty(), "{ra:?} {rb:?}");
    assert!(Arc::ptr_eq(a.engine(), b.engine()));
    (a, b)
}

/// Every allocated slot of the shared engine is referenced by exactly one of the two targets.
fn assert_no_shared_leak(a: &ChunkStore, b: &ChunkStore) {
    let (ra, rb) = (referenced(a), referenced(b));
    assert!(ra.iter().all(|s| !rb.contains(s)), "a slot referenced by both targets");
    let mut both = [ra, rb].concat();
    both.sort();
    assert_eq!(a.engine().allocated(), both, "allocated slots == slots referenced by either target");
}

#[tokio::test]
async fn a_crash_on_a_shared_engine_leaves_the_other_target_intact() {
    let old = pattern(100_000, 1);
    for op in [Op::Write, Op::GrowReplace, Op::Remove, Op::CommitPending, Op::Prepare] {
        for fp in POINTS {
            let d = tempfile::tempdir().unwrap();
            let (a, b) = open_shared(d.path());
            for (i, s) in [&a, &b].into_iter().enumerate() {
                let g = s.lock(id(0)).await;
                s.apply(&g, 1, 1, replace(&pattern(100_000, i as u8 + 1))).await.unwrap();
            }
            let g = a.lock(id(0)).await;
            if matches!(op, Op::CommitPending | Op::Prepare) {
                a.prepare(&g, 2, 1, w(10, b"pending")).await.unwrap();
            }
            a.set_failpoint(Some(fp));
            let res = match op {
                Op::Write => a.apply(&g, 2, 1, w(10, b"new bytes")).await,
                Op::GrowReplace => a.apply(&g, 2, 1, replace(&pattern(300_000, 2))).await,
                Op::Remove => a.apply(&g, 2, 1, Update::Remove).await,
                Op::CommitPending => a.commit(&g, 2).await,
                Op::Prepare => a.prepare(&g, 2, 1, w(10, b"replaced")).await,
                Op::SyncSameVersion => unreachable!("not in this test"),
            };
            let reached = !matches!(op, Op::Remove | Op::CommitPending) || fp == Failpoint::MetaCommitted;
            assert_eq!(res.is_err(), reached, "{op:?} at {fp:?}: {res:?}");
            drop(g);
            // The other target writes meanwhile (its slots must not collide with the crashed update's).
            let gb = b.lock(id(1)).await;
            b.apply(&gb, 1, 1, replace(b"b's second chunk")).await.unwrap();
            drop(gb);
            a.close();
            b.close();
            drop((a, b));
            let (a, b) = open_shared(d.path());
            let committed = !reached || fp == Failpoint::MetaCommitted;
            let a0 = content(&a, id(0)).await;
            let mut new = old.clone();
            let want = match op {
                _ if !committed => Some(old.clone()),
                Op::Write => {
                    new[10..19].copy_from_slice(b"new bytes");
                    Some(new)
                }
                Op::GrowReplace => Some(pattern(300_000, 2)),
                Op::Remove => None,
                Op::CommitPending => {
                    new[10..17].copy_from_slice(b"pending");
                    Some(new)
                }
                Op::Prepare | Op::SyncSameVersion => Some(old.clone()),
            };
            assert!(a0 == want, "{op:?} at {fp:?}: wrong version after the crash");
            assert_eq!(content(&b, id(0)).await, Some(pattern(100_000, 2)), "{op:?} at {fp:?}");
            assert_eq!(content(&b, id(1)).await.as_deref(), Some(&b"b's second chunk"[..]));
            assert_no_shared_leak(&a, &b);
            // Both go on working, taking slots the crash left free, without touching each other's.
            for v in 5..15u64 {
                for (s, seed) in [(&a, 10u8), (&b, 20u8)] {
                    let g = s.lock(id(2)).await;
                    s.apply(&g, v, 1, replace(&pattern(70_000, seed + v as u8))).await.unwrap();
                }
            }
            assert_eq!(content(&a, id(2)).await, Some(pattern(70_000, 24)));
            assert_eq!(content(&b, id(2)).await, Some(pattern(70_000, 34)));
            assert_eq!(content(&b, id(0)).await, Some(pattern(100_000, 2)));
            assert!(a.scrub().await.unwrap().is_empty() && b.scrub().await.unwrap().is_empty());
            assert_no_shared_leak(&a, &b);
        }
    }
}

#[tokio::test]
async fn pending_versions_commit_and_block_normal_reads() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = open(d.path());
    let g = s.lock(id(0)).await;
    s.apply(&g, 1, 1, w(0, b"committed")).await.unwrap();
    let a = s.prepare(&g, 2, 1, w(0, b"PENDING")).await.unwrap();
    assert_eq!((a.meta.version, a.duplicate), (2, false));
    // Normal reads refuse, relaxed reads see the pending version, metadata shows the committed one.
    assert_eq!(s.read(id(0), 0, 100).await.unwrap_err().code, StatusCode::ChunkNotCommitted);
    assert_eq!(&s.read_with(id(0), 0, 100, true).await.unwrap().0[..], b"PENDINGed");
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 1);
    assert_eq!((s.version(&g).unwrap(), s.pending_version(&g).unwrap()), (1, Some(2)));
    assert_eq!(s.list_all().unwrap()[0].pending_version, 2);
    assert_eq!(s.list_all().unwrap()[0].to_proto().pending_version, 2);
    assert_eq!(s.snapshot(&g).await.unwrap().unwrap().1.unwrap(), &b"committed"[..]);
    assert_eq!(s.snapshot_latest(&g).await.unwrap().unwrap().1.unwrap(), &b"PENDINGed"[..]);
    // A duplicate changes nothing; the same version again replaces the pending content (the
    // predecessor is authoritative).
    assert!(s.prepare(&g, 1, 1, w(0, b"x")).await.unwrap().duplicate);
    s.prepare(&g, 2, 1, w(0, b"Again")).await.unwrap();
    assert_eq!(&s.read_with(id(0), 0, 100, true).await.unwrap().0[..], b"Againtted");
    assert_eq!(s.engine().allocated().len(), 2, "committed + pending");
    assert_no_leak(&s);
    // Commit: the pending version becomes the committed one.
    let a = s.commit(&g, 2).await.unwrap();
    assert_eq!((a.meta.version, a.duplicate), (2, false));
    assert_eq!(&s.read(id(0), 0, 100).await.unwrap().0[..], b"Againtted");
    assert_eq!(s.used_bytes(), 9);
    assert!(s.commit(&g, 2).await.unwrap().duplicate);
    assert_eq!(s.commit(&g, 3).await.unwrap_err().code, StatusCode::ChunkNotCommitted);
    assert_eq!(s.engine().allocated().len(), 1);
    // A newer update over a pending version: that one is committed first, the update builds on it.
    s.prepare(&g, 3, 1, w(0, b"3")).await.unwrap();
    s.prepare(&g, 4, 1, w(1, b"4")).await.unwrap();
    assert_eq!((s.version(&g).unwrap(), s.pending_version(&g).unwrap()), (3, Some(4)));
    assert_eq!(&s.read_with(id(0), 0, 2, true).await.unwrap().0[..], b"34");
    // The tail's one-step apply over a pending version at the same version replaces it.
    s.apply(&g, 4, 1, w(1, b"T")).await.unwrap();
    assert_eq!(s.pending_version(&g).unwrap(), None);
    assert_eq!(&s.read(id(0), 0, 3).await.unwrap().0[..], b"3Ta");
    // A pending removal; it survives a reopen.
    s.prepare(&g, 5, 1, Update::Remove).await.unwrap();
    assert_eq!(s.read_with(id(0), 0, 1, true).await.unwrap_err().code, StatusCode::ChunkNotFound);
    drop(g);
    s.close();
    let (s, report) = open(d.path());
    assert_eq!((report.live_chunks, report.pending), (1, 1));
    assert_no_leak(&s);
    let g = s.lock(id(0)).await;
    // A sync update drops the pending version.
    s.apply_sync(&g, 4, 1, replace(b"synced")).await.unwrap();
    assert_eq!(s.pending_version(&g).unwrap(), None);
    assert_eq!(&s.read(id(0), 0, 100).await.unwrap().0[..], b"synced");
    assert_no_leak(&s);
    // And so does forget.
    s.prepare(&g, 5, 1, w(0, b"p")).await.unwrap();
    s.forget(&g).await.unwrap();
    assert!(s.engine().allocated().is_empty() && s.list_all().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_reused_slot() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = open(d.path());
    const LEN: usize = 200_000;
    let g = s.lock(id(0)).await;
    s.apply(&g, 1, 1, replace(&[1u8; LEN])).await.unwrap();
    drop(g);
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (s, done) = (s.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let (d, m) = s.read(id(0), 0, LEN as u32).await.unwrap();
                // Every byte of one version, never a mix with another chunk's or version's bytes.
                assert!(d.iter().all(|b| *b == m.version as u8), "version {} mixed", m.version);
                n += 1;
            }
            n
        }));
    }
    for v in 2..=40u64 {
        let g = s.lock(id(0)).await;
        s.apply(&g, v, 1, replace(&[v as u8; LEN])).await.unwrap();
        drop(g);
        // Another chunk takes the freed slots, so a reader of a stale slot would see its bytes.
        let g = s.lock(id(1)).await;
        s.apply(&g, v, 1, replace(&[0xEE; LEN])).await.unwrap();
        drop(g);
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_no_leak(&s);
}

/// One chunk of a file-per-chunk target: id, version, file generation, the content its record
/// describes (`None`: a tombstone), the content of its file (`None`: no file).
type OldChunk<'a> = (ChunkId, u64, u32, Option<&'a [u8]>, Option<&'a [u8]>);

/// Writes a file-per-chunk (format 1) target directory: chunk files and format 1/2 records.
fn write_old_layout(dir: &Path, chunks: &[OldChunk<'_>]) {
    let db = fjall::Database::builder(dir.join(META_DIR)).worker_threads(1).open().unwrap();
    let metas = db.keyspace(KEYSPACE, fjall::KeyspaceCreateOptions::default).unwrap();
    for &(chunk, version, file_gen, described, data) in chunks {
        let bytes = described.unwrap_or(b"");
        let meta = ChunkMeta { version, length: bytes.len() as u32, crc32c: crc32c::crc32c(bytes), chain_version: 1 };
        let removed = described.is_none();
        metas.insert(chunk.to_bytes(), Record { meta, removed, file_gen, slot: None, blocks: None }.encode()).unwrap();
        if let Some(d) = data {
            let id = chunk.to_bytes();
            let fan = dir.join("chunks").join(format!("{:02x}", crc32c::crc32c(&id) as u8));
            std::fs::create_dir_all(&fan).unwrap();
            let name = match file_gen {
                0 => format!("{}.{version:016x}", hex::encode(id)),
                g => format!("{}.{version:016x}.{g:08x}", hex::encode(id)),
            };
            std::fs::write(fan.join(name), d).unwrap();
        }
    }
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test]
async fn file_per_chunk_targets_migrate_into_the_engine() {
    let d = tempfile::tempdir().unwrap();
    let big = pattern(3 * MIN_CRC_BLOCK_SIZE as usize + 5, 9);
    // Chunk 4's file is lost, chunk 5's does not match its record.
    write_old_layout(
        d.path(),
        &[
            (id(0), 3, 0, Some(&big), Some(&big)),
            (id(1), 5, 2, Some(b"generation two"), Some(b"generation two")),
            (id(2), 4, 0, None, None),
            (id(3), 1, 0, Some(b""), Some(b"")),
            (id(4), 1, 0, Some(b"lost"), None),
            (id(5), 2, 0, Some(b"right"), Some(b"wrong")),
        ],
    );
    let fan5 = d.path().join("chunks").join(format!("{:02x}", crc32c::crc32c(&id(5).to_bytes()) as u8));
    let (s, report) = open(d.path());
    assert_eq!((report.migrated, report.live_chunks, report.tombstones), (2, 5, 1), "{report:?}");
    assert_eq!(report.damaged, vec![id(4), id(5)]);
    assert!(!d.path().join("chunks").exists(), "the old files are deleted after the import");
    assert_eq!(std::fs::read_to_string(d.path().join("FORMAT")).unwrap(), "t3fs-target 2\n");
    assert_eq!(content(&s, id(0)).await.unwrap(), big);
    assert_eq!(s.query(id(0)).unwrap().unwrap().version, 3);
    assert_eq!(content(&s, id(1)).await.unwrap(), b"generation two");
    assert_eq!(content(&s, id(2)).await, None);
    assert_eq!(s.list_all().unwrap()[2].meta.version, 4, "tombstones keep their versions");
    assert_eq!(content(&s, id(3)).await.unwrap(), b"");
    for c in [id(4), id(5)] {
        assert_eq!(s.read(c, 0, 1).await.unwrap_err().code, StatusCode::ChecksumMismatch);
    }
    // Partial reads use the block CRCs computed by the import.
    let b = crc_block_size(big.len()) as usize;
    assert_eq!(&s.read(id(0), b as u32 - 1, 2).await.unwrap().0[..], &big[b - 1..b + 1]);
    assert_no_leak(&s);
    s.close();
    // A crash after the imports' commits but before FORMAT was written and the files deleted: the next
    // open finds every chunk already imported and finishes.
    std::fs::remove_file(d.path().join("FORMAT")).unwrap();
    std::fs::create_dir_all(&fan5).unwrap();
    std::fs::write(fan5.join("stale"), b"x").unwrap();
    let (s, report) = open(d.path());
    assert_eq!((report.migrated, report.damaged.len()), (0, 2));
    assert!(!d.path().join("chunks").exists() && d.path().join("FORMAT").exists());
    assert_eq!(content(&s, id(0)).await.unwrap(), big);
    assert_no_leak(&s);
    s.close();
    // A crash while deleting the old files (FORMAT already written): deleted by the next open.
    std::fs::create_dir_all(&fan5).unwrap();
    let (s, _) = open(d.path());
    assert!(!d.path().join("chunks").exists());
    s.close();
}

#[test]
fn unknown_formats_are_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("FORMAT"), "t3fs-target 9\n").unwrap();
    let e = ChunkStore::open(TargetId(7), d.path()).err().expect("refused");
    assert_eq!(e.code, StatusCode::Unsupported);
    assert!(e.message.contains("format 9") && e.message.contains("formats 2 and 3"), "{}", e.message);
    std::fs::write(d.path().join("FORMAT"), "something else").unwrap();
    let e = ChunkStore::open(TargetId(7), d.path()).err().expect("refused");
    assert!(e.message.contains("not a t3fs target format file"), "{}", e.message);
    assert!(!d.path().join(META_DIR).exists(), "a refused directory is left alone");
    // A new directory is format 2 from the start.
    let d = tempfile::tempdir().unwrap();
    let (s, _) = open(d.path());
    assert_eq!(std::fs::read_to_string(d.path().join("FORMAT")).unwrap(), "t3fs-target 2\n");
    s.close();
}
