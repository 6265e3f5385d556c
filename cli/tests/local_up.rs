//! The README's first command, as a user runs it: `t3fs local up --data-dir D --mount M` starts
//! child processes and a FUSE mount; a file copied in reads back; `t3fs local status` lists the
//! nodes; killing a storage server shows up as a failed node; SIGTERM stops everything and
//! unmounts; running `up` again on D keeps the file.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use t3fs_cli::local::process::is_mounted;
use t3fs_cli::local::status::read_pid;

const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

fn up(data: &Path, mnt: &Path) -> Child {
    Command::new(BIN)
        .args(["local", "up", "--data-dir"])
        .arg(data)
        .arg("--mount")
        .arg(mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(data: &Path) -> String {
    let out = Command::new(BIN).args(["local", "status", "--data-dir"]).arg(data).output().unwrap();
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stop(mut child: Child, mnt: &Path) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "local up exited with {st}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "local up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_mounted(mnt), "mount point still mounted after stop");
}

#[test]
fn local_up_status_kill_and_restart() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing; `t3fs local up --mount` cannot be tested here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mnt: PathBuf = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    let child = up(&data, &mnt);
    wait_until("the mount", Duration::from_secs(120), || is_mounted(&mnt.canonicalize().unwrap()));
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(mnt.join("hello.bin"), &content).unwrap();
    assert_eq!(std::fs::read(mnt.join("hello.bin")).unwrap(), content);

    let s = status(&data);
    assert!(s.contains("STORAGE") && s.contains("META") && s.contains("CHAINS"), "{s}");
    assert_eq!(s.matches("HEARTBEATCONNECTED").count(), 4, "mgmtd lists meta + 3 storage as connected:\n{s}");

    // Kill one storage server: mgmtd notices the missing heartbeats.
    let pid = read_pid(&data, "storage-3").expect("storage-3 pid recorded");
    // SAFETY: kill(2) on a pid of our cluster.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_until("mgmtd to mark storage-3 failed", Duration::from_secs(30), || status(&data).contains("HEARTBEATFAILED"));
    // Reads still work from the surviving replicas.
    assert_eq!(std::fs::read(mnt.join("hello.bin")).unwrap(), content);

    stop(child, &mnt);

    // Same data dir again: the file is still there.
    let child = up(&data, &mnt);
    wait_until("the mount again", Duration::from_secs(120), || is_mounted(&mnt.canonicalize().unwrap()));
    assert_eq!(std::fs::read(mnt.join("hello.bin")).unwrap(), content);
    stop(child, &mnt);
}

fn t3fs(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(BIN).args(args).arg("--data-dir").arg(data).output().unwrap()
}

/// `up --detach` with a non-default shape returns once the cluster is up; the shape shows in
/// status and sticks to the directory; `down` stops every process (and is a no-op afterwards).
#[test]
fn detached_up_with_shape_then_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let bad = Command::new(BIN).args(["local", "up", "--detach", "--data-dir", d, "--replicas", "5"]).output().unwrap();
    assert!(!bad.status.success(), "5 replicas on 3 servers must be refused");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--replicas"), "{}", String::from_utf8_lossy(&bad.stderr));

    let out = Command::new(BIN)
        .args(["local", "up", "--detach", "--data-dir", d])
        .args(["--storage-servers", "4", "--targets-per-server", "1", "--replicas", "2", "--chunk-size", "262144"])
        .output()
        .unwrap();
    assert!(out.status.success(), "up --detach failed: {}", String::from_utf8_lossy(&out.stderr));
    let banner = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(banner.contains("4 storage servers × 1 target, 2-replica chains, 256 KiB chunks"), "{banner}");
    let st = status(&data);
    assert!(st.contains("storage-4"), "{st}");
    // Two replicas per chain: every chain line is "head -> tail", with no second arrow.
    let chains: Vec<&str> = st.lines().filter(|l| l.starts_with("chain ")).collect();
    assert_eq!(chains.len(), 2, "{st}");
    assert!(chains.iter().all(|l| l.matches(" -> ").count() == 1), "{st}");
    let pids: Vec<i32> = ["supervisor", "mgmtd", "meta", "storage-1", "storage-4"]
        .iter()
        .map(|n| read_pid(&data, n).unwrap_or_else(|| panic!("no pid file for {n}")))
        .collect();

    // A 600 KiB file spans 3 chunks of 256 KiB.
    let src = dir.path().join("src.bin");
    let bytes: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let put = t3fs(&["admin", "put", src.to_str().unwrap(), "/f.bin"], &data);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let back = dir.path().join("back.bin");
    let get = t3fs(&["admin", "get", "/f.bin", back.to_str().unwrap()], &data);
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    let again = t3fs(&["local", "up", "--detach", "--replicas", "3"], &data);
    assert!(!again.status.success(), "a different shape on an existing dir must be refused");

    let down = t3fs(&["local", "down"], &data);
    assert!(down.status.success(), "down failed: {}", String::from_utf8_lossy(&down.stderr));
    for p in pids {
        assert!(!t3fs_cli::local::status::pid_alive(p), "pid {p} still alive after down");
    }
    let down2 = t3fs(&["local", "down"], &data);
    assert!(down2.status.success());
    assert!(String::from_utf8_lossy(&down2.stdout).contains("no t3fs local cluster is running"));
}
