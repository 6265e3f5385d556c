//! Bulk-plane operations on a real 3-replica chain (see `common`): exactly-once update channels,
//! batch reads, and detection + repair of a corrupted replica.
use bytes::Bytes;
use t3fs_common::bulk::BulkClient;
use t3fs_common::layout::SplitMix64;
use t3fs_common::metrics::sample;
use t3fs_common::proto::{self, BulkRequest, bulk_request};
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..n.div_ceil(8)).flat_map(|_| r.next_u64().to_le_bytes()).take(n).collect()
}

/// A client write on update channel (`client`, `channel`) at `seq`.
fn on_channel(mut req: BulkRequest, client: &str, channel: u32, seq: u64) -> BulkRequest {
    if let Some(bulk_request::Op::Update(u)) = req.op.as_mut() {
        u.client_id = Bytes::copy_from_slice(client.as_bytes());
        u.channel_id = channel;
        u.seq = seq;
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_update_applies_once_and_an_old_seq_is_refused() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(9), 0);
    let a = bytes(4096, 1);
    let first = on_channel(write(101, 1, chunk, 0, &a), "client-1", 3, 1);
    let (rsp, _) = client.call(&c.bulk(0), &first, &a).await.unwrap();
    assert!(!rsp.replayed);
    assert_eq!(rsp.meta.as_ref().unwrap().version, 1);
    // The response was "lost": the client resends the very same request. It is answered from the
    // channel's record, and no replica applies it again (the version would be 2).
    let (again, _) = client.call(&c.bulk(0), &first, &a).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.meta, rsp.meta);
    for node in 0..3 {
        assert_eq!(c.query(node, chunk).await.unwrap().version, 1, "node {node}");
    }
    // The next update on the channel applies; the old seq is then a stale duplicate.
    let b = bytes(4096, 2);
    let second = on_channel(write(101, 1, chunk, 4096, &b), "client-1", 3, 2);
    assert_eq!(client.call(&c.bulk(0), &second, &b).await.unwrap().0.meta.unwrap().version, 2);
    let err = client.call(&c.bulk(0), &first, &a).await.unwrap_err();
    assert_eq!(err.code, StatusCode::DuplicateUpdate, "{err}");
    // Same seq, different content: refused.
    let other = on_channel(write(101, 1, chunk, 0, &b), "client-1", 3, 2);
    assert_eq!(client.call(&c.bulk(0), &other, &b).await.unwrap_err().code, StatusCode::InvalidArgument);
    for node in 0..3 {
        assert_eq!(c.query(node, chunk).await.unwrap().version, 2, "node {node}");
    }
    // Another client's channel with the same id is independent.
    let third = on_channel(write(101, 1, chunk, 0, &b), "client-2", 3, 1);
    assert_eq!(client.call(&c.bulk(0), &third, &b).await.unwrap().0.meta.unwrap().version, 3);
    let head = scrape(&c.servers[0]).await;
    assert_eq!(sample(&head, "t3fs_storage_replayed_updates_total"), Some(1.0), "{head}");
    c.stop_servers().await;
}

fn batch(reads: Vec<proto::ReadChunk>) -> BulkRequest {
    BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: TOKEN.into(),
        op: Some(bulk_request::Op::BatchRead(proto::BatchReadChunks { reads })),
    }
}

fn read_op(req: BulkRequest) -> proto::ReadChunk {
    match req.op {
        Some(bulk_request::Op::Read(r)) => r,
        _ => unreachable!("a read request"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_reads_match_single_reads_byte_for_byte_with_per_item_errors() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let sizes = [1usize, 4096, 100_000, CHUNK_SIZE as usize];
    for (i, &n) in sizes.iter().enumerate() {
        let chunk = ChunkId::new(InodeId(20), i as u32);
        let d = bytes(n, i as u64 + 10);
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, &d), &d).await.unwrap();
    }
    let mut rng = SplitMix64::new(77);
    let mut reads = Vec::new();
    for _ in 0..200 {
        let i = (rng.next_u64() % (sizes.len() as u64 + 1)) as u32; // index 4: a missing chunk
        let off = (rng.next_u64() % (u64::from(CHUNK_SIZE) + 10)) as u32;
        let len = (rng.next_u64() % 300_000) as u32;
        let target = if rng.next_u64().is_multiple_of(20) { 999 } else { 201 }; // 999: not on this node
        reads.push(read_op(read(target, ChunkId::new(InodeId(20), i), off, len)));
    }
    // Bad input: a chunk id of the wrong size, and an offset + length that overflows.
    reads.push(proto::ReadChunk {
        target_id: 201,
        chunk_id: Bytes::from_static(b"short"),
        offset: 0,
        length: 5,
        relaxed: false,
    });
    reads.push(read_op(read(201, ChunkId::new(InodeId(20), 2), u32::MAX - 1, 10)));
    // Split into batches whose total length fits a frame.
    let mut at = 0;
    let mut checked = (0, 0);
    while at < reads.len() {
        let mut n = 0;
        let mut total = 0u64;
        while at + n < reads.len() && total + u64::from(reads[at + n].length) < 32 << 20 && n < 64 {
            total += u64::from(reads[at + n].length);
            n += 1;
        }
        let part = reads[at..at + n].to_vec();
        let (rsp, payload) = client.call(&c.bulk(1), &batch(part.clone()), &[]).await.unwrap();
        assert_eq!(rsp.results.len(), part.len());
        let mut pos = 0usize;
        for (r, res) in part.iter().zip(&rsp.results) {
            let single = BulkRequest {
                request_id: t3fs_common::new_request_id(),
                token: TOKEN.into(),
                op: Some(bulk_request::Op::Read(r.clone())),
            };
            match client.call(&c.bulk(1), &single, &[]).await {
                Ok((srsp, data)) => {
                    assert_eq!(res.code, 0, "{r:?}: {}", res.message);
                    let got = &payload[pos..pos + res.length as usize];
                    assert_eq!(got, &data[..], "{r:?}");
                    assert_eq!(res.crc32c, crc32c::crc32c(got));
                    assert_eq!(res.meta, srsp.meta);
                    pos += res.length as usize;
                    checked.0 += 1;
                }
                Err(e) => {
                    assert_eq!(StatusCode::from_u32(res.code), e.code, "{r:?}: {}", res.message);
                    assert_eq!(res.length, 0);
                    checked.1 += 1;
                }
            }
        }
        assert_eq!(pos, payload.len(), "payload holds exactly the successful reads");
        at += n;
    }
    assert!(checked.0 > 50 && checked.1 > 5, "too few of each kind: {checked:?}");
    // Over the per-batch limits: refused whole, clearly.
    let huge = vec![proto::ReadChunk { length: u32::MAX, ..Default::default() }; 2];
    assert_eq!(client.call(&c.bulk(1), &batch(huge), &[]).await.unwrap_err().code, StatusCode::InvalidArgument);
    let many = vec![proto::ReadChunk::default(); t3fs_common::bulk::MAX_BATCH_READS + 1];
    assert_eq!(client.call(&c.bulk(1), &batch(many), &[]).await.unwrap_err().code, StatusCode::InvalidArgument);
    c.stop_servers().await;
}

fn repair(target: u64, chunk: ChunkId, version: u64, data: &[u8]) -> BulkRequest {
    let mut r = update(target, 1, chunk, proto::UpdateType::Replace, 0, data);
    if let Some(bulk_request::Op::Update(u)) = r.op.as_mut() {
        u.update_version = version;
        u.repair = true;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_replica_is_detected_counted_and_repaired() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(31), 0);
    let d = bytes(256 << 10, 5);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, &d), &d).await.unwrap();
    assert!(common::corrupt::corrupt_on_disk(c.dirs[2].path(), &d[1000..1064]) >= 1, "chunk bytes not found on disk");
    let err = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap_err();
    assert_eq!(err.code, StatusCode::ChecksumMismatch, "{err}");
    let tail = scrape(&c.servers[2]).await;
    assert_eq!(sample(&tail, "t3fs_storage_checksum_errors_total{target=\"301\"}"), Some(1.0), "{tail}");
    // Healthy replicas refuse a repair; so does the damaged one for content it never recorded.
    let err = client.call(&c.bulk(0), &repair(101, chunk, 1, &d), &d).await.unwrap_err();
    assert_eq!(err.code, StatusCode::InvalidArgument, "{err}");
    let mut other = d.clone();
    other[0] ^= 1;
    let err = client.call(&c.bulk(2), &repair(301, chunk, 1, &other), &other).await.unwrap_err();
    assert_eq!(err.code, StatusCode::InvalidArgument, "{err}");
    let err = client.call(&c.bulk(2), &repair(301, chunk, 2, &d), &d).await.unwrap_err();
    assert_eq!(err.code, StatusCode::InvalidArgument, "{err}");
    // The good copy from the head repairs the tail at the same version.
    let (_, good) = client.call(&c.bulk(0), &read(101, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    let (rsp, _) = client.call(&c.bulk(2), &repair(301, chunk, 1, &good), &good).await.unwrap();
    assert_eq!(rsp.meta.unwrap().version, 1);
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back, Bytes::from(d.clone()));
    assert_same_bytes(&c, &client, chunk).await;
    assert_eq!(c.query(2, chunk).await.unwrap().version, 1);
    let tail = scrape(&c.servers[2]).await;
    assert_eq!(sample(&tail, "t3fs_storage_repairs_total"), Some(1.0), "{tail}");
    // Now healthy: a second repair is refused.
    let err = client.call(&c.bulk(2), &repair(301, chunk, 1, &good), &good).await.unwrap_err();
    assert_eq!(err.code, StatusCode::InvalidArgument, "{err}");
    c.stop_servers().await;
}
