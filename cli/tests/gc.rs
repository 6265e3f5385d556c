//! Meta's GC of unlinked files on a real in-process cluster (mgmtd, meta, three storage servers;
//! the local cluster's GC delay is `LOCAL_GC_DELAY_MS`): the chunks of an unlinked file disappear
//! from every replica after the delay and then the inode goes; a file another client still has
//! open for write is kept (and keeps taking writes) until that client closes it. Also where the
//! chunks of a shrinking truncate go: the work follows the data there too.
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_cli::local::plan::LOCAL_GC_DELAY_MS;
use t3fs_client::{Client, UserInfo};
use t3fs_common::{ChunkId, InodeId, StatusCode, TargetId};

const CHUNK: usize = 1 << 20;

/// Live chunk replicas of `inode` over every target.
async fn replicas(c: &Client, inode: u64) -> usize {
    let mut n = 0;
    for t in &c.routing().info.targets {
        for m in c.list_chunks(TargetId(t.target_id)).await.unwrap() {
            if !m.removed && ChunkId::from_bytes(&m.chunk_id).unwrap().inode == InodeId(inode) {
                n += 1;
            }
        }
    }
    n
}

/// Every record of `inode` (live chunks and tombstones) over every target.
async fn records(c: &Client, inode: u64) -> usize {
    let mut n = 0;
    for t in &c.routing().info.targets {
        for m in c.list_target_chunks(TargetId(t.target_id), true).await.unwrap() {
            n += usize::from(ChunkId::from_bytes(&m.chunk_id).unwrap().inode == InodeId(inode));
        }
    }
    n
}

async fn wait_inode_gone(c: &Client, inode: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.getattr(&UserInfo::root(), InodeId(inode)).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the inode outlived its chunks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.getattr(&UserInfo::root(), InodeId(inode)).await.unwrap_err().code, StatusCode::NotFound);
}

async fn wait_replicas(c: &Client, inode: u64, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = replicas(c, inode).await;
        if n == want || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlinked_files_are_collected_unless_open_for_write() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let a = cluster.client().await.unwrap();
    let b = cluster.client().await.unwrap();
    let root = UserInfo::root();
    let data = vec![5u8; 2 * CHUNK + 100];

    // A closed file: unlinked, its 3 chunks x 3 replicas go after the delay, then the inode.
    let f = a.create(&root, InodeId::ROOT, b"plain", 0o644, true).await.unwrap();
    a.write(&f, 0, &data).await.unwrap();
    a.close(&root, InodeId(f.id), data.len() as u64, true).await.unwrap();
    assert_eq!(replicas(&a, f.id).await, 9);
    let gone = b.remove(&root, InodeId::ROOT, b"plain", false).await.unwrap();
    assert_eq!(gone.nlink, 0);
    assert_eq!(wait_replicas(&a, f.id, 0).await, 0, "chunks of an unlinked file are collected");
    wait_inode_gone(&a, f.id).await;
    // Their tombstones went too (purged before the inode was deleted).
    assert_eq!(records(&a, f.id).await, 0, "no tombstones left");

    // A sparse file: one chunk written at index 5. GC removes indexes 0..=5 (a REMOVE of a hole
    // leaves a tombstone) and purges all of them: nothing of the file is left on any target.
    let s = a.create(&root, InodeId::ROOT, b"sparse", 0o644, true).await.unwrap();
    a.write(&s, 5 * CHUNK as u64, b"tail").await.unwrap();
    a.close(&root, InodeId(s.id), 5 * CHUNK as u64 + 4, true).await.unwrap();
    assert_eq!(records(&a, s.id).await, 3);
    b.remove(&root, InodeId::ROOT, b"sparse", false).await.unwrap();
    wait_inode_gone(&a, s.id).await;
    assert_eq!(records(&a, s.id).await, 0, "no tombstones of the holes either");

    // A sparse file of 1 PiB holding two chunks: GC's work follows the data (two removals), not the
    // length (a billion removals, which would hold up every other file's collection for days).
    let huge = a.create(&root, InodeId::ROOT, b"huge", 0o644, true).await.unwrap();
    a.write(&huge, 0, b"head").await.unwrap();
    a.write(&huge, 7 * CHUNK as u64, b"tail").await.unwrap();
    a.close(&root, InodeId(huge.id), 7 * CHUNK as u64 + 4, true).await.unwrap();
    assert_eq!(a.truncate(&root, InodeId(huge.id), 1 << 50).await.unwrap().length, 1 << 50);
    assert_eq!(records(&a, huge.id).await, 6);
    b.remove(&root, InodeId::ROOT, b"huge", false).await.unwrap();
    wait_inode_gone(&a, huge.id).await;
    assert_eq!(records(&a, huge.id).await, 0);

    // Truncated from 8 chunks to 1, then unlinked: the 7 cut chunks are tombstones already, so GC
    // sends one removal (not 8) and purges all 8 records.
    let cut = a.create(&root, InodeId::ROOT, b"cut", 0o644, true).await.unwrap();
    a.write(&cut, 0, &vec![3u8; 8 * CHUNK]).await.unwrap();
    a.close(&root, InodeId(cut.id), 8 * CHUNK as u64, true).await.unwrap();
    a.truncate(&root, InodeId(cut.id), 100).await.unwrap();
    assert_eq!(records(&a, cut.id).await, 24, "one live chunk and seven tombstones on each of 3 replicas");
    let meta = cluster.meta().unwrap().metrics().clone();
    let removals = meta.gc_chunk_removals_count();
    b.remove(&root, InodeId::ROOT, b"cut", false).await.unwrap();
    wait_inode_gone(&a, cut.id).await;
    assert_eq!(records(&a, cut.id).await, 0, "tombstones purged");
    assert_eq!(meta.gc_chunk_removals_count() - removals, 1, "tombstones are not removed again");

    // Open for write by A, unlinked by B: kept while A writes, collected after A closes.
    let (w, session) = a.create_for_write(&root, InodeId::ROOT, b"written", 0o644, true).await.unwrap();
    assert_ne!(session, 0);
    a.write(&w, 0, &data[..CHUNK]).await.unwrap();
    b.remove(&root, InodeId::ROOT, b"written", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3 * LOCAL_GC_DELAY_MS)).await;
    a.write(&w, CHUNK as u64, &data[CHUNK..]).await.unwrap();
    assert_eq!(replicas(&a, w.id).await, 9, "a file open for write is not collected");
    let closed = a.close_session(&root, InodeId(w.id), session, data.len() as u64, true).await.unwrap();
    assert_eq!((closed.nlink, closed.length), (0, data.len() as u64));
    assert_eq!(wait_replicas(&a, w.id, 0).await, 0, "collected once closed");

    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_lengths_come_from_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let c = cluster.client().await.unwrap();
    let root = UserInfo::root();
    let data = vec![9u8; 2 * CHUNK + 333];

    // Close with no hint at all: meta asks storage where the data ends.
    let f = c.create(&root, InodeId::ROOT, b"lazy", 0o644, true).await.unwrap();
    c.write(&f, 0, &data).await.unwrap();
    let closed = c.close(&root, InodeId(f.id), 0, true).await.unwrap();
    assert_eq!(closed.length, data.len() as u64, "the exact length, not the hint");
    // A truncate, then a close with a hint larger than the data: the exact end wins again.
    let t = c.truncate(&root, InodeId(f.id), 100).await.unwrap();
    assert_eq!((t.length, t.truncate_version), (100, 1));
    let closed = c.close(&root, InodeId(f.id), data.len() as u64, true).await.unwrap();
    assert_eq!(closed.length, 100, "a stale hint does not undo the truncate");

    // A writer that never reported its length (it crashed): GC still finds every chunk.
    let g = c.create(&root, InodeId::ROOT, b"crashed", 0o644, true).await.unwrap();
    c.write(&g, 0, &data).await.unwrap();
    assert_eq!(c.getattr(&root, InodeId(g.id)).await.unwrap().length, 0);
    assert_eq!(replicas(&c, g.id).await, 9);
    c.remove(&root, InodeId::ROOT, b"crashed", false).await.unwrap();
    assert_eq!(wait_replicas(&c, g.id, 0).await, 0, "chunks past the length meta knew are collected too");

    c.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shrinking_a_sparse_file_removes_the_chunks_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let c = cluster.client().await.unwrap();
    let root = UserInfo::root();
    let at = |index: u64| index * CHUNK as u64;
    let in_time = Duration::from_secs(60);

    // About 1 TB long, holding three chunks. By index the cut would be a million removals.
    let f = c.create(&root, InodeId::ROOT, b"sparse", 0o644, true).await.unwrap();
    c.write(&f, 0, b"head").await.unwrap();
    c.write(&f, at(3), b"mid").await.unwrap();
    c.write(&f, at(1_000_000), b"far").await.unwrap();
    c.close(&root, InodeId(f.id), at(1_000_000) + 3, true).await.unwrap();
    assert_eq!(replicas(&c, f.id).await, 9);
    let cut = tokio::time::timeout(in_time, c.truncate(&root, InodeId(f.id), at(1) + 10)).await;
    let cut = cut.expect("the cut follows the data").unwrap();
    assert_eq!(cut.length, at(1) + 10);
    // Chunk 0 and the chunk holding the new end (a cut of a hole makes it, so storage knows the end).
    assert_eq!(replicas(&c, f.id).await, 6, "chunks 3 and 1,000,000 are gone");
    let back = c.read(&cut, 0, CHUNK as u32 + 10).await.unwrap();
    assert_eq!(back.len(), CHUNK + 10);
    assert_eq!(&back[..4], b"head");
    assert!(back[4..].iter().all(|&b| b == 0), "the cut chunks read as a hole");

    // Data past the length meta knows (a writer that has not reported it) is cut too: else the next
    // close, which takes the exact end from storage, would grow the file back over it.
    assert_eq!(c.truncate(&root, InodeId(f.id), at(100)).await.unwrap().length, at(100));
    c.write(&f, at(2_000_000), b"unreported").await.unwrap();
    assert_eq!(c.getattr(&root, InodeId(f.id)).await.unwrap().length, at(100));
    let cut = tokio::time::timeout(in_time, c.truncate(&root, InodeId(f.id), 0)).await;
    assert_eq!(cut.unwrap().unwrap().length, 0);
    assert_eq!(replicas(&c, f.id).await, 0);
    assert_eq!(c.close(&root, InodeId(f.id), 0, true).await.unwrap().length, 0, "nothing grows back");

    c.shutdown().await;
    cluster.shutdown().await;
}
