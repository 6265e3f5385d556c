//! The background scrub (`scrub_mib_per_sec`, `service/scrub.rs`): a chunk replica damaged on disk
//! is found without anyone reading it, counted in `t3fs_storage_scrub_damaged_total`, and repaired
//! from a good replica of its chain; a chunk damaged on every replica is reported and left alone.
//! (Damage on the replicas one after another, with the scrub running, heals from whichever replica
//! is still good at the time: the scrub keeps a chain's good copies in step.)
use std::time::Duration;

use t3fs_common::bulk::BulkClient;
use t3fs_common::metrics::sample;
use t3fs_common::{ChunkId, InodeId, StatusCode};

mod common;
use common::*;

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut r = t3fs_common::layout::SplitMix64::new(seed);
    (0..n.div_ceil(8)).flat_map(|_| r.next_u64().to_le_bytes()).take(n).collect()
}

/// Waits until `series` on `node` reaches `want` (panics after 20 s).
async fn wait_metric(c: &Cluster, node: usize, series: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape(&c.servers[node]).await;
        if sample(&body, series).unwrap_or(0.0) >= want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "node {node}: {series} never reached {want}\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrub_finds_and_repairs_a_damaged_replica() {
    let mut c = Cluster::start_with(|cfg| {
        cfg.scrub_mib_per_sec = 1024;
        cfg.scrub_pause_ms = 100;
    })
    .await;
    let client = BulkClient::default();

    // Damaged on the tail only: the tail's scrub repairs it from the head or the middle.
    let chunk = ChunkId::new(InodeId(41), 0);
    let d = pattern(200 << 10, 7);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, &d), &d).await.unwrap();
    assert!(common::corrupt::corrupt_on_disk(c.dirs[2].path(), &d[5000..5064]) >= 1, "chunk bytes not on disk");
    wait_metric(&c, 2, "t3fs_storage_scrub_damaged_total", 1.0).await;
    wait_metric(&c, 2, "t3fs_storage_repairs_total", 1.0).await;
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert!(back == d, "the tail reads the good data again");
    assert_same_bytes(&c, &client, chunk).await;
    assert_eq!(c.query(2, chunk).await.unwrap().version, 1, "repaired at the version it had");
    for node in [0, 1] {
        let body = scrape(&c.servers[node]).await;
        assert_eq!(sample(&body, "t3fs_storage_scrub_damaged_total"), Some(0.0), "node {node}: {body}");
        assert!(sample(&body, "t3fs_storage_scrubbed_bytes_total").unwrap_or(0.0) >= d.len() as f64, "{body}");
    }

    // Damaged on every replica (while the servers are down, so no scrub heals one from another
    // first): after the restart each scrub reports it; no replica is good, so nothing is rewritten.
    let lost = ChunkId::new(InodeId(42), 0);
    let e = pattern(100 << 10, 99);
    client.call(&c.bulk(0), &write(101, 1, lost, 0, &e), &e).await.unwrap();
    c.stop_servers().await;
    for dir in &c.dirs {
        assert!(common::corrupt::corrupt_on_disk(dir.path(), &e[3000..3064]) >= 1);
    }
    c.start_servers().await;
    for node in 0..3 {
        wait_metric(&c, node, "t3fs_storage_scrub_damaged_total", 1.0).await;
        let body = scrape(&c.servers[node]).await;
        assert_eq!(sample(&body, "t3fs_storage_repairs_total"), Some(0.0), "node {node}: {body}");
    }
    match client.call(&c.bulk(0), &read(101, lost, 0, CHUNK_SIZE), &[]).await {
        Err(err) => assert_eq!(err.code, StatusCode::ChecksumMismatch),
        Ok((rsp, _)) => panic!("a damaged chunk was served: {:?}", rsp.meta),
    }
    // The first chunk stayed healthy through the restart.
    let (_, back) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert!(back == d, "the repaired chunk reads back");
    c.stop_servers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_config_starts_and_pauses_the_scrub() {
    let mut c = Cluster::start_with(|cfg| {
        cfg.scrub_mib_per_sec = 0;
        cfg.scrub_pause_ms = 100;
    })
    .await;
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(43), 0);
    let d = pattern(64 << 10, 3);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, &d), &d).await.unwrap();
    assert!(common::corrupt::corrupt_on_disk(c.dirs[1].path(), &d[100..164]) >= 1);
    // Off in the file: nothing is scrubbed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = scrape(&c.servers[1]).await;
    assert_eq!(sample(&body, "t3fs_storage_scrub_damaged_total"), Some(0.0), "{body}");
    // mgmtd pushes `scrub_mib_per_sec = 1024`: the scrub starts, finds the damage and repairs it.
    let push = |version: u64, toml: &str| t3fs_common::proto::NodeConfig {
        node_type: t3fs_common::proto::NodeType::Storage as i32,
        version,
        toml: toml.into(),
    };
    assert!(c.servers[1].hot_config().offer(Some(&push(1, "scrub_mib_per_sec = 1024"))));
    wait_metric(&c, 1, "t3fs_storage_repairs_total", 1.0).await;
    let (_, back) = client.call(&c.bulk(1), &read(201, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert!(back == d);
    c.stop_servers().await;
}
