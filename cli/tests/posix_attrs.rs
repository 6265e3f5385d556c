//! POSIX semantics of attributes and permissions through a real FUSE mount (one in-process cluster
//! and mount per test): chmod, chown, utimens (exact times, UTIME_NOW, UTIME_OMIT), mtime/ctime
//! updates, extended attributes on files and directories, statfs, and every permission case as an
//! unprivileged user (uid 1000 with supplementary group 2000) through an `allow_other` mount, each
//! with its exact errno. Each claim in docs/semantics.md about these names the test here that
//! checks it.
//!
//! The other user's calls run in a child process: this test binary run again as that user with
//! only [`as_user_child_entry`], which executes a script of calls (see `support::sys::run_op`).
//!
//! Skips (with a message) only where /dev/fuse is missing (and the permission test where the test
//! does not run as root).
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;
use support::sys::{as_user, getxattr, getxattr_all, listxattr, removexattr, setxattr, statvfs, ts, utimens};
use support::{Env, errno};

/// Not a test of its own: the entry point of [`as_user`] children (does nothing in a normal run).
#[test]
fn as_user_child_entry() {
    support::sys::as_user_child();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chmod_chown_and_times() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let p = m.join("f");
        std::fs::write(&p, b"x").unwrap();
        // chmod: every mode bit, set-id and sticky included, round-trips; the type bits stay.
        for mode in [0o000, 0o644, 0o4755, 0o2711, 0o1777, 0o7777, 0o600] {
            chmod(&p, mode);
            let md = std::fs::metadata(&p).unwrap();
            assert_eq!(md.mode() & 0o7777, mode, "mode {mode:o}");
            assert!(md.is_file());
        }
        std::fs::create_dir(m.join("d")).unwrap();
        chmod(&m.join("d"), 0o2750);
        let md = std::fs::metadata(m.join("d")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o2750);
        assert!(md.is_dir());
        // chown (as root): any uid/gid; -1 leaves that id alone.
        chown(&p, 1234, 5678).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        std::os::unix::fs::chown(&p, None, Some(42)).unwrap();
        std::os::unix::fs::chown(&p, Some(7), None).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (7, 42));
        // lchown on a symlink changes the link, not its target.
        std::os::unix::fs::symlink("f", m.join("s")).unwrap();
        std::os::unix::fs::lchown(m.join("s"), Some(99), Some(98)).unwrap();
        let l = std::fs::symlink_metadata(m.join("s")).unwrap();
        assert_eq!((l.uid(), l.gid()), (99, 98));
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), 7);

        // utimensat: exact times to the nanosecond.
        utimens(&p, [ts(1_000_000_000, 123_456_789), ts(1_500_000_000, 987_654_321)]).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 987_654_321));
        // UTIME_OMIT leaves that time alone; UTIME_NOW sets it to the current time.
        utimens(&p, [ts(0, libc::UTIME_OMIT), ts(1_600_000_000, 0)]).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789), "UTIME_OMIT atime");
        assert_eq!(md.mtime(), 1_600_000_000);
        let before = now_s();
        utimens(&p, [ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)]).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert!((before - 1..=now_s() + 1).contains(&md.atime()), "UTIME_NOW atime {}", md.atime());
        assert_eq!(md.mtime(), 1_600_000_000, "UTIME_OMIT mtime");
        // utimes on a directory and on a symlink's target.
        utimens(&m.join("d"), [ts(1_000, 0), ts(2_000, 0)]).unwrap();
        assert_eq!(std::fs::metadata(m.join("d")).unwrap().mtime(), 2_000);
        utimens(&m.join("s"), [ts(3_000, 0), ts(4_000, 0)]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mtime(), 4_000, "utimensat follows symlinks");

        // A write moves mtime (seen once the writer closed); chmod moves ctime.
        utimens(&p, [ts(1_000, 0), ts(1_000, 0)]).unwrap();
        let before = now_s();
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(b"more").unwrap();
        drop(f);
        let md = std::fs::metadata(&p).unwrap();
        assert!(md.mtime() >= before - 1, "mtime after a write: {}", md.mtime());
        let ctime = (md.ctime(), md.ctime_nsec());
        std::thread::sleep(Duration::from_millis(20));
        chmod(&p, 0o640);
        let md = std::fs::metadata(&p).unwrap();
        assert!((md.ctime(), md.ctime_nsec()) > ctime, "chmod changes ctime");
        // Creating an entry moves the parent's mtime.
        utimens(&m.join("d"), [ts(1_000, 0), ts(1_000, 0)]).unwrap();
        std::fs::write(m.join("d/new"), b"").unwrap();
        assert!(std::fs::metadata(m.join("d")).unwrap().mtime() >= before - 1, "a create moves the parent's mtime");
        // Errors: ENOENT on a missing file; EINVAL on a bad nanosecond value.
        assert_eq!(errno(utimens(&m.join("missing"), [ts(0, 0), ts(0, 0)])), libc::ENOENT);
        assert_eq!(errno(utimens(&p, [ts(0, 1_000_000_000), ts(0, 0)])), libc::EINVAL);
        assert_eq!(errno(chown(&m.join("missing"), 1, 1)), libc::ENOENT);
    })
    .await;
    env.stop().await;
}

/// An access ACL in the kernel's xattr form granting uid 1000 read (not expressible in mode bits).
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec(); // POSIX_ACL_XATTR_VERSION
    // (tag, perm, id): USER_OBJ rw, USER 1000 r, GROUP_OBJ r, MASK r, OTHER r.
    for (tag, perm, id) in
        [(0x01u16, 6u16, u32::MAX), (0x02, 4, 1000), (0x04, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 4, u32::MAX)]
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xattrs_on_files_and_directories() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        std::fs::write(m.join("f"), b"x").unwrap();
        std::fs::create_dir(m.join("d")).unwrap();
        for p in [m.join("f"), m.join("d")] {
            assert_eq!(listxattr(&p).unwrap(), Vec::<String>::new());
            assert_eq!(errno(getxattr_all(&p, "user.a")), libc::ENODATA);
            setxattr(&p, "user.a", b"1", 0).unwrap();
            setxattr(&p, "user.b", b"", 0).unwrap();
            setxattr(&p, "trusted.t", b"root only", 0).unwrap();
            assert_eq!(getxattr_all(&p, "user.a").unwrap(), b"1");
            assert_eq!(getxattr_all(&p, "user.b").unwrap(), b"");
            assert_eq!(getxattr(&p, "user.a", 0).unwrap().len(), 1, "size probe");
            assert_eq!(listxattr(&p).unwrap(), ["trusted.t", "user.a", "user.b"]);
            // XATTR_CREATE on an existing name EEXIST, XATTR_REPLACE on a missing one ENODATA.
            assert_eq!(errno(setxattr(&p, "user.a", b"2", libc::XATTR_CREATE)), libc::EEXIST);
            assert_eq!(errno(setxattr(&p, "user.c", b"2", libc::XATTR_REPLACE)), libc::ENODATA);
            setxattr(&p, "user.a", b"22", libc::XATTR_REPLACE).unwrap();
            setxattr(&p, "user.c", b"3", libc::XATTR_CREATE).unwrap();
            assert_eq!(getxattr_all(&p, "user.a").unwrap(), b"22");
            // A too-small buffer: ERANGE.
            assert_eq!(errno(getxattr(&p, "user.a", 1)), libc::ERANGE);
            // A 64 KiB value (the Linux limit) round-trips.
            let big = vec![7u8; 65536];
            setxattr(&p, "user.big", &big, 0).unwrap();
            assert!(getxattr_all(&p, "user.big").unwrap() == big);
            // remove; removing again ENODATA.
            removexattr(&p, "user.a").unwrap();
            assert_eq!(errno(removexattr(&p, "user.a")), libc::ENODATA);
            assert_eq!(errno(getxattr_all(&p, "user.a")), libc::ENODATA);
            assert_eq!(listxattr(&p).unwrap(), ["trusted.t", "user.b", "user.big", "user.c"]);
            // POSIX ACLs are not stored: EOPNOTSUPP (mode bits are the only permissions).
            assert_eq!(errno(setxattr(&p, "system.posix_acl_access", &acl(), 0)), libc::EOPNOTSUPP);
            assert_eq!(errno(getxattr_all(&p, "system.posix_acl_access")), libc::ENODATA);
        }
        // On a missing file: ENOENT.
        assert_eq!(errno(getxattr_all(&m.join("missing"), "user.a")), libc::ENOENT);
        assert_eq!(errno(setxattr(&m.join("missing"), "user.a", b"", 0)), libc::ENOENT);
        // xattrs survive a rename and go with the inode to a hard link.
        std::fs::rename(m.join("f"), m.join("g")).unwrap();
        std::fs::hard_link(m.join("g"), m.join("h")).unwrap();
        assert_eq!(getxattr_all(&m.join("h"), "user.c").unwrap(), b"3");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statfs_fields() {
    // Count inodes on every statfs (the server reuses a count for 5 s by default).
    let Some(env) = Env::start_tweaked(|plan| plan.meta.statfs_cache_ms = 0, |_| {}).await else { return };
    let before = env.fs(|m| statvfs(m).unwrap()).await;
    assert_eq!(before.f_bsize, 4096);
    assert_eq!(before.f_frsize, 4096);
    assert_eq!(before.f_namemax, 255);
    assert!(before.f_bfree <= before.f_blocks && before.f_bavail <= before.f_blocks);
    assert!(before.f_ffree <= before.f_files);
    // Files in use are counted: creating some lowers the free inode count.
    let after = env
        .fs(|m| {
            for i in 0..5 {
                std::fs::write(m.join(format!("f{i}")), b"x").unwrap();
            }
            statvfs(m).unwrap()
        })
        .await;
    assert_eq!(before.f_files - before.f_ffree + 5, after.f_files - after.f_ffree, "5 more inodes in use");
    // statfs of any path in the mount answers the same file system.
    let sub = env.fs(|m| statvfs(&m.join("f0")).unwrap()).await;
    assert_eq!(sub.f_blocks, after.f_blocks);
    env.stop().await;
}

const UID: u32 = 1000;
const GID: u32 = 1000;
const GROUP: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissions_as_an_unprivileged_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: acting as another user needs root");
        return;
    }
    let Some(env) = Env::start_with(|c| c.allow_other = true).await else { return };
    let m = env.mnt.clone();
    // The tempdir above the mount must be searchable by the user.
    chmod(env.tmp.path(), 0o755);
    env.fs(|m| {
        let j = |s: &str| m.join(s);
        std::fs::create_dir(j("rootdir")).unwrap();
        std::fs::write(j("rootdir/file"), b"in a 0755 dir").unwrap();
        std::fs::write(j("secret"), b"root only").unwrap();
        chmod(&j("secret"), 0o600);
        std::fs::write(j("shared"), b"for everyone").unwrap();
        chmod(&j("shared"), 0o666);
        std::fs::write(j("grp"), b"group").unwrap();
        chmod(&j("grp"), 0o640);
        chown(&j("grp"), 0, GROUP).unwrap();
        std::fs::create_dir(j("closed")).unwrap();
        std::fs::write(j("closed/f"), b"").unwrap();
        chmod(&j("closed"), 0o700);
        std::fs::create_dir(j("udir")).unwrap();
        chown(&j("udir"), UID, GID).unwrap();
        std::fs::write(j("ufile"), b"mine").unwrap();
        chown(&j("ufile"), UID, GID).unwrap();
        // The root of a t3fs mount is world-writable and sticky (like /tmp).
        assert_eq!(std::fs::metadata(m).unwrap().mode() & 0o7777, 0o1777);
    })
    .await;
    let p = |s: &str| m.join(s).display().to_string();
    // (call, expected errno)
    let cases: Vec<(String, i32)> = vec![
        // Data access by mode class: other, group (supplementary), owner.
        (format!("open {} r 0", p("secret")), libc::EACCES),
        (format!("open {} r 0", p("shared")), 0),
        (format!("open {} rw 0", p("shared")), 0),
        (format!("open {} r 0", p("rootdir/file")), 0),
        (format!("open {} w 0", p("rootdir/file")), libc::EACCES),
        (format!("open {} t 0", p("rootdir/file")), libc::EACCES),
        (format!("open {} r 0", p("grp")), 0),
        (format!("open {} w 0", p("grp")), libc::EACCES),
        (format!("truncate {} 0", p("rootdir/file")), libc::EACCES),
        // Entries in a directory the user may not write: EACCES.
        (format!("open {} cx 644", p("rootdir/new")), libc::EACCES),
        (format!("mkdir {} 755", p("rootdir/d")), libc::EACCES),
        (format!("unlink {}", p("rootdir/file")), libc::EACCES),
        (format!("rename {} {}", p("rootdir/file"), p("udir/x")), libc::EACCES),
        (format!("symlink t {}", p("rootdir/l")), libc::EACCES),
        // A directory the user may not search or read.
        (format!("stat {}", p("closed/f")), libc::EACCES),
        (format!("readdir {}", p("closed")), libc::EACCES),
        (format!("open {} r 0", p("closed/f")), libc::EACCES),
        // Others' entries in the sticky root: EPERM to remove or rename them.
        (format!("unlink {}", p("shared")), libc::EPERM),
        (format!("rename {} {}", p("shared"), p("udir/x")), libc::EPERM),
        (format!("rmdir {}", p("closed")), libc::EPERM),
        // Attributes: only the owner may chmod, give away, or set exact times.
        (format!("chmod {} 777", p("shared")), libc::EPERM),
        (format!("chown {} 1000 -1", p("shared")), libc::EPERM),
        (format!("chmod {} 600", p("ufile")), 0),
        (format!("chown {} -1 {GROUP}", p("ufile")), 0),
        (format!("chown {} -1 3000", p("ufile")), libc::EPERM),
        (format!("chown {} 0 -1", p("ufile")), libc::EPERM),
        (format!("utime_now {}", p("shared")), 0),
        (format!("utime_now {}", p("rootdir/file")), libc::EACCES),
        (format!("utime_set {} 1000", p("shared")), libc::EPERM),
        (format!("utime_set {} 1000", p("ufile")), 0),
        // Extended attributes: user.* needs write (set) or read (get) permission; trusted.* root.
        (format!("setxattr {} user.x", p("rootdir/file")), libc::EACCES),
        (format!("getxattr {} user.x", p("secret")), libc::EACCES),
        (format!("setxattr {} user.x", p("ufile")), 0),
        (format!("getxattr {} user.x", p("ufile")), 0),
        (format!("setxattr {} trusted.x", p("ufile")), libc::EPERM),
        // access(2) agrees with the mode bits.
        (format!("access {} r", p("secret")), libc::EACCES),
        (format!("access {} w", p("shared")), 0),
        (format!("access {} w", p("rootdir/file")), libc::EACCES),
        (format!("access {} rwx", p("udir")), 0),
        // In the user's own directory everything works.
        (format!("open {} cx 640", p("udir/new")), 0),
        (format!("mkdir {} 750", p("udir/sub")), 0),
        (format!("rename {} {}", p("udir/new"), p("udir/sub/moved")), 0),
        (format!("symlink moved {}", p("udir/sub/l")), 0),
        (format!("unlink {}", p("udir/sub/l")), 0),
        (format!("open {} cx 600", p("mine")), 0),
        (format!("unlink {}", p("mine")), 0),
    ];
    let script: Vec<String> = cases.iter().map(|(c, _)| c.clone()).collect();
    let got = support::blocking(move || as_user("as_user_child_entry", UID, GID, &[GROUP], &script)).await;
    let wrong: Vec<String> = cases
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| *want != **got)
        .map(|((c, want), got)| format!("{c}: want errno {want}, got {got}"))
        .collect();
    assert!(wrong.is_empty(), "as uid {UID}:\n{}", wrong.join("\n"));
    env.fs(|m| {
        // What the user created is its own, with its mode less its umask (0022 here: the child
        // inherits the test's).
        let md = std::fs::metadata(m.join("udir/sub/moved")).unwrap();
        assert_eq!((md.uid(), md.gid()), (UID, GID));
        assert_eq!(md.mode() & 0o777, 0o640 & !0o022 & 0o777);
        assert_eq!(std::fs::metadata(m.join("ufile")).unwrap().gid(), GROUP);
        // Nothing the denied calls touched changed.
        assert_eq!(std::fs::read(m.join("rootdir/file")).unwrap(), b"in a 0755 dir");
        assert_eq!(std::fs::read(m.join("secret")).unwrap(), b"root only");
        assert_eq!(std::fs::metadata(m.join("shared")).unwrap().mode() & 0o7777, 0o666);
        assert!(!m.join("rootdir/new").exists() && !m.join("rootdir/d").exists() && !m.join("udir/x").exists());
        assert_eq!(errno(getxattr_all(&m.join("rootdir/file"), "user.x")), libc::ENODATA);
    })
    .await;
    env.stop().await;
}
