//! Chain replication through three in-process storage servers and a fake mgmtd (see `common`): writes,
//! restarts, offline targets, fencing (refused requests: `bad_requests.rs`).
use std::time::Duration;

use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, PublicTargetState, bulk_request};
use t3fs_common::{ChunkId, InodeId, StatusCode, TargetId};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_head_to_tail() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(77), 3);
    let data = vec![0xABu8; 100_000];

    // A client write through the head reaches all three replicas before it is acknowledged.
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 1, chunk, 0, &data), &data).await.unwrap();
    let meta = rsp.meta.unwrap();
    assert_eq!((meta.version, meta.length, meta.crc32c), (1, 100_000, crc32c::crc32c(&data)));
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n}");
    }

    // An overwrite that extends: version 2 everywhere, same CRC.
    let (rsp, _) =
        client.call(&c.bulk(0), &write(101, 1, chunk, 99_990, b"0123456789abcdef"), b"0123456789abcdef").await.unwrap();
    let meta = rsp.meta.unwrap();
    assert_eq!((meta.version, meta.length), (2, 100_006));
    let mut expected = data.clone();
    expected.truncate(99_990);
    expected.extend_from_slice(b"0123456789abcdef");
    assert_eq!(meta.crc32c, crc32c::crc32c(&expected));
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n}");
    }

    // Read back from the tail (and a range from the middle).
    let (rsp, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), &expected[..]);
    assert_eq!(rsp.payload_crc32c, crc32c::crc32c(&expected));
    assert_eq!(rsp.meta.unwrap().version, 2);
    let (_, part) = client.call(&c.bulk(1), &read(201, chunk, 99_995, 100), &[]).await.unwrap();
    assert_eq!(part.as_ref(), b"56789abcdef");

    // Refused requests (every kind, each changing nothing) are in tests/bad_requests.rs.
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    let mut admin = c.admin(1).await;
    let list = admin
        .list_chunks(proto::ListChunksReq {
            header: Some(header()),
            target_id: 201,
            include_removed: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.chunks, vec![meta.clone()]);
    assert!(list.next_start_after.is_empty(), "one page holds the whole listing");

    // Heartbeats report every target as up to date, with its used bytes, chain version and disk space.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let s = c.mgmtd.0.lock().unwrap();
        for node in 1..=3u32 {
            let hb = s.heartbeats.iter().rev().find(|h| h.node_id == node).expect("heartbeat");
            assert_eq!(hb.targets.len(), 1);
            let t = &hb.targets[0];
            assert_eq!(t.target_id, u64::from(node) * 100 + 1);
            assert_eq!(t.local_state, proto::LocalTargetState::Uptodate as i32);
            assert_eq!((t.used_bytes, t.chain_version), (100_006, 1));
            let (free, capacity) = (t.free_bytes.expect("free bytes"), t.capacity_bytes.expect("capacity"));
            assert!(capacity > 0 && free <= capacity, "free {free} capacity {capacity}");
        }
    }

    // A restart in the same process reopens the same directories with the data intact.
    c.stop_servers().await;
    c.start_servers().await;
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await.as_ref(), Some(&meta), "replica {n} after restart");
    }
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), &expected[..]);

    // Remove replicates too.
    let rm = update(101, 1, chunk, proto::UpdateType::Remove, 0, b"");
    let (rsp, _) = client.call(&c.bulk(0), &rm, &[]).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 3);
    for n in 0..3 {
        assert_eq!(c.query(n, chunk).await, None, "replica {n}");
        let target = n as u64 * 100 + 101;
        assert_eq!(err(client.call(&c.bulk(n), &read(target, chunk, 0, 1), &[]).await), StatusCode::ChunkNotFound);
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_keep_replicas_identical() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(5), 0);
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let client = client.clone();
        let head = c.bulk(0);
        tasks.push(tokio::spawn(async move {
            // Overlapping writes: the final content depends on the order the head applied them.
            let data = vec![i as u8 + 1; 3000];
            client.call(&head, &write(101, 1, chunk, i * 1000, &data), &data).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metas: Vec<_> = query_all(&c, chunk).await;
    assert_eq!(metas[0].version, 24);
    assert!(metas.iter().all(|m| m == &metas[0]), "{metas:?}");
    let mut contents = Vec::new();
    for n in 0..3 {
        let target = n as u64 * 100 + 101;
        contents.push(client.call(&c.bulk(n), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap().1);
    }
    assert_eq!(contents[0].len(), 26_000);
    assert!(contents.iter().all(|d| d == &contents[0]));
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

async fn query_all(c: &Cluster, chunk: ChunkId) -> Vec<proto::ChunkMeta> {
    let mut out = Vec::new();
    for n in 0..3 {
        out.push(c.query(n, chunk).await.expect("chunk on every replica"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_tail_is_skipped_and_refuses_writes() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(9), 1);
    // mgmtd moves the tail offline and bumps the chain version.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 2;
        ch.targets[2].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    assert_eq!(
        err(client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"old"), b"old").await),
        StatusCode::ChainVersionMismatch
    );
    client.call(&c.bulk(0), &write(101, 2, chunk, 0, b"new"), b"new").await.unwrap();
    assert_eq!(c.query(0, chunk).await.unwrap().version, 1);
    assert_eq!(c.query(1, chunk).await.unwrap().version, 1);
    assert_eq!(c.query(2, chunk).await, None);
    // The offline target refuses forwarded updates and reads.
    let mut fwd = write(301, 2, chunk, 0, b"new");
    if let Some(bulk_request::Op::Update(u)) = fwd.op.as_mut() {
        u.update_version = 1;
    }
    assert_eq!(err(client.call(&c.bulk(2), &fwd, b"new").await), StatusCode::TargetNotServing);
    assert_eq!(err(client.call(&c.bulk(2), &read(301, chunk, 0, 3), &[]).await), StatusCode::TargetNotServing);
    // With the head offline, the middle becomes the head.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 3;
        ch.targets[0].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    assert_eq!(err(client.call(&c.bulk(0), &write(101, 3, chunk, 0, b"x"), b"x").await), StatusCode::TargetNotServing);
    let (rsp, _) = client.call(&c.bulk(1), &write(201, 3, chunk, 3, b"er"), b"er").await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 2);
    let (_, back) = client.call(&c.bulk(1), &read(201, chunk, 0, 100), &[]).await.unwrap();
    assert_eq!(back.as_ref(), b"newer");
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test]
async fn start_fails_without_mgmtd_and_releases_the_target() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, &addr, dir.path());
    cfg.register_timeout_ms = 300;
    let t0 = std::time::Instant::now();
    assert!(t3fs_storage::start(cfg).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The target was closed again: it can be opened right away.
    t3fs_storage::ChunkStore::open(TargetId(101), dir.path()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_without_mgmtd_fences_itself() {
    let (mgmtd, mgmtd_addr, mgmtd_cancel) = start_fake_mgmtd().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, &mgmtd_addr, dir.path());
    cfg.fence_after_ms = 400;
    let server = t3fs_storage::start(cfg).await.unwrap();
    server.routing().wait_for(Duration::from_secs(10), |r| r.version() >= mgmtd.version()).await.unwrap();
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(13), 0);
    let bulk = server.bulk_addr().to_string();
    // Serving (single node: targets 201 and 301 are unknown, so it is the tail of its own view).
    mgmtd.edit_chain(|ch| ch.targets.truncate(1));
    server.routing().wait_for(Duration::from_secs(10), |r| r.version() >= mgmtd.version()).await.unwrap();
    client.call(&bulk, &write(101, 1, chunk, 0, b"x"), b"x").await.unwrap();
    client.call(&bulk, &read(101, chunk, 0, 1), &[]).await.unwrap();
    // mgmtd goes away: after fence_after_ms every read and update is refused.
    mgmtd_cancel.cancel();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    assert_eq!(err(client.call(&bulk, &read(101, chunk, 0, 1), &[]).await), StatusCode::TargetNotServing);
    assert_eq!(err(client.call(&bulk, &write(101, 1, chunk, 0, b"y"), b"y").await), StatusCode::TargetNotServing);
    server.shutdown().await;
}
