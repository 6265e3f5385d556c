//! `t3fs admin set-config` / `get-config` against an in-process cluster (mgmtd, meta, three
//! storage servers): a pushed storage config changes a hot item (the fence delay) on every running
//! storage server, which reports the new version within a few heartbeats; a meta config changes the
//! idempotency TTL; bad input exits 1 with one line and changes nothing.
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use t3fs_cli::local::inproc::LocalCluster;

const BIN: &str = env!("CARGO_BIN_EXE_t3fs");

async fn admin(data: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("T3FS_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

async fn ok(data: &std::path::Path, args: &[&str]) -> String {
    let out = admin(data, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

async fn json(data: &std::path::Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(data, &a).await).unwrap()
}

async fn fails(data: &std::path::Path, args: &[&str]) -> String {
    let out = admin(data, args).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("t3fs: ") && stderr.trim_end().lines().count() == 1, "{args:?}: {stderr:?}");
    stderr
}

/// Polls `get-config --json` until every node of the type reports `version` (20 s at most).
async fn wait_applied(data: &std::path::Path, node_type: &str, version: u64, nodes: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json(data, &["get-config", "--node-type", node_type]).await;
        let applied = v["nodes"].as_array().unwrap();
        if applied.len() == nodes && applied.iter().all(|n| n["config_version"] == version) {
            return v;
        }
        assert!(Instant::now() < deadline, "{node_type} nodes never reported version {version}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_config_reaches_running_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cluster = LocalCluster::start(&data).await.unwrap();
    let storage = cluster.plan.storage.len();
    let file_fence = Duration::from_millis(cluster.plan.storage[0].fence_after_ms);

    let v = json(&data, &["get-config", "--node-type", "storage"]).await;
    assert_eq!(v["version"], 0);
    assert!(ok(&data, &["get-config", "--node-type", "storage"]).await.starts_with("# no storage config set"));

    let file = tmp.path().join("storage.toml");
    // Shorter than the file's value: a longer one would be capped at half of mgmtd's heartbeat
    // timeout (the fencing rule), which the file's default already is. Still above the heartbeat
    // interval, as storage requires.
    let fence = file_fence - Duration::from_millis(900);
    assert!(fence.as_millis() as u64 > cluster.plan.storage[0].heartbeat_interval_ms);
    std::fs::write(&file, format!("# pushed\nfence_after_ms = {}\nlog = \"info\"\n", fence.as_millis())).unwrap();
    let f = file.to_str().unwrap();
    let v = json(&data, &["set-config", "--node-type", "storage", "--expected-version", "0", f]).await;
    assert_eq!(v["version"], 1);
    let v = wait_applied(&data, "storage", 1, storage).await;
    assert!(v["toml"].as_str().unwrap().contains("fence_after_ms"), "{v}");
    for i in 0..storage {
        let s = cluster.storage(i).unwrap();
        assert_eq!((s.hot_config().version(), s.fence().after()), (1, fence), "storage {i}");
    }
    let text = ok(&data, &["get-config", "--node-type", "storage"]).await;
    assert!(text.starts_with("# storage config version 1\n") && text.contains("# pushed\n"), "{text}");

    // Refused, changing nothing: an unknown item, a stale expected version, a missing file.
    std::fs::write(&file, "bogus = 1\n").unwrap();
    let e = fails(&data, &["set-config", "--node-type", "storage", f]).await;
    assert!(e.contains("bogus"), "{e}");
    std::fs::write(&file, "").unwrap();
    fails(&data, &["set-config", "--node-type", "storage", "--expected-version", "0", f]).await;
    fails(&data, &["set-config", "--node-type", "storage", "/nonexistent/x.toml"]).await;
    assert_eq!(json(&data, &["get-config", "--node-type", "storage"]).await["version"], 1);

    // An empty config reverts the hot items to each node's config file.
    assert_eq!(json(&data, &["set-config", "--node-type", "storage", f]).await["version"], 2);
    wait_applied(&data, "storage", 2, storage).await;
    for i in 0..storage {
        assert_eq!(cluster.storage(i).unwrap().fence().after(), file_fence, "storage {i}");
    }

    // Meta: the idempotency TTL.
    std::fs::write(&file, "idempotency_ttl_ms = 120000\n").unwrap();
    assert_eq!(json(&data, &["set-config", "--node-type", "meta", f]).await["version"], 1);
    wait_applied(&data, "meta", 1, 1).await;
    assert_eq!(cluster.meta().unwrap().store().idempotency_ttl(), Duration::from_secs(120));
    cluster.shutdown().await;
}
