//! PURGE on a 3-replica chain (`storage/src/service/purge.rs`): a tombstone goes from every replica,
//! tail first; a live chunk is never touched; and a replica that keeps its record (a newer tombstone,
//! or a forward that fails) keeps every predecessor's too, so versions stay monotonic along the chain.
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, UpdateType};
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;

fn purge(chunk: ChunkId) -> proto::BulkRequest {
    update(101, 1, chunk, UpdateType::Purge, 0, b"")
}

fn remove(chunk: ChunkId) -> proto::BulkRequest {
    update(101, 1, chunk, UpdateType::Remove, 0, b"")
}

/// What each node lists for the chunk: `None` without a record, else (version, removed).
async fn records(c: &Cluster, chunk: ChunkId) -> Vec<Option<(u64, bool)>> {
    let mut out = Vec::new();
    for node in 0..c.servers.len() {
        out.push(find(&c.listing(node).await, chunk).map(|m| (m.version, m.removed)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_drops_tombstones_on_every_replica_and_never_a_live_chunk() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let (gone, live, never) = (ChunkId::new(InodeId(7), 0), ChunkId::new(InodeId(7), 1), ChunkId::new(InodeId(7), 2));
    for chunk in [gone, live] {
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"data"), b"data").await.unwrap();
    }
    client.call(&c.bulk(0), &remove(gone), &[]).await.unwrap();
    assert_eq!(records(&c, gone).await, vec![Some((2, true)); 3]);

    let (rsp, _) = client.call(&c.bulk(0), &purge(gone), &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0, "nothing left on the head");
    assert_eq!(records(&c, gone).await, vec![None; 3]);
    // Again: nothing to do, nothing changes.
    let (rsp, _) = client.call(&c.bulk(0), &purge(gone), &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0);

    // A live chunk and a chunk that never existed: no change anywhere.
    let (rsp, _) = client.call(&c.bulk(0), &purge(live), &[]).await.unwrap();
    let m = rsp.meta.unwrap();
    assert_eq!((m.version, m.removed, m.length), (1, false, 4));
    assert_eq!(records(&c, live).await, vec![Some((1, false)); 3]);
    let (rsp, _) = client.call(&c.bulk(0), &purge(never), &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0);
    assert_eq!(records(&c, never).await, vec![None; 3]);

    // A chunk written again after its purge starts over at version 1 on every replica.
    client.call(&c.bulk(0), &write(101, 1, gone, 0, b"again"), b"again").await.unwrap();
    assert_eq!(records(&c, gone).await, vec![Some((1, false)); 3]);
    assert_same_bytes(&c, &client, gone).await;

    // Only a head takes a purge from outside the chain; a forwarded one needs the cluster token
    // (`tests/users` in the cli crate covers user tokens).
    let e = client.call(&c.bulk(1), &update(201, 1, live, UpdateType::Purge, 0, b""), &[]).await.unwrap_err();
    assert_eq!(e.code, StatusCode::NotHead, "{e}");
    for (node, server) in c.servers.iter().enumerate() {
        assert!(scrape(server).await.contains("t3fs_storage_purged_tombstones_total 1"), "node {node}");
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_keeps_its_record_keeps_every_predecessors_too() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let (newer, unreachable) = (ChunkId::new(InodeId(8), 0), ChunkId::new(InodeId(8), 1));
    for chunk in [newer, unreachable] {
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"data"), b"data").await.unwrap();
        client.call(&c.bulk(0), &remove(chunk), &[]).await.unwrap();
    }

    // The tail holds a newer tombstone than the head's (version 5 > 2): it is above the head's bound,
    // so the tail keeps it, and so do the middle and the head.
    c.stop_tail().await;
    tamper_tail(&c, &[(newer, 5, None, false)]).await;
    c.start_tail().await;
    let (rsp, _) = client.call(&c.bulk(0), &purge(newer), &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 2, "the head keeps its tombstone");
    assert_eq!(records(&c, newer).await, vec![Some((2, true)), Some((2, true)), Some((5, true))]);

    // The tail is down while routing still lists it: the middle's forward fails, the purge fails and
    // nobody drops anything. Once it is back, the purge goes through.
    c.stop_tail().await;
    let e = client.call(&c.bulk(0), &purge(unreachable), &[]).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    c.start_tail().await;
    assert_eq!(records(&c, unreachable).await, vec![Some((2, true)); 3]);
    let (rsp, _) = client.call(&c.bulk(0), &purge(unreachable), &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0);
    assert_eq!(records(&c, unreachable).await, vec![None; 3]);
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_offline_during_the_purge_drops_its_tombstone_in_resync() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let (gone, live) = (ChunkId::new(InodeId(9), 0), ChunkId::new(InodeId(9), 1));
    for chunk in [gone, live] {
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"data"), b"data").await.unwrap();
    }
    client.call(&c.bulk(0), &remove(gone), &[]).await.unwrap();

    // The tail is OFFLINE (out of the chain at version 2): head and middle purge without it.
    take_tail_offline(&mut c).await;
    let mut p = update(101, 2, gone, UpdateType::Purge, 0, b"");
    let (rsp, _) = client.call(&c.bulk(0), &p, &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0);
    assert_eq!(records(&c, gone).await, vec![None; 2]);

    // Back and resynced: the tail drops the tombstone its predecessor no longer has.
    bring_tail_back_syncing(&mut c).await;
    let list = c.wait_tail_identical().await;
    assert_eq!(find(&list, gone), None);
    assert_eq!(find(&list, live).map(|m| (m.version, m.removed)), Some((1, false)));
    make_tail_serving(&c).await;
    // A purge of a chunk without records anywhere is a no-op at the new chain version too.
    p = update(101, 4, gone, UpdateType::Purge, 0, b"");
    let (rsp, _) = client.call(&c.bulk(0), &p, &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 0);
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
