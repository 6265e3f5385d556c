//! Bad bulk requests against a running 3-replica chain (see `common`), in one table: each is refused
//! with its own status code and a non-empty message, and afterwards every replica's chunk metadata
//! (version, length, CRC32C, chain version), data and chunk listing (tombstones included) are exactly
//! as before. Covers the issue-4 acceptance item "bad requests get a clear status and change nothing";
//! batch-read limits are in `bulk_ops.rs`, sync-update refusals in `resync.rs`, stale update-channel
//! sequences in `bulk_ops.rs`.
use bytes::Bytes;
use t3fs_common::bulk::BulkClient;
use t3fs_common::layout::MAX_CHUNK_SIZE;
use t3fs_common::proto::{self, BulkRequest, UpdateType, bulk_request};
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;

/// What one replica holds: its listing (tombstones included), and the live chunk's metadata and bytes.
#[derive(Debug, PartialEq)]
struct Replica {
    listing: Vec<proto::ChunkMeta>,
    meta: Option<proto::ChunkMeta>,
    data: Bytes,
}

async fn snapshot(c: &Cluster, client: &BulkClient, chunk: ChunkId) -> Vec<Replica> {
    let mut out = Vec::new();
    for node in 0..3 {
        let target = node as u64 * 100 + 101;
        let (_, data) = client.call(&c.bulk(node), &read(target, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
        out.push(Replica { listing: c.listing(node).await, meta: c.query(node, chunk).await, data });
    }
    out
}

/// Edits the update of a request built by `common::update`.
fn edit(mut req: BulkRequest, f: impl FnOnce(&mut proto::UpdateChunk)) -> BulkRequest {
    match req.op.as_mut() {
        Some(bulk_request::Op::Update(u)) => f(u),
        _ => unreachable!("an update request"),
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_their_status_and_change_nothing() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(41), 0);
    let unknown = ChunkId::new(InodeId(41), 1);
    // Two versions of the chunk on every replica.
    let data = vec![0x5Au8; 70_000];
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, &data), &data).await.unwrap();
    client.call(&c.bulk(0), &write(101, 1, chunk, 69_000, b"second"), b"second").await.unwrap();
    let before = snapshot(&c, &client, chunk).await;
    assert_eq!(before[0].meta.as_ref().map(|m| m.version), Some(2));
    assert!(before.iter().all(|r| r.meta == before[0].meta && r.data == before[0].data), "{before:?}");

    let x = &b"x"[..];
    let big = vec![1u8; CHUNK_SIZE as usize + 1];
    let w = |offset, data: &[u8]| write(101, 1, chunk, offset, data);
    let upd = |ty, offset| update(101, 1, chunk, ty, offset, b"");
    // (what, node, request, payload, expected code)
    let cases: Vec<(&str, usize, BulkRequest, &[u8], StatusCode)> = vec![
        // Routing: stale chain version (every update type), unknown chain, unknown target, a target of
        // another node, a client write to a replica that is not the head.
        ("write at a stale chain version", 0, write(101, 2, chunk, 0, x), x, StatusCode::ChainVersionMismatch),
        (
            "truncate at a stale chain version",
            0,
            update(101, 0, chunk, UpdateType::Truncate, 5, b""),
            b"",
            StatusCode::ChainVersionMismatch,
        ),
        (
            "remove at a stale chain version",
            0,
            update(101, 2, chunk, UpdateType::Remove, 0, b""),
            b"",
            StatusCode::ChainVersionMismatch,
        ),
        ("write to an unknown chain", 0, edit(w(0, x), |u| u.chain_id = 9), x, StatusCode::RoutingNotReady),
        ("write to an unknown target", 0, edit(w(0, x), |u| u.target_id = 999), x, StatusCode::TargetNotServing),
        ("read of an unknown target", 0, read(999, chunk, 0, 1), b"", StatusCode::TargetNotServing),
        ("write to another node's target", 0, write(201, 1, chunk, 0, x), x, StatusCode::TargetNotServing),
        ("read of another node's target", 0, read(201, chunk, 0, 1), b"", StatusCode::TargetNotServing),
        ("client write to the middle", 1, write(201, 1, chunk, 0, x), x, StatusCode::NotHead),
        ("client write to the tail", 2, write(301, 1, chunk, 0, x), x, StatusCode::NotHead),
        // Unknown chunk: reads on every replica.
        ("read of an unknown chunk (head)", 0, read(101, unknown, 0, 1), b"", StatusCode::ChunkNotFound),
        ("read of an unknown chunk (middle)", 1, read(201, unknown, 0, 1), b"", StatusCode::ChunkNotFound),
        ("read of an unknown chunk (tail)", 2, read(301, unknown, 0, 1), b"", StatusCode::ChunkNotFound),
        // Ranges: offset + length overflowing u32, or ending beyond the chunk size.
        ("read range overflowing u32", 0, read(101, chunk, u32::MAX - 1, 10), b"", StatusCode::InvalidArgument),
        ("read range overflowing u32 (tail)", 2, read(301, chunk, 1, u32::MAX), b"", StatusCode::InvalidArgument),
        ("write range overflowing u32", 0, w(u32::MAX - 1, b"0123456789"), b"0123456789", StatusCode::ChunkTooLarge),
        ("write ending past the chunk size", 0, w(CHUNK_SIZE - 2, b"abc"), b"abc", StatusCode::ChunkTooLarge),
        ("write longer than the chunk size", 0, w(0, &big), &big, StatusCode::ChunkTooLarge),
        ("truncate past the chunk size", 0, upd(UpdateType::Truncate, CHUNK_SIZE + 1), b"", StatusCode::ChunkTooLarge),
        ("chunk size 0", 0, edit(w(0, x), |u| u.chunk_size = 0), x, StatusCode::InvalidArgument),
        (
            "chunk size over the maximum",
            0,
            edit(w(0, x), |u| u.chunk_size = MAX_CHUNK_SIZE * 2),
            x,
            StatusCode::InvalidArgument,
        ),
        // Payload and op checks.
        ("payload CRC mismatch", 0, w(0, x), b"y", StatusCode::ChecksumMismatch),
        ("REPLACE from a client", 0, upd(UpdateType::Replace, 0), b"", StatusCode::InvalidArgument),
        ("unknown update type", 0, edit(w(0, x), |u| u.update_type = 99), x, StatusCode::InvalidArgument),
        ("sync WRITE", 0, edit(w(0, x), |u| (u.sync, u.update_version) = (true, 9)), x, StatusCode::InvalidArgument),
        (
            "malformed chunk id",
            0,
            edit(w(0, x), |u| u.chunk_id = Bytes::from_static(b"short")),
            x,
            StatusCode::InvalidArgument,
        ),
        ("missing op", 0, BulkRequest { op: None, ..w(0, x) }, b"", StatusCode::InvalidArgument),
        // Authentication: a wrong or an empty token, on every kind of request.
        (
            "write with a wrong token",
            0,
            BulkRequest { token: "wrong".into(), ..w(0, x) },
            x,
            StatusCode::Unauthenticated,
        ),
        ("write with no token", 0, BulkRequest { token: String::new(), ..w(0, x) }, x, StatusCode::Unauthenticated),
        (
            "remove with no token",
            0,
            BulkRequest { token: String::new(), ..upd(UpdateType::Remove, 0) },
            b"",
            StatusCode::Unauthenticated,
        ),
        (
            "read with a wrong token",
            2,
            BulkRequest { token: "wrong".into(), ..read(301, chunk, 0, 1) },
            b"",
            StatusCode::Unauthenticated,
        ),
        (
            "forwarded update with no token",
            1,
            BulkRequest { token: String::new(), ..edit(write(201, 1, chunk, 0, x), |u| u.update_version = 3) },
            x,
            StatusCode::Unauthenticated,
        ),
    ];
    for (what, node, req, payload, code) in cases {
        let err = match client.call(&c.bulk(node), &req, payload).await {
            Ok((rsp, data)) => panic!("{what}: accepted ({rsp:?}, {} bytes)", data.len()),
            Err(e) => e,
        };
        assert_eq!(err.code, code, "{what}: {err}");
        assert!(!err.message.trim().is_empty(), "{what}: empty message ({err:?})");
        assert_eq!(snapshot(&c, &client, chunk).await, before, "{what} changed a replica");
    }
    for node in 0..3 {
        assert_eq!(c.query(node, unknown).await, None, "node {node}");
    }

    // The storage admin service refuses a request without a header, too.
    let mut admin = c.admin(1).await;
    let bad = admin
        .list_chunks(proto::ListChunksReq { header: None, target_id: 201, ..Default::default() })
        .await
        .unwrap_err();
    let bad = t3fs_common::Error::from_tonic(&bad);
    assert_eq!(bad.code, StatusCode::Unauthenticated, "{bad}");
    assert!(!bad.message.is_empty());
    // A page start that is not a chunk id.
    let bad = admin
        .list_chunks(proto::ListChunksReq {
            header: Some(header()),
            target_id: 201,
            start_after: vec![1, 2, 3].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let bad = t3fs_common::Error::from_tonic(&bad);
    assert_eq!(bad.code, StatusCode::InvalidArgument, "{bad}");

    // The chain still works: the next write is version 3 everywhere.
    let (rsp, _) = client.call(&c.bulk(0), &w(0, b"third"), b"third").await.unwrap();
    assert_eq!(rsp.meta.map(|m| m.version), Some(3));
    for node in 0..3 {
        assert_eq!(c.query(node, chunk).await.map(|m| m.version), Some(3), "node {node}");
    }
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
