//! Everyday tools on a real FUSE mount: `tar` packs a tree on local disk and unpacks it onto t3fs
//! (and back), `git` creates a repository with commits, branches and a checkout on t3fs, and
//! `cp -a` / `diff -r` agree that the copies equal the originals (contents, modes, symlinks).
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
