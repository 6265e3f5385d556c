//! CRAQ under failure on a real 3-replica chain (in-process cluster): a writer streams overwrites into
//! one file whose first chunk lives on one chain, while the storage server holding that chain's middle
//! or tail stops, and then the one holding its head. Writes must go on (the client retries until mgmtd
//! has moved the chain on: to the new head after the head's server stopped), and at the end every write
//! the client saw acknowledged must read back, byte for byte, from what is left of the chain.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_common::ids::{ChainTableId, InodeId};
use t3fs_common::layout::{self, SplitMix64};
use t3fs_common::proto::PublicTargetState;

/// Bytes one write covers, and how many distinct places the writes cycle through.
const PIECE: usize = 16 << 10;
const PLACES: usize = 48;

fn piece(seed: u64) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..PIECE / 8).flat_map(|_| r.next_u64().to_le_bytes()).collect()
}

/// Chain positions, head first.
#[derive(Clone, Copy, Debug)]
enum Role {
    Head = 0,
    Middle = 1,
    Tail = 2,
}

/// Waits until the writer has had `more` further writes acknowledged (panics after a minute).
async fn wait_for_writes(acked: &AtomicUsize, more: usize) {
    let goal = acked.load(Ordering::SeqCst) + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < goal {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not go on ({} acked)",
            acked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Streams writes while the servers holding `kills` (positions in the chain as it was at the start) stop
/// one after the other; then checks every acknowledged write.
async fn writes_survive(kills: &[Role]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let user = t3fs_client::UserInfo::default();
    let size = PIECE * PLACES;
    let inode = client.create(&user, InodeId::ROOT, b"stream", 0o644, true).await.unwrap();
    client.write(&inode, 0, &vec![0u8; size]).await.unwrap();
    let inode = client.close(&user, InodeId(inode.id), size as u64, true).await.unwrap();

    // The chain of chunk 0 and the storage server (index in the plan) of each of its targets.
    let r = client.routing();
    let lay = inode.layout.expect("layout");
    assert!(lay.chunk_size as usize >= size, "the test wants one chunk (chunk size {})", lay.chunk_size);
    let table = r.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
    let chain = r.chain(layout::chain_of(&lay, &table.chains, 0).unwrap()).unwrap().clone();
    assert_eq!(chain.targets.len(), 3, "{chain:?}");
    let server_of = |target: u64| {
        let node = r.info.targets.iter().find(|t| t.target_id == target).unwrap().node_id;
        cluster.plan.storage.iter().position(|s| s.node_id == node).unwrap()
    };
    let servers: Vec<usize> = chain.targets.iter().map(|t| server_of(t.target_id)).collect();

    // The writer: one write at a time; the model takes a write only once it is acknowledged, and every
    // write must be acknowledged (the client retries through the failures).
    let model = Arc::new(std::sync::Mutex::new(vec![0u8; size]));
    let (acked, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let writer = {
        let (client, inode, model, acked, stop) =
            (client.clone(), inode.clone(), model.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let place = (i as usize * 7) % PLACES;
                let data = piece(i + 1);
                client
                    .write(&inode, (place * PIECE) as u64, &data)
                    .await
                    .unwrap_or_else(|e| panic!("write {i} at place {place} failed: {e}"));
                model.lock().unwrap()[place * PIECE..(place + 1) * PIECE].copy_from_slice(&data);
                acked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };

    wait_for_writes(&acked, 20).await;
    for role in kills {
        let target = chain.targets[*role as usize].target_id;
        assert!(cluster.stop_storage(servers[*role as usize]).await, "{role:?} already stopped");
        // Writes go on with the survivors, and routing shows the stopped target out of service.
        wait_for_writes(&acked, 30).await;
        client.refresh_routing().await;
        let state = client
            .routing()
            .info
            .chains
            .iter()
            .flat_map(|c| &c.targets)
            .find(|t| t.target_id == target)
            .map(|t| t.public_state);
        assert_eq!(state, Some(PublicTargetState::Offline as i32), "{role:?} target {target}");
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the writer does not panic");

    let want = model.lock().unwrap().clone();
    let got = client.read(&inode, 0, size as u32).await.unwrap();
    let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(first_bad.is_none(), "acknowledged data lost: first difference at byte {first_bad:?}");
    // Every survivor holds it too (a read may be served by any of them).
    let survivors: Vec<_> = chain
        .targets
        .iter()
        .enumerate()
        .filter(|(pos, _)| !kills.iter().any(|k| *k as usize == *pos))
        .map(|(_, t)| t.target_id)
        .collect();
    for t in survivors {
        let m = client
            .query_chunk(t3fs_common::ids::TargetId(t), t3fs_common::ids::ChunkId::new(InodeId(inode.id), 0))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("chunk missing on surviving target {t}"));
        assert_eq!((m.length as usize, m.crc32c), (size, crc32c::crc32c(&want)), "surviving target {t}");
    }
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn middle_then_head_stop_during_a_write_stream() {
    writes_survive(&[Role::Middle, Role::Head]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_stops_during_a_write_stream() {
    writes_survive(&[Role::Tail]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_truncate_and_seek_survive_a_head_stopping() {
    use t3fs_client::Seek;
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let user = t3fs_client::UserInfo::default();
    let inode = client.create(&user, InodeId::ROOT, b"sparse", 0o644, true).await.unwrap();
    let cs = u64::from(inode.layout.unwrap().chunk_size);
    for index in [0u64, 5, 300, 301, 1000] {
        client.write(&inode, index * cs, b"data").await.unwrap();
    }
    let inode = client.close(&user, InodeId(inode.id), 1000 * cs + 4, true).await.unwrap();

    // Stop the server holding the head of chunk 300's chain; mgmtd has not noticed yet.
    let r = client.routing();
    let lay = inode.layout.unwrap();
    let table = r.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
    let chain = r.chain(layout::chain_of(&lay, &table.chains, 300).unwrap()).unwrap().clone();
    let head_node = r.info.targets.iter().find(|t| t.target_id == chain.targets[0].target_id).unwrap().node_id;
    let server = cluster.plan.storage.iter().position(|s| s.node_id == head_node).unwrap();
    assert!(cluster.stop_storage(server).await);

    // The cut (over 64 chunks: listed on the heads) retries until the chain has a new head.
    let cut = client.truncate(&user, InodeId(inode.id), 300 * cs + 2).await.unwrap();
    assert_eq!(cut.length, 300 * cs + 2);
    let size = cut.length;
    assert_eq!(client.seek(&cut, 6, size, Seek::Data).await.unwrap(), Some(5 * cs));
    assert_eq!(client.seek(&cut, 5 * cs, size, Seek::Hole).await.unwrap(), Some(5 * cs + 4));
    assert_eq!(client.seek(&cut, 5 * cs + 4, size, Seek::Data).await.unwrap(), Some(300 * cs));
    assert_eq!(client.seek(&cut, 300 * cs, size, Seek::Hole).await.unwrap(), Some(300 * cs + 2), "cut to 2 bytes");
    let back = client.read(&cut, 300 * cs, 2).await.unwrap();
    assert_eq!(back, b"da");
    // Chunks 301 and 1000 are gone from every live replica.
    let mut chunk_indexes = Vec::new();
    for t in &client.routing().info.targets {
        let Ok(list) = client.list_chunks(t3fs_common::ids::TargetId(t.target_id)).await else { continue };
        for m in list {
            let c = t3fs_common::ids::ChunkId::from_bytes(&m.chunk_id).unwrap();
            if c.inode == InodeId(inode.id) {
                chunk_indexes.push(c.index);
            }
        }
    }
    assert!(chunk_indexes.iter().all(|i| [0, 5, 300].contains(i)), "{chunk_indexes:?}");
    drop(client);
    cluster.shutdown().await;
}
