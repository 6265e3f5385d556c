//! The metadata store's disk reserve ([`MetaStore::space_refusal`]): over a KV whose reported free
//! space the test sets, what adds to the store is refused with NoSpace below the reserve, and what
//! frees or keeps space goes on. And statfs's cached inode count.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use t3fs_kv::mem::MemKv;

use super::tests::{placement, routing_with, table};
use super::*;

const MIB: u64 = 1 << 20;
const ROOT: InodeId = InodeId::ROOT;

/// An in-memory KV that reports `free` bytes free of 1 GiB.
struct Disk {
    kv: Db,
    free: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl t3fs_kv::KvEngine for Disk {
    async fn begin(&self) -> std::result::Result<Box<dyn Transaction>, KvError> {
        self.kv.begin().await
    }

    fn space(&self) -> Option<(u64, u64)> {
        Some((self.free.load(Ordering::Relaxed), 1024 * MIB))
    }
}

#[tokio::test]
async fn below_the_reserve_new_names_and_xattrs_are_refused_and_removals_go_on() {
    let free = Arc::new(AtomicU64::new(500 * MIB));
    let db: Db = Arc::new(Disk { kv: MemKv::new(), free: free.clone() });
    let routing = routing_with(vec![table(1, 1, vec![1, 2])]);
    let opts = OpenOptions { reserved_space: Some(100 * MIB), ..Default::default() };
    let s = MetaStore::open_with_options(db, routing, placement(), opts).await.unwrap();
    let me = Caller::default();
    let file = InodeId(s.create(&me, ROOT, b"f", 0o644, true).await.unwrap().id);
    let dir = InodeId(s.mkdir(&me, ROOT, b"d", 0o755).await.unwrap().id);
    s.create(&me, dir, b"victim", 0o644, true).await.unwrap();

    free.store(99 * MIB, Ordering::Relaxed);
    let full = |r: Result<()>| r.unwrap_err().code;
    let xattr = XattrFlags::default();
    assert_eq!(full(s.create(&me, ROOT, b"g", 0o644, false).await.map(drop)), StatusCode::NoSpace);
    assert_eq!(full(s.mkdir(&me, ROOT, b"e", 0o755).await.map(drop)), StatusCode::NoSpace);
    assert_eq!(full(s.symlink(&me, ROOT, b"l", b"f").await.map(drop)), StatusCode::NoSpace);
    assert_eq!(full(s.link(&me, file, ROOT, b"h").await.map(drop)), StatusCode::NoSpace);
    assert_eq!(full(s.set_xattr(&me, file, b"user.a", b"1", xattr).await), StatusCode::NoSpace);
    let e = s.create(&me, ROOT, b"g", 0o644, true).await.unwrap_err();
    assert!(e.message.contains("reserve") && e.message.contains("removals still work"), "{e}");
    // Nothing was created by the refused calls.
    for name in [&b"g"[..], b"e", b"l", b"h"] {
        assert_eq!(s.lookup(&me, ROOT, name).await.unwrap_err().code, StatusCode::NotFound);
    }

    // What frees or keeps space works: opening an existing file, writing it (close), renames,
    // attribute changes, removals.
    assert_eq!(s.create(&me, ROOT, b"f", 0o644, false).await.unwrap().id, file.0);
    assert_eq!(s.close(file, 4096, true).await.unwrap().length, 4096);
    s.rename(&me, ROOT, b"f", dir, b"f2", RenameFlags::default(), "").await.unwrap();
    s.setattr(&me, file, SetAttr { mode: Some(0o600), ..Default::default() }).await.unwrap();
    s.remove(&me, dir, b"victim", false, "").await.unwrap();

    // Space back: creates work again.
    free.store(101 * MIB, Ordering::Relaxed);
    s.create(&me, ROOT, b"g", 0o644, true).await.unwrap();
    s.set_xattr(&me, file, b"user.a", b"1", xattr).await.unwrap();
}

#[tokio::test]
async fn statfs_reuses_its_inode_count_for_the_cache_time() {
    let routing = || routing_with(vec![table(1, 1, vec![1, 2])]);
    let me = Caller::default();
    let cached = OpenOptions { statfs_cache: Duration::from_millis(300), ..Default::default() };
    let s = MetaStore::open_with_options(MemKv::new(), routing(), placement(), cached).await.unwrap();
    assert_eq!(s.statfs().await.unwrap().inodes, 1);
    s.mkdir(&me, ROOT, b"a", 0o755).await.unwrap();
    assert_eq!(s.statfs().await.unwrap().inodes, 1, "within the cache time: the last count");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.statfs().await.unwrap().inodes, 2, "after it: counted again");

    let exact = OpenOptions { statfs_cache: Duration::ZERO, ..Default::default() };
    let s = MetaStore::open_with_options(MemKv::new(), routing(), placement(), exact).await.unwrap();
    s.mkdir(&me, ROOT, b"a", 0o755).await.unwrap();
    assert_eq!(s.statfs().await.unwrap().inodes, 2);
    s.mkdir(&me, ROOT, b"b", 0o755).await.unwrap();
    assert_eq!(s.statfs().await.unwrap().inodes, 3, "no cache: counted every time");
}
