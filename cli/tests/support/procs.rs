//! For tests that run t3fs as a user does, as processes: the `t3fs` binary, its output, waiting
//! for a condition, and a guard that unmounts and stops a `t3fs local up --detach` cluster even when
//! an assertion fails midway.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use t3fs_cli::local::process::is_mounted;

pub const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

/// Runs `t3fs ARGS EXTRA`.
pub fn t3fs(args: &[&str], extra: &Path) -> Output {
    Command::new(BIN).args(args).arg(extra).output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Polls `f` every 100 ms until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the cluster and clears the mounts even when an assertion fails midway.
pub struct Cleanup {
    pub data: PathBuf,
    pub mounts: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = t3fs(&["umount"], m);
            }
        }
        let _ = t3fs(&["local", "down", "--data-dir"], &self.data);
    }
}
