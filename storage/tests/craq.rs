//! Two-phase CRAQ on the `common` harness: a forward that fails leaves the update pending on the hops
//! before the failure (normal reads there say "not committed", relaxed reads see it), and the next client
//! update completes it before building on it.
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, PublicTargetState, bulk_request};
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;

fn relaxed(target: u64, chunk: ChunkId) -> t3fs_common::proto::BulkRequest {
    let mut r = read(target, chunk, 0, CHUNK_SIZE);
    if let Some(bulk_request::Op::Read(rd)) = r.op.as_mut() {
        rd.relaxed = true;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_forward_leaves_pending_versions_that_the_next_update_completes() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(5), 0);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"one"), b"one").await.unwrap();

    // The tail goes away while routing still lists it: the middle's forward fails, so the write fails
    // and stays pending on the head and the middle.
    c.stop_tail().await;
    let e = client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"TWO"), b"TWO").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    for (node, target) in [(0, 101), (1, 201)] {
        let e = client.call(&c.bulk(node), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap_err();
        assert_eq!(e.code, StatusCode::ChunkNotCommitted, "node {node}");
        let (rsp, data) = client.call(&c.bulk(node), &relaxed(target, chunk), &[]).await.unwrap();
        assert_eq!((&data[..], rsp.meta.unwrap().version), (&b"TWO"[..], 2), "node {node}");
        // Metadata queries show the committed version; listings the pending one.
        assert_eq!(c.query(node, chunk).await.unwrap().version, 1);
        assert_eq!(find(&c.listing(node).await, chunk).unwrap().pending_version, 2);
    }

    // mgmtd takes the tail out of the chain; the client retries at the new chain version. The head first
    // completes version 2 (forwarded again as a replacement), then applies the retried write as 3.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 2;
        ch.targets[2].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 2, chunk, 1, b"hree"), b"hree").await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 3);
    for (node, target) in [(0, 101), (1, 201)] {
        let (rsp, data) = client.call(&c.bulk(node), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
        assert_eq!((&data[..], rsp.meta.unwrap().version), (&b"Three"[..], 3), "node {node}");
        assert_eq!(find(&c.listing(node).await, chunk).unwrap().pending_version, 0);
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_version_on_the_middle_is_replaced_by_the_predecessor() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(6), 0);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"base"), b"base").await.unwrap();
    // Version 2 reaches the middle (pending there) but not the tail.
    c.stop_tail().await;
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"lost"), b"lost").await.unwrap_err();
    // The tail is back under the same chain version: the next client write completes version 2 on every
    // replica first.
    c.start_tail().await;
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 1, chunk, 4, b"!"), b"!").await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 3);
    for (node, target) in [(0, 101), (1, 201), (2, 301)] {
        let (rsp, data) = client.call(&c.bulk(node), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
        assert_eq!((&data[..], rsp.meta.unwrap().version), (&b"lost!"[..], 3), "node {node}");
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

/// A client write on an update channel (client id, channel, seq).
fn channel_write(target: u64, chain_version: u32, chunk: ChunkId, seq: u64, data: &[u8]) -> proto::BulkRequest {
    let mut r = write(target, chain_version, chunk, 0, data);
    if let Some(bulk_request::Op::Update(u)) = r.op.as_mut() {
        u.client_id = bytes::Bytes::from_static(b"client-a");
        u.channel_id = 3;
        u.seq = seq;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_the_head_failed_is_answered_by_the_new_head_not_applied_again() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(6), 0);
    // Committed on every replica; say the answer never reached the client.
    let (rsp, _) = client.call(&c.bulk(0), &channel_write(101, 1, chunk, 1, b"once"), b"once").await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 1);
    // The head fails; mgmtd makes the middle the head. The client's retry goes there.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 2;
        ch.targets[0].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    let (rsp, _) = client.call(&c.bulk(1), &channel_write(201, 2, chunk, 1, b"once"), b"once").await.unwrap();
    assert!(rsp.replayed, "answered from the record");
    assert_eq!(rsp.meta.unwrap().version, 1, "not applied a second time");
    for node in [1, 2] {
        assert_eq!(find(&c.listing(node).await, chunk).unwrap().version, 1, "node {node}");
    }
    // The channel goes on from there.
    let (rsp, _) = client.call(&c.bulk(1), &channel_write(201, 2, chunk, 2, b"twice"), b"twice").await.unwrap();
    assert_eq!((rsp.replayed, rsp.meta.unwrap().version), (false, 2));
    let e = client.call(&c.bulk(1), &channel_write(201, 2, chunk, 1, b"once"), b"once").await.unwrap_err();
    assert_eq!(e.code, StatusCode::DuplicateUpdate);
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
