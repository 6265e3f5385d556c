//! The Prometheus endpoint of in-process storage servers (see `common`): per-target op counters,
//! forwarding, checksum errors and the scrape-time gauges.
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::bulk_request;
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;
use t3fs_common::metrics::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_reads_updates_and_forwards() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(5), 0);
    let data = vec![7u8; 1000];

    client.call(&c.bulk(0), &write(101, 1, chunk, 0, &data), &data).await.unwrap();
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.len(), 1000);
    // A payload whose CRC does not match the request's.
    let mut bad = write(101, 1, chunk, 0, b"abc");
    if let Some(bulk_request::Op::Update(u)) = bad.op.as_mut() {
        u.payload_crc32c ^= 1;
    }
    let err = client.call(&c.bulk(0), &bad, b"abc").await.unwrap_err();
    assert_eq!(err.code, StatusCode::ChecksumMismatch);

    let head = scrape(&c.servers[0]).await;
    assert_eq!(sample(&head, "t3fs_storage_update_ops_total{target=\"101\"}"), Some(1.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_update_bytes_total{target=\"101\"}"), Some(1000.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_forwarded_updates_total"), Some(1.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_forward_failures_total"), Some(0.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_checksum_errors_total{target=\"101\"}"), Some(1.0), "{head}");
    assert_eq!(
        sample(&head, "t3fs_storage_op_errors_total{op=\"update\",code=\"ChecksumMismatch\"}"),
        Some(1.0),
        "{head}"
    );
    assert_eq!(sample(&head, "t3fs_storage_op_duration_seconds_count{op=\"update\"}"), Some(2.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_used_bytes{target=\"101\"}"), Some(1000.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_fenced"), Some(0.0), "{head}");
    assert_eq!(sample(&head, "t3fs_storage_target_failed{target=\"101\"}"), Some(0.0), "{head}");
    let free = sample(&head, "t3fs_storage_free_bytes{target=\"101\"}").expect("free bytes");
    let capacity = sample(&head, "t3fs_storage_capacity_bytes{target=\"101\"}").expect("capacity");
    assert!(capacity > 0.0 && free < capacity, "free {free} capacity {capacity}");

    let middle = scrape(&c.servers[1]).await;
    // The forwarded update counts on the replica too, and the replica forwards it on to the tail.
    assert_eq!(sample(&middle, "t3fs_storage_update_ops_total{target=\"201\"}"), Some(1.0), "{middle}");
    assert_eq!(sample(&middle, "t3fs_storage_forwarded_updates_total"), Some(1.0), "{middle}");

    let tail = scrape(&c.servers[2]).await;
    assert_eq!(sample(&tail, "t3fs_storage_read_ops_total{target=\"301\"}"), Some(1.0), "{tail}");
    assert_eq!(sample(&tail, "t3fs_storage_read_bytes_total{target=\"301\"}"), Some(1000.0), "{tail}");
    assert_eq!(sample(&tail, "t3fs_storage_forwarded_updates_total"), Some(0.0), "{tail}");
    assert_eq!(sample(&tail, "t3fs_storage_syncs_completed_total"), Some(0.0), "{tail}");

    // A request naming a target this node does not serve adds no per-target series.
    let _ = client.call(&c.bulk(2), &read(999, chunk, 0, 10), &[]).await.unwrap_err();
    let tail = scrape(&c.servers[2]).await;
    assert!(!tail.contains("target=\"999\""), "{tail}");
    c.stop_servers().await;
}
