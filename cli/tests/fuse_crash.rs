//! The FUSE daemon killed with SIGKILL while a reader is active, as a user meets it: a
//! `t3fs local up --detach` cluster, a `t3fs mount` process on it, files written with fsync (and
//! closed), a reader thread streaming a large file. After `kill -9` of the mount daemon the reader
//! gets an error (ENOTCONN, or EIO/ECONNABORTED) within seconds, never a hang; new opens fail with
//! ENOTCONN; `t3fs umount` detaches the dead mount; a new `t3fs mount` on the same mount point
//! serves every fsync'ed and every closed file byte for byte, and the reader can start again; a
//! final `t3fs umount` while that reader still holds its file open stops the daemon cleanly (exit
//! 0: the busy mount is detached lazily) and leaves nothing mounted.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use t3fs_cli::local::process::is_mounted;

mod support;
use support::pattern;
use support::procs::{BIN, Cleanup, t3fs, text, wait_until};

/// Starts `t3fs mount` on `mnt` and waits for the mount.
fn mount(data: &Path, mnt: &Path) -> Child {
    let child = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(data.join("conf").join("fuse.toml"))
        .arg(mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the mount", Duration::from_secs(60), || is_mounted(mnt));
    child
}

/// Reads `p` from the start over and over (64 KiB at a time) until a read fails; returns that
/// error. `progress` counts the bytes read.
fn stream(p: PathBuf, progress: Arc<AtomicU64>) -> std::io::Error {
    let mut f = match File::open(&p) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => {
                if let Err(e) = f.seek(SeekFrom::Start(0)) {
                    return e;
                }
            }
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return e,
        }
    }
}

#[test]
fn kill_9_of_the_mount_daemon_with_an_active_reader() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing; the FUSE daemon crash test cannot run");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let (data, mnt) = (root.join("data"), root.join("mnt"));
    let _cleanup = Cleanup { data: data.clone(), mounts: vec![mnt.clone()] };
    let up = Command::new(BIN).args(["local", "up", "--detach", "--data-dir"]).arg(&data).output().unwrap();
    assert!(up.status.success(), "local up --detach failed: {}", text(&up));
    std::fs::create_dir_all(&mnt).unwrap();
    let mut daemon = mount(&data, &mnt);

    // Acknowledged data: files fsync'ed (one still open, with later unsynced writes), files closed.
    let synced = pattern((5 << 20) + 321, 1);
    let mut open_synced = OpenOptions::new().create(true).truncate(true).write(true).open(mnt.join("synced")).unwrap();
    open_synced.write_all(&synced).unwrap();
    open_synced.sync_all().unwrap();
    open_synced.write_all(b"written after the fsync: may be lost").unwrap();
    let mut closed = Vec::new();
    for i in 0..5u64 {
        let d = pattern(1000 * i as usize + 17, 10 + i);
        std::fs::write(mnt.join(format!("closed{i}")), &d).unwrap();
        closed.push(d);
    }
    let big = pattern(16 << 20, 2);
    std::fs::write(mnt.join("big"), &big).unwrap();

    // A reader streams `big`; once it is going, kill the daemon.
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (p, progress) = (mnt.join("big"), progress.clone());
        std::thread::spawn(move || {
            let _ = tx.send(stream(p, progress));
        });
    }
    wait_until("the reader to read", Duration::from_secs(30), || progress.load(Ordering::Relaxed) > (1 << 20));
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let err = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the reader must get an error within 20 s of the daemon's death, not hang");
    let code = err.raw_os_error();
    assert!(
        [Some(libc::ENOTCONN), Some(libc::EIO), Some(libc::ECONNABORTED)].contains(&code),
        "the reader's error: {err}"
    );
    drop(open_synced); // its close fails quietly on the dead mount
    // New opens fail fast with ENOTCONN; the mount is still listed (dead).
    wait_until("opens on the dead mount to fail with ENOTCONN", Duration::from_secs(10), || {
        File::open(mnt.join("closed0")).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN)
    });
    assert!(is_mounted(&mnt));

    // `t3fs umount` clears the dead mount; a new daemon on the same mount point restores access.
    let o = t3fs(&["umount"], &mnt);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!is_mounted(&mnt), "still mounted after umount");
    let mut daemon = mount(&data, &mnt);
    let got = std::fs::read(mnt.join("synced")).unwrap();
    assert!(got.len() >= synced.len(), "fsync'ed length lost: {} < {}", got.len(), synced.len());
    assert!(got[..synced.len()] == synced, "fsync'ed bytes differ after the crash");
    for (i, d) in closed.iter().enumerate() {
        assert!(std::fs::read(mnt.join(format!("closed{i}"))).unwrap() == *d, "closed file {i} differs");
    }
    assert!(std::fs::read(mnt.join("big")).unwrap() == big, "big differs");
    // The reader can start again.
    let progress = Arc::new(AtomicU64::new(0));
    {
        let (p, progress) = (mnt.join("big"), progress.clone());
        std::thread::spawn(move || stream(p, progress));
    }
    wait_until("the reader to read again", Duration::from_secs(30), || progress.load(Ordering::Relaxed) > (1 << 20));
    // A clean stop this time, though the reader holds a file open (the busy mount is detached
    // lazily; the reader then gets an error and ends).
    let o = t3fs(&["umount"], &mnt);
    assert!(o.status.success(), "{}", text(&o));
    assert!(daemon.wait().unwrap().success(), "the daemon exits cleanly on umount");
    assert!(!is_mounted(&mnt));
}
