//! Direct tests of the namespace over the in-memory KV backend.
use std::collections::HashSet;
use std::sync::Arc;

use t3fs_common::proto::{ChainTable, RoutingInfo};
use t3fs_kv::mem::MemKv;

use super::*;

pub(super) fn routing_with(tables: Vec<ChainTable>) -> RoutingCache {
    let cache = RoutingCache::new();
    cache.update(RoutingInfo { version: 1, tables, ..Default::default() });
    cache
}

pub(super) fn table(id: u32, version: u32, chains: Vec<u32>) -> ChainTable {
    ChainTable { table_id: id, version, chains, desc: String::new() }
}

pub(super) fn placement() -> Placement {
    Placement { chain_table_id: 1, chunk_size: 1 << 20, stripe: 16 }
}

/// A namespace with the default root (0o1777: unprivileged callers can create in it).
pub(super) async fn store() -> MetaStore {
    MetaStore::open(MemKv::new(), routing_with(vec![table(1, 1, vec![1, 2])]), placement()).await.unwrap()
}

fn user() -> Caller {
    Caller { uid: 1000, gid: 100, gids: vec![] }
}

const ROOT: InodeId = InodeId::ROOT;

async fn names(s: &MetaStore, dir: InodeId) -> Vec<Vec<u8>> {
    s.readdir(&user(), dir, b"", MAX_READDIR_LIMIT)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name.to_vec())
        .collect()
}

#[tokio::test]
async fn root_is_created_once() {
    let db: Db = MemKv::new();
    let s = MetaStore::open(db.clone(), RoutingCache::new(), placement()).await.unwrap();
    let root = s.getattr(ROOT).await.unwrap();
    assert!(is_dir(&root));
    assert_eq!((root.mode, root.uid, root.gid, root.nlink, root.parent), (0o1777, 0, 0, 2, 1));
    s.mkdir(&user(), ROOT, b"d", 0o700).await.unwrap();
    // Reopening over the same store keeps the existing root (nlink 3 now) and entries.
    let other_root = RootAttrs { uid: 5, gid: 5, mode: 0o700 };
    let s2 = MetaStore::open_with_root(db, RoutingCache::new(), placement(), other_root).await.unwrap();
    assert_eq!((s2.getattr(ROOT).await.unwrap().nlink, s2.getattr(ROOT).await.unwrap().mode), (3, 0o1777));
    assert_eq!(names(&s2, ROOT).await, vec![b"d".to_vec()]);
    let fresh = RootAttrs { uid: 7, gid: 8, mode: 0o40755 };
    let s3 = MetaStore::open_with_root(MemKv::new(), RoutingCache::new(), placement(), fresh).await.unwrap();
    let r = s3.getattr(ROOT).await.unwrap();
    assert_eq!((r.uid, r.gid, r.mode), (7, 8, 0o755));
}

#[tokio::test]
async fn bad_names_are_refused_and_change_nothing() {
    let s = store().await;
    let long = vec![b'x'; 256];
    let cases: [(&[u8], StatusCode); 5] = [
        (b"a/b", StatusCode::InvalidArgument),
        (b"a\0b", StatusCode::InvalidArgument),
        (&long, StatusCode::NameTooLong),
        (b"", StatusCode::InvalidArgument),
        (b"..", StatusCode::InvalidArgument),
    ];
    let before = s.getattr(ROOT).await.unwrap();
    for (name, code) in cases {
        assert_eq!(s.mkdir(&user(), ROOT, name, 0o755).await.unwrap_err().code, code);
        assert_eq!(s.create(&user(), ROOT, name, 0o644, false).await.unwrap_err().code, code);
        assert_eq!(s.lookup(&user(), ROOT, name).await.unwrap_err().code, code);
        assert_eq!(s.remove(&user(), ROOT, name, false, "").await.unwrap_err().code, code);
    }
    assert!(names(&s, ROOT).await.is_empty());
    assert_eq!(s.getattr(ROOT).await.unwrap(), before);
    assert_eq!(s.statfs().await.unwrap().inodes, 1);
    // The longest legal name works.
    s.create(&user(), ROOT, &long[..255], 0o644, true).await.unwrap();
}

#[tokio::test]
async fn mkdir_and_create_fill_in_attributes_and_touch_the_parent() {
    let s = store().await;
    let root0 = s.getattr(ROOT).await.unwrap();
    let d = s.mkdir(&user(), ROOT, b"d", 0o40750).await.unwrap();
    assert!(is_dir(&d));
    assert_eq!((d.mode, d.uid, d.gid, d.nlink, d.parent), (0o750, 1000, 100, 2, 1));
    assert!(d.id >= keys::FIRST_ALLOC_ID);
    let root1 = s.getattr(ROOT).await.unwrap();
    assert_eq!(root1.nlink, 3);
    assert!(root1.mtime_ns >= root0.mtime_ns && root1.ctime_ns >= root0.ctime_ns);
    assert_eq!(s.lookup(&user(), ROOT, b"d").await.unwrap(), d);

    let f = s.create(&user(), InodeId(d.id), b"f", 0o100644, true).await.unwrap();
    assert_eq!((f.inode_type, f.mode, f.nlink, f.length), (InodeType::File as i32, 0o644, 1, 0));
    let d1 = s.getattr(InodeId(d.id)).await.unwrap();
    assert_eq!(d1.nlink, 2, "files do not count in a directory's nlink");
    assert!(d1.mtime_ns >= d.mtime_ns);
    assert_eq!(s.lookup(&user(), InodeId(d.id), b"f").await.unwrap(), f);

    assert_eq!(s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap_err().code, StatusCode::AlreadyExists);
    assert_eq!(s.create(&user(), ROOT, b"d", 0o644, true).await.unwrap_err().code, StatusCode::AlreadyExists);
    assert_eq!(s.create(&user(), ROOT, b"d", 0o644, false).await.unwrap_err().code, StatusCode::IsDirectory);
    // Open-existing returns the same file unchanged.
    assert_eq!(s.create(&user(), InodeId(d.id), b"f", 0o600, false).await.unwrap(), f);
}

#[tokio::test]
async fn parent_must_exist_and_be_a_directory() {
    let s = store().await;
    let f = s.create(&user(), ROOT, b"f", 0o644, true).await.unwrap();
    let fid = InodeId(f.id);
    assert_eq!(s.mkdir(&user(), fid, b"x", 0o755).await.unwrap_err().code, StatusCode::NotDirectory);
    assert_eq!(s.create(&user(), fid, b"x", 0o644, true).await.unwrap_err().code, StatusCode::NotDirectory);
    assert_eq!(s.lookup(&user(), fid, b"x").await.unwrap_err().code, StatusCode::NotDirectory);
    assert_eq!(s.readdir(&user(), fid, b"", 0).await.unwrap_err().code, StatusCode::NotDirectory);
    let ghost = InodeId(0xdead_beef);
    assert_eq!(s.mkdir(&user(), ghost, b"x", 0o755).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.create(&user(), ghost, b"x", 0o644, false).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.remove(&user(), ghost, b"x", false, "").await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.readdir(&user(), ghost, b"", 0).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.getattr(ghost).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.lookup(&user(), ROOT, b"nope").await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.statfs().await.unwrap().inodes, 2);
}

#[tokio::test]
async fn rmdir_requires_an_empty_directory() {
    let s = store().await;
    let d = s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap();
    let f = s.create(&user(), InodeId(d.id), b"f", 0o644, true).await.unwrap();
    assert_eq!(s.remove(&user(), ROOT, b"d", true, "").await.unwrap_err().code, StatusCode::DirectoryNotEmpty);
    assert_eq!(s.lookup(&user(), ROOT, b"d").await.unwrap(), s.getattr(InodeId(d.id)).await.unwrap());
    assert_eq!(s.getattr(ROOT).await.unwrap().nlink, 3);

    let removed = s.remove(&user(), InodeId(d.id), b"f", false, "").await.unwrap();
    assert_eq!((removed.id, removed.nlink), (f.id, 0));
    assert_eq!(removed.layout, f.layout);
    // The file waits for GC: readable by id (open handles), gone from the namespace.
    assert_eq!(s.getattr(InodeId(f.id)).await.unwrap().nlink, 0);
    assert_eq!(s.gc_due(u64::MAX, 10).await.unwrap().iter().map(|e| e.1).collect::<Vec<_>>(), [InodeId(f.id)]);

    let removed = s.remove(&user(), ROOT, b"d", true, "").await.unwrap();
    assert_eq!(removed.id, d.id);
    assert_eq!(s.getattr(InodeId(d.id)).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.lookup(&user(), ROOT, b"d").await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.getattr(ROOT).await.unwrap().nlink, 2);
    assert_eq!(s.remove(&user(), ROOT, b"d", true, "").await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.statfs().await.unwrap().inodes, 1);
}

#[tokio::test]
async fn unlink_and_rmdir_check_the_type() {
    let s = store().await;
    let d = s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap();
    let f = s.create(&user(), ROOT, b"f", 0o644, true).await.unwrap();
    assert_eq!(s.remove(&user(), ROOT, b"d", false, "").await.unwrap_err().code, StatusCode::IsDirectory);
    assert_eq!(s.remove(&user(), ROOT, b"f", true, "").await.unwrap_err().code, StatusCode::NotDirectory);
    assert_eq!(s.lookup(&user(), ROOT, b"d").await.unwrap().id, d.id);
    assert_eq!(s.lookup(&user(), ROOT, b"f").await.unwrap(), f);
    assert_eq!(names(&s, ROOT).await, vec![b"d".to_vec(), b"f".to_vec()]);
}

#[tokio::test]
async fn readdir_pages() {
    let s = store().await;
    for n in [b"e", b"c", b"a", b"d", b"b"] {
        s.create(&user(), ROOT, n, 0o644, true).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut after = Vec::new();
    loop {
        let page = s.readdir(&user(), ROOT, &after, 2).await.unwrap();
        let got: Vec<Vec<u8>> = page.entries.iter().map(|e| e.name.to_vec()).collect();
        pages.push((got.clone(), page.more));
        if !page.more {
            break;
        }
        after = got.last().unwrap().clone();
    }
    let v = |s: &[&[u8]]| s.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    assert_eq!(pages, vec![(v(&[b"a", b"b"]), true), (v(&[b"c", b"d"]), true), (v(&[b"e"]), false)]);
    // Exactly `limit` entries left: no phantom "more".
    assert!(!s.readdir(&user(), ROOT, b"c", 2).await.unwrap().more);
    // A cursor that is not an entry still works; 0 means the default page.
    assert_eq!(s.readdir(&user(), ROOT, b"bb", 0).await.unwrap().entries.len(), 3);
    let long_cursor = s.readdir(&user(), ROOT, &[b'z'; 256], 2).await.unwrap_err();
    assert_eq!(long_cursor.code, StatusCode::NameTooLong);
    let all = s.readdir(&user(), ROOT, b"", 0).await.unwrap();
    assert_eq!((all.entries.len(), all.more), (5, false));
    let a = s.lookup(&user(), ROOT, b"a").await.unwrap();
    assert_eq!((all.entries[0].inode, all.entries[0].inode_type), (a.id, InodeType::File as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_creates_of_one_name_race_to_one_winner() {
    let s = Arc::new(store().await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.create(&user(), ROOT, b"same", 0o644, true).await })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => ok.push(i),
            Err(e) => assert_eq!(e.code, StatusCode::AlreadyExists),
        }
    }
    assert_eq!(ok.len(), 1);
    assert_eq!(s.lookup(&user(), ROOT, b"same").await.unwrap(), ok[0]);
    assert_eq!(names(&s, ROOT).await.len(), 1);
    assert_eq!(s.statfs().await.unwrap().inodes, 2);

    // Non-exclusive racers all end up with the one file.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.create(&user(), ROOT, b"other", 0o644, false).await.unwrap().id })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_different_names_all_succeed() {
    let s = Arc::new(store().await);
    let d = s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap();
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    s.create(&user(), InodeId(d.id), format!("f{i}").as_bytes(), 0o644, true).await.unwrap().id
                } else {
                    s.mkdir(&user(), InodeId(d.id), format!("d{i}").as_bytes(), 0o755).await.unwrap().id
                }
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()), "duplicate inode id");
    }
    assert_eq!(ids.len(), 8);
    assert_eq!(names(&s, InodeId(d.id)).await.len(), 8);
    assert_eq!(s.getattr(InodeId(d.id)).await.unwrap().nlink, 2 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_store_never_share_ids() {
    let db: Db = MemKv::new();
    let r = routing_with(vec![table(1, 1, vec![1])]);
    let a = MetaStore::open(db.clone(), r.clone(), placement()).await.unwrap();
    let b = MetaStore::open(db, r, placement()).await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert!(ids.insert(s.create(&user(), ROOT, format!("{i}").as_bytes(), 0o644, true).await.unwrap().id));
    }
    assert_eq!(names(&a, ROOT).await.len(), 20);
}

#[tokio::test]
async fn layout_comes_from_the_newest_chain_table() {
    let routing = routing_with(vec![table(1, 1, vec![7]), table(1, 2, vec![10, 11, 12]), table(2, 1, vec![99])]);
    let s = MetaStore::open(MemKv::new(), routing, placement()).await.unwrap();
    let (mut bases, mut seeds) = (HashSet::new(), HashSet::new());
    for i in 0..16 {
        let f = s.create(&user(), ROOT, format!("f{i}").as_bytes(), 0o644, true).await.unwrap();
        let l = f.layout.expect("files have a layout");
        assert_eq!((l.table_id, l.table_version, l.chunk_size, l.stripe), (1, 2, 1 << 20, 3));
        assert!(l.base_index < 3);
        bases.insert(l.base_index);
        seeds.insert(l.seed);
        t3fs_common::layout::validate(&l).unwrap();
        let chain = t3fs_common::layout::chain_of(&l, &[10, 11, 12], 5).unwrap();
        assert!((10..=12).contains(&chain.0));
    }
    // Round robin in one directory advances by the stripe: with stripe = chains every file starts
    // on the same chain (each covers all of them); the shuffle seeds differ.
    assert_eq!(bases.len(), 1, "{bases:?}");
    assert_eq!(seeds.len(), 16);
    // A small stripe is kept as configured.
    let routing = routing_with(vec![table(1, 1, (1..=40).collect())]);
    let small = Placement { stripe: 4, ..placement() };
    let s = MetaStore::open(MemKv::new(), routing, small).await.unwrap();
    assert_eq!(s.create(&user(), ROOT, b"f", 0o644, true).await.unwrap().layout.unwrap().stripe, 4);
    // Directories carry no layout unless set (layout.rs tests the inheritance).
    assert!(s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap().layout.is_none());
}

#[tokio::test]
async fn create_without_a_chain_table_is_routing_not_ready() {
    for routing in
        [RoutingCache::new(), routing_with(vec![table(2, 1, vec![1])]), routing_with(vec![table(1, 1, vec![])])]
    {
        let s = MetaStore::open(MemKv::new(), routing, placement()).await.unwrap();
        let e = s.create(&user(), ROOT, b"f", 0o644, false).await.unwrap_err();
        assert_eq!(e.code, StatusCode::RoutingNotReady);
        assert!(names(&s, ROOT).await.is_empty());
        s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap();
    }
}

#[tokio::test]
async fn open_refuses_a_bad_placement() {
    let bad = Placement { chunk_size: 1000, ..placement() };
    assert!(MetaStore::open(MemKv::new(), RoutingCache::new(), bad).await.is_err());
}

#[tokio::test]
async fn setattr_and_close() {
    let s = store().await;
    let f = s.create(&user(), ROOT, b"f", 0o644, true).await.unwrap();
    let id = InodeId(f.id);
    let g = s
        .setattr(
            &Caller::default(),
            id,
            SetAttr { mode: Some(0o100600), uid: Some(5), gid: Some(6), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((g.mode, g.uid, g.gid, g.length, g.mtime_ns), (0o600, 5, 6, 0, f.mtime_ns));
    assert!(g.ctime_ns >= f.ctime_ns);
    let root = Caller::default();
    let t = s.setattr(&root, id, SetAttr { length: Some(4096), ..Default::default() }).await.unwrap();
    assert_eq!(t.length, 4096);
    assert!(t.mtime_ns >= g.mtime_ns);
    let t =
        s.setattr(&root, id, SetAttr { atime_ns: Some(11), mtime_ns: Some(22), ..Default::default() }).await.unwrap();
    assert_eq!((t.atime_ns, t.mtime_ns), (11, 22));
    assert_eq!(s.getattr(id).await.unwrap(), t);

    // close: grows to the hint, never shrinks; without writes nothing changes.
    let c = s.close(id, 10_000, true).await.unwrap();
    assert_eq!(c.length, 10_000);
    assert!(c.mtime_ns > 22);
    assert_eq!(s.close(id, 5, true).await.unwrap().length, 10_000);
    let before = s.getattr(id).await.unwrap();
    assert_eq!(s.close(id, 1 << 30, false).await.unwrap(), before);
    assert_eq!(
        s.statfs().await.unwrap(),
        StatFs { capacity_bytes: 0, free_bytes: None, used_bytes: 10_000, inodes: 2 }
    );

    // Length changes apply to files only; unknown inodes are NotFound.
    let d = s.mkdir(&user(), ROOT, b"d", 0o755).await.unwrap();
    let e = s.setattr(&user(), InodeId(d.id), SetAttr { length: Some(1), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code, StatusCode::IsDirectory);
    assert_eq!(s.close(InodeId(d.id), 1, true).await.unwrap_err().code, StatusCode::IsDirectory);
    assert_eq!(s.getattr(InodeId(d.id)).await.unwrap(), d);
    let ghost = InodeId(0xdead);
    assert_eq!(s.setattr(&user(), ghost, SetAttr::default()).await.unwrap_err().code, StatusCode::NotFound);
    assert_eq!(s.close(ghost, 1, true).await.unwrap_err().code, StatusCode::NotFound);
}

#[tokio::test]
async fn statfs_pages_over_many_inodes() {
    let s = store().await;
    let n = STATFS_PAGE + 7;
    for i in 0..n {
        s.mkdir(&user(), ROOT, format!("d{i}").as_bytes(), 0o755).await.unwrap();
    }
    assert_eq!(s.statfs().await.unwrap().inodes, n as u64 + 1);
    assert_eq!(s.readdir(&user(), ROOT, b"", 0).await.unwrap().entries.len(), DEFAULT_READDIR_LIMIT as usize);
    assert_eq!(s.readdir(&user(), ROOT, b"", 100_000).await.unwrap().entries.len(), n);
}

#[test]
fn space_counts_the_fullest_replica_of_every_chain() {
    use t3fs_common::proto::{ChainInfo, ChainTarget, TargetInfo};
    let target = |id: u64, cap: Option<u64>, free: Option<u64>| TargetInfo {
        target_id: id,
        capacity_bytes: cap,
        free_bytes: free,
        ..Default::default()
    };
    let chain = |id: u32, targets: &[u64]| ChainInfo {
        chain_id: id,
        targets: targets.iter().map(|&t| ChainTarget { target_id: t, ..Default::default() }).collect(),
        ..Default::default()
    };
    let info = RoutingInfo {
        targets: vec![
            target(1, Some(100), Some(50)),
            target(2, Some(80), Some(60)),
            target(3, Some(90), None),
            target(4, Some(10), Some(5)),
            target(5, None, None),
        ],
        chains: vec![chain(1, &[1, 2, 3]), chain(2, &[4, 5])],
        ..Default::default()
    };
    let r = t3fs_common::routing::Routing::new(info);
    assert_eq!(space_of(&r), (80 + 10, Some(50 + 5)));
    assert_eq!(space_of(&t3fs_common::routing::Routing::default()), (0, None));
}

#[tokio::test]
async fn close_takes_exact_lengths_and_ignores_hints_older_than_a_truncate() {
    let s = store().await;
    let u = user();
    let f = s.create(&u, ROOT, b"lazy", 0o644, true).await.unwrap();
    let id = InodeId(f.id);
    let len = |hint, tv, exact| CloseLength { hint, hint_truncate_version: tv, exact };
    // Storage knows more than the hint: the exact end wins.
    assert_eq!(s.close_with(id, true, len(10, 0, Some((5000, 0)))).await.unwrap().length, 5000);
    // Never shrinks at close (a truncate-extended file has no data at its end).
    assert_eq!(s.close_with(id, true, len(0, 0, Some((100, 0)))).await.unwrap().length, 5000);
    // A truncate bumps the truncate version, every time.
    let t = s.setattr(&u, id, SetAttr { length: Some(300), ..Default::default() }).await.unwrap();
    assert_eq!((t.length, t.truncate_version), (300, 1));
    let t = s.setattr(&u, id, SetAttr { length: Some(300), ..Default::default() }).await.unwrap();
    assert_eq!(t.truncate_version, 2);
    // A hint from before the truncate is stale; a probe from before it too.
    assert_eq!(s.close_with(id, true, len(5000, 1, None)).await.unwrap().length, 300);
    assert_eq!(s.close_with(id, true, len(0, 0, Some((5000, 1)))).await.unwrap().length, 300);
    // Current ones count; an untracked hint (0) is taken as is.
    assert_eq!(s.close_with(id, true, len(400, 2, None)).await.unwrap().length, 400);
    assert_eq!(s.close_with(id, true, len(0, 0, Some((450, 2)))).await.unwrap().length, 450);
    assert_eq!(s.close_with(id, true, len(500, 0, None)).await.unwrap().length, 500);
    // Without `wrote` nothing changes.
    assert_eq!(s.close_with(id, false, len(9000, 0, Some((9000, 2)))).await.unwrap().length, 500);
}
