//! `t3fs umount`, as a user runs it against real FUSE mounts of a `t3fs local up --detach` cluster:
//! a dead mount (daemon killed with SIGKILL, "Transport endpoint is not connected") is detached; a
//! live `t3fs mount` daemon is stopped cleanly (its buffered write lands); paths that are not t3fs
//! mounts are refused with exit 1; `t3fs local down` still stops the rest afterwards.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use t3fs_cli::local::process::is_mounted;
use t3fs_cli::local::status::{pid_alive, read_pid};

mod support;
use support::procs::{BIN, Cleanup, t3fs, text, wait_until};

#[test]
fn umount_dead_and_live_mounts_and_refuse_others() {
    // Refusals need no FUSE: /proc is a mount of another type, a plain directory is no mount.
    let plain = tempfile::tempdir().unwrap();
    let o = t3fs(&["umount"], Path::new("/proc"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a t3fs mount (type proc"), "{}", text(&o));
    let o = t3fs(&["umount"], plain.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not mounted"), "{}", text(&o));

    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing; `t3fs umount` on a real mount cannot be tested here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    let mnt = root.join("mnt");
    let mnt2 = root.join("mnt2");
    let _cleanup = Cleanup { data: data.clone(), mounts: vec![mnt.clone(), mnt2.clone()] };
    let up = Command::new(BIN)
        .args(["local", "up", "--detach", "--data-dir"])
        .arg(&data)
        .arg("--mount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(up.status.success(), "local up --detach failed: {}", text(&up));
    assert!(is_mounted(&mnt));
    std::fs::write(mnt.join("a.txt"), b"hello").unwrap();
    assert_eq!(std::fs::read(mnt.join("a.txt")).unwrap(), b"hello");

    // A second, live mount daemon on its own mount point: `umount` stops it cleanly.
    std::fs::create_dir_all(&mnt2).unwrap();
    let mut live = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(data.join("conf").join("fuse.toml"))
        .arg(&mnt2)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the second mount", Duration::from_secs(60), || is_mounted(&mnt2));
    std::fs::write(mnt2.join("b.txt"), b"world").unwrap();
    let o = t3fs(&["umount"], &mnt2);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped cleanly"), "{}", text(&o));
    assert!(!is_mounted(&mnt2), "mnt2 still mounted after umount");
    let st = live.wait().unwrap();
    assert!(st.success(), "the mount daemon exited with {st}");
    assert_eq!(std::fs::read(mnt.join("b.txt")).unwrap(), b"world", "the live daemon's write landed");

    // Kill the first mount's daemon: the mount is left dead.
    let fuse = read_pid(&data, "fuse").expect("fuse pid recorded");
    // SAFETY: kill(2) on a pid of our own cluster.
    unsafe {
        libc::kill(fuse, libc::SIGKILL);
    }
    wait_until("the fuse daemon to die", Duration::from_secs(10), || !pid_alive(fuse));
    // (The root's cached attributes may answer a stat for up to attr_timeout.)
    wait_until("stat of the dead mount to fail with ENOTCONN", Duration::from_secs(10), || {
        std::fs::metadata(&mnt).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN)
    });
    let err = std::fs::read(mnt.join("a.txt")).expect_err("reading through a dead FUSE mount must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(is_mounted(&mnt));

    let o = t3fs(&["umount"], &mnt);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("detached"), "{}", text(&o));
    assert!(!is_mounted(&mnt), "mnt still mounted after umount");
    assert!(std::fs::metadata(&mnt).unwrap().is_dir(), "the mount point is a plain directory again");
    let o = t3fs(&["umount"], &mnt);
    assert_eq!(o.status.code(), Some(1), "a second umount finds nothing mounted: {}", text(&o));

    let pids: Vec<i32> =
        ["supervisor", "mgmtd", "meta", "storage-1"].iter().map(|n| read_pid(&data, n).expect("pid file")).collect();
    let down = t3fs(&["local", "down", "--data-dir"], &data);
    assert!(down.status.success(), "local down failed: {}", text(&down));
    for p in pids {
        assert!(!pid_alive(p), "pid {p} still alive after down");
    }
}
