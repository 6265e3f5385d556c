//! Two-phase CRAQ on the `common` harness: a forward that fails leaves the update pending on the hops
//! before the failure (normal reads there say "not committed", relaxed reads see it), and the next client
//! update completes it before building on it.
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{PublicTargetState, bulk_request};
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
