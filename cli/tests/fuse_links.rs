//! Rename, hard and symbolic links, extended attributes and permissions through a real FUSE mount
//! over a real in-process cluster (one cluster and one mount per test, in a tempdir).
//!
//! Covered: rename of a file, over an existing file (its chunks freed; at last close when it was
//! open, its handle still reading the old bytes), of a directory with contents, into its own
//! subtree (EINVAL), type clashes (EISDIR/ENOTDIR/ENOTEMPTY), renameat2 RENAME_NOREPLACE (EEXIST) and
//! RENAME_EXCHANGE; a file renamed while being written; hard links (one inode, nlink, data through
//! both names, unlink of one keeps the other); symlinks (readlink, following, dangling, EINVAL on a
//! file); xattrs (set/get/list/remove, size probe, ERANGE, ENODATA, XATTR_CREATE/XATTR_REPLACE); and,
//! as another user through an `allow_other` mount, EACCES on files the mode bits deny (read, write,
//! create, unlink, rename, access(2)), EPERM for others' entries in the sticky root, and access
//! granted through the owner, group and supplementary-group classes.
//!
//! Skips (with a message) only where /dev/fuse is missing (and the permission test where the test
//! does not run as root, which it needs to act as another user).
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

mod support;
use support::sys::{getxattr, getxattr_all, listxattr, removexattr, renameat2, setxattr};
use support::{Env, errno, pattern, wait_chunks_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_files_and_directories() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    env.fs(|m| {
        // A plain rename.
        std::fs::write(m.join("a"), b"alpha").unwrap();
        let ino = std::fs::metadata(m.join("a")).unwrap().ino();
        std::fs::rename(m.join("a"), m.join("b")).unwrap();
        assert_eq!(errno(std::fs::metadata(m.join("a"))), libc::ENOENT);
        assert_eq!(std::fs::read(m.join("b")).unwrap(), b"alpha");
        assert_eq!(std::fs::metadata(m.join("b")).unwrap().ino(), ino, "rename keeps the inode");
        // Onto itself: nothing happens.
        std::fs::rename(m.join("b"), m.join("b")).unwrap();
        assert_eq!(std::fs::read(m.join("b")).unwrap(), b"alpha");
        assert_eq!(errno(std::fs::rename(m.join("nope"), m.join("x"))), libc::ENOENT);
    })
    .await;

    // Over an existing file: the new bytes under the name, the old file's chunks gone.
    let old = pattern(2 * cs + 10, 1);
    env.fs(move |m| {
        std::fs::write(m.join("new"), b"new content").unwrap();
        std::fs::write(m.join("old"), &old).unwrap();
    })
    .await;
    let old_inode = env.inode("/old").await;
    assert_eq!(env.chunks_of(old_inode.id).await.len(), 3 * 3);
    env.fs(|m| {
        std::fs::rename(m.join("new"), m.join("old")).unwrap();
        assert_eq!(std::fs::read(m.join("old")).unwrap(), b"new content");
        assert_eq!(errno(std::fs::metadata(m.join("new"))), libc::ENOENT);
    })
    .await;
    assert_eq!(wait_chunks_gone(&env, old_inode.id).await, vec![], "GC frees the replaced file's chunks");

    // A directory with contents, then into its own subtree.
    env.fs(|m| {
        std::fs::create_dir_all(m.join("d1/sub")).unwrap();
        std::fs::write(m.join("d1/sub/f"), b"deep").unwrap();
        std::fs::create_dir(m.join("other")).unwrap();
        std::fs::rename(m.join("d1"), m.join("other/d2")).unwrap();
        assert_eq!(errno(std::fs::metadata(m.join("d1"))), libc::ENOENT);
        assert_eq!(std::fs::read(m.join("other/d2/sub/f")).unwrap(), b"deep");
        let names: Vec<_> = std::fs::read_dir(m.join("other/d2")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["sub"]);
        assert_eq!(errno(std::fs::rename(m.join("other/d2"), m.join("other/d2/sub/x"))), libc::EINVAL);
        assert_eq!(errno(std::fs::rename(m.join("other"), m.join("other/d2/y"))), libc::EINVAL);
        // Type clashes.
        std::fs::create_dir(m.join("empty")).unwrap();
        assert_eq!(errno(std::fs::rename(m.join("old"), m.join("empty"))), libc::EISDIR);
        assert_eq!(errno(std::fs::rename(m.join("empty"), m.join("old"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::rename(m.join("empty"), m.join("other"))), libc::ENOTEMPTY);
        // A directory over an empty one.
        std::fs::rename(m.join("other/d2"), m.join("empty")).unwrap();
        assert_eq!(std::fs::read(m.join("empty/sub/f")).unwrap(), b"deep");
        assert_eq!(std::fs::read_dir(m.join("other")).unwrap().count(), 0);
    })
    .await;
    // Meta's parent pointer moved with the directory (root -> other -> root), link counts too.
    let moved = env.inode("/empty").await;
    assert_eq!(moved.parent, t3fs_common::InodeId::ROOT.0);
    assert_eq!(env.inode("/empty/sub/..").await.id, moved.id);
    assert_eq!(env.inode("/other").await.nlink, 2, "no subdirectory left in /other");

    // renameat2 flags.
    env.fs(|m| {
        std::fs::write(m.join("p"), b"P").unwrap();
        std::fs::write(m.join("q"), b"Q").unwrap();
        assert_eq!(errno(renameat2(&m.join("p"), &m.join("q"), libc::RENAME_NOREPLACE)), libc::EEXIST);
        assert_eq!(std::fs::read(m.join("q")).unwrap(), b"Q");
        renameat2(&m.join("p"), &m.join("p2"), libc::RENAME_NOREPLACE).unwrap();
        assert_eq!(std::fs::read(m.join("p2")).unwrap(), b"P");
        renameat2(&m.join("p2"), &m.join("q"), libc::RENAME_EXCHANGE).unwrap();
        assert_eq!(std::fs::read(m.join("p2")).unwrap(), b"Q");
        assert_eq!(std::fs::read(m.join("q")).unwrap(), b"P");
        // A file and a directory swap too.
        renameat2(&m.join("q"), &m.join("empty"), libc::RENAME_EXCHANGE).unwrap();
        assert_eq!(std::fs::read(m.join("empty")).unwrap(), b"P");
        assert_eq!(std::fs::read(m.join("q/sub/f")).unwrap(), b"deep");
        assert_eq!(errno(renameat2(&m.join("p2"), &m.join("missing"), libc::RENAME_EXCHANGE)), libc::ENOENT);
        let both = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        assert_eq!(errno(renameat2(&m.join("p2"), &m.join("q"), both)), libc::EINVAL);
        assert_eq!(errno(renameat2(&m.join("p2"), &m.join("w"), libc::RENAME_WHITEOUT)), libc::EINVAL);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_of_open_files() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    // A file renamed while being written: the handle goes on writing it, under its new name.
    env.fs(move |m| {
        let mut f = File::create(m.join("w1")).unwrap();
        f.write_all(&pattern(cs + 5, 2)).unwrap();
        std::fs::rename(m.join("w1"), m.join("w2")).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let mut want = pattern(cs + 5, 2);
        want.extend_from_slice(b"tail");
        assert!(std::fs::read(m.join("w2")).unwrap() == want, "content written across the rename differs");
    })
    .await;
    assert_eq!(env.inode("/w2").await.length, cs as u64 + 9);

    // A file replaced by a rename while open for reading: its handle still reads the old bytes, fstat
    // works (nlink 0), and the chunks go at its last close.
    let old = pattern(2 * cs + 3, 3);
    let f = {
        let old = old.clone();
        env.fs(move |m| {
            std::fs::write(m.join("victim"), &old).unwrap();
            File::open(m.join("victim")).unwrap()
        })
        .await
    };
    let victim = env.inode("/victim").await;
    let f = env
        .fs(move |m| {
            std::fs::write(m.join("repl"), b"replacement").unwrap();
            std::fs::rename(m.join("repl"), m.join("victim")).unwrap();
            assert_eq!(std::fs::read(m.join("victim")).unwrap(), b"replacement");
            let mut f = f;
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            assert!(got == old, "the open handle of the replaced file must still read its bytes");
            let md = f.metadata().unwrap();
            assert_eq!((md.len(), md.nlink()), (old.len() as u64, 0));
            f
        })
        .await;
    assert!(!env.chunks_of(victim.id).await.is_empty(), "chunks stay while the replaced file is open");
    env.fs(move |_| drop(f)).await;
    assert_eq!(wait_chunks_gone(&env, victim.id).await, vec![], "chunks go at the last close");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_and_symbolic_links() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        std::fs::write(m.join("f"), b"first").unwrap();
        std::fs::create_dir(m.join("dir")).unwrap();
        std::fs::hard_link(m.join("f"), m.join("dir/g")).unwrap();
        let (a, b) = (std::fs::metadata(m.join("f")).unwrap(), std::fs::metadata(m.join("dir/g")).unwrap());
        assert_eq!(a.ino(), b.ino(), "a hard link is the same inode");
        assert_eq!((a.nlink(), b.nlink()), (2, 2));
        // Data written through one name is read through the other.
        OpenOptions::new().append(true).open(m.join("dir/g")).unwrap().write_all(b"+second").unwrap();
        assert_eq!(std::fs::read(m.join("f")).unwrap(), b"first+second");
        assert_eq!(errno(std::fs::hard_link(m.join("f"), m.join("dir/g"))), libc::EEXIST);
        assert_eq!(errno(std::fs::hard_link(m.join("nope"), m.join("h"))), libc::ENOENT);
        assert_eq!(errno(std::fs::hard_link(m.join("dir"), m.join("dir2"))), libc::EPERM);
        // Unlink of one name keeps the other.
        std::fs::remove_file(m.join("f")).unwrap();
        assert_eq!(std::fs::read(m.join("dir/g")).unwrap(), b"first+second");
        assert_eq!(std::fs::metadata(m.join("dir/g")).unwrap().nlink(), 1);
    })
    .await;
    let g = env.inode("/dir/g").await;
    assert_eq!(g.nlink, 1);
    assert!(!env.chunks_of(g.id).await.is_empty(), "the file's chunks stay while a link is left");
    env.fs(|m| std::fs::remove_file(m.join("dir/g")).unwrap()).await;
    assert_eq!(wait_chunks_gone(&env, g.id).await, vec![], "GC takes the chunks after the last link");

    env.fs(|m| {
        std::fs::write(m.join("target"), b"pointed at").unwrap();
        std::os::unix::fs::symlink("target", m.join("l")).unwrap();
        std::os::unix::fs::symlink("../dir", m.join("dir/up")).unwrap();
        assert_eq!(std::fs::read_link(m.join("l")).unwrap(), Path::new("target"));
        let md = std::fs::symlink_metadata(m.join("l")).unwrap();
        assert!(md.file_type().is_symlink());
        assert_eq!(md.len(), 6);
        // Following the links.
        assert_eq!(std::fs::read(m.join("l")).unwrap(), b"pointed at");
        assert!(std::fs::metadata(m.join("l")).unwrap().is_file());
        std::fs::write(m.join("dir/up/via-link"), b"v").unwrap();
        assert_eq!(std::fs::read(m.join("dir/via-link")).unwrap(), b"v");
        // Dangling, then repaired.
        std::os::unix::fs::symlink("missing", m.join("dangling")).unwrap();
        assert_eq!(errno(std::fs::read(m.join("dangling"))), libc::ENOENT);
        std::fs::write(m.join("missing"), b"now here").unwrap();
        assert_eq!(std::fs::read(m.join("dangling")).unwrap(), b"now here");
        // readlink of a non-link; a link over an existing name; a long target.
        assert_eq!(errno(std::fs::read_link(m.join("target"))), libc::EINVAL);
        assert_eq!(errno(std::os::unix::fs::symlink("x", m.join("target"))), libc::EEXIST);
        let long = "t/".repeat(2000);
        std::os::unix::fs::symlink(&long, m.join("long")).unwrap();
        assert_eq!(std::fs::read_link(m.join("long")).unwrap(), Path::new(&long));
        // A symlink is renamed and removed like any entry; its target stays.
        std::fs::rename(m.join("l"), m.join("l2")).unwrap();
        assert_eq!(std::fs::read(m.join("l2")).unwrap(), b"pointed at");
        std::fs::remove_file(m.join("l2")).unwrap();
        assert_eq!(std::fs::read(m.join("target")).unwrap(), b"pointed at");
    })
    .await;
    let l = env.inode("/dangling").await;
    assert_eq!(l.inode_type, t3fs_common::proto::InodeType::Symlink as i32);
    assert_eq!(&l.symlink_target[..], b"missing");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_attributes() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let f = m.join("x");
        std::fs::write(&f, b"data").unwrap();
        assert_eq!(listxattr(&f).unwrap(), Vec::<String>::new());
        assert_eq!(errno(getxattr(&f, "user.a", 100)), libc::ENODATA);
        setxattr(&f, "user.a", b"hello", 0).unwrap();
        setxattr(&f, "user.empty", b"", 0).unwrap();
        // The size probe, an exact buffer, a too-small buffer.
        assert_eq!(getxattr(&f, "user.a", 0).unwrap().len(), 5);
        assert_eq!(getxattr(&f, "user.a", 5).unwrap(), b"hello");
        assert_eq!(getxattr(&f, "user.a", 100).unwrap(), b"hello");
        assert_eq!(errno(getxattr(&f, "user.a", 2)), libc::ERANGE);
        assert_eq!(getxattr(&f, "user.empty", 10).unwrap(), b"");
        assert_eq!(listxattr(&f).unwrap(), vec!["user.a", "user.empty"]);
        // Replace; XATTR_CREATE on an existing one, XATTR_REPLACE on a missing one.
        setxattr(&f, "user.a", b"second", 0).unwrap();
        assert_eq!(getxattr_all(&f, "user.a").unwrap(), b"second");
        assert_eq!(errno(setxattr(&f, "user.a", b"x", libc::XATTR_CREATE)), libc::EEXIST);
        assert_eq!(errno(setxattr(&f, "user.b", b"x", libc::XATTR_REPLACE)), libc::ENODATA);
        setxattr(&f, "user.a", b"third", libc::XATTR_REPLACE).unwrap();
        setxattr(&f, "user.b", b"bee", libc::XATTR_CREATE).unwrap();
        assert_eq!(getxattr_all(&f, "user.a").unwrap(), b"third");
        // Values of Linux's largest size (64 KiB) fit; past meta's per-inode total (256 KiB of names and
        // values), ENOSPC.
        let big = pattern(64 << 10, 9);
        for name in ["user.big", "user.big2", "user.big3"] {
            setxattr(&f, name, &big, 0).unwrap();
        }
        assert!(getxattr_all(&f, "user.big").unwrap() == big, "large value differs");
        assert_eq!(errno(setxattr(&f, "user.huge", &pattern(64 << 10, 10), 0)), libc::ENOSPC);
        assert_eq!(errno(getxattr(&f, "user.huge", 10)), libc::ENODATA);
        // They survive a rename and are per inode (a directory has its own).
        std::fs::rename(&f, m.join("y")).unwrap();
        let f = m.join("y");
        assert_eq!(
            listxattr(&f).unwrap(),
            vec!["user.a", "user.b", "user.big", "user.big2", "user.big3", "user.empty"]
        );
        std::fs::create_dir(m.join("d")).unwrap();
        assert_eq!(listxattr(&m.join("d")).unwrap(), Vec::<String>::new());
        setxattr(&m.join("d"), "user.dir", b"1", 0).unwrap();
        assert_eq!(getxattr_all(&m.join("d"), "user.dir").unwrap(), b"1");
        assert_eq!(errno(getxattr(&f, "user.dir", 10)), libc::ENODATA);
        // Remove.
        removexattr(&f, "user.a").unwrap();
        assert_eq!(errno(getxattr(&f, "user.a", 10)), libc::ENODATA);
        assert_eq!(errno(removexattr(&f, "user.a")), libc::ENODATA);
        assert_eq!(listxattr(&f).unwrap(), vec!["user.b", "user.big", "user.big2", "user.big3", "user.empty"]);
        // Names t3fs does not store.
        // (A well-formed VFS_CAP_REVISION_2 value granting CAP_CHOWN: the kernel checks the format.)
        let cap: Vec<u8> = [0x0200_0000u32, 1, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(errno(setxattr(&f, "security.capability", &cap, 0)), libc::EOPNOTSUPP);
        assert_eq!(errno(getxattr(&f, "security.capability", 10)), libc::ENODATA);
        // Writes still work (the kernel asks for security.capability before each).
        OpenOptions::new().append(true).open(&f).unwrap().write_all(b"+more").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"data+more");
        // Missing file.
        assert_eq!(errno(setxattr(&m.join("nope"), "user.a", b"1", 0)), libc::ENOENT);
    })
    .await;
    check_xattr_in_meta(&env).await;
    env.stop().await;
}

/// What the mount set is what meta has (through the native client).
async fn check_xattr_in_meta(env: &Env) {
    let user = t3fs_client::UserInfo::root();
    let y = env.inode("/y").await;
    let id = t3fs_common::InodeId(y.id);
    assert_eq!(env.client.get_xattr(&user, id, b"user.b").await.unwrap(), b"bee");
    let mut names = env.client.list_xattr(&user, id).await.unwrap();
    names.sort();
    let want: Vec<Vec<u8>> =
        ["user.b", "user.big", "user.big2", "user.big3", "user.empty"].iter().map(|n| n.as_bytes().to_vec()).collect();
    assert_eq!(names, want);
}

/// Runs `sh -c script` (with `args` as `$1`...) as `uid`/`gid` with supplementary `groups`.
fn sh_as(uid: u32, gid: u32, groups: &[u32], script: &str, args: &[&Path]) -> Output {
    let groups = groups.to_vec();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg("sh").args(args).env("LC_ALL", "C").current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (setgroups, setgid, setuid) on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn denied(o: &Output) -> bool {
    let yes = !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied");
    if !yes {
        eprintln!("not denied: {o:?}");
    }
    yes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissions_for_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: acting as another user needs root");
        return;
    }
    let Some(env) = Env::start_with(|c| c.allow_other = true).await else { return };
    // The tempdir is 0700; other users must be able to reach the mountpoint.
    std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    const NOBODY: u32 = 65534;
    const GROUP: u32 = 4242;
    env.fs(|m| {
        let mode = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::write(m.join("secret"), b"root only").unwrap();
        mode(&m.join("secret"), 0o600);
        std::fs::write(m.join("public"), b"for everyone").unwrap();
        mode(&m.join("public"), 0o644);
        std::fs::write(m.join("group"), b"for the group").unwrap();
        mode(&m.join("group"), 0o640);
        std::os::unix::fs::chown(m.join("group"), None, Some(GROUP)).unwrap();
        std::fs::create_dir(m.join("rootdir")).unwrap();
        mode(&m.join("rootdir"), 0o755);
        std::fs::write(m.join("rootdir/file"), b"in a 0755 dir").unwrap();
        mode(&m.join("rootdir/file"), 0o666);
        std::fs::create_dir(m.join("home")).unwrap();
        std::os::unix::fs::chown(m.join("home"), Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::create_dir(m.join("private")).unwrap();
        mode(&m.join("private"), 0o700);
        std::fs::write(m.join("private/inside"), b"hidden").unwrap();
        mode(&m.join("private/inside"), 0o644);

        let run = |groups: &[u32], script: &str, args: &[&Path]| sh_as(NOBODY, NOBODY, groups, script, args);
        let cat = "cat \"$1\"";
        // Read: denied by the mode bits, allowed through other, group and supplementary group.
        assert!(denied(&run(&[], cat, &[&m.join("secret")])), "reading a 0600 root file");
        let o = run(&[], cat, &[&m.join("public")]);
        assert!(ok(&o), "reading a 0644 file: {o:?}");
        assert_eq!(o.stdout, b"for everyone");
        assert!(denied(&run(&[], cat, &[&m.join("group")])), "0640 file of a group the user is not in");
        let o = run(&[GROUP], cat, &[&m.join("group")]);
        assert!(ok(&o), "0640 file of a supplementary group: {o:?}");
        assert_eq!(o.stdout, b"for the group");
        // Search permission on a directory.
        assert!(denied(&run(&[], cat, &[&m.join("private/inside")])), "through a 0700 directory");
        // Write: an existing file, a new file in a root directory, unlink, rename, mkdir.
        assert!(denied(&run(&[], "echo x >> \"$1\"", &[&m.join("public")])), "appending to a 0644 root file");
        assert!(denied(&run(&[], "echo x > \"$1\"", &[&m.join("rootdir/new")])), "creating in a root dir");
        assert!(denied(&run(&[], "rm -f \"$1\"", &[&m.join("rootdir/file")])), "unlinking from a 0755 dir");
        assert!(denied(&run(&[], "mv \"$1\" \"$2\"", &[&m.join("rootdir/file"), &m.join("home/stolen")])));
        assert!(denied(&run(&[], "mkdir \"$1\"", &[&m.join("rootdir/d")])));
        // The root directory is sticky and world-writable (1777, like /tmp): anyone creates their own
        // entries there, but only the owner removes or renames one (EPERM otherwise).
        let root = std::fs::metadata(m).unwrap();
        assert_eq!(root.mode() & 0o7777, 0o1777);
        let eperm = |o: Output| !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not permitted");
        assert!(eperm(run(&[], "rm -f \"$1\"", &[&m.join("public")])), "removing root's entry of a sticky dir");
        assert!(eperm(run(&[], "mv \"$1\" \"$2\"", &[&m.join("public"), &m.join("home/stolen")])));
        let o = run(
            &[],
            "echo top > \"$1\" && mv \"$1\" \"$2\" && cat \"$2\" && rm \"$2\"",
            &[&m.join("mine"), &m.join("mine2")],
        );
        assert!(ok(&o), "own entries in the sticky root: {o:?}");
        assert_eq!(o.stdout, b"top\n");
        // access(2) agrees.
        assert!(!ok(&run(&[], "test -r \"$1\"", &[&m.join("secret")])));
        assert!(ok(&run(&[], "test -r \"$1\"", &[&m.join("public")])));
        assert!(!ok(&run(&[], "test -w \"$1\"", &[&m.join("public")])));
        // In a directory the user owns, everything works, and what it creates is its own.
        let o = run(
            &[],
            "echo mine > \"$1\"/f && mkdir \"$1\"/d && mv \"$1\"/f \"$1\"/d/g && cat \"$1\"/d/g",
            &[&m.join("home")],
        );
        assert!(ok(&o), "working in the user's own directory: {o:?}");
        assert_eq!(o.stdout, b"mine\n");
        let md = std::fs::metadata(m.join("home/d/g")).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY));
        // Nothing the denied attempts touched changed.
        assert_eq!(std::fs::read(m.join("public")).unwrap(), b"for everyone");
        assert_eq!(std::fs::read(m.join("rootdir/file")).unwrap(), b"in a 0755 dir");
        assert!(!m.join("rootdir/new").exists() && !m.join("rootdir/d").exists());
        assert!(!m.join("mine").exists() && !m.join("mine2").exists());
        assert!(!m.join("home/stolen").exists());
        // Root still reads everything.
        assert_eq!(std::fs::read(m.join("secret")).unwrap(), b"root only");
    })
    .await;
    env.stop().await;
}
