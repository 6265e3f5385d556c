//! `mount.t3fs` as mount(8) runs it (what an fstab line does): a link named `mount.t3fs` to the
//! `t3fs` binary, called with `SOURCE MOUNTPOINT -o rw,config=FILE,log=FILE`, mounts an in-process
//! cluster and returns once the mount is up; the mount serves files; `t3fs umount` stops it.
//! Bad arguments and a missing config fail with exit 1 and one line.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_cli::local::process::is_mounted;

const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fstab_style_mount_through_the_helper() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let config = tmp.path().join("fuse.toml");
    std::fs::write(&config, t3fs_common::config::to_toml(&cluster.mount_config()).unwrap()).unwrap();
    let helper = tmp.path().join("mount.t3fs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let log = tmp.path().join("mount.log");
    let opts = format!("rw,_netdev,config={},log={}", config.display(), log.display());

    let run = |args: Vec<String>| {
        let helper = helper.clone();
        tokio::task::spawn_blocking(move || Command::new(helper).args(args).output().unwrap())
    };
    // Refusals first: nothing gets mounted.
    let out = run(vec!["t3fs".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("mount.t3fs: usage"), "{out:?}");
    let missing = vec!["t3fs".into(), mnt.display().to_string(), "-o".into(), "config=/nonexistent.toml".into()];
    let out = run(missing).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"), "{out:?}");
    assert!(!is_mounted(&mnt));

    let out = run(vec!["t3fs".into(), mnt.display().to_string(), "-o".into(), opts.clone()]).await.unwrap();
    assert!(out.status.success(), "{out:?}\nlog: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(is_mounted(&mnt), "mounted when the helper returns");
    let m = mnt.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::write(m.join("via-fstab"), b"mounted by mount.t3fs").unwrap();
        assert_eq!(std::fs::read(m.join("via-fstab")).unwrap(), b"mounted by mount.t3fs");
    })
    .await
    .unwrap();
    // Mounting again on the same point is refused.
    let out = run(vec!["t3fs".into(), mnt.display().to_string(), "-o".into(), opts]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let m = mnt.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new(BIN).arg("umount").arg(&m).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    while is_mounted(&mnt) {
        assert!(start.elapsed() < Duration::from_secs(30), "still mounted after t3fs umount");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = cluster.client().await.unwrap();
    let f = client.resolve_path(&t3fs_client::UserInfo::root(), "/via-fstab").await.unwrap();
    assert_eq!(f.length, 21, "the file written through the helper's mount is in t3fs");
    client.shutdown().await;
    cluster.shutdown().await;
}
