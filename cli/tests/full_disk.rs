//! Storage disks that fill up, through a real FUSE mount on an in-process cluster whose three
//! storage servers each keep their targets (chunk data and chunk metadata store) on a 96 MiB tmpfs
//! with a 24 MiB reserve (`reserved_space_bytes`, storage's `engine/space.rs`).
//!
//! What a user must see: writes end with ENOSPC (not EIO, not a hang); every file written before
//! reads back; the disks never actually run out (the metadata store, which poisons itself on a
//! failed journal write, keeps working); `df` on the mount shows the space gone; and once files
//! are deleted, GC and trim give the space back and writes work again, with no restart. Also: the
//! metadata store's disk at its reserve (meta refuses new names, removals go on), and one replica's
//! disk filled to the last block by something else (its targets go OFFLINE, the chain goes on).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod support;
use support::{Env, blocking, pattern};

const MIB: u64 = 1 << 20;
const TMPFS_MIB: u64 = 96;
const RESERVE: u64 = 24 * MIB;
const FILE: usize = 4 << 20;

/// The tmpfs mounts under the cluster's storage directories; unmounted (lazily) on drop, after
/// the cluster that uses them is gone.
struct Tmpfs(Vec<PathBuf>);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::process::Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

fn mount_tmpfs(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let size = format!("size={}m", TMPFS_MIB);
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn free_bytes(dir: &Path) -> u64 {
    let st = support::sys::statvfs(dir).unwrap();
    st.f_bavail * st.f_frsize
}

/// Writes `data` to `path` and fsyncs it (a buffered write's error surfaces at the latest there).
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Free bytes `df` shows on the mount (mgmtd's view, refreshed by heartbeats).
fn mount_avail(mnt: &Path) -> u64 {
    let st = support::sys::statvfs(mnt).unwrap();
    st.f_bavail * st.f_bsize
}

/// Starts a cluster with a FUSE mount; `tweak` adjusts its configs and may put directories on
/// tmpfs mounts of their own (`on_tmpfs(dir)`). `None` (with a message) where FUSE or tmpfs mounts
/// are not available. The mounts come first in the pair so that they outlive the cluster.
async fn start_with_tmpfs(
    tweak: impl FnOnce(&mut t3fs_cli::local::plan::Plan, &mut dyn FnMut(PathBuf)),
) -> Option<(Tmpfs, Env)> {
    let mut tmpfs = Tmpfs(Vec::new());
    let mut mounted = true;
    let env = Env::start_tweaked(
        |plan| {
            tweak(plan, &mut |dir: PathBuf| {
                mounted &= mount_tmpfs(&dir);
                tmpfs.0.push(dir);
            })
        },
        |_| {},
    )
    .await?;
    if !mounted {
        eprintln!("SKIPPED: cannot mount tmpfs here (needs root); the full-disk test cannot run");
        env.stop().await;
        return None;
    }
    Some((tmpfs, env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_with_enospc_and_recovers_when_files_go() {
    let Some((tmpfs, env)) = start_with_tmpfs(|plan, on_tmpfs| {
        for s in &mut plan.storage {
            on_tmpfs(s.targets[0].path.parent().unwrap().to_path_buf());
            s.reserved_space_bytes = Some(RESERVE);
            s.trim_interval_ms = 200;
        }
    })
    .await
    else {
        return;
    };
    let dirs = tmpfs.0.clone();
    let mnt = env.mnt.clone();
    let avail_at_start = mount_avail(&mnt);
    assert!(avail_at_start > 40 * MIB, "df shows {} MiB free at the start", avail_at_start >> 20);

    // Fill it: 4 MiB files, each fsync'ed, until a write is refused.
    let (written, err) = blocking({
        let mnt = mnt.clone();
        move || {
            for i in 0..40u64 {
                if let Err(e) = write_synced(&mnt.join(format!("f{i}")), &pattern(FILE, i)) {
                    return (i, e);
                }
            }
            panic!("160 MiB went onto 96 MiB disks");
        }
    })
    .await;
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "a full disk is ENOSPC, got {err}");
    assert!(written >= 5, "only {written} files fit before ENOSPC");
    eprintln!("{written} files of 4 MiB fit; then: {err}");
    for dir in &dirs {
        let left = free_bytes(dir);
        assert!(left >= RESERVE / 2, "{}: {} KiB left: the reserve was not kept", dir.display(), left >> 10);
    }

    // `df` on the mount tells the space is gone (mgmtd's view lags by a heartbeat).
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount_avail(&mnt) > 8 * MIB {
        assert!(Instant::now() < deadline, "df still shows {} MiB free", mount_avail(&mnt) >> 20);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everything written before reads back; metadata still works; the storage daemons serve on.
    blocking({
        let mnt = mnt.clone();
        move || {
            for i in 0..written {
                let got = std::fs::read(mnt.join(format!("f{i}"))).unwrap();
                assert!(got == pattern(FILE, i), "f{i} changed on a full disk");
            }
            std::fs::create_dir(mnt.join("still-works")).unwrap();
            std::fs::remove_file(mnt.join(format!("f{written}"))).unwrap();
            // A writer that never fsyncs (most programs) learns it at close(2): the mount buffers
            // the write, and its write-out at close is refused.
            let path = mnt.join("unsynced");
            let fd = support::sys::open(&path, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
            let data = pattern(FILE, 50);
            // SAFETY: `fd` is open and `data` is valid for its length.
            let wrote = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            let write_errno = (wrote < 0).then(|| std::io::Error::last_os_error().raw_os_error());
            // SAFETY: closes the fd opened above, once.
            let closed = unsafe { libc::close(fd) };
            let close_errno = (closed < 0).then(|| std::io::Error::last_os_error().raw_os_error());
            assert!(
                write_errno == Some(Some(libc::ENOSPC)) || (wrote > 0 && close_errno == Some(Some(libc::ENOSPC))),
                "write {wrote} ({write_errno:?}), close {closed} ({close_errno:?}): ENOSPC expected from one of them"
            );
            std::fs::remove_file(&path).unwrap();
        }
    })
    .await;
    for t in &env.client.routing().info.targets {
        assert_eq!(t.public_state, t3fs_common::proto::PublicTargetState::Serving as i32, "target {}", t.target_id);
    }

    // Delete half the files: GC removes their chunks, trim gives the blocks back, writes work again.
    let removed = written / 2;
    blocking({
        let mnt = mnt.clone();
        move || (0..removed).for_each(|i| std::fs::remove_file(mnt.join(format!("f{i}"))).unwrap())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let mnt = mnt.clone();
        let r = blocking(move || write_synced(&mnt.join("after"), &pattern(FILE, 99))).await;
        match r {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && Instant::now() < deadline => n += 1,
            Err(e) => panic!("writes never came back after deleting {removed} files ({n} tries): {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let back = blocking({
        let mnt = mnt.clone();
        move || std::fs::read(mnt.join("after")).unwrap()
    })
    .await;
    assert!(back == pattern(FILE, 99));
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount_avail(&mnt) < 8 * MIB {
        let free: Vec<u64> = dirs.iter().map(|d| free_bytes(d) >> 20).collect();
        assert!(
            Instant::now() < deadline,
            "df never showed the freed space: {} MiB; disks {free:?} MiB",
            mount_avail(&mnt) >> 20
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_metadata_disk_refuses_new_names_and_still_removes() {
    const META_RESERVE: u64 = 8 * MIB;
    let Some((tmpfs, env)) = start_with_tmpfs(|plan, on_tmpfs| {
        let t3fs_kv::KvConfig::Embedded { path } = &plan.meta.kv else { panic!("local meta is embedded") };
        on_tmpfs(path.parent().unwrap().to_path_buf());
        plan.meta.reserved_space_bytes = Some(META_RESERVE);
    })
    .await
    else {
        return;
    };
    let meta_fs = tmpfs.0[0].clone();
    let mnt = env.mnt.clone();
    blocking({
        let (mnt, meta_fs) = (mnt.clone(), meta_fs.clone());
        move || {
            write_synced(&mnt.join("kept"), &pattern(FILE, 1)).unwrap();
            std::fs::create_dir(mnt.join("d")).unwrap();
            std::fs::write(mnt.join("d/victim"), b"v").unwrap();
            // Something else fills the metadata disk to half its reserve.
            let filler = meta_fs.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0u8; 1 << 20];
            while free_bytes(&meta_fs) > META_RESERVE / 2 + (1 << 20) {
                f.write_all(&block).unwrap();
                f.sync_all().unwrap();
            }
            drop(f);
            let enospc = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
            assert_eq!(enospc(std::fs::create_dir(mnt.join("e"))), Some(libc::ENOSPC));
            assert_eq!(enospc(std::fs::File::create(mnt.join("new")).map(drop)), Some(libc::ENOSPC));
            assert_eq!(enospc(std::os::unix::fs::symlink("kept", mnt.join("l"))), Some(libc::ENOSPC));
            assert_eq!(enospc(support::sys::setxattr(&mnt.join("kept"), "user.k", b"v", 0)), Some(libc::ENOSPC));
            // Existing files are still written and read; renames and removals work.
            write_synced(&mnt.join("kept"), &pattern(FILE, 2)).unwrap();
            assert!(std::fs::read(mnt.join("kept")).unwrap() == pattern(FILE, 2));
            std::fs::rename(mnt.join("kept"), mnt.join("d/kept")).unwrap();
            std::fs::remove_file(mnt.join("d/victim")).unwrap();
            // The disk gets its space back: new names work again, and the store never failed.
            std::fs::remove_file(&filler).unwrap();
            std::fs::create_dir(mnt.join("e")).unwrap();
            write_synced(&mnt.join("e/new"), b"new").unwrap();
            assert_eq!(std::fs::read(mnt.join("e/new")).unwrap(), b"new");
        }
    })
    .await;
    env.stop().await;
    drop(tmpfs);
}

/// The public state of every target of storage node `node_id`, as the client's routing shows it.
fn states_of_node(env: &Env, node_id: u32) -> Vec<i32> {
    let r = env.client.routing();
    r.info
        .chains
        .iter()
        .flat_map(|c| &c.targets)
        .filter(|t| t.target_id / 100 == u64::from(node_id))
        .map(|t| t.public_state)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_disk_fills_to_the_last_block_goes_offline_and_the_chain_goes_on() {
    // Storage server 3 alone keeps its targets on a small tmpfs with no reserve, as if something
    // outside t3fs had filled its disk.
    let mut node = 0;
    let Some((tmpfs, env)) = start_with_tmpfs(|plan, on_tmpfs| {
        let s = plan.storage.last_mut().unwrap();
        on_tmpfs(s.targets[0].path.parent().unwrap().to_path_buf());
        s.reserved_space_bytes = Some(0);
        // Deleted chunks' blocks stay allocated (no trim): the disk stays full.
        s.trim_interval_ms = 0;
        node = s.node_id;
    })
    .await
    else {
        return;
    };
    let serving = t3fs_common::proto::PublicTargetState::Serving as i32;
    let offline = t3fs_common::proto::PublicTargetState::Offline as i32;
    let (mnt, disk) = (env.mnt.clone(), tmpfs.0[0].clone());
    blocking({
        let (mnt, disk) = (mnt.clone(), disk.clone());
        move || {
            for i in 0..3 {
                write_synced(&mnt.join(format!("f{i}")), &pattern(FILE, i)).unwrap();
            }
            std::fs::create_dir(mnt.join("small")).unwrap();
            for i in 0..100 {
                std::fs::write(mnt.join(format!("small/{i}")), b"small").unwrap();
            }
            // Fill the disk to the last block.
            let mut f = std::fs::File::create(disk.join("filler")).unwrap();
            let block = vec![1u8; 64 << 10];
            while f.write_all(&block).is_ok() {}
            let _ = f.sync_all();
            // Deleting files makes every replica write tombstones: on the full one the metadata
            // store's journal soon cannot grow, and it poisons itself.
            std::fs::remove_file(mnt.join("f0")).unwrap();
            for i in 0..100 {
                std::fs::remove_file(mnt.join(format!("small/{i}"))).unwrap();
            }
        }
    })
    .await;
    assert!(states_of_node(&env, node).iter().all(|s| *s == serving), "{:?}", states_of_node(&env, node));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !states_of_node(&env, node).contains(&offline) {
        assert!(Instant::now() < deadline, "no target of the full node went OFFLINE: {:?}", states_of_node(&env, node));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The other replicas carry on: GC finishes, new files are written (where a chain still has a
    // full SERVING replica, until the next removal fails it too), and everything reads back.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mnt = mnt.clone();
        let r = blocking(move || {
            std::fs::remove_file(mnt.join("probe")).ok();
            write_synced(&mnt.join("probe"), &pattern(FILE, 7))?;
            std::fs::remove_file(mnt.join("f1"))
        })
        .await;
        match r {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "writes did not come back: {e}; {:?}", states_of_node(&env, node))
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    blocking({
        let mnt = mnt.clone();
        move || {
            assert!(std::fs::read(mnt.join("f2")).unwrap() == pattern(FILE, 2));
            assert!(std::fs::read(mnt.join("probe")).unwrap() == pattern(FILE, 7));
        }
    })
    .await;
    assert!(env.cluster.storage(2).is_some(), "the storage server of the full disk is still running");
    env.stop().await;
    drop(tmpfs);
}
