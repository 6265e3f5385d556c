//! Shared by the tests that run the real `t3fs` binary as an operator does (`t3fs admin ...`,
//! `t3fs bench ...`) against an in-process cluster found through `--data-dir`: running a command and
//! checking its outcome (success with stdout, `--json` parsed, or exit 1 with one `t3fs: ...` line on
//! stderr and no panic). (Each test file uses a subset, hence `dead_code` allowed here.)
#![allow(dead_code)]
use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

/// A scratch directory and the data directory of the cluster under test.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
}

impl Env {
    /// A fresh temp dir with the cluster's data directory `TMP/data` (not created).
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        Env { tmp, data }
    }

    /// Runs `t3fs SUB... --data-dir DATA ARGS...` (SUB: `admin` or `bench`).
    pub async fn run_sub(&self, sub: &[&str], args: &[&str]) -> Output {
        let mut pre: Vec<&str> = sub.to_vec();
        pre.extend(["--data-dir", self.data.to_str().unwrap()]);
        run_t3fs(&pre, args).await
    }

    /// Runs `t3fs admin --data-dir DATA ARGS...`.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_sub(&["admin"], args).await
    }

    /// Runs `t3fs admin PRE... ARGS...` (PRE picks the cluster).
    pub async fn run_with(&self, pre: &[&str], args: &[&str]) -> Output {
        let mut p = vec!["admin"];
        p.extend_from_slice(pre);
        run_t3fs(&p, args).await
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        assert_ok(args, &self.run(args).await)
    }

    /// Runs a command with `--json` that must succeed; returns the parsed document.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a).await;
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{a:?}: not JSON ({e}):\n{s}"))
    }

    /// Runs a command that must fail with exit 1 and one line `t3fs: ...` on stderr; returns that line.
    pub async fn fails(&self, args: &[&str]) -> String {
        assert_fails(args, &self.run(args).await)
    }

    /// A path in the scratch directory.
    pub fn local(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// Runs `t3fs PRE... ARGS...` without `T3FS_CONFIG` and `RUST_LOG` from the test's environment.
async fn run_t3fs(pre: &[&str], args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(pre)
        .args(args)
        .env_remove("T3FS_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// The command succeeded; its stdout.
pub fn assert_ok(args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status);
    stdout
}

/// The command failed with exit 1 and exactly one line `t3fs: ...` on stderr, no panic; that line.
pub fn assert_fails(args: &[&str], out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: expected exit 1, stderr: {stderr}");
    assert!(stderr.starts_with("t3fs: "), "{args:?}: stderr {stderr:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: stderr is not one line: {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{args:?}: {stderr}");
    stderr
}
