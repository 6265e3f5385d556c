//! Permission matrix: three users with group membership against directories of different modes,
//! a sticky directory, a set-group-id directory, and setattr ownership rules.
use super::check::check_invariants;
use super::tests::store;
use super::*;

const ROOT: InodeId = InodeId::ROOT;
const DENIED: StatusCode = StatusCode::PermissionDenied;
const NOT_PERMITTED: StatusCode = StatusCode::OperationNotPermitted;
const PLAIN: RenameFlags = RenameFlags { no_replace: false, exchange: false };

fn alice() -> Caller {
    Caller { uid: 1000, gid: 1000, gids: vec![50] }
}
fn bob() -> Caller {
    Caller { uid: 1001, gid: 1001, gids: vec![50] }
}
fn carol() -> Caller {
    Caller { uid: 1002, gid: 1002, gids: vec![] }
}
fn root() -> Caller {
    Caller::default()
}

/// mkdir as root, then hand it to `uid:gid` with `mode`.
async fn dir(s: &MetaStore, name: &[u8], mode: u32, uid: u32, gid: u32) -> InodeId {
    let d = InodeId(s.mkdir(&root(), ROOT, name, 0o700).await.unwrap().id);
    s.setattr(&root(), d, SetAttr { mode: Some(mode), uid: Some(uid), gid: Some(gid), ..Default::default() })
        .await
        .unwrap();
    d
}

fn res<T>(r: Result<T>) -> Result<(), StatusCode> {
    r.map(|_| ()).map_err(|e| e.code)
}

#[tokio::test]
async fn directory_permission_matrix() {
    let s = store().await;
    let shared = dir(&s, b"shared", 0o770, 1000, 50).await;
    let private = dir(&s, b"private", 0o700, 1000, 1000).await;
    let ro = dir(&s, b"ro", 0o755, 1000, 1000).await;
    let wx = dir(&s, b"wx", 0o733, 1000, 1000).await;
    let users = [alice(), bob(), carol()];
    // (dir, [alice, bob, carol] may create)
    let table = [
        (shared, [true, true, false]),
        (private, [true, false, false]),
        (ro, [true, false, false]),
        (wx, [true, true, true]),
    ];
    for (d, allowed) in table {
        for (u, ok) in users.iter().zip(allowed) {
            let name = format!("f{}", u.uid);
            let want = if ok { Ok(()) } else { Err(DENIED) };
            assert_eq!(res(s.create(u, d, name.as_bytes(), 0o644, true).await), want, "create in {d} as {}", u.uid);
            let dname = format!("d{}", u.uid);
            assert_eq!(res(s.mkdir(u, d, dname.as_bytes(), 0o755).await), want, "mkdir in {d} as {}", u.uid);
            assert_eq!(res(s.symlink(u, d, format!("s{}", u.uid).as_bytes(), b"t").await), want);
        }
    }
    // Search permission: lookups in private only by alice; an existing name refuses before writing.
    assert_eq!(res(s.lookup(&bob(), private, b"f1000").await), Err(DENIED));
    assert_eq!(res(s.lookup(&alice(), private, b"f1000").await), Ok(()));
    assert_eq!(res(s.lookup(&carol(), ro, b"f1000").await), Ok(()));
    assert_eq!(res(s.create(&carol(), ro, b"f1000", 0o644, true).await), Err(StatusCode::AlreadyExists));
    assert_eq!(res(s.create(&carol(), ro, b"f1000", 0o644, false).await), Ok(()), "open of an existing file");
    assert_eq!(res(s.create(&carol(), private, b"f1000", 0o644, false).await), Err(DENIED));
    // Read permission for listings: wx (0733) may be searched but not listed by others.
    assert_eq!(res(s.readdir(&bob(), wx, b"", 0).await), Err(DENIED));
    assert_eq!(res(s.lookup(&bob(), wx, b"f1002").await), Ok(()));
    assert_eq!(res(s.readdir(&alice(), wx, b"", 0).await), Ok(()));
    assert_eq!(res(s.readdir(&root(), private, b"", 0).await), Ok(()));
    // Removing needs write on the parent; group members may remove each other's files (no sticky).
    assert_eq!(res(s.remove(&carol(), ro, b"f1000", false, "").await), Err(DENIED));
    assert_eq!(res(s.remove(&bob(), shared, b"f1000", false, "").await), Ok(()));
    assert_eq!(res(s.remove(&carol(), wx, b"f1000", false, "").await), Ok(()));
    // Links: write on the new parent.
    let f = s.lookup(&alice(), ro, b"f1000").await.unwrap();
    assert_eq!(res(s.link(&bob(), InodeId(f.id), ro, b"l").await), Err(DENIED));
    assert_eq!(res(s.link(&bob(), InodeId(f.id), shared, b"l").await), Ok(()));
    // Renames need write on both parents; a directory changing parent needs write on itself.
    assert_eq!(res(s.rename(&bob(), shared, b"l", ro, b"l", PLAIN, "").await), Err(DENIED));
    assert_eq!(res(s.rename(&bob(), shared, b"l", wx, b"l", PLAIN, "").await), Ok(()));
    s.mkdir(&alice(), shared, b"ad", 0o755).await.unwrap();
    assert_eq!(res(s.rename(&bob(), shared, b"ad", shared, b"ad2", PLAIN, "").await), Ok(()));
    assert_eq!(res(s.rename(&bob(), shared, b"ad2", wx, b"ad", PLAIN, "").await), Err(DENIED));
    assert_eq!(res(s.rename(&alice(), shared, b"ad2", wx, b"ad", PLAIN, "").await), Ok(()));
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn sticky_directories_protect_other_users_entries() {
    let s = store().await;
    let tmp = dir(&s, b"tmp", 0o1777, 1001, 1001).await; // owned by bob
    let a = s.create(&alice(), tmp, b"a", 0o666, true).await.unwrap();
    s.create(&carol(), tmp, b"c", 0o666, true).await.unwrap();
    s.mkdir(&alice(), tmp, b"ad", 0o777).await.unwrap();
    // carol may neither remove nor rename alice's entries, nor replace them by rename.
    assert_eq!(res(s.remove(&carol(), tmp, b"a", false, "").await), Err(NOT_PERMITTED));
    assert_eq!(res(s.remove(&carol(), tmp, b"ad", true, "").await), Err(NOT_PERMITTED));
    assert_eq!(res(s.rename(&carol(), tmp, b"a", tmp, b"x", PLAIN, "").await), Err(NOT_PERMITTED));
    assert_eq!(res(s.rename(&carol(), tmp, b"c", tmp, b"a", PLAIN, "").await), Err(NOT_PERMITTED));
    let swap = RenameFlags { no_replace: false, exchange: true };
    assert_eq!(res(s.rename(&carol(), tmp, b"c", tmp, b"a", swap, "").await), Err(NOT_PERMITTED));
    // Writing into alice's world-writable subdirectory is not restricted by the parent's sticky bit.
    s.create(&carol(), InodeId(s.lookup(&carol(), tmp, b"ad").await.unwrap().id), b"in", 0o644, true).await.unwrap();
    assert_eq!(s.lookup(&carol(), tmp, b"a").await.unwrap().id, a.id);
    // The entry's owner, the directory's owner (bob) and root may.
    s.rename(&alice(), tmp, b"a", tmp, b"a2", PLAIN, "").await.unwrap();
    s.remove(&bob(), tmp, b"a2", false, "").await.unwrap();
    s.remove(&root(), tmp, b"c", false, "").await.unwrap();
    check_invariants(s.db()).await;
}

#[tokio::test]
async fn setattr_ownership_rules() {
    let s = store().await;
    let d = dir(&s, b"d", 0o777, 1000, 1000).await;
    let f = InodeId(s.create(&alice(), d, b"f", 0o644, true).await.unwrap().id);
    let set = |a: SetAttr| a;
    let chmod = set(SetAttr { mode: Some(0o600), ..Default::default() });
    assert_eq!(res(s.setattr(&bob(), f, chmod.clone()).await), Err(NOT_PERMITTED));
    assert_eq!(s.setattr(&alice(), f, chmod).await.unwrap().mode, 0o600);
    // Only root gives files away; chown to oneself by the owner is allowed.
    let to_bob = SetAttr { uid: Some(1001), ..Default::default() };
    assert_eq!(res(s.setattr(&alice(), f, to_bob.clone()).await), Err(NOT_PERMITTED));
    assert_eq!(res(s.setattr(&bob(), f, SetAttr { uid: Some(1001), ..Default::default() }).await), Err(NOT_PERMITTED));
    assert_eq!(res(s.setattr(&alice(), f, SetAttr { uid: Some(1000), ..Default::default() }).await), Ok(()));
    // The owner may set a group it belongs to, not another.
    assert_eq!(s.setattr(&alice(), f, SetAttr { gid: Some(50), ..Default::default() }).await.unwrap().gid, 50);
    assert_eq!(
        res(s.setattr(&alice(), f, SetAttr { gid: Some(1001), ..Default::default() }).await),
        Err(NOT_PERMITTED)
    );
    assert_eq!(res(s.setattr(&bob(), f, SetAttr { gid: Some(50), ..Default::default() }).await), Err(NOT_PERMITTED));
    // Explicit times need ownership; truncation needs write permission.
    let times = SetAttr { mtime_ns: Some(5), ..Default::default() };
    assert_eq!(res(s.setattr(&bob(), f, times.clone()).await), Err(NOT_PERMITTED));
    assert_eq!(s.setattr(&alice(), f, times).await.unwrap().mtime_ns, 5);
    // "Now" (UTIME_NOW) needs write permission only; meta's clock is used, the given time ignored.
    let touch = SetAttr { mtime_ns: Some(7), mtime_now: true, atime_now: true, ..Default::default() };
    assert_eq!(res(s.setattr(&bob(), f, touch.clone()).await), Err(DENIED));
    let trunc = SetAttr { length: Some(10), ..Default::default() };
    assert_eq!(res(s.setattr(&bob(), f, trunc.clone()).await), Err(DENIED));
    s.setattr(&alice(), f, SetAttr { mode: Some(0o660), ..Default::default() }).await.unwrap();
    let t = s.setattr(&bob(), f, touch).await.unwrap();
    assert!(t.mtime_ns > 1_000_000_000 * 1_000_000_000 && t.atime_ns == t.mtime_ns, "meta's now: {t:?}");
    let mixed = SetAttr { atime_now: true, mtime_ns: Some(9), ..Default::default() };
    assert_eq!(res(s.setattr(&bob(), f, mixed).await), Err(NOT_PERMITTED), "one explicit time needs the owner");
    assert_eq!(s.setattr(&bob(), f, trunc).await.unwrap().length, 10, "bob writes through group 50");
    // Root does anything; chown clears set-user-id.
    let g = s.setattr(&root(), f, SetAttr { mode: Some(0o4755), ..Default::default() }).await.unwrap();
    assert_eq!(g.mode, 0o4755);
    let g = s.setattr(&root(), f, SetAttr { uid: Some(1001), gid: Some(1001), ..Default::default() }).await.unwrap();
    assert_eq!((g.uid, g.gid, g.mode), (1001, 1001, 0o755));
    // A non-root owner outside the file's group cannot keep set-group-id.
    let g = s.setattr(&bob(), f, SetAttr { gid: Some(50), ..Default::default() }).await.unwrap();
    assert_eq!(g.gid, 50);
    s.setattr(&root(), f, SetAttr { gid: Some(7), ..Default::default() }).await.unwrap();
    assert_eq!(s.setattr(&bob(), f, SetAttr { mode: Some(0o2755), ..Default::default() }).await.unwrap().mode, 0o755);
    s.setattr(&root(), f, SetAttr { gid: Some(1001), ..Default::default() }).await.unwrap();
    assert_eq!(s.setattr(&bob(), f, SetAttr { mode: Some(0o2755), ..Default::default() }).await.unwrap().mode, 0o2755);
    // Nothing above changed anything when refused: the file is intact.
    assert_eq!(s.getattr(f).await.unwrap().length, 10);
}

#[tokio::test]
async fn setgid_directories_pass_their_group_on() {
    let s = store().await;
    let sg = dir(&s, b"sg", 0o2777, 0, 50).await;
    let f = s.create(&carol(), sg, b"f", 0o644, true).await.unwrap();
    assert_eq!((f.uid, f.gid), (1002, 50));
    let d = s.mkdir(&carol(), sg, b"d", 0o755).await.unwrap();
    assert_eq!((d.gid, d.mode), (50, 0o2755));
    let l = s.symlink(&carol(), sg, b"l", b"f").await.unwrap();
    assert_eq!(l.gid, 50);
    let plain = s.create(&carol(), ROOT, b"p", 0o644, true).await.unwrap();
    assert_eq!(plain.gid, 1002);
}
