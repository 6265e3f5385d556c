//! rename, link, symlink, batch stat and idempotent retries, checked directly on the namespace.
use super::check::check_invariants;
use super::tests::store;
use super::*;

const ROOT: InodeId = InodeId::ROOT;
const PLAIN: RenameFlags = RenameFlags { no_replace: false, exchange: false };
const NOREPLACE: RenameFlags = RenameFlags { no_replace: true, exchange: false };
const EXCHANGE: RenameFlags = RenameFlags { no_replace: false, exchange: true };

fn me() -> Caller {
    Caller { uid: 1000, gid: 1000, gids: vec![] }
}

async fn id_of(s: &MetaStore, dir: InodeId, name: &[u8]) -> Option<u64> {
    s.lookup(&me(), dir, name).await.ok().map(|i| i.id)
}

async fn mv(s: &MetaStore, sp: u64, sn: &[u8], dp: u64, dn: &[u8], f: RenameFlags) -> Result<Option<Inode>> {
    s.rename(&me(), InodeId(sp), sn, InodeId(dp), dn, f, "").await
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> StatusCode {
    r.unwrap_err().code
}

#[tokio::test]
async fn rename_files_and_directories() {
    let s = store().await;
    let u = me();
    let a = s.mkdir(&u, ROOT, b"a", 0o755).await.unwrap();
    let b = s.mkdir(&u, ROOT, b"b", 0o755).await.unwrap();
    let f = s.create(&u, InodeId(a.id), b"f", 0o644, true).await.unwrap();
    // File within a directory, then across directories.
    assert_eq!(mv(&s, a.id, b"f", a.id, b"g", PLAIN).await.unwrap(), None);
    assert_eq!((id_of(&s, InodeId(a.id), b"f").await, id_of(&s, InodeId(a.id), b"g").await), (None, Some(f.id)));
    mv(&s, a.id, b"g", b.id, b"h", PLAIN).await.unwrap();
    assert_eq!(id_of(&s, InodeId(b.id), b"h").await, Some(f.id));
    // A directory moves: its parent pointer and both parents' nlink follow.
    let d = s.mkdir(&u, InodeId(a.id), b"d", 0o755).await.unwrap();
    assert_eq!(s.getattr(InodeId(a.id)).await.unwrap().nlink, 3);
    mv(&s, a.id, b"d", b.id, b"d2", PLAIN).await.unwrap();
    let moved = s.getattr(InodeId(d.id)).await.unwrap();
    assert_eq!(moved.parent, b.id);
    assert!(moved.ctime_ns >= d.ctime_ns);
    assert_eq!(s.getattr(InodeId(a.id)).await.unwrap().nlink, 2);
    assert_eq!(s.getattr(InodeId(b.id)).await.unwrap().nlink, 3);
    check_invariants(s.db()).await;

    // Missing source; rename onto itself is a no-op (but NOREPLACE still sees the name taken).
    assert_eq!(code(mv(&s, a.id, b"nope", b.id, b"x", PLAIN).await), StatusCode::NotFound);
    let before = s.getattr(InodeId(b.id)).await.unwrap();
    assert_eq!(mv(&s, b.id, b"h", b.id, b"h", PLAIN).await.unwrap(), None);
    assert_eq!(mv(&s, b.id, b"h", b.id, b"h", EXCHANGE).await.unwrap(), None);
    assert_eq!(code(mv(&s, b.id, b"h", b.id, b"h", NOREPLACE).await), StatusCode::AlreadyExists);
    assert_eq!(s.getattr(InodeId(b.id)).await.unwrap(), before, "a no-op changes nothing");
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn rename_replaces_per_posix_rules() {
    let s = store().await;
    let u = me();
    let f1 = s.create(&u, ROOT, b"f1", 0o644, true).await.unwrap();
    let f2 = s.create(&u, ROOT, b"f2", 0o644, true).await.unwrap();
    s.set_xattr(&u, InodeId(f2.id), b"user.x", b"1", XattrFlags::default()).await.unwrap();
    let d1 = s.mkdir(&u, ROOT, b"d1", 0o755).await.unwrap();
    let d2 = s.mkdir(&u, ROOT, b"d2", 0o755).await.unwrap();
    s.create(&u, InodeId(d2.id), b"inner", 0o644, true).await.unwrap();
    let e = s.mkdir(&u, ROOT, b"e", 0o755).await.unwrap();

    assert_eq!(code(mv(&s, 1, b"d1", 1, b"f1", PLAIN).await), StatusCode::NotDirectory);
    assert_eq!(code(mv(&s, 1, b"f1", 1, b"d1", PLAIN).await), StatusCode::IsDirectory);
    assert_eq!(code(mv(&s, 1, b"d1", 1, b"d2", PLAIN).await), StatusCode::DirectoryNotEmpty);
    assert_eq!(code(mv(&s, 1, b"f1", 1, b"f2", NOREPLACE).await), StatusCode::AlreadyExists);
    check_invariants(s.db()).await;

    // File over file: the replaced file loses its last link, is returned and deleted with its xattrs.
    let replaced = mv(&s, 1, b"f1", 1, b"f2", PLAIN).await.unwrap().expect("f2 lost its last link");
    assert_eq!((replaced.id, replaced.nlink, replaced.layout.is_some()), (f2.id, 0, true));
    assert_eq!(s.getattr(InodeId(f2.id)).await.unwrap().nlink, 0, "queued for GC");
    assert_eq!(id_of(&s, ROOT, b"f2").await, Some(f1.id));
    // Over a file that has another link: nothing is returned, its nlink drops.
    s.link(&u, InodeId(f1.id), ROOT, b"f1b").await.unwrap();
    let g = s.create(&u, ROOT, b"g", 0o644, true).await.unwrap();
    assert_eq!(mv(&s, 1, b"g", 1, b"f1b", PLAIN).await.unwrap(), None);
    assert_eq!(s.getattr(InodeId(f1.id)).await.unwrap().nlink, 1);
    assert_eq!(id_of(&s, ROOT, b"f1b").await, Some(g.id));
    // Empty directory over directory.
    let root_links = s.getattr(ROOT).await.unwrap().nlink;
    let replaced = mv(&s, 1, b"e", 1, b"d1", PLAIN).await.unwrap().expect("d1 is gone");
    assert_eq!((replaced.id, replaced.nlink), (d1.id, 0));
    assert_eq!(s.getattr(ROOT).await.unwrap().nlink, root_links - 1);
    assert_eq!(s.getattr(InodeId(e.id)).await.unwrap().parent, 1);
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn no_directory_moves_into_its_own_subtree() {
    let s = store().await;
    let u = me();
    let a = s.mkdir(&u, ROOT, b"a", 0o755).await.unwrap();
    let b = s.mkdir(&u, InodeId(a.id), b"b", 0o755).await.unwrap();
    let c = s.mkdir(&u, InodeId(b.id), b"c", 0o755).await.unwrap();
    for (dp, flags) in [(a.id, PLAIN), (b.id, PLAIN), (c.id, NOREPLACE)] {
        assert_eq!(code(mv(&s, 1, b"a", dp, b"x", flags).await), StatusCode::InvalidArgument);
    }
    // Exchanging a directory with an entry inside it would move it below itself too.
    s.create(&u, InodeId(c.id), b"f", 0o644, true).await.unwrap();
    assert_eq!(code(mv(&s, c.id, b"f", 1, b"a", EXCHANGE).await), StatusCode::InvalidArgument);
    assert_eq!(code(mv(&s, 1, b"a", c.id, b"f", EXCHANGE).await), StatusCode::InvalidArgument);
    // Replacing an ancestor with its own descendant: the ancestor is not empty.
    assert_eq!(code(mv(&s, b.id, b"c", 1, b"a", PLAIN).await), StatusCode::DirectoryNotEmpty);
    // Moving a directory up is fine.
    mv(&s, b.id, b"c", 1, b"c", PLAIN).await.unwrap();
    assert_eq!(s.getattr(InodeId(c.id)).await.unwrap().parent, 1);
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn exchange_swaps_files_and_directories() {
    let s = store().await;
    let u = me();
    let a = s.mkdir(&u, ROOT, b"a", 0o755).await.unwrap();
    let f = s.create(&u, ROOT, b"f", 0o644, true).await.unwrap();
    let d = s.mkdir(&u, InodeId(a.id), b"d", 0o755).await.unwrap();
    assert_eq!(code(mv(&s, 1, b"f", a.id, b"missing", EXCHANGE).await), StatusCode::NotFound);
    let both = RenameFlags { no_replace: true, exchange: true };
    assert_eq!(code(mv(&s, 1, b"f", a.id, b"d", both).await), StatusCode::InvalidArgument);
    // A file and a directory in different parents swap; nlink and parent pointers follow.
    assert_eq!(mv(&s, 1, b"f", a.id, b"d", EXCHANGE).await.unwrap(), None);
    assert_eq!(id_of(&s, ROOT, b"f").await, Some(d.id));
    assert_eq!(id_of(&s, InodeId(a.id), b"d").await, Some(f.id));
    assert_eq!(s.getattr(InodeId(d.id)).await.unwrap().parent, 1);
    assert_eq!(s.getattr(InodeId(a.id)).await.unwrap().nlink, 2);
    assert_eq!(s.getattr(ROOT).await.unwrap().nlink, 4);
    let entry = s.readdir(&u, ROOT, b"", 0).await.unwrap().entries.into_iter().find(|e| &e.name[..] == b"f");
    assert_eq!(entry.unwrap().inode_type, InodeType::Directory as i32, "dentry types are swapped too");
    // Two directories in one parent.
    s.mkdir(&u, ROOT, b"z", 0o755).await.unwrap();
    mv(&s, 1, b"z", 1, b"f", EXCHANGE).await.unwrap();
    assert_eq!(id_of(&s, ROOT, b"z").await, Some(d.id));
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn links_symlinks_and_batch_stat() {
    let s = store().await;
    let u = me();
    let d = s.mkdir(&u, ROOT, b"d", 0o755).await.unwrap();
    let f = s.create(&u, ROOT, b"f", 0o644, true).await.unwrap();
    let l = s.link(&u, InodeId(f.id), InodeId(d.id), b"hard").await.unwrap();
    assert_eq!((l.id, l.nlink), (f.id, 2));
    assert_eq!(id_of(&s, InodeId(d.id), b"hard").await, Some(f.id));
    assert_eq!(code(s.link(&u, InodeId(f.id), ROOT, b"d").await), StatusCode::AlreadyExists);
    assert_eq!(code(s.link(&u, InodeId(d.id), ROOT, b"dl").await), StatusCode::OperationNotPermitted);
    assert_eq!(code(s.link(&u, InodeId(0xdead), ROOT, b"x").await), StatusCode::NotFound);
    assert_eq!(code(s.link(&u, InodeId(f.id), InodeId(f.id), b"x").await), StatusCode::NotDirectory);
    assert_eq!(code(s.link(&u, InodeId(f.id), ROOT, b"..").await), StatusCode::InvalidArgument);
    // Renaming one hard link onto another of the same inode does nothing.
    assert_eq!(mv(&s, 1, b"f", d.id, b"hard", PLAIN).await.unwrap(), None);
    assert_eq!(id_of(&s, ROOT, b"f").await, Some(f.id));
    // Unlinking one name keeps the inode.
    let r = s.remove(&u, ROOT, b"f", false, "").await.unwrap();
    assert_eq!(r.nlink, 1);
    assert_eq!(s.getattr(InodeId(f.id)).await.unwrap().nlink, 1);

    let target = b"../some/where".to_vec();
    let sl = s.symlink(&u, ROOT, b"sl", &target).await.unwrap();
    assert_eq!((sl.inode_type, sl.length, sl.mode, sl.nlink), (InodeType::Symlink as i32, 13, 0o777, 1));
    assert_eq!(&s.getattr(InodeId(sl.id)).await.unwrap().symlink_target[..], &target[..]);
    assert_eq!(code(s.symlink(&u, ROOT, b"sl", b"x").await), StatusCode::AlreadyExists);
    assert_eq!(code(s.symlink(&u, ROOT, b"s2", b"").await), StatusCode::InvalidArgument);
    assert_eq!(code(s.symlink(&u, ROOT, b"s2", b"a\0b").await), StatusCode::InvalidArgument);
    assert_eq!(code(s.symlink(&u, ROOT, b"s2", &[b'x'; SYMLINK_MAX + 1]).await), StatusCode::NameTooLong);
    s.symlink(&u, ROOT, b"s2", &[b'x'; SYMLINK_MAX]).await.unwrap();
    assert_eq!(
        code(s.setattr(&u, InodeId(sl.id), SetAttr { length: Some(1), ..Default::default() }).await),
        StatusCode::InvalidArgument
    );
    // Symlinks can be hard-linked, renamed and unlinked like files.
    s.link(&u, InodeId(sl.id), InodeId(d.id), b"sl2").await.unwrap();
    mv(&s, 1, b"sl", d.id, b"sl3", PLAIN).await.unwrap();
    s.remove(&u, InodeId(d.id), b"sl2", false, "").await.unwrap();
    assert_eq!(s.remove(&u, InodeId(d.id), b"sl3", false, "").await.unwrap().nlink, 0);

    let got = s.batch_stat(&[ROOT, InodeId(f.id), InodeId(0), InodeId(sl.id), InodeId(d.id)]).await.unwrap();
    let ids: Vec<Option<u64>> = got.iter().map(|i| i.as_ref().map(|i| i.id)).collect();
    assert_eq!(ids, vec![Some(1), Some(f.id), None, None, Some(d.id)]);
    assert!(s.batch_stat(&[]).await.unwrap().is_empty());
    let too_many = vec![ROOT; MAX_BATCH_STAT + 1];
    assert_eq!(code(s.batch_stat(&too_many).await), StatusCode::InvalidArgument);
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn retried_removes_and_renames_return_the_first_result() {
    let s = store().await;
    let u = me();
    let f = s.create(&u, ROOT, b"f", 0o644, true).await.unwrap();
    let first = s.remove(&u, ROOT, b"f", false, "req-1").await.unwrap();
    assert_eq!((first.id, first.nlink), (f.id, 0));
    // The retry (reply lost) gets the same answer instead of NotFound.
    assert_eq!(s.remove(&u, ROOT, b"f", false, "req-1").await.unwrap(), first);
    // Another request id, or another user with the same id, runs for real.
    assert_eq!(code(s.remove(&u, ROOT, b"f", false, "req-2").await), StatusCode::NotFound);
    let other = Caller { uid: 1001, ..me() };
    assert_eq!(code(s.remove(&other, ROOT, b"f", false, "req-1").await), StatusCode::NotFound);
    // A failed op records nothing: after the name appears, the same id succeeds.
    let g = s.create(&u, ROOT, b"g", 0o644, true).await.unwrap();
    assert_eq!(s.remove(&u, ROOT, b"g", false, "req-2").await.unwrap().id, g.id);

    // rename: a retry does not apply twice (here it would fail with NotFound; with a cycle
    // a->b, b->a it would undo itself).
    s.create(&u, ROOT, b"a", 0o644, true).await.unwrap();
    let victim = s.create(&u, ROOT, b"b", 0o644, true).await.unwrap();
    let r1 = s.rename(&u, ROOT, b"a", ROOT, b"b", PLAIN, "mv-1").await.unwrap();
    assert_eq!(r1.as_ref().map(|i| i.id), Some(victim.id));
    assert_eq!(s.rename(&u, ROOT, b"a", ROOT, b"b", PLAIN, "mv-1").await.unwrap(), r1);
    // The same id for another op is not a retry of it.
    assert_eq!(code(s.remove(&u, ROOT, b"a", false, "mv-1").await), StatusCode::NotFound);
    assert_eq!(code(s.remove(&u, ROOT, b"f", false, &"r".repeat(300)).await), StatusCode::InvalidArgument);

    // Records older than the TTL are ignored.
    let s = store().await.with_idempotency_ttl(std::time::Duration::ZERO);
    s.create(&u, ROOT, b"f", 0o644, true).await.unwrap();
    s.remove(&u, ROOT, b"f", false, "req-1").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    assert_eq!(code(s.remove(&u, ROOT, b"f", false, "req-1").await), StatusCode::NotFound);
    assert_eq!(crate::idem::clean_expired(s.db(), std::time::Duration::ZERO).await.unwrap(), 1);
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn bad_inputs_change_nothing() {
    let s = store().await;
    let u = me();
    let d = s.mkdir(&u, ROOT, b"d", 0o755).await.unwrap();
    s.create(&u, ROOT, b"f", 0o644, true).await.unwrap();
    let before = s.batch_stat(&[ROOT, InodeId(d.id)]).await.unwrap();
    let long = vec![b'x'; 256];
    for (name, want) in [
        (&b""[..], StatusCode::InvalidArgument),
        (b".", StatusCode::InvalidArgument),
        (b"..", StatusCode::InvalidArgument),
        (b"a/b", StatusCode::InvalidArgument),
        (&long, StatusCode::NameTooLong),
    ] {
        assert_eq!(code(mv(&s, 1, b"f", 1, name, PLAIN).await), want);
        assert_eq!(code(mv(&s, 1, name, 1, b"g", PLAIN).await), want);
        assert_eq!(code(s.link(&u, InodeId(d.id), ROOT, name).await), want);
        assert_eq!(code(s.symlink(&u, ROOT, name, b"t").await), want);
    }
    for bad in [InodeId(0), InodeId(u64::MAX), InodeId(0xdead)] {
        assert_eq!(code(mv(&s, bad.0, b"f", 1, b"g", PLAIN).await), StatusCode::NotFound);
        assert_eq!(code(mv(&s, 1, b"f", bad.0, b"g", PLAIN).await), StatusCode::NotFound);
        assert_eq!(code(s.getattr(bad).await), StatusCode::NotFound);
        assert_eq!(code(s.lookup(&u, bad, b"x").await), StatusCode::NotFound);
        assert_eq!(code(s.setattr(&u, bad, SetAttr::default()).await), StatusCode::NotFound);
        assert_eq!(code(s.symlink(&u, bad, b"x", b"t").await), StatusCode::NotFound);
    }
    let fid = s.lookup(&u, ROOT, b"f").await.unwrap().id;
    let huge = SetAttr { length: Some(u64::MAX), ..Default::default() };
    assert_eq!(code(s.setattr(&u, InodeId(fid), huge).await), StatusCode::InvalidArgument);
    assert_eq!(code(s.close(InodeId(fid), u64::MAX, true).await), StatusCode::InvalidArgument);
    assert_eq!(code(mv(&s, 1, b"f", fid, b"x", PLAIN).await), StatusCode::NotDirectory);
    assert_eq!(s.batch_stat(&[ROOT, InodeId(d.id)]).await.unwrap(), before);
    assert_eq!(s.statfs().await.unwrap().inodes, 3);
    check_invariants(s.db()).await;
}
