//! Racing mutations end in a serializable outcome: no loops, orphans, lost directories or wrong
//! link counts ([`check_invariants`] after every round).
use std::sync::Arc;

use super::check::check_invariants;
use super::tests::{placement, routing_with, store, table};
use super::*;

const ROOT: InodeId = InodeId::ROOT;
const PLAIN: RenameFlags = RenameFlags { no_replace: false, exchange: false };

fn me() -> Caller {
    Caller { uid: 1000, gid: 1000, gids: vec![] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossed_directory_renames_never_build_a_loop() {
    for round in 0..20 {
        let s = Arc::new(store().await);
        let a = s.mkdir(&me(), ROOT, b"a", 0o755).await.unwrap();
        let b = s.mkdir(&me(), ROOT, b"b", 0o755).await.unwrap();
        // a -> b/a and b -> a/b at once: at most one can win (the other would create a loop).
        let (s1, s2) = (s.clone(), s.clone());
        let t1 = tokio::spawn(async move { s1.rename(&me(), ROOT, b"a", InodeId(b.id), b"a", PLAIN, "").await });
        let t2 = tokio::spawn(async move { s2.rename(&me(), ROOT, b"b", InodeId(a.id), b"b", PLAIN, "").await });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        match (&r1, &r2) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => assert_eq!(e.code, StatusCode::InvalidArgument, "round {round}"),
            _ => panic!("round {round}: exactly one rename must win: {r1:?} {r2:?}"),
        }
        check_invariants(s.db()).await;
        // Both directories still exist, one inside the other, reachable from the root.
        let top = s.readdir(&me(), ROOT, b"", 0).await.unwrap().entries;
        assert_eq!(top.len(), 1, "round {round}");
        let inner = s.readdir(&me(), InodeId(top[0].inode), b"", 0).await.unwrap().entries;
        assert_eq!(inner.len(), 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossed_deep_renames_conflict_through_the_ancestor_walk() {
    // p1/a/x and p2/b/y; a -> y/a and b -> x/b at once. The two transactions touch disjoint parents
    // and dentries: only the conflicting reads of the ancestor walk (y, b, p2 / x, a, p1) order them.
    for round in 0..20 {
        let s = Arc::new(store().await);
        let u = me();
        let p1 = s.mkdir(&u, ROOT, b"p1", 0o755).await.unwrap();
        let p2 = s.mkdir(&u, ROOT, b"p2", 0o755).await.unwrap();
        let a = s.mkdir(&u, InodeId(p1.id), b"a", 0o755).await.unwrap();
        let b = s.mkdir(&u, InodeId(p2.id), b"b", 0o755).await.unwrap();
        let x = s.mkdir(&u, InodeId(a.id), b"x", 0o755).await.unwrap();
        let y = s.mkdir(&u, InodeId(b.id), b"y", 0o755).await.unwrap();
        let (s1, s2) = (s.clone(), s.clone());
        let t1 =
            tokio::spawn(async move { s1.rename(&me(), InodeId(p1.id), b"a", InodeId(y.id), b"a", PLAIN, "").await });
        let t2 =
            tokio::spawn(async move { s2.rename(&me(), InodeId(p2.id), b"b", InodeId(x.id), b"b", PLAIN, "").await });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        match (&r1, &r2) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => assert_eq!(e.code, StatusCode::InvalidArgument, "round {round}"),
            _ => panic!("round {round}: exactly one rename must win: {r1:?} {r2:?}"),
        }
        check_invariants(s.db()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_renames_of_files_serialize() {
    for round in 0..20 {
        let s = Arc::new(store().await);
        let x = s.create(&me(), ROOT, b"x", 0o644, true).await.unwrap();
        let y = s.create(&me(), ROOT, b"y", 0o644, true).await.unwrap();
        let (s1, s2) = (s.clone(), s.clone());
        let t1 = tokio::spawn(async move { s1.rename(&me(), ROOT, b"x", ROOT, b"y", PLAIN, "").await });
        let t2 = tokio::spawn(async move { s2.rename(&me(), ROOT, b"y", ROOT, b"x", PLAIN, "").await });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        // Either serial order leaves one name holding one of the two files, the other file deleted.
        let names: Vec<(Vec<u8>, u64)> = s
            .readdir(&me(), ROOT, b"", 0)
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.name.to_vec(), e.inode))
            .collect();
        assert_eq!(names.len(), 1, "round {round}: {r1:?} {r2:?}");
        let survivor = names[0].1;
        assert!(survivor == x.id || survivor == y.id);
        for r in [r1, r2] {
            match r {
                Ok(_) => {}
                Err(e) => assert_eq!(e.code, StatusCode::NotFound, "round {round}"),
            }
        }
        check_invariants(s.db()).await;
        assert_eq!(s.statfs().await.unwrap().inodes, 2, "round {round}: the replaced file is deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_racing_rmdir_of_the_parent_leaves_no_orphan() {
    for round in 0..30 {
        let s = Arc::new(store().await);
        let d = s.mkdir(&me(), ROOT, b"d", 0o755).await.unwrap();
        let (s1, s2) = (s.clone(), s.clone());
        let t1 = tokio::spawn(async move { s1.create(&me(), InodeId(d.id), b"f", 0o644, true).await });
        let t2 = tokio::spawn(async move { s2.remove(&me(), ROOT, b"d", true, "").await });
        let (c, r) = (t1.await.unwrap(), t2.await.unwrap());
        match (&c, &r) {
            // create first: rmdir sees a non-empty directory.
            (Ok(_), Err(e)) => assert_eq!(e.code, StatusCode::DirectoryNotEmpty, "round {round}"),
            // rmdir first: the parent is gone.
            (Err(e), Ok(_)) => assert_eq!(e.code, StatusCode::NotFound, "round {round}"),
            _ => panic!("round {round}: not serializable: {c:?} {r:?}"),
        }
        check_invariants(s.db()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_exclusive_creates_and_mkdirs_have_one_winner() {
    let s = Arc::new(store().await);
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let u = Caller { uid: 1000 + i, gid: 1000, gids: vec![] };
                if i % 2 == 0 {
                    s.create(&u, ROOT, b"same", 0o644, true).await.map(|i| i.id)
                } else {
                    s.mkdir(&u, ROOT, b"same", 0o755).await.map(|i| i.id)
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => winners.push(id),
            Err(e) => assert_eq!(e.code, StatusCode::AlreadyExists),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(s.lookup(&me(), ROOT, b"same").await.unwrap().id, winners[0]);
    check_invariants(s.db()).await;
    assert_eq!(s.statfs().await.unwrap().inodes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_mixed_renames_keeps_the_tree_whole() {
    let s = Arc::new(store().await);
    let names: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    for n in names {
        s.mkdir(&me(), ROOT, n, 0o777).await.unwrap();
    }
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut x = t * 7 + 1;
                for _ in 0..40 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let pick = |k: u64| names[((x >> k) % 4) as usize];
                    // Directories to random places among each other (or the root), by name lookups.
                    let src_parent = if (x >> 20) % 2 == 0 { ROOT } else { lookup_any(&s, pick(24)).await };
                    let dst_parent = if (x >> 21) % 2 == 0 { ROOT } else { lookup_any(&s, pick(28)).await };
                    let flags = RenameFlags { no_replace: true, exchange: (x >> 40) % 3 == 0 };
                    let flags = RenameFlags { no_replace: !flags.exchange, ..flags };
                    let _ = s.rename(&me(), src_parent, pick(32), dst_parent, pick(36), flags, "").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    check_invariants(s.db()).await;
    assert_eq!(s.statfs().await.unwrap().inodes, 5, "directories are only moved, never lost");
}

/// Waits for `tasks` and returns what the successful ones returned; every other one must have
/// failed with `code`.
async fn successes<T>(tasks: impl IntoIterator<Item = tokio::task::JoinHandle<Result<T>>>, code: StatusCode) -> Vec<T> {
    let mut ok = Vec::new();
    for r in futures::future::join_all(tasks).await {
        match r.unwrap() {
            Ok(v) => ok.push(v),
            Err(e) => assert_eq!(e.code, code, "{e}"),
        }
    }
    ok
}

/// A directory named `name` anywhere in the tree (breadth-first), or the root.
async fn lookup_any(s: &MetaStore, name: &[u8]) -> InodeId {
    let mut queue = vec![ROOT];
    while let Some(d) = queue.pop() {
        let Ok(page) = s.readdir(&me(), d, b"", 0).await else { continue };
        for e in page.entries {
            if &e.name[..] == name {
                return InodeId(e.inode);
            }
            queue.push(InodeId(e.inode));
        }
    }
    ROOT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_and_removes_in_one_directory_commit_in_batches() {
    let metrics = Arc::new(crate::metrics::MetaMetrics::default());
    let db = metrics.wrap_kv(t3fs_kv::mem::MemKv::new());
    let routing = routing_with(vec![table(1, 1, vec![1, 2])]);
    let s = Arc::new(MetaStore::open(db, routing, placement()).await.unwrap());
    let dir = InodeId(s.mkdir(&me(), ROOT, b"ckpt", 0o755).await.unwrap().id);
    let (names, tries) = (200, 256);

    // Exclusive creates of 200 names, 56 of them twice, all at once: each name is created once.
    let (txns, _) = metrics.kv_counts();
    let creates = (0..tries).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.create(&me(), dir, format!("f{}", i % names).as_bytes(), 0o644, true).await })
    });
    assert_eq!(successes(creates, StatusCode::AlreadyExists).await.len(), names);
    let (after, conflicts) = metrics.kv_counts();
    assert_eq!(conflicts, 0, "one transaction at a time per directory: nothing to conflict with");
    assert!(after - txns < tries as u64, "{} transactions for {tries} creates: not batched", after - txns);
    check_invariants(s.db()).await;

    // Removes of every name plus 20 that do not exist, and creates of new names, at once.
    let removes = (0..names + 20).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.remove(&me(), dir, format!("f{i}").as_bytes(), false, "").await })
    });
    let adds = (0..50).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.create(&me(), dir, format!("g{i}").as_bytes(), 0o644, true).await.map(drop) })
    });
    let (removed, added) =
        futures::future::join(futures::future::join_all(removes), futures::future::join_all(adds)).await;
    for (i, r) in removed.into_iter().enumerate() {
        match r.unwrap() {
            Ok(inode) => assert!(i < names && inode.nlink == 0),
            Err(e) => assert!(i >= names && e.code == StatusCode::NotFound, "{i}: {e}"),
        }
    }
    assert!(added.into_iter().all(|r| r.unwrap().is_ok()));
    assert_eq!(metrics.kv_counts().1, 0);
    let left = s.readdir(&me(), dir, b"", MAX_READDIR_LIMIT).await.unwrap().entries;
    assert_eq!(left.len(), 50);
    assert!(left.iter().all(|e| e.name.starts_with(b"g")));
    check_invariants(s.db()).await;
}

/// Two meta servers over one store (what happens while clients disagree on a directory's owner, or
/// with `dir_owner_routing` off): their batches on one directory conflict with each other and
/// retry, and every operation still has exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_two_servers_on_one_directory_conflict_and_stay_serializable() {
    let metrics = Arc::new(crate::metrics::MetaMetrics::default());
    let db = metrics.wrap_kv(t3fs_kv::mem::MemKv::new());
    let routing = routing_with(vec![table(1, 1, vec![1, 2])]);
    let a = Arc::new(MetaStore::open(db.clone(), routing.clone(), placement()).await.unwrap());
    let b = Arc::new(MetaStore::open(db, routing, placement()).await.unwrap());
    let dir = InodeId(a.mkdir(&me(), ROOT, b"shared", 0o755).await.unwrap().id);
    let names = 100;

    // Both servers create every name exclusively, at once: each name is created exactly once.
    let creates = (0..2 * names).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let name = format!("f{}", i / 2);
            loop {
                // Retryable errors (a batch whose conflict retries ran out) are retried, as the client does.
                match s.create(&me(), dir, name.as_bytes(), 0o644, true).await {
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        })
    });
    assert_eq!(successes(creates, StatusCode::AlreadyExists).await.len(), names);
    check_invariants(a.db()).await;

    // Both remove every name at once: each is removed exactly once, the other gets NotFound.
    let removes = (0..2 * names).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let name = format!("f{}", i / 2);
            loop {
                match s.remove(&me(), dir, name.as_bytes(), false, "").await {
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        })
    });
    let removed = successes(removes, StatusCode::NotFound).await;
    assert_eq!(removed.len(), names);
    assert!(removed.iter().all(|inode| inode.nlink == 0));
    assert!(b.readdir(&me(), dir, b"", MAX_READDIR_LIMIT).await.unwrap().entries.is_empty());
    check_invariants(b.db()).await;
    eprintln!("KV conflicts between the two servers' batches: {}", metrics.kv_counts().1);
}
