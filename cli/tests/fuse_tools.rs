//! Everyday tools on a real FUSE mount: `tar` packs a tree on local disk and unpacks it onto t3fs
//! (and back), also a tree of 2,000 small files; `git` creates a repository with commits, branches
//! and a checkout on t3fs; `rsync -a` copies a tree in and back out, keeping contents, modes, times
//! and symlinks (a second run finds nothing to do); and `cp -a` / `diff -r` agree that the copies
//! equal the originals (contents, modes, symlinks).
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::{Env, pattern};

/// Runs `cmd` in `dir`, failing the test with its output when it fails.
fn run(dir: &Path, cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t3fs")
        .env("GIT_AUTHOR_EMAIL", "t3fs@example.invalid")
        .env("GIT_COMMITTER_NAME", "t3fs")
        .env("GIT_COMMITTER_EMAIL", "t3fs@example.invalid")
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A small tree: nested directories, a large file over several chunks, empty and executable
/// files, a symlink.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("src/deep/deeper")).unwrap();
    std::fs::write(root.join("src/a.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("src/deep/big.bin"), pattern(3 * (1 << 20) + 12345, 7)).unwrap();
    std::fs::write(root.join("src/deep/deeper/empty"), b"").unwrap();
    std::fs::write(root.join("src/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("src/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("deep/big.bin", root.join("src/link")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tar_cp_and_diff_round_trip() {
    let Some(env) = Env::start().await else { return };
    let local = env.tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    make_tree(&local);
    let local2 = local.clone();
    env.fs(move |m| {
        // tar from local disk onto t3fs, then diff.
        run(&local2, &["tar", "cf", "tree.tar", "src"]);
        std::fs::create_dir(m.join("untar")).unwrap();
        run(&m.join("untar"), &["tar", "xf", local2.join("tree.tar").to_str().unwrap()]);
        run(m, &["diff", "-r", "--no-dereference", local2.join("src").to_str().unwrap(), "untar/src"]);
        let mode = std::fs::metadata(m.join("untar/src/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // tar on t3fs and back to local disk.
        run(m, &["tar", "cf", "again.tar", "-C", "untar", "src"]);
        let back = local2.join("back");
        std::fs::create_dir(&back).unwrap();
        run(&back, &["tar", "xf", m.join("again.tar").to_str().unwrap()]);
        run(&local2, &["diff", "-r", "--no-dereference", "src", "back/src"]);
        // cp -a within t3fs keeps contents, modes and symlinks.
        run(m, &["cp", "-a", "untar/src", "copy"]);
        run(m, &["diff", "-r", "--no-dereference", "untar/src", "copy"]);
        assert_eq!(std::fs::read_link(m.join("copy/link")).unwrap(), Path::new("deep/big.bin"));
        run(m, &["rm", "-r", "copy", "untar"]);
        assert!(!m.join("copy").exists() && !m.join("untar").exists());
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn git_repository_on_the_mount() {
    if !have("git") {
        eprintln!("SKIPPED: git is not installed");
        return;
    }
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let repo = m.join("repo");
        std::fs::create_dir(&repo).unwrap();
        run(&repo, &["git", "init", "-q", "-b", "main"]);
        make_tree(&repo);
        run(&repo, &["git", "add", "-A"]);
        run(&repo, &["git", "commit", "-q", "-m", "first"]);
        run(&repo, &["git", "checkout", "-q", "-b", "topic"]);
        std::fs::write(repo.join("src/a.txt"), b"changed on topic\n").unwrap();
        run(&repo, &["git", "mv", "src/run.sh", "src/run2.sh"]);
        run(&repo, &["git", "commit", "-q", "-am", "second"]);
        run(&repo, &["git", "checkout", "-q", "main"]);
        assert_eq!(std::fs::read(repo.join("src/a.txt")).unwrap(), b"hello\n");
        assert!(repo.join("src/run.sh").exists() && !repo.join("src/run2.sh").exists());
        run(&repo, &["git", "merge", "-q", "topic"]);
        assert_eq!(std::fs::read(repo.join("src/a.txt")).unwrap(), b"changed on topic\n");
        let log = run(&repo, &["git", "log", "--oneline"]);
        assert_eq!(log.lines().count(), 2, "{log}");
        run(&repo, &["git", "fsck", "--strict"]);
        assert!(run(&repo, &["git", "status", "--porcelain"]).trim().is_empty());
        // A clone onto t3fs too (many small files, renames of lock files).
        run(m, &["git", "clone", "-q", "repo", "clone"]);
        run(m, &["diff", "-r", "--no-dereference", "--exclude=.git", "repo", "clone"]);
    })
    .await;
    env.stop().await;
}

/// `n` small files (0 to 3 KiB) in 20 directories, with varied modes.
fn make_small_files(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{i:04}.txt"));
        std::fs::write(&p, pattern(i * 7 % 3072, i as u64)).unwrap();
        if i % 5 == 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tar_of_2000_small_files_in_and_out() {
    let Some(env) = Env::start().await else { return };
    let local = env.tmp.path().join("local");
    make_small_files(&local.join("small"), 2000);
    let local2 = local.clone();
    env.fs(move |m| {
        let t = std::time::Instant::now();
        run(&local2, &["tar", "cf", "small.tar", "small"]);
        run(m, &["tar", "xpf", local2.join("small.tar").to_str().unwrap()]);
        eprintln!("untar of 2,000 files onto t3fs: {:?}", t.elapsed());
        run(m, &["diff", "-r", local2.join("small").to_str().unwrap(), "small"]);
        let count = run(m, &["find", "small", "-type", "f"]).lines().count();
        assert_eq!(count, 2000);
        let mode = std::fs::metadata(m.join("small/d00/f0000.txt")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tar p keeps modes");
        // And back out: tar on the mount, unpacked on local disk.
        run(m, &["tar", "cf", local2.join("again.tar").to_str().unwrap(), "small"]);
        let back = local2.join("back");
        std::fs::create_dir(&back).unwrap();
        run(&back, &["tar", "xf", local2.join("again.tar").to_str().unwrap()]);
        run(&local2, &["diff", "-r", "small", "back/small"]);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rsync_round_trip() {
    if !have("rsync") {
        eprintln!("SKIPPED: rsync is not installed");
        return;
    }
    let Some(env) = Env::start().await else { return };
    let local = env.tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    make_tree(&local);
    make_small_files(&local.join("src/many"), 200);
    let local2 = local.clone();
    env.fs(move |m| {
        let src = format!("{}/", local2.join("src").display());
        let dst = format!("{}/", m.join("dst").display());
        let back = format!("{}/", local2.join("back").display());
        // In: rsync -a (temp files renamed into place, chmod, utimens, symlinks).
        run(m, &["rsync", "-a", &src, &dst]);
        run(m, &["diff", "-r", "--no-dereference", &src, &dst]);
        // Out again, to local disk.
        run(m, &["rsync", "-a", &dst, &back]);
        run(m, &["diff", "-r", "--no-dereference", &src, &back]);
        // Times and modes made it both ways: a checksum run with itemized changes finds nothing
        // to change, in either direction.
        for (a, b) in [(&src, &dst), (&dst, &back)] {
            let out = run(m, &["rsync", "-a", "-c", "-n", "-i", a, b]);
            assert!(out.trim().is_empty(), "rsync {a} -> {b} would still change:\n{out}");
        }
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        let (l, t) = (md(&local2.join("src/run.sh")), md(&m.join("dst/run.sh")));
        assert_eq!(l.modified().unwrap(), t.modified().unwrap(), "mtime kept");
        assert_eq!(l.permissions().mode(), t.permissions().mode());
        assert_eq!(std::fs::read_link(m.join("dst/link")).unwrap(), Path::new("deep/big.bin"));
        // An update: change one file locally; rsync sends it, and --delete removes what went.
        std::fs::write(local2.join("src/a.txt"), b"changed\n").unwrap();
        std::fs::remove_file(local2.join("src/many/d01/f0001.txt")).unwrap();
        let out = run(m, &["rsync", "-a", "-i", "--delete", &src, &dst]);
        assert!(out.contains("a.txt") && out.contains("f0001.txt"), "{out}");
        run(m, &["diff", "-r", "--no-dereference", &src, &dst]);
    })
    .await;
    env.stop().await;
}
