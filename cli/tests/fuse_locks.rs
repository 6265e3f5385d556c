//! Cluster-wide file locks through real FUSE mounts (issue 7): two mounts of one in-process
//! cluster stand for two hosts. flock and fcntl locks taken on one mount are seen on the other,
//! released on close, blocking requests wait until the holder lets go (and end with EINTR when the
//! waiting thread gets a signal), and the locks of a FUSE daemon killed with SIGKILL go once its
//! client session expired at mgmtd (1 s here) and meta pruned it.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;
use support::Env;
use support::procs::{BIN, t3fs, wait_until};

/// Longest a blocked request may take to notice that the holder let go (backoff tops at 200 ms;
/// generous for loaded CI machines).
const GRANT_TIMEOUT: Duration = Duration::from_secs(20);

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn flock(f: &File, op: libc::c_int) -> Result<(), i32> {
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 { Ok(()) } else { Err(last_errno()) }
}

fn flock_struct(typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    // SAFETY: a plain C struct; all zeroes is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl `cmd` (F_SETLK, F_SETLKW) of type `typ` on bytes `[start, start + len)`.
fn fcntl_lock(f: &File, cmd: libc::c_int, typ: libc::c_int, start: i64, len: i64) -> Result<(), i32> {
    let fl = flock_struct(typ, start, len);
    // SAFETY: a valid descriptor and a valid flock struct.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) } == 0 { Ok(()) } else { Err(last_errno()) }
}

/// F_GETLK for `typ` on `[start, start + len)`: the conflicting lock as the kernel reports it.
fn fcntl_getlk(f: &File, typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    let mut fl = flock_struct(typ, start, len);
    // SAFETY: a valid descriptor and a valid flock struct.
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) }, 0, "F_GETLK: errno {}", last_errno());
    fl
}

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flock_is_exclusive_across_mounts_and_released_on_close() {
    let Some(env) = Env::start().await else { return };
    let b = env.mount_another("mnt-b").await;
    let (pa, pb) = (env.mnt.join("f"), b.mnt.join("f"));
    support::blocking(move || {
        std::fs::write(&pa, b"x").unwrap();
        let fa = File::open(&pa).unwrap();
        let fb = File::open(&pb).unwrap();
        flock(&fa, libc::LOCK_EX | libc::LOCK_NB).unwrap();
        assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), Err(libc::EWOULDBLOCK), "A's flock seen on B");
        assert_eq!(flock(&fb, libc::LOCK_SH | libc::LOCK_NB), Err(libc::EWOULDBLOCK));
        // A blocking flock on B waits for A's close.
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let r = flock(&fb, libc::LOCK_EX);
            tx.send(r).unwrap();
            fb
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "B's flock must wait while A holds the lock");
        drop(fa); // release: A's flock goes with its open file description
        assert_eq!(rx.recv_timeout(GRANT_TIMEOUT).expect("B's blocking flock granted after A's close"), Ok(()));
        let fb = waiter.join().unwrap();
        // Now A is the one refused, until B unlocks.
        let fa = File::open(&pa).unwrap();
        assert_eq!(flock(&fa, libc::LOCK_EX | libc::LOCK_NB), Err(libc::EWOULDBLOCK));
        flock(&fb, libc::LOCK_UN).unwrap();
        flock(&fa, libc::LOCK_SH | libc::LOCK_NB).unwrap();
        // Shared flocks coexist.
        flock(&fb, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    })
    .await;
    b.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fcntl_byte_ranges_across_mounts() {
    let Some(env) = Env::start().await else { return };
    let b = env.mount_another("mnt-b").await;
    let (pa, pb) = (env.mnt.join("r"), b.mnt.join("r"));
    support::blocking(move || {
        std::fs::write(&pa, vec![0u8; 1000]).unwrap();
        let fa = rw(&pa);
        let fb = rw(&pb);
        fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 100, 100).unwrap();
        let conflicts = t3fs_fuse::metrics::metrics().lock_conflicts.get();
        let e = fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 50, 100).unwrap_err();
        assert!(t3fs_fuse::metrics::metrics().lock_conflicts.get() > conflicts, "the conflict is counted");
        assert!(e == libc::EAGAIN || e == libc::EACCES, "overlap with A's range: errno {e}");
        // F_GETLK on B names A's lock: type, range; pid 0 (another host's process).
        let got = fcntl_getlk(&fb, libc::F_WRLCK, 50, 100);
        assert_eq!(got.l_type, libc::F_WRLCK as i16);
        assert_eq!((got.l_start, got.l_len, got.l_pid), (0, 100, 0));
        // No conflict: F_UNLCK. B's own lock is no conflict for B.
        assert_eq!(fcntl_getlk(&fb, libc::F_WRLCK, 100, 100).l_type, libc::F_UNLCK as i16);
        assert_eq!(fcntl_getlk(&fb, libc::F_RDLCK, 500, 0).l_type, libc::F_UNLCK as i16);
        // Shared read locks coexist; a writer is refused on a read-locked range.
        fcntl_lock(&fa, libc::F_SETLK, libc::F_RDLCK, 300, 100).unwrap();
        fcntl_lock(&fb, libc::F_SETLK, libc::F_RDLCK, 350, 100).unwrap();
        assert!(fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 420, 10).is_err(), "B reads 350..450");
        let got = fcntl_getlk(&fa, libc::F_WRLCK, 420, 10);
        assert_eq!((got.l_type, got.l_start, got.l_len), (libc::F_RDLCK as i16, 350, 100));
        // Unlocking a sub-range splits A's lock: 0..40 and 60..100 stay locked.
        fcntl_lock(&fa, libc::F_SETLK, libc::F_UNLCK, 40, 20).unwrap();
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 40, 20).unwrap();
        assert!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 60, 1).is_err());
        assert!(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 39, 1).is_err());
        // A blocking F_SETLKW on B waits until A closes (close drops the process's POSIX locks).
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(fcntl_lock(&fb, libc::F_SETLKW, libc::F_WRLCK, 0, 100)).unwrap();
            fb
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "F_SETLKW must wait while A holds 0..40");
        drop(fa);
        assert_eq!(rx.recv_timeout(GRANT_TIMEOUT).expect("F_SETLKW granted after A's close"), Ok(()));
        let fb = waiter.join().unwrap();
        let fa = rw(&pa);
        let got = fcntl_getlk(&fa, libc::F_RDLCK, 0, 0);
        assert_eq!((got.l_type, got.l_start), (libc::F_WRLCK as i16, 0), "B holds 0..200 now");
        drop(fb);
        fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    })
    .await;
    b.stop().await;
    env.stop().await;
}

extern "C" fn note_signal(_: libc::c_int) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_lock_request_ends_with_eintr_on_a_signal() {
    let Some(env) = Env::start().await else { return };
    let b = env.mount_another("mnt-b").await;
    let (pa, pb) = (env.mnt.join("s"), b.mnt.join("s"));
    support::blocking(move || {
        // SIGUSR2 with a handler and without SA_RESTART: an interrupted F_SETLKW returns EINTR.
        // SAFETY: installing a handler that does nothing.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = 0;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        std::fs::write(&pa, b"x").unwrap();
        let fa = rw(&pa);
        fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let fb = rw(&pb);
            tx.send(fcntl_lock(&fb, libc::F_SETLKW, libc::F_WRLCK, 0, 0)).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "F_SETLKW must wait while A holds the file");
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the waiter thread is alive (it has not sent its result yet).
        assert_eq!(unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR2) }, 0);
        assert_eq!(rx.recv_timeout(GRANT_TIMEOUT).expect("the signal ends the wait"), Err(libc::EINTR));
        waiter.join().unwrap();
        drop(fa);
    })
    .await;
    b.stop().await;
    env.stop().await;
}

/// Kills the `t3fs mount` child and clears its mount even when an assertion fails midway.
struct Daemon {
    child: Child,
    mnt: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if t3fs_cli::local::process::is_mounted(&self.mnt) {
            let _ = t3fs(&["umount"], &self.mnt);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_of_a_killed_daemon_go_with_its_client_session() {
    // Client sessions expire 1 s after the last extension (the least mgmtd allows); meta prunes
    // every 300 ms; the mount daemon extends its session every 300 ms.
    let Some(env) = Env::start_tweaked(
        |p| {
            p.mgmtd.client_session_timeout_ms = 1000;
            p.mgmtd.check_interval_ms = 100;
            p.meta.session_prune_interval_ms = 300;
            p.fuse.session_extend_ms = 300;
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    // Mount B is a `t3fs mount` process, so it can be killed with SIGKILL.
    let mnt_b = env.tmp.path().join("mnt-b");
    std::fs::create_dir_all(&mnt_b).unwrap();
    let cfg = env.cluster.mount_config();
    let conf = env.tmp.path().join("fuse-b.toml");
    std::fs::write(&conf, t3fs_common::config::to_toml(&cfg).unwrap()).unwrap();
    let child = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(&conf)
        .arg(&mnt_b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, mnt: mnt_b.clone() };
    let pa = env.mnt.join("k");
    support::blocking(move || {
        wait_until("mount B", Duration::from_secs(60), || t3fs_cli::local::process::is_mounted(&mnt_b));
        // B holds an fcntl lock on k and a flock on k2 (one file each: on t3fs a flock and an
        // fcntl lock of different owners conflict, see docs/fuse.md).
        std::fs::write(&pa, b"x").unwrap();
        std::fs::write(pa.with_file_name("k2"), b"x").unwrap();
        let fb = rw(&mnt_b.join("k"));
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
        let fb2 = File::open(mnt_b.join("k2")).unwrap();
        flock(&fb2, libc::LOCK_EX | libc::LOCK_NB).unwrap();
        let fa = rw(&pa);
        let fa2 = File::open(pa.with_file_name("k2")).unwrap();
        assert!(fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).is_err(), "B's fcntl lock seen on A");
        assert_eq!(flock(&fa2, libc::LOCK_SH | libc::LOCK_NB), Err(libc::EWOULDBLOCK), "B's flock seen on A");
        daemon.child.kill().unwrap(); // SIGKILL: B releases nothing
        daemon.child.wait().unwrap();
        // Once B's client session expired and meta pruned it, A gets the locks.
        wait_until("B's locks to be pruned", Duration::from_secs(30), || {
            fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).is_ok()
        });
        flock(&fa2, libc::LOCK_EX | libc::LOCK_NB).unwrap_or_else(|e| panic!("flock after pruning: errno {e}"));
        drop((fb, fb2)); // their closes fail quietly on the dead mount
        drop(daemon);
    })
    .await;
    env.stop().await;
}
