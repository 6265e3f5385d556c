//! `t3fs admin set-node-tags`, `t3fs admin offline-target` and `t3fs bench`, run as the real
//! binary against an in-process cluster (three storage servers, 3-replica chains): human output
//! and `--json` for each, the state they leave (list-nodes tags, list-targets/list-chains states),
//! and bad input (one line on stderr, exit 1; usage errors exit 2).
use std::time::{Duration, Instant};

use serde_json::Value;
use t3fs_cli::local::inproc::LocalCluster;

mod admin_env;
use admin_env::{BIN, Env, assert_fails as fails, assert_ok as ok};

/// Node `id`'s entry in a `list-nodes --json` document.
fn node_of(v: &Value, id: &str) -> Value {
    let nodes = v["nodes"].as_array().unwrap();
    nodes.iter().find(|n| n["node_id"].as_u64().map(|i| i.to_string()).as_deref() == Some(id)).unwrap().clone()
}

async fn chain_of(env: &Env, id: u64) -> Value {
    let v = env.json(&["list-chains"]).await;
    v["chains"].as_array().unwrap().iter().find(|c| c["chain_id"] == id).unwrap().clone()
}

fn states(chain: &Value) -> Vec<(u64, String)> {
    chain["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["target_id"].as_u64().unwrap(), t["public_state"].as_str().unwrap().to_string()))
        .collect()
}

async fn node_tags(env: &Env) {
    let nodes = env.json(&["list-nodes"]).await;
    let storage = nodes["nodes"].as_array().unwrap().iter().find(|n| n["type"] == "STORAGE").unwrap()["node_id"]
        .as_u64()
        .unwrap()
        .to_string();
    assert_eq!(nodes["nodes"][0]["tags"], serde_json::json!({}), "{nodes}");

    let s = env.ok(&["set-node-tags", &storage, "zone=a", "ssd"]).await;
    assert!(s.contains("TAGS") && s.contains("ssd,zone=a"), "{s}");
    let v = env.json(&["set-node-tags", &storage, "--add", "rack=r7", "zone=b"]).await;
    assert_eq!(v["tags"], serde_json::json!({"rack": "r7", "ssd": "", "zone": "b"}), "{v}");
    let v = env.json(&["set-node-tags", &storage, "--remove", "ssd"]).await;
    assert_eq!(v["tags"], serde_json::json!({"rack": "r7", "zone": "b"}), "{v}");
    // list-nodes shows them, both ways.
    let s = env.ok(&["list-nodes"]).await;
    assert!(s.contains("rack=r7,zone=b"), "{s}");
    let v = env.json(&["list-nodes"]).await;
    let n = node_of(&v, &storage);
    assert_eq!(n["tags"], serde_json::json!({"rack": "r7", "zone": "b"}), "{n}");

    // Bad input changes nothing.
    let e = env.fails(&["set-node-tags", "999999", "a=b"]).await;
    assert!(e.contains("not registered"), "{e}");
    let e = env.fails(&["set-node-tags", &storage, "bad key=1"]).await;
    assert!(e.contains("invalid tag key"), "{e}");
    let e = env.fails(&["set-node-tags", &storage, "=1"]).await;
    assert!(e.contains("KEY=VALUE"), "{e}");
    let e = env.fails(&["set-node-tags", &storage, "a=1", "a=2"]).await;
    assert!(e.contains("twice"), "{e}");
    assert_eq!(env.run(&["set-node-tags", &storage, "--add", "--remove", "a"]).await.status.code(), Some(2));
    let v = env.json(&["list-nodes"]).await;
    let n = node_of(&v, &storage);
    assert_eq!(n["tags"], serde_json::json!({"rack": "r7", "zone": "b"}), "{n}");
    // Replace with nothing: cleared.
    let v = env.json(&["set-node-tags", &storage]).await;
    assert_eq!(v["tags"], serde_json::json!({}), "{v}");
}

async fn offline_target(env: &Env) {
    let before = chain_of(env, 100_001).await;
    let version = before["chain_version"].as_u64().unwrap();
    let (head, _) = states(&before)[0].clone();
    let target = head.to_string();
    // mgmtd refuses chain changes while bootstrapping: retry until it is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v: Value = loop {
        let args = ["offline-target", "--target", &target, "--json"];
        let out = env.run(&args).await;
        if out.status.success() || Instant::now() > deadline {
            break serde_json::from_str(&ok(&args, &out)).unwrap();
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("bootstrapping"), "{out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["admin_offline"], true, "{v}");
    assert_eq!(v["public_state"], "OFFLINE", "{v}");
    assert_eq!(v["chain"]["chain_version"].as_u64(), Some(version + 1), "{v}");
    let after = states(&v["chain"]);
    assert_eq!(after.last().unwrap(), &(head, "OFFLINE".to_string()), "offline target at the tail: {v}");
    assert_eq!(after.iter().filter(|(_, s)| s == "SERVING").count(), 2, "{v}");
    // It stays offline although its node heartbeats (give the checker a few rounds).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = env.json(&["list-targets"]).await["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_id"] == head)
        .unwrap()
        .clone();
    assert_eq!((t["public_state"].as_str(), t["admin_offline"].as_bool()), (Some("OFFLINE"), Some(true)), "{t}");
    let s = env.ok(&["list-targets"]).await;
    assert!(s.contains("(admin offline)"), "{s}");
    // Again: accepted, nothing changes (human output).
    let s = env.ok(&["offline-target", "--target", &target]).await;
    assert!(s.contains("ADMIN") && s.contains("offline") && s.contains(&format!("{target}(OFFLINE)")), "{s}");
    assert_eq!(chain_of(env, 100_001).await["chain_version"].as_u64(), Some(version + 1));

    // Refusals: unknown target, the chain's last SERVING target; usage errors exit 2.
    let e = env.fails(&["offline-target", "--target", "999999"]).await;
    assert!(e.contains("does not exist"), "{e}");
    let serving: Vec<u64> = after.iter().filter(|(_, s)| s == "SERVING").map(|(id, _)| *id).collect();
    env.json(&["offline-target", "--target", &serving[0].to_string()]).await;
    let e = env.fails(&["offline-target", "--target", &serving[1].to_string()]).await;
    assert!(e.contains("only SERVING"), "{e}");
    assert_eq!(env.run(&["offline-target"]).await.status.code(), Some(2));
    assert_eq!(env.run(&["offline-target", "--target", "x"]).await.status.code(), Some(2));

    // Online again: both resync, then serve.
    for id in [head, serving[0]] {
        let v = env.json(&["offline-target", "--target", &id.to_string(), "--online"]).await;
        assert_eq!(v["admin_offline"], false, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = chain_of(env, 100_001).await;
        if states(&c).iter().all(|(_, s)| s == "SERVING") {
            break;
        }
        assert!(Instant::now() < deadline, "targets did not come back: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bench(env: &Env) {
    let args = ["--files", "6", "--size", "300K", "--block", "64K", "--concurrency", "3", "--verify"];
    let s = ok(&args, &env.run_sub(&["bench"], &args).await);
    assert!(s.contains("t3fs bench: 6 files x 307200 bytes, 65536-byte blocks, 3 in flight"), "{s}");
    assert!(s.contains("MiB/s") && s.contains("IOPS") && s.contains("verified"), "{s}");
    let row = |name: &str| -> Vec<String> {
        s.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().map(String::from).collect()
    };
    assert_eq!(row("write")[1], (6 * 307_200).to_string(), "{s}");
    assert!(row("read")[3].parse::<f64>().unwrap() > 0.0, "{s}");

    let mut a = args.to_vec();
    a.extend(["--json", "--keep", "--dir", "/benchdir"]);
    let out = env.run_sub(&["bench"], &a).await;
    let v: Value = serde_json::from_str(&ok(&a, &out)).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["file_size"].as_u64(), v["block_size"].as_u64()),
        (Some(6), Some(307_200), Some(65_536))
    );
    assert_eq!(v["verified"], true);
    for phase in ["write", "read"] {
        let p = &v[phase];
        assert_eq!(p["bytes"].as_u64(), Some(6 * 307_200), "{v}");
        assert_eq!(p["ops"].as_u64(), Some(6 * 5), "5 blocks per file (4 full, 1 tail): {v}");
        assert!(p["mib_per_s"].as_f64().unwrap() > 0.0 && p["iops"].as_f64().unwrap() > 0.0, "{v}");
    }
    // --keep left the files, with their full length; the default run removed its directory.
    let dir = v["dir"].as_str().unwrap();
    let ls = env.json(&["ls", dir]).await;
    assert_eq!(ls["entries"].as_array().map(Vec::len), Some(6), "{ls}");
    let st = env.json(&["stat", &format!("{dir}/f000005")]).await;
    assert_eq!(st["length"].as_u64(), Some(307_200), "{st}");
    let root = env.json(&["ls", "/t3fs-bench"]).await;
    assert_eq!(root["entries"].as_array().map(Vec::len), Some(0), "{root}");

    // Bad input: exit 1, one line, nothing created.
    for bad in [
        vec!["--files", "0"],
        vec!["--size", "0"],
        vec!["--size", "12Q"],
        vec!["--block", "65M"],
        vec!["--concurrency", "0"],
        vec!["--dir", "relative"],
    ] {
        let e = fails(&bad, &env.run_sub(&["bench"], &bad).await);
        assert!(e.contains("bad") || e.contains("absolute"), "{bad:?}: {e}");
    }
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "--files", "1"])
        .env_remove("T3FS_CONFIG")
        .output()
        .await
        .unwrap();
    let e = fails(&["bench (no cluster)"], &out);
    assert!(e.contains("no cluster given"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_offline_target_and_bench() {
    let env = Env::new();
    let _cluster = LocalCluster::start(&env.data).await.unwrap();
    node_tags(&env).await;
    offline_target(&env).await;
    bench(&env).await;
}
