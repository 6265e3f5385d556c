//! A storage server with two targets on one disk's shared chunk engine and one private target: the
//! engine is shared, heartbeats report each a share of the disk, a restart in the same process keeps the
//! data, and a target dropped from the config while its directory exists stops the start.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use t3fs_common::{ChunkId, InodeId, TargetId};
use t3fs_storage::chunk_store::Update;
use t3fs_storage::{DiskConfig, TargetConfig};

mod common;
use common::*;

fn disk_config(mgmtd_addr: &str, root: &std::path::Path, targets: &[(u64, Option<u32>)]) -> t3fs_storage::Config {
    let mut c = config(1, mgmtd_addr, &root.join("unused"));
    c.targets =
        targets.iter().map(|&(id, disk)| TargetConfig { id, path: root.join(format!("t{id}")), disk }).collect();
    c.disks = vec![DiskConfig { index: 0, path: root.join("disk0") }];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_of_one_disk_share_an_engine_across_restarts() {
    let (fake, mgmtd_addr, mgmtd_cancel) = start_fake_mgmtd().await;
    let root = tempfile::tempdir().unwrap();
    let cfg = disk_config(&mgmtd_addr, root.path(), &[(101, Some(0)), (102, Some(0)), (103, Some(1))]);
    let server = t3fs_storage::start(cfg.clone()).await.unwrap();
    let [a, b, c] = [101, 102, 103].map(|t| server.store(TargetId(t)).expect("target").clone());
    assert!(Arc::ptr_eq(a.engine(), b.engine()) && !Arc::ptr_eq(a.engine(), c.engine()));
    let chunk = ChunkId::new(InodeId(5), 0);
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        let data = Bytes::from(vec![i as u8 + 1; 100_000]);
        let g = s.lock(chunk).await;
        s.apply(&g, 1, 1, Update::Replace { payload_crc32c: crc32c::crc32c(&data), data }).await.unwrap();
    }
    assert_eq!(a.engine().allocated().len(), 2, "both targets' chunks in the shared engine");
    // Heartbeats: 101 and 102 each report half of the disk, 103 (alone on disk 1) all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let s = fake.0.lock().unwrap();
        let hb = s.heartbeats.last().expect("a heartbeat");
        let cap = |t: u64| hb.targets.iter().find(|x| x.target_id == t).and_then(|x| x.capacity_bytes).unwrap();
        assert_eq!(cap(101), cap(102));
        assert!(cap(103) / 2 == cap(101), "{} vs {}", cap(103), cap(101));
    }
    drop((a, b, c));
    server.shutdown().await;

    // Restart in the same process: the same data, read back through the shared engine.
    let server = t3fs_storage::start(cfg.clone()).await.unwrap();
    for (i, t) in [101u64, 102, 103].into_iter().enumerate() {
        let (d, _) = server.store(TargetId(t)).unwrap().read(chunk, 0, 100_000).await.unwrap();
        assert!(d.len() == 100_000 && d.iter().all(|x| *x == i as u8 + 1), "target {t}");
    }
    server.shutdown().await;

    // Without target 102 (whose directory still exists) the server refuses to start.
    let without = disk_config(&mgmtd_addr, root.path(), &[(101, Some(0)), (103, Some(1))]);
    let e = t3fs_storage::start(without).await.err().expect("refused");
    assert!(format!("{e:#}").contains("not configured"), "{e:#}");
    mgmtd_cancel.cancel();
}
