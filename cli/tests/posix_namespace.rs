//! POSIX semantics of names through a real FUSE mount (one in-process cluster and mount per test):
//! rename in every shape (file over file, directory over empty directory, ENOTEMPTY, EISDIR,
//! ENOTDIR, EINVAL into its own subtree, RENAME_NOREPLACE, RENAME_EXCHANGE), hard links and nlink,
//! symlinks (readlink, lstat, following, dangling), a directory of 10,000 entries read in small
//! getdents pages (every name exactly once, also when resuming from a saved offset), and the errno
//! of each failing namespace call. Each claim in docs/semantics.md about these names the test here
//! that checks it.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

mod support;
use futures::StreamExt;
use support::sys::renameat2;
use support::{Env, errno};
use t3fs_client::UserInfo;
use t3fs_common::InodeId;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_shapes_and_errors() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let j = |s: &str| m.join(s);
        // File over file: the target's inode goes, the source's bytes and inode take the name.
        std::fs::write(j("a"), b"A").unwrap();
        std::fs::write(j("b"), b"B").unwrap();
        let ino_a = std::fs::metadata(j("a")).unwrap().ino();
        std::fs::rename(j("a"), j("b")).unwrap();
        assert_eq!(std::fs::read(j("b")).unwrap(), b"A");
        assert_eq!(std::fs::metadata(j("b")).unwrap().ino(), ino_a);
        assert_eq!(errno(std::fs::metadata(j("a"))), libc::ENOENT);
        // Rename onto itself: nothing happens.
        std::fs::rename(j("b"), j("b")).unwrap();
        assert_eq!(std::fs::read(j("b")).unwrap(), b"A");
        // Directory over an empty directory: allowed; over a non-empty one: ENOTEMPTY.
        std::fs::create_dir_all(j("d1/sub")).unwrap();
        std::fs::write(j("d1/sub/f"), b"deep").unwrap();
        std::fs::create_dir(j("empty")).unwrap();
        std::fs::rename(j("d1"), j("empty")).unwrap();
        assert_eq!(std::fs::read(j("empty/sub/f")).unwrap(), b"deep", "a renamed directory keeps its subtree");
        std::fs::create_dir(j("d2")).unwrap();
        assert_eq!(errno(std::fs::rename(j("d2"), j("empty"))), libc::ENOTEMPTY);
        // Type clashes: a directory over a file ENOTDIR, a file over a directory EISDIR.
        assert_eq!(errno(std::fs::rename(j("d2"), j("b"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::rename(j("b"), j("d2"))), libc::EISDIR);
        // Into its own subtree: EINVAL. A missing source: ENOENT. A missing target dir: ENOENT.
        assert_eq!(errno(std::fs::rename(j("empty"), j("empty/sub/x"))), libc::EINVAL);
        assert_eq!(errno(std::fs::rename(j("nope"), j("x"))), libc::ENOENT);
        assert_eq!(errno(std::fs::rename(j("b"), j("nodir/x"))), libc::ENOENT);
        // Through a file as a directory: ENOTDIR. A too-long target name: ENAMETOOLONG.
        assert_eq!(errno(std::fs::rename(j("b"), j("b/x"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::rename(j("b"), j(&"x".repeat(256)))), libc::ENAMETOOLONG);
        // Directory rename across parents, the moved directory's ".." follows.
        std::fs::rename(j("empty/sub"), j("d2/moved")).unwrap();
        assert_eq!(std::fs::read(j("d2/moved/f")).unwrap(), b"deep");
        assert_eq!(std::fs::read(j("d2/moved/../moved/f")).unwrap(), b"deep");
        assert_eq!(std::fs::read_dir(j("empty")).unwrap().count(), 0);
        // nlink of directories: 2 + subdirectories.
        assert_eq!(std::fs::metadata(j("d2")).unwrap().nlink(), 3);
        assert_eq!(std::fs::metadata(j("empty")).unwrap().nlink(), 2);

        // RENAME_NOREPLACE: EEXIST over an existing name (nothing changes), fine to a new one.
        std::fs::write(j("c"), b"C").unwrap();
        assert_eq!(errno(renameat2(&j("c"), &j("b"), libc::RENAME_NOREPLACE)), libc::EEXIST);
        assert_eq!(std::fs::read(j("b")).unwrap(), b"A");
        assert_eq!(std::fs::read(j("c")).unwrap(), b"C");
        renameat2(&j("c"), &j("c2"), libc::RENAME_NOREPLACE).unwrap();
        assert_eq!(std::fs::read(j("c2")).unwrap(), b"C");
        // RENAME_EXCHANGE: two files swap; a file and a directory swap; a missing side: ENOENT.
        renameat2(&j("b"), &j("c2"), libc::RENAME_EXCHANGE).unwrap();
        assert_eq!(std::fs::read(j("b")).unwrap(), b"C");
        assert_eq!(std::fs::read(j("c2")).unwrap(), b"A");
        renameat2(&j("b"), &j("d2"), libc::RENAME_EXCHANGE).unwrap();
        assert!(std::fs::metadata(j("b")).unwrap().is_dir());
        assert_eq!(std::fs::read(j("b/moved/f")).unwrap(), b"deep");
        assert_eq!(std::fs::read(j("d2")).unwrap(), b"C");
        assert_eq!(errno(renameat2(&j("c2"), &j("missing"), libc::RENAME_EXCHANGE)), libc::ENOENT);
        // Both flags at once: EINVAL (the kernel refuses the combination).
        let both = libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE;
        assert_eq!(errno(renameat2(&j("c2"), &j("d2"), both)), libc::EINVAL);
        assert_eq!(std::fs::read(j("c2")).unwrap(), b"A");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_links_and_symlinks() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let j = |s: &str| m.join(s);
        std::fs::write(j("f"), b"one").unwrap();
        assert_eq!(std::fs::metadata(j("f")).unwrap().nlink(), 1);
        std::fs::create_dir(j("d")).unwrap();
        std::fs::hard_link(j("f"), j("d/g")).unwrap();
        let (f, g) = (std::fs::metadata(j("f")).unwrap(), std::fs::metadata(j("d/g")).unwrap());
        assert_eq!(f.ino(), g.ino(), "a hard link names the same inode");
        assert_eq!(f.nlink(), 2);
        std::fs::write(j("d/g"), b"two").unwrap();
        assert_eq!(std::fs::read(j("f")).unwrap(), b"two", "data through either name");
        std::fs::hard_link(j("f"), j("h")).unwrap();
        assert_eq!(std::fs::metadata(j("f")).unwrap().nlink(), 3);
        std::fs::remove_file(j("f")).unwrap();
        assert_eq!(std::fs::metadata(j("h")).unwrap().nlink(), 2);
        std::fs::rename(j("h"), j("d/g")).unwrap(); // two names of one inode: POSIX says do nothing
        assert_eq!(std::fs::metadata(j("d/g")).unwrap().nlink(), 2);
        std::fs::remove_file(j("h")).unwrap();
        assert_eq!(std::fs::metadata(j("d/g")).unwrap().nlink(), 1);
        assert_eq!(std::fs::read(j("d/g")).unwrap(), b"two");
        // Link errors: to a directory EPERM, onto an existing name EEXIST, from a missing file ENOENT.
        assert_eq!(errno(std::fs::hard_link(j("d"), j("dl"))), libc::EPERM);
        std::fs::write(j("x"), b"").unwrap();
        assert_eq!(errno(std::fs::hard_link(j("x"), j("d/g"))), libc::EEXIST);
        assert_eq!(errno(std::fs::hard_link(j("missing"), j("y"))), libc::ENOENT);
        assert_eq!(errno(std::fs::hard_link(j("x"), j(&"y".repeat(256)))), libc::ENAMETOOLONG);

        // Symlinks: readlink gives the target verbatim, lstat sees a link of that size, stat follows.
        std::os::unix::fs::symlink("d/g", j("s")).unwrap();
        assert_eq!(std::fs::read_link(j("s")).unwrap(), Path::new("d/g"));
        let l = std::fs::symlink_metadata(j("s")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!(l.len(), 3, "a symlink's size is its target's length");
        assert_eq!(l.permissions().mode() & 0o777, 0o777);
        assert_eq!(std::fs::metadata(j("s")).unwrap().ino(), std::fs::metadata(j("d/g")).unwrap().ino());
        assert_eq!(std::fs::read(j("s")).unwrap(), b"two");
        // Through a symlinked directory; a long target (up to PATH_MAX-1 bytes would be allowed).
        std::os::unix::fs::symlink("d", j("sd")).unwrap();
        assert_eq!(std::fs::read(j("sd/g")).unwrap(), b"two");
        let long_target = "t/".repeat(1000);
        std::os::unix::fs::symlink(&long_target, j("long")).unwrap();
        assert_eq!(std::fs::read_link(j("long")).unwrap(), Path::new(&long_target));
        // Dangling: lstat works, stat/open fail with ENOENT. A loop: ELOOP.
        std::os::unix::fs::symlink("nowhere", j("dangling")).unwrap();
        assert!(std::fs::symlink_metadata(j("dangling")).is_ok());
        assert_eq!(errno(std::fs::metadata(j("dangling"))), libc::ENOENT);
        std::os::unix::fs::symlink("loop2", j("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", j("loop2")).unwrap();
        assert_eq!(errno(File::open(j("loop1"))), libc::ELOOP);
        // Errors: readlink of a file EINVAL, of a missing name ENOENT; symlink onto a name EEXIST.
        assert_eq!(errno(std::fs::read_link(j("x"))), libc::EINVAL);
        assert_eq!(errno(std::fs::read_link(j("missing"))), libc::ENOENT);
        assert_eq!(errno(std::os::unix::fs::symlink("t", j("x"))), libc::EEXIST);
        // Removing a symlink removes the link, not its target; a hard link to a symlink is a link.
        std::fs::remove_file(j("s")).unwrap();
        assert_eq!(std::fs::read(j("d/g")).unwrap(), b"two");
        // A rename of a symlink keeps its target.
        std::fs::rename(j("sd"), j("sd2")).unwrap();
        assert_eq!(std::fs::read_link(j("sd2")).unwrap(), Path::new("d"));
    })
    .await;
    env.stop().await;
}

/// The entries of `dir` read with getdents64 through a `buf`-byte buffer (many kernel readdir
/// calls, each resuming at the last entry's offset), as (name, d_off) in order.
fn getdents(dir: &Path, buf: usize, start: Option<i64>) -> Vec<(OsString, i64)> {
    let f = File::open(dir).unwrap();
    getdents_from(&f, buf, start, usize::MAX)
}

/// [`getdents`] on an open directory, stopping after `calls` getdents64 calls.
fn getdents_from(f: &File, buf: usize, start: Option<i64>, calls: usize) -> Vec<(OsString, i64)> {
    let fd = f.as_raw_fd();
    if let Some(off) = start {
        // SAFETY: lseek on a directory fd we own sets the readdir position.
        assert_eq!(unsafe { libc::lseek(fd, off, libc::SEEK_SET) }, off);
    }
    let mut out = Vec::new();
    let mut b = vec![0u8; buf];
    for _ in 0..calls {
        // SAFETY: `b` is writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, b.as_mut_ptr(), b.len()) };
        assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        while pos < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let off = i64::from_ne_bytes(b[pos + 8..pos + 16].try_into().unwrap());
            let reclen = u16::from_ne_bytes(b[pos + 16..pos + 18].try_into().unwrap()) as usize;
            let name = &b[pos + 19..pos + reclen];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            out.push((OsString::from_vec(name.to_vec()), off));
            pos += reclen;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdir_of_10000_entries_in_pages() {
    let Some(env) = Env::start().await else { return };
    const N: usize = 10_000;
    // Names of varied lengths so pages break at varied places.
    let names: Vec<String> = (0..N).map(|i| format!("{i:05}-{}", "x".repeat(i % 40))).collect();
    env.fs(|m| std::fs::create_dir(m.join("big"))).await.unwrap();
    // The entries are made through the native client, 64 at a time (creates through one mount
    // directory are serialised by the kernel's directory lock, and this test is about reading).
    let t = std::time::Instant::now();
    let parent = InodeId(env.inode("/big").await.id);
    let user = UserInfo::root();
    let creates = names.iter().map(|n| {
        let (client, user) = (env.client.clone(), user.clone());
        async move { client.create(&user, parent, n.as_bytes(), 0o644, true).await.map(drop) }
    });
    let made: Vec<_> = futures::stream::iter(creates).buffer_unordered(64).collect().await;
    assert!(made.iter().all(Result::is_ok), "creating the entries failed");
    eprintln!("created {N} files in {:?}", t.elapsed());
    env.fs(move |m| {
        let dir = m.join("big");
        let check_once = |got: &[(OsString, i64)], want: &[String]| {
            let mut seen: HashMap<OsString, usize> = HashMap::new();
            for (n, _) in got {
                *seen.entry(n.clone()).or_default() += 1;
            }
            for w in want {
                assert_eq!(seen.get(std::ffi::OsStr::new(w)), Some(&1), "{w} must be listed exactly once");
            }
            assert_eq!(seen.len(), want.len(), "no other names listed");
        };
        // Small pages (1 KiB: ~25 entries a call), then the default large ones (std's read_dir).
        let got = getdents(&dir, 1024, None);
        let mut want = names.clone();
        want.extend([".".to_string(), "..".to_string()]);
        check_once(&got, &want);
        assert_eq!(got.len(), N + 2);
        let std_names: Vec<(OsString, i64)> =
            std::fs::read_dir(&dir).unwrap().map(|e| (e.unwrap().file_name(), 0)).collect();
        check_once(&std_names, &names);
        // Resume from a saved offset (telldir/seekdir): exactly the rest of the stream.
        let mid = got[got.len() / 2].1;
        let rest = getdents(&dir, 4096, Some(mid));
        assert_eq!(
            rest.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            got[got.len() / 2 + 1..].iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        );
        // Remove every 50th entry: a new listing has exactly the rest.
        let t = std::time::Instant::now();
        for n in names.iter().step_by(50) {
            std::fs::remove_file(dir.join(n)).unwrap();
        }
        eprintln!("removed {} files in {:?}", N / 50, t.elapsed());
        let left: Vec<String> = names.iter().enumerate().filter(|(i, _)| i % 50 != 0).map(|(_, n)| n.clone()).collect();
        let std_names: Vec<(OsString, i64)> =
            std::fs::read_dir(&dir).unwrap().map(|e| (e.unwrap().file_name(), 0)).collect();
        check_once(&std_names, &left);
        assert_eq!(errno(std::fs::remove_dir(&dir)), libc::ENOTEMPTY);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_is_a_snapshot_taken_at_opendir() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let dir = m.join("snap");
        std::fs::create_dir(&dir).unwrap();
        let names: Vec<String> = (0..200).map(|i| format!("entry-{i:03}")).collect();
        for n in &names {
            File::create(dir.join(n)).unwrap();
        }
        // Read one small page, then change the directory under the open stream.
        let f = File::open(&dir).unwrap();
        let mut got = getdents_from(&f, 512, None, 1);
        assert!(!got.is_empty() && got.len() < 100, "one small page: {}", got.len());
        let seen: Vec<OsString> = got.iter().map(|(n, _)| n.clone()).collect();
        let unread = names.iter().rev().find(|n| !seen.contains(&OsString::from(n))).unwrap().clone();
        std::fs::remove_file(dir.join(&unread)).unwrap();
        std::fs::write(dir.join("added-later"), b"").unwrap();
        got.extend(getdents_from(&f, 512, None, usize::MAX));
        // The stream is the listing as of opendir: every original name exactly once (the removed
        // one included), nothing added later.
        let mut listed: Vec<String> = got.into_iter().map(|(n, _)| n.into_string().unwrap()).collect();
        listed.sort();
        let mut want: Vec<String> = names.clone();
        want.extend([".".to_string(), "..".to_string()]);
        want.sort();
        assert_eq!(listed, want);
        // A new opendir sees the change.
        let now: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(now.contains(&"added-later".to_string()) && !now.contains(&unread));
        assert_eq!(now.len(), names.len());
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errno_of_failing_namespace_calls() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let j = |s: &str| m.join(s);
        std::fs::create_dir(j("d")).unwrap();
        std::fs::write(j("d/f"), b"x").unwrap();
        std::fs::write(j("f"), b"x").unwrap();
        let long = "l".repeat(256);
        // mkdir
        assert_eq!(errno(std::fs::create_dir(j("d"))), libc::EEXIST);
        assert_eq!(errno(std::fs::create_dir(j("f"))), libc::EEXIST);
        assert_eq!(errno(std::fs::create_dir(j("missing/d"))), libc::ENOENT);
        assert_eq!(errno(std::fs::create_dir(j("f/d"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::create_dir(j(&long))), libc::ENAMETOOLONG);
        // rmdir
        assert_eq!(errno(std::fs::remove_dir(j("d"))), libc::ENOTEMPTY);
        assert_eq!(errno(std::fs::remove_dir(j("f"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::remove_dir(j("missing"))), libc::ENOENT);
        assert_eq!(errno(std::fs::remove_dir(j("d/."))), libc::EINVAL);
        assert_eq!(errno(std::fs::remove_dir(j(&long))), libc::ENAMETOOLONG);
        // unlink
        assert_eq!(errno(std::fs::remove_file(j("d"))), libc::EISDIR);
        assert_eq!(errno(std::fs::remove_file(j("missing"))), libc::ENOENT);
        assert_eq!(errno(std::fs::remove_file(j("f/x"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::remove_file(j(&long))), libc::ENAMETOOLONG);
        // stat, readdir
        assert_eq!(errno(std::fs::metadata(j("missing"))), libc::ENOENT);
        assert_eq!(errno(std::fs::metadata(j("f/x"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::read_dir(j("f"))), libc::ENOTDIR);
        assert_eq!(errno(std::fs::read_dir(j("missing"))), libc::ENOENT);
        // Special files: t3fs stores regular files, directories and symlinks only.
        let c = support::sys::cstr(&j("fifo"));
        // SAFETY: valid C string.
        let r = support::sys::check(unsafe { libc::mkfifo(c.as_ptr(), 0o644) });
        assert_eq!(errno(r), libc::EOPNOTSUPP);
        assert_eq!(errno(std::fs::metadata(j("fifo"))), libc::ENOENT, "a refused mknod leaves nothing");
        // rmdir of a directory after its last entry goes.
        std::fs::remove_file(j("d/f")).unwrap();
        std::fs::remove_dir(j("d")).unwrap();
        assert_eq!(errno(std::fs::metadata(j("d"))), libc::ENOENT);
        // Nothing failed above left anything behind.
        let mut left: Vec<String> =
            std::fs::read_dir(m).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["f"]);
    })
    .await;
    env.stop().await;
}
