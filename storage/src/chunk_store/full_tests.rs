//! Targets on full and failing disks. A target whose disk is filled behind its back (no reserve, a
//! 16 MiB tmpfs; needs root to mount, skipped otherwise): the metadata store poisons itself on the
//! failed journal write, and the target then counts as failed, so its heartbeat reports it OFFLINE
//! instead of every update of its chain failing on it. A chunk data write that fails with an I/O
//! error (a failing disk, injected) fails the target too; one refused for space (ENOSPC) does not.
use std::io::Write;

use super::tests::{id, w};
use super::*;
use crate::engine::EngineOptions;

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_store_poisoned_by_a_full_disk_reports_its_target_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = tmp.path().join("fs");
    std::fs::create_dir_all(&fs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&fs)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount tmpfs here (needs root)");
        return;
    }
    let _mount = Tmpfs(fs.clone());
    let opts = EngineOptions { reserved_bytes: Some(0), ..EngineOptions::default() };
    let (s, _) = ChunkStore::open_with(TargetId(7), &fs.join("target"), opts).unwrap();
    for i in 0..400 {
        let g = s.lock(id(i)).await;
        s.apply(&g, 1, 1, w(0, b"x")).await.unwrap();
    }
    // Something else fills the disk.
    let mut filler = std::fs::File::create(fs.join("filler")).unwrap();
    let block = vec![7u8; 64 << 10];
    while filler.write_all(&block).is_ok() {}
    drop(filler);
    assert!(!s.failed());
    // Removals need only metadata records; sooner or later the journal cannot grow.
    let mut failed_at = None;
    for i in 0..400 {
        let g = s.lock(id(i)).await;
        if let Err(e) = s.apply(&g, 2, 1, Update::Remove).await {
            assert_eq!(e.code, StatusCode::Io, "{e}");
            failed_at = Some(i);
            break;
        }
    }
    let at = failed_at.expect("a journal write failed on the full disk");
    assert!(s.failed(), "the poisoned store counts as failed (first failure at removal {at})");
    let g = s.lock(id(399)).await;
    assert!(s.apply(&g, 2, 1, Update::Remove).await.is_err(), "and stays so");
    drop(g);

    // The heartbeat reports it OFFLINE whatever routing says.
    let stores = HashMap::from([(TargetId(7), s.clone())]);
    let states = crate::local_state::TargetStates::new([TargetId(7)]);
    let report =
        crate::heartbeat::local_targets(&stores, &HashMap::new(), &t3fs_common::routing::RoutingCache::new(), &states);
    assert_eq!(report[0].local_state, proto::LocalTargetState::Offline as i32);
    s.close();
}

#[tokio::test]
async fn a_failing_data_write_fails_the_target_and_a_full_disk_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = ChunkStore::open(TargetId(7), tmp.path()).unwrap();
    let apply = |i: u32, v: u64| {
        let s = s.clone();
        async move {
            let g = s.lock(id(i)).await;
            s.apply(&g, v, 1, w(0, b"data")).await
        }
    };
    apply(0, 1).await.unwrap();
    // A full disk refuses the write and leaves the target alone.
    s.engine().inject_write_errno(Some(libc::ENOSPC));
    assert_eq!(apply(1, 1).await.unwrap_err().code, StatusCode::NoSpace);
    assert!(!s.failed());
    // An I/O error writing chunk data: the disk is failing, the target goes.
    s.engine().inject_write_errno(Some(libc::EIO));
    assert_eq!(apply(1, 1).await.unwrap_err().code, StatusCode::Io);
    assert!(s.failed());
    s.engine().inject_write_errno(None);
    let stores = HashMap::from([(TargetId(7), s.clone())]);
    let states = crate::local_state::TargetStates::new([TargetId(7)]);
    let report =
        crate::heartbeat::local_targets(&stores, &HashMap::new(), &t3fs_common::routing::RoutingCache::new(), &states);
    assert_eq!(report[0].local_state, proto::LocalTargetState::Offline as i32);
    super::tests::assert_no_leak(&s);
    s.close();
}
