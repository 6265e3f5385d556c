//! Shared per-disk engines: opening, the owner registry, format 3 checks, format 2 compatibility, and the
//! allocation barrier.
use std::path::Path;

use bytes::Bytes;
use t3fs_common::{ChunkId, InodeId, StatusCode, TargetId};

use super::*;
use crate::chunk_store::Update;
use crate::config::{DiskConfig, TargetConfig};

fn replace(data: &[u8]) -> Update {
    Update::Replace { data: Bytes::copy_from_slice(data), payload_crc32c: crc32c::crc32c(data) }
}

fn chunk(i: u32) -> ChunkId {
    ChunkId::new(InodeId(9), i)
}

fn config(root: &Path, targets: &[(u64, Option<u32>)]) -> Config {
    let targets =
        targets.iter().map(|&(id, disk)| TargetConfig { id, path: root.join(format!("t{id}")), disk }).collect();
    let mut c = Config::new(1, "m", targets);
    c.disks = vec![DiskConfig { index: 0, path: root.join("disk0") }];
    c
}

fn open(c: &Config) -> Result<HashMap<u64, ChunkStore>, Error> {
    Ok(open_stores(c, EngineOptions::default())?.into_iter().map(|(id, s, _)| (id.0, s)).collect())
}

fn close(stores: HashMap<u64, ChunkStore>) {
    stores.values().for_each(ChunkStore::close);
}

async fn put(s: &ChunkStore, c: ChunkId, v: u64, data: &[u8]) {
    let g = s.lock(c).await;
    s.apply(&g, v, 1, replace(data)).await.unwrap();
}

#[tokio::test]
async fn targets_on_one_disk_share_its_engine() {
    let d = tempfile::tempdir().unwrap();
    let c = config(d.path(), &[(1, Some(0)), (2, Some(0)), (3, Some(7)), (4, None)]);
    let stores = open(&c).unwrap();
    for (id, s) in &stores {
        put(s, chunk(0), 1, format!("target {id}").as_bytes()).await;
    }
    assert!(Arc::ptr_eq(stores[&1].engine(), stores[&2].engine()));
    assert_eq!(stores[&1].engine().dir(), d.path().join("disk0/engine"));
    // Disk 7 is not in `[[disks]]`: private engines, as before.
    assert_eq!(stores[&3].engine().dir(), d.path().join("t3/engine"));
    assert_eq!(stores[&4].engine().dir(), d.path().join("t4/engine"));
    assert_eq!(stores[&1].engine().allocated().len(), 2);
    for t in [1, 2] {
        let format = std::fs::read_to_string(d.path().join(format!("t{t}/FORMAT"))).unwrap();
        assert!(format.starts_with("t3fs-target 3\ndisk "), "{format}");
        assert!(!d.path().join(format!("t{t}/engine")).exists());
    }
    assert_eq!(std::fs::read_to_string(d.path().join("t4/FORMAT")).unwrap(), "t3fs-target 2\n");
    close(stores);
    // Reopened: the same data, both targets' slots marked.
    let stores = open(&c).unwrap();
    for (id, s) in &stores {
        assert_eq!(&s.read(chunk(0), 0, 100).await.unwrap().0[..], format!("target {id}").as_bytes());
    }
    assert_eq!(stores[&1].engine().allocated().len(), 2);
    close(stores);
}

#[tokio::test]
async fn a_registered_target_must_stay_configured_while_it_exists() {
    let d = tempfile::tempdir().unwrap();
    let c = config(d.path(), &[(1, Some(0)), (2, Some(0))]);
    let stores = open(&c).unwrap();
    put(&stores[&2], chunk(0), 1, b"two").await;
    close(stores);
    let without_2 = config(d.path(), &[(1, Some(0))]);
    let e = open(&without_2).err().expect("refused");
    assert!(e.message.contains("target 2") && e.message.contains("not configured"), "{}", e.message);
    // Deleting the directory gives its slots up.
    std::fs::remove_dir_all(d.path().join("t2")).unwrap();
    let stores = open(&without_2).unwrap();
    assert!(stores[&1].engine().allocated().is_empty());
    let disk = std::fs::read_to_string(d.path().join("disk0/DISK")).unwrap();
    assert!(disk.contains("target 1 ") && !disk.contains("target 2 "), "{disk}");
    close(stores);
}

#[tokio::test]
async fn a_format_3_target_opens_only_on_its_disk() {
    let d = tempfile::tempdir().unwrap();
    let c = config(d.path(), &[(1, Some(0))]);
    close(open(&c).unwrap());
    // Named off the disk: the registry refuses.
    let e = open(&config(d.path(), &[(1, None)])).err().expect("off the disk");
    assert!(e.message.contains("not configured"), "{}", e.message);
    // No disks at all: the target's FORMAT refuses.
    let mut no_disks = config(d.path(), &[(1, Some(0))]);
    no_disks.disks.clear();
    let e = open(&no_disks).err().expect("no disk");
    assert!(e.message.contains("no shared disk is configured"), "{}", e.message);
    let mut other = c.clone();
    other.disks[0].path = d.path().join("another");
    let e = open(&other).err().expect("another disk");
    assert!(e.message.contains("has id"), "{}", e.message);
    close(open(&c).unwrap());
}

#[tokio::test]
async fn format_2_targets_keep_their_private_engine() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = ChunkStore::open(TargetId(1), &d.path().join("t1")).unwrap();
    put(&s, chunk(0), 1, b"private").await;
    s.close();
    drop(s);
    let stores = open(&config(d.path(), &[(1, Some(0)), (2, Some(0))])).unwrap();
    assert_eq!(stores[&1].engine().dir(), d.path().join("t1/engine"));
    assert_eq!(&stores[&1].read(chunk(0), 0, 100).await.unwrap().0[..], b"private");
    assert_eq!(stores[&2].engine().dir(), d.path().join("disk0/engine"));
    assert_eq!(std::fs::read_to_string(d.path().join("t1/FORMAT")).unwrap(), "t3fs-target 2\n");
    close(stores);
}

#[tokio::test]
async fn a_shared_engine_allocates_only_once_every_target_attached() {
    let d = tempfile::tempdir().unwrap();
    let disk = Disk::open(0, &d.path().join("disk"), EngineOptions::default()).unwrap();
    let choice = EngineChoice::Shared(disk.clone());
    let (a, _) = ChunkStore::begin_open(TargetId(1), &d.path().join("a"), &choice).unwrap().finish().unwrap();
    let g = a.lock(chunk(0)).await;
    let e = a.apply(&g, 1, 1, replace(b"too early")).await.unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable);
    let b = ChunkStore::begin_open(TargetId(2), &d.path().join("b"), &choice).unwrap();
    disk.engine().seal();
    let (b, _) = b.finish().unwrap();
    a.apply(&g, 1, 1, replace(b"now")).await.unwrap();
    // A target that begins after the seal is refused.
    assert!(ChunkStore::begin_open(TargetId(3), &d.path().join("c"), &choice).is_err());
    drop(g);
    a.close();
    b.close();
}

#[tokio::test]
async fn a_disk_is_opened_by_one_process_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let c = config(d.path(), &[(1, Some(0)), (2, Some(0))]);
    let stores = open(&c).unwrap();
    put(&stores[&1], chunk(0), 1, b"one").await;
    // A second storage process configured with the same disk, with other targets: refused before it
    // touches anything (flock on the engine's LOCK file, which a second open in one process sees too).
    let other = config(d.path(), &[(3, Some(0))]);
    let e = open(&other).err().expect("refused");
    assert_eq!(e.code, StatusCode::Busy, "{}", e.message);
    assert!(e.message.contains("in use by another storage process"), "{}", e.message);
    assert!(!d.path().join("t3").exists());
    // The same for a private engine (in its target's directory).
    let mut private = config(d.path(), &[(4, None)]);
    private.disks.clear();
    let p = open(&private).unwrap();
    assert_eq!(open(&private).err().expect("refused").code, StatusCode::Busy);
    close(p);
    // Closed (or the process gone): the next open takes the disk.
    close(stores);
    let stores = open(&c).unwrap();
    assert_eq!(&stores[&1].read(chunk(0), 0, 3).await.unwrap().0[..], b"one");
    close(stores);
}
