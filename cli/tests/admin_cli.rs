//! `t3fs admin`, as an operator runs it: the real binary against an in-process cluster (mgmtd, meta,
//! three storage servers with 3-replica chains), found through `--data-dir`, `--config` and
//! `T3FS_CONFIG`.
//!
//! Every subcommand runs at least once with human output and once with `--json` (parsed). Covered
//! besides: a put/get round trip of a multi-chunk file compared byte for byte; fsck clean (exit 0),
//! then after one replica's chunk file is deleted on disk, fsck exits 1 naming that chunk (while
//! `--meta-only` still passes, as metadata is intact); update-chain removes a target and adds it back
//! until it resyncs to SERVING; bad input exits 1 with one line on stderr
//! (unknown path, bad mode, wrong token, invalid chain table specs, no cluster given) and usage
//! errors exit 2.
use std::path::{Path, PathBuf};

use serde_json::Value;
use t3fs_cli::local::inproc::LocalCluster;
use t3fs_common::{ChunkId, InodeId};

mod admin_env;
use admin_env::{BIN, Env, assert_fails, assert_ok};

/// Deterministic bytes.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// Every chunk engine data file under `dir` (`<target>/engine/<class>/<group>`).
fn find_group_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            find_group_files(&p, out);
        } else if p.parent().and_then(|c| c.parent()).is_some_and(|e| e.ends_with("engine")) {
            out.push(p);
        }
    }
}

/// The chain `id` from `list-chains --json`.
async fn chain_of(env: &Env, id: u64) -> Value {
    let v = env.json(&["list-chains"]).await;
    v["chains"].as_array().unwrap().iter().find(|c| c["chain_id"] == id).unwrap().clone()
}

/// update-chain and rotate-lastsrv: take a target out of a chain, put it back, watch it resync.
async fn chain_admin(env: &Env) {
    let chain = chain_of(env, 100_001).await;
    let version = chain["chain_version"].as_u64().unwrap();
    let target_id = chain["targets"][2]["target_id"].as_u64().unwrap();
    let target = target_id.to_string();
    // mgmtd refuses chain changes while bootstrapping: retry until it is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let removed = loop {
        let args = ["update-chain", "--chain", "100001", "--remove", &target, "--json"];
        let out = env.run(&args).await;
        if out.status.success() || std::time::Instant::now() > deadline {
            break serde_json::from_str::<Value>(&assert_ok(&args, &out)).unwrap();
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("bootstrapping"), "{out:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(removed["chain_version"].as_u64(), Some(version + 1), "{removed}");
    assert_eq!(removed["targets"].as_array().unwrap().len(), 2, "{removed}");
    let v = env.json(&["list-targets"]).await;
    let t = v["targets"].as_array().unwrap().iter().find(|t| t["target_id"] == target_id).unwrap().clone();
    assert_eq!(t["chain_id"], 0, "{t}");
    // Refusals: no edit (usage, exit 2), both (usage), unknown chain, removing an absent target,
    // rotating a chain that serves.
    assert_eq!(env.run(&["update-chain", "--chain", "100001"]).await.status.code(), Some(2));
    assert_eq!(
        env.run(&["update-chain", "--chain", "100001", "--add", "1", "--remove", "2"]).await.status.code(),
        Some(2)
    );
    let e = env.fails(&["update-chain", "--chain", "9", "--add", &target]).await;
    assert!(e.contains("chain 9"), "{e}");
    let e = env.fails(&["update-chain", "--chain", "100001", "--remove", &target]).await;
    assert!(e.contains("not in chain"), "{e}");
    let e = env.fails(&["rotate-lastsrv", "--chain", "100001"]).await;
    assert!(e.contains("SERVING"), "{e}");

    // Back in (human output): appended OFFLINE at the tail, then SYNCING, then SERVING after resync.
    let s = env.ok(&["update-chain", "--chain", "100001", "--add", &target]).await;
    assert!(s.contains(&format!("{target}(OFFLINE)")) && s.contains(&(version + 2).to_string()), "{s}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = chain_of(env, 100_001).await;
        let states: Vec<&str> =
            c["targets"].as_array().unwrap().iter().map(|t| t["public_state"].as_str().unwrap()).collect();
        if states == ["SERVING"; 3] {
            assert!(c["chain_version"].as_u64().unwrap() >= version + 4, "{c}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "target {target} did not resync: {c}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// rotate-head, set-preferred-order, a new table version, and node operation refusals (the
/// state changes themselves are covered by mgmtd's tests).
async fn node_and_layout_ops(env: &Env) {
    let before = chain_of(env, 100_002).await;
    let ids: Vec<u64> =
        before["targets"].as_array().unwrap().iter().map(|t| t["target_id"].as_u64().unwrap()).collect();
    let v = env.json(&["rotate-head", "100002"]).await;
    let after: Vec<u64> = v["targets"].as_array().unwrap().iter().map(|t| t["target_id"].as_u64().unwrap()).collect();
    assert_eq!(after, vec![ids[1], ids[2], ids[0]], "{v}");
    assert_eq!(v["chain_version"].as_u64(), Some(before["chain_version"].as_u64().unwrap() + 1), "{v}");
    let order = format!("{},{},{}", ids[0], ids[1], ids[2]);
    let v = env.json(&["set-preferred-order", "100002", &order]).await;
    assert_eq!(v["preferred_order"], serde_json::json!(ids), "{v}");
    let s = env.ok(&["list-chains"]).await;
    assert!(s.contains("PREFERRED") && s.contains(&order), "{s}");
    let e = env.fails(&["set-preferred-order", "100002", &ids[0].to_string()]).await;
    assert!(e.contains("missing"), "{e}");
    assert_eq!(env.run(&["set-preferred-order", "100002"]).await.status.code(), Some(2), "targets or --clear");
    let v = env.json(&["set-preferred-order", "100002", "--clear"]).await;
    assert_eq!(v["preferred_order"], serde_json::json!([]), "{v}");

    let v = env.json(&["create-chain-table", "--table-id", "1", "--new-version", "--chains", "100002,100001"]).await;
    assert_eq!((v["version"].as_u64(), v["chains"].clone()), (Some(2), serde_json::json!([100002, 100001])), "{v}");
    let e = env.fails(&["create-chain-table", "--table-id", "1", "--new-version", "--chains", "100009"]).await;
    assert!(e.contains("100009"), "{e}");

    let nodes = env.json(&["list-nodes"]).await;
    let storage =
        nodes["nodes"].as_array().unwrap().iter().find(|n| n["type"] == "STORAGE").unwrap()["node_id"].clone();
    let e = env.fails(&["unregister-node", &storage.to_string()]).await;
    assert!(e.contains("heartbeat-connected"), "{e}");
    let e = env.fails(&["disable-node", "999999"]).await;
    assert!(e.contains("not registered"), "{e}");
    let e = env.fails(&["enable-node", "999999"]).await;
    assert!(e.contains("not registered"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_commands_against_a_cluster() {
    let env = Env::new();
    let cluster = LocalCluster::start(&env.data).await.unwrap();

    // --- Cluster and placement.
    let s = env.ok(&["list-nodes"]).await;
    assert!(s.contains("STORAGE") && s.contains("META") && s.contains("HEARTBEATCONNECTED"), "{s}");
    let v = env.json(&["list-nodes"]).await;
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.iter().filter(|n| n["type"] == "STORAGE").count(), 3, "{v}");
    assert_eq!(nodes.iter().filter(|n| n["type"] == "META").count(), 1, "{v}");

    let s = env.ok(&["list-targets"]).await;
    assert!(s.contains("SERVING") && s.contains("USED BYTES"), "{s}");
    let v = env.json(&["list-targets"]).await;
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6, "{v}");
    assert!(targets.iter().all(|t| t["public_state"] == "SERVING"), "{v}");

    let s = env.ok(&["list-chains"]).await;
    assert!(s.contains(" -> "), "{s}");
    let v = env.json(&["list-chains"]).await;
    let chains = v["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{v}");
    assert!(chains.iter().all(|c| c["targets"].as_array().unwrap().len() == 3), "{v}");

    let s = env.ok(&["list-chain-tables"]).await;
    assert!(s.contains("local cluster"), "{s}");
    let v = env.json(&["list-chain-tables"]).await;
    assert_eq!(v["tables"][0]["table_id"], 1, "{v}");
    assert_eq!(v["tables"][0]["chains"].as_array().unwrap().len(), 2, "{v}");

    // Same spec as the existing table: mgmtd answers with it (idempotent create).
    let v = env.json(&["create-chain-table", "--table-id", "1", "--replicas", "3"]).await;
    assert_eq!((v["table_id"].as_u64(), v["chains"].as_array().unwrap().len()), (Some(1), 2), "{v}");
    let s = env.ok(&["create-chain-table", "--table-id", "1", "--replicas", "3", "--desc", "again"]).await;
    assert!(s.contains("TABLE") && s.contains("local cluster"), "{s}");
    // Invalid specs: zero replicas, a different replica count for table 1, no free targets left.
    let e = env.fails(&["create-chain-table", "--table-id", "2", "--replicas", "0"]).await;
    assert!(e.contains("replicas"), "{e}");
    let e = env.fails(&["create-chain-table", "--table-id", "1", "--replicas", "2"]).await;
    assert!(e.contains("already exists"), "{e}");
    let e = env.fails(&["create-chain-table", "--table-id", "2", "--replicas", "2"]).await;
    assert!(e.contains("storage nodes"), "{e}");
    // Explicit placement: every target is taken by table 1, so it is refused (and changes nothing).
    let t = v["chains"][0].as_u64().unwrap();
    let chain = env.json(&["list-chains"]).await["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain_id"].as_u64() == Some(t))
        .cloned()
        .unwrap();
    let first = chain["targets"][0]["target_id"].as_u64().unwrap().to_string();
    let e = env.fails(&["create-chain-table", "--table-id", "2", "--replicas", "1", "--chain", &first]).await;
    assert!(e.contains("already in chain"), "{e}");
    let e = env.fails(&["create-chain-table", "--table-id", "2", "--replicas", "1", "--chain", "1,x"]).await;
    assert!(e.contains("\"x\""), "{e}");

    chain_admin(&env).await;
    node_and_layout_ops(&env).await;

    // --- Namespace.
    let v = env.json(&["mkdir", "-p", "/a/b/c"]).await;
    assert_eq!(v["inode"]["type"], "dir", "{v}");
    env.ok(&["mkdir", "-p", "/a/b/c"]).await; // exists: fine with -p
    let s = env.ok(&["mkdir", "--mode", "700", "/d"]).await;
    assert!(s.contains("mkdir /d"), "{s}");
    let e = env.fails(&["mkdir", "/a"]).await;
    assert!(e.contains("/a"), "{e}");

    // set-layout: a directory's default layout, shown by stat, copied by mkdir, taken by new files.
    env.ok(&["mkdir", "/lay"]).await;
    let s = env.ok(&["set-layout", "/lay", "--chain-table", "1", "--chunk-size", "64K", "--stripe", "1"]).await;
    assert!(s.contains("chunk size 65536, stripe 1"), "{s}");
    let s = env.ok(&["stat", "/lay"]).await;
    assert!(s.contains("default layout: chain table 1, chunk size 65536, stripe 1"), "{s}");
    assert!(env.ok(&["stat", "/a"]).await.contains("default layout: none set"));
    let v = env.json(&["mkdir", "-p", "/lay/x/../y/z"]).await;
    assert_eq!(v["inode"]["default_layout"]["chunk_size"], 65536, "{v}");
    let v = env.json(&["stat", "/lay/y"]).await;
    assert_eq!(v["type"], "dir");
    assert_eq!(v["owner_meta_node"], 100, "one meta node owns every directory: {v}");
    assert!(env.ok(&["stat", "/lay"]).await.contains("owner meta node: 100"));
    std::fs::write(env.local("small.bin"), pattern(100_000, 3)).unwrap();
    env.ok(&["put", env.local("small.bin").to_str().unwrap(), "/lay/y/f"]).await;
    let v = env.json(&["stat", "/lay/y/f"]).await;
    assert_eq!((v["layout"]["chunk_size"].as_u64(), v["layout"]["stripe"].as_u64()), (Some(65536), Some(1)), "{v}");
    let e = env.fails(&["mkdir", "-p", "/lay/y/f/deeper"]).await;
    assert!(e.contains("not a directory"), "{e}");
    let e = env.fails(&["set-layout", "/lay", "--chain-table", "9", "--chunk-size", "1M", "--stripe", "1"]).await;
    assert!(e.contains("chain table 9"), "{e}");
    let e = env.fails(&["set-layout", "/lay", "--chain-table", "1", "--chunk-size", "3000", "--stripe", "1"]).await;
    assert!(e.contains("power of two"), "{e}");
    let e = env.fails(&["set-layout", "/lay/y/f", "--chain-table", "1", "--chunk-size", "1M", "--stripe", "1"]).await;
    assert!(e.contains("not a directory"), "{e}");
    let e = env
        .fails(&["--uid", "1000", "set-layout", "/lay", "--chain-table", "1", "--chunk-size", "1M", "--stripe", "1"])
        .await;
    assert!(e.contains("not permitted"), "{e}");
    env.ok(&["rm", "-r", "/lay"]).await;

    // put/get: a 9.5 MiB file (10 chunks of 1 MiB, three 4 MiB pieces).
    let mut content = pattern(9 * (1 << 20) + (1 << 19), 7);
    // The pattern repeats every MiB: number the chunks so each one's bytes are unique (see the fsck part).
    for (i, c) in content.chunks_mut(1 << 20).enumerate() {
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    std::fs::write(env.local("in.bin"), &content).unwrap();
    let input = env.local("in.bin");
    let s = env.ok(&["put", input.to_str().unwrap(), "/a/b/file.bin"]).await;
    assert!(s.contains(&format!("{} bytes", content.len())), "{s}");
    let out = env.local("out.bin");
    let s = env.ok(&["get", "/a/b/file.bin", out.to_str().unwrap()]).await;
    assert!(s.contains(&format!("{} bytes", content.len())), "{s}");
    assert!(std::fs::read(&out).unwrap() == content, "get returned different bytes");
    // Overwrite with a shorter file: the old tail must not survive.
    let small = pattern(1000, 9);
    std::fs::write(env.local("small.bin"), &small).unwrap();
    let v = env.json(&["put", env.local("small.bin").to_str().unwrap(), "/a/small.bin"]).await;
    assert_eq!(v["bytes"], 1000, "{v}");
    let v = env.json(&["get", "/a/small.bin", env.local("small.out").to_str().unwrap()]).await;
    assert_eq!(v["bytes"], 1000, "{v}");
    assert_eq!(std::fs::read(env.local("small.out")).unwrap(), small);

    // stat
    let s = env.ok(&["stat", "/a/b/file.bin"]).await;
    assert!(s.contains(&format!("size: {}", content.len())) && s.contains("chunk size 1048576"), "{s}");
    let st = env.json(&["stat", "/a/b/file.bin"]).await;
    assert_eq!((st["type"].as_str(), st["length"].as_u64()), (Some("file"), Some(content.len() as u64)), "{st}");
    let file_inode = st["id"].as_u64().unwrap();

    // ln: hard and symbolic
    let v = env.json(&["ln", "/a/b/file.bin", "/a/hard.bin"]).await;
    assert_eq!((v["inode"]["id"].as_u64(), v["inode"]["nlink"].as_u64()), (Some(file_inode), Some(2)), "{v}");
    let s = env.ok(&["ln", "-s", "b/file.bin", "/a/sym"]).await;
    assert!(s.contains("symlink /a/sym"), "{s}");

    // ls
    let s = env.ok(&["ls", "/a"]).await;
    assert_eq!(s.lines().collect::<Vec<_>>(), vec!["b/", "hard.bin", "small.bin", "sym"], "{s}");
    let s = env.ok(&["ls", "-l", "/a"]).await;
    assert!(s.contains("lrwxrwxrwx") && s.contains("sym -> b/file.bin") && s.contains("drwxr-xr-x"), "{s}");
    let v = env.json(&["ls", "/a/b"]).await;
    let names: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["c", "file.bin"], "{v}");

    // chmod / chown
    let v = env.json(&["chmod", "600", "/a/small.bin"]).await;
    assert_eq!(v["inode"]["mode"], "0600", "{v}");
    let s = env.ok(&["chmod", "0755", "/d"]).await;
    assert!(s.contains("chmod /d"), "{s}");
    let e = env.fails(&["chmod", "9z9", "/d"]).await;
    assert!(e.contains("bad mode"), "{e}");
    let v = env.json(&["chown", "1000:2000", "/a/small.bin"]).await;
    assert_eq!((v["inode"]["uid"].as_u64(), v["inode"]["gid"].as_u64()), (Some(1000), Some(2000)), "{v}");
    env.ok(&["chown", "1001", "/d"]).await;
    assert_eq!(env.json(&["stat", "/d"]).await["uid"], 1001);
    env.fails(&["chown", "x:y", "/d"]).await;

    // du: a file with two names (the hard link) counts once, as du does.
    let v = env.json(&["du", "/a"]).await;
    assert_eq!(v["bytes"].as_u64(), Some(content.len() as u64 + 1000), "{v}");
    assert_eq!((v["files"].as_u64(), v["dirs"].as_u64()), (Some(2), Some(3)), "{v}");
    let s = env.ok(&["du", "/a/b"]).await;
    assert!(s.starts_with(&format!("{}\t/a/b", content.len())), "{s}");

    // mv: rename, then into an existing directory
    let v = env.json(&["mv", "/a/small.bin", "/a/renamed.bin"]).await;
    assert_eq!(v["dst"], "/a/renamed.bin", "{v}");
    let s = env.ok(&["mv", "/a/renamed.bin", "/d"]).await;
    assert!(s.contains("/d/renamed.bin"), "{s}");
    env.fails(&["stat", "/a/renamed.bin"]).await;
    assert_eq!(env.json(&["stat", "/d/renamed.bin"]).await["length"], 1000);

    // --- Data: query-chunk and fsck.
    let t = targets[0]["target_id"].as_u64().unwrap();
    let v = env.json(&["query-chunk", "--target", &t.to_string(), "--inode", "999999", "--index", "0"]).await;
    assert_eq!(v["found"], false, "{v}");
    // Chunk 0 of the file lives on every target of one chain: find one that has it.
    let mut found = None;
    for tt in targets {
        let tid = tt["target_id"].as_u64().unwrap().to_string();
        let v = env.json(&["query-chunk", "--target", &tid, "--inode", &file_inode.to_string(), "--index", "0"]).await;
        if v["found"] == true {
            assert_eq!(v["meta"]["length"], 1 << 20, "{v}");
            found = Some(tid);
        }
    }
    let tid = found.expect("some target holds chunk 0");
    let s = env.ok(&["query-chunk", "--target", &tid, "--inode", &file_inode.to_string(), "--index", "0"]).await;
    assert!(s.contains("VERSION") && s.contains("1048576"), "{s}");
    let v = env.json(&["dump-chunkmeta", "--target", &tid, "--inode", &file_inode.to_string()]).await;
    let chunks = v["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty() && chunks.iter().all(|c| c["inode"] == file_inode), "{v}");
    assert!(chunks.iter().any(|c| c["index"] == 0 && c["length"] == 1 << 20), "{v}");
    let s = env.ok(&["dump-chunkmeta", "--target", &tid]).await;
    assert!(s.contains("CHAIN VER") && s.contains(" chunks"), "{s}");
    let e = env.fails(&["dump-chunkmeta", "--target", "424242"]).await;
    assert!(e.contains("424242"), "{e}");

    let s = env.ok(&["fsck", "/"]).await;
    // file.bin (also /a/hard.bin, checked once) and /d/renamed.bin.
    assert!(s.contains("2 files, 11 chunks, 0 bad"), "{s}");
    let v = env.json(&["fsck", "/a/b/file.bin"]).await;
    assert_eq!((v["files"].as_u64(), v["chunks"].as_u64(), v["bad"].as_u64()), (Some(1), Some(10), Some(0)), "{v}");

    // Damage one replica: flip a byte of chunk 3's data in one storage target's chunk engine files (its
    // 1 MiB slots start at multiples of 1 MiB).
    let chunk = ChunkId::new(InodeId(file_inode), 3);
    let chunk3 = &content[3 << 20..4 << 20];
    let mut files = Vec::new();
    find_group_files(&env.data, &mut files);
    let mut copies = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        for (i, slot) in data.chunks(1 << 20).enumerate() {
            if slot == chunk3 {
                copies.push((f.clone(), i << 20));
            }
        }
    }
    // Freed slots of earlier versions with the same bytes may be among them: damage every copy on one
    // target (the directory above `engine/`).
    let target_of = |f: &Path| f.ancestors().nth(3).unwrap().to_path_buf();
    let mut targets_with_copy: Vec<PathBuf> = copies.iter().map(|(f, _)| target_of(f)).collect();
    targets_with_copy.dedup();
    assert_eq!(targets_with_copy.len(), 3, "a copy on every replica: {copies:?}");
    for (f, at) in copies.iter().filter(|(f, _)| target_of(f) == targets_with_copy[0]) {
        let mut data = std::fs::read(f).unwrap();
        data[at + 12345] ^= 0x10;
        std::fs::write(f, &data).unwrap();
    }

    let out = env.run(&["fsck", "/a"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let e = assert_fails(&["fsck", "/a"], &out);
    assert!(e.contains("1 of") && e.contains("bad"), "{e}");
    // Named by chunk id and by one of the file's two names (whichever the walk met first).
    let named = stdout.contains("/a/b/file.bin") || stdout.contains("/a/hard.bin");
    assert!(stdout.contains(&chunk.to_string()) && named, "{stdout}");
    assert!(stdout.contains("1 bad"), "{stdout}");
    let out = env.run(&["fsck", "/", "--json"]).await;
    assert_fails(&["fsck", "/", "--json"], &out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad"], 1, "{v}");
    assert_eq!(v["bad_chunks"][0]["chunk"], chunk.to_string(), "{v}");
    assert_eq!(v["bad_chunks"][0]["index"], 3, "{v}");
    // Metadata is intact, so a metadata-only check passes.
    let s = env.ok(&["fsck", "--meta-only", "/a"]).await;
    assert!(s.contains("0 bad (metadata only)"), "{s}");

    // --- rm
    let e = env.fails(&["rm", "/a"]).await;
    assert!(e.contains("/a"), "{e}");
    let s = env.ok(&["rm", "/a/sym"]).await;
    assert!(s.contains("removed /a/sym"), "{s}");
    let v = env.json(&["rm", "-r", "/a"]).await;
    assert_eq!(v["removed"], 5, "{v}"); // /a, b, c, file.bin, hard.bin
    env.fails(&["ls", "/a"]).await;
    let s = env.ok(&["ls", "/"]).await;
    assert_eq!(s.trim(), "d/", "{s}");

    // --- Finding the cluster, and bad input.
    let e = env.fails(&["stat", "/no/such/path"]).await;
    assert!(e.contains("/no/such/path"), "{e}");
    let cfg = env.local("client.toml");
    let cf = format!("mgmtd_addr = \"{}\"\ntoken = \"{}\"\n", cluster.mgmtd_addr(), cluster.plan.cluster.token);
    std::fs::write(&cfg, format!("{cf}routing_refresh_ms = 100\n[extra]\nx = 1\n")).unwrap();
    let out = env.run_with(&["--config", cfg.to_str().unwrap()], &["ls", "/"]).await;
    assert_eq!(assert_ok(&["--config"], &out).trim(), "d/");
    let out = tokio::process::Command::new(BIN)
        .args(["admin", "list-nodes", "--json"])
        .env("T3FS_CONFIG", &cfg)
        .output()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&assert_ok(&["T3FS_CONFIG"], &out)).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 5, "{v}"); // mgmtd, meta, 3 storage
    let bad = env.local("bad-token.toml");
    std::fs::write(&bad, format!("mgmtd_addr = \"{}\"\ntoken = \"wrong\"\n", cluster.mgmtd_addr())).unwrap();
    for args in [&["list-nodes"][..], &["ls", "/"]] {
        let out = env.run_with(&["--config", bad.to_str().unwrap()], args).await;
        let e = assert_fails(args, &out);
        assert!(e.to_lowercase().contains("unauthenticated") || e.contains("token"), "{e}");
    }
    let out = env.run_with(&[], &["list-nodes"]).await;
    let e = assert_fails(&["(no cluster)"], &out);
    assert!(e.contains("--data-dir"), "{e}");
    let out = env.run_with(&["--data-dir", "/nonexistent-t3fs-dir"], &["list-nodes"]).await;
    assert_fails(&["(bad dir)"], &out);
    // Usage errors are clap's: exit 2.
    let out = env.run(&["chmod", "755"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["no-such-command"]).await;
    assert_eq!(out.status.code(), Some(2));

    cluster.shutdown().await;
}
