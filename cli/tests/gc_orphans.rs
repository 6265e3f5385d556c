//! `t3fs admin gc-orphans`, the real binary against an in-process cluster: the records (live chunks
//! and tombstones) of a file meta no longer has are reported by `--dry-run` without a change, then
//! dropped from every replica; a live file and an unlinked file still open for write keep every
//! record; a second run finds nothing.
use serde_json::Value;
use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, UserInfo};
use t3fs_common::proto::UpdateType;
use t3fs_common::{ChainId, ChunkId, InodeId, TargetId};

mod admin_env;
use admin_env::Env;

const CHUNK: usize = 1 << 20;

/// Every record of `inode` (live chunks and tombstones) over every target: (live, tombstones).
async fn records(c: &Client, inode: u64) -> (usize, usize) {
    let (mut live, mut tombstones) = (0, 0);
    for t in &c.routing().info.targets {
        for m in c.list_target_chunks(TargetId(t.target_id), true).await.unwrap() {
            if ChunkId::from_bytes(&m.chunk_id).unwrap().inode == InodeId(inode) {
                if m.removed { tombstones += 1 } else { live += 1 }
            }
        }
    }
    (live, tombstones)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_orphans_drops_only_the_records_of_files_that_are_gone() {
    let env = Env::new();
    let cluster = LocalCluster::start(&env.data).await.unwrap();
    let a = cluster.client().await.unwrap();
    let b = cluster.client().await.unwrap();
    let root = UserInfo::root();
    let data = vec![7u8; 2 * CHUNK + 10];

    // A live file, and an unlinked file another client still has open for write.
    let keep = a.create(&root, InodeId::ROOT, b"keep", 0o644, true).await.unwrap();
    a.write(&keep, 0, &data).await.unwrap();
    a.close(&root, InodeId(keep.id), data.len() as u64, true).await.unwrap();
    let (held, session) = a.create_for_write(&root, InodeId::ROOT, b"held", 0o644, true).await.unwrap();
    a.write(&held, 0, &data[..CHUNK]).await.unwrap();
    b.remove(&root, InodeId::ROOT, b"held", false).await.unwrap();

    // The chunks of a file meta never had (a writer whose updates came after GC deleted its file):
    // three chunks, the middle one then removed (a tombstone on every replica).
    let gone = t3fs_common::proto::Inode { id: 1 << 40, ..keep.clone() };
    a.write(&gone, 0, &data).await.unwrap();
    let layout = gone.layout.unwrap();
    let chain = ChainId(a.routing().chunk_chain(&layout, 1).unwrap().chain_id);
    a.chain_update(chain, ChunkId::new(InodeId(gone.id), 1), UpdateType::Remove).await.unwrap();
    assert_eq!(records(&a, gone.id).await, (6, 3));
    let (keep_before, held_before) = (records(&a, keep.id).await, records(&a, held.id).await);
    assert_eq!((keep_before, held_before), ((9, 0), (3, 0)));

    // Dry run: reported, nothing changed.
    let v = env.json(&["gc-orphans", "--dry-run"]).await;
    let orphans = v["orphan_files"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{v}");
    assert_eq!(orphans[0]["inode"], gone.id);
    assert_eq!((orphans[0]["live_chunks"].as_u64(), orphans[0]["tombstones"].as_u64()), (Some(2), Some(1)));
    assert_eq!(orphans[0]["bytes"].as_u64(), Some((CHUNK + 10) as u64));
    assert_eq!(v["purged"], 0);
    assert_eq!(records(&a, gone.id).await, (6, 3));
    let text = env.ok(&["gc-orphans", "--dry-run"]).await;
    assert!(text.contains("dry run: nothing changed") && text.contains(&gone.id.to_string()), "{text}");

    // For real: every record of the gone file goes; nothing else changes.
    let v: Value = env.json(&["gc-orphans"]).await;
    assert_eq!((v["removed"].as_u64(), v["purged"].as_u64()), (Some(2), Some(3)), "{v}");
    assert_eq!((v["kept"].as_u64(), v["failed"].as_u64()), (Some(0), Some(0)), "{v}");
    assert_eq!(records(&a, gone.id).await, (0, 0));
    assert_eq!((records(&a, keep.id).await, records(&a, held.id).await), (keep_before, held_before));
    let back = a.read(&a.getattr(&root, InodeId(keep.id)).await.unwrap(), 0, data.len() as u32).await.unwrap();
    assert!(back == data, "the live file reads back");

    // Nothing left to do.
    let v = env.json(&["gc-orphans"]).await;
    assert_eq!(v["orphan_files"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["purged"], 0);

    a.close_session(&root, InodeId(held.id), session, CHUNK as u64, true).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}
