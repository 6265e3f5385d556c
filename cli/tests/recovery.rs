//! Failure injection on an in-process local cluster: a storage server dies, writes go on with the
//! two live replicas, the server comes back, is resynced (SYNCING -> SERVING) and ends with
//! replicas identical to the others; nothing acknowledged is lost at any point.
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_common::ids::{ChainTableId, ChunkId, InodeId, TargetId};
use t3fs_common::layout::{self, SplitMix64};
use t3fs_common::proto::{self, PublicTargetState};
use t3fs_common::routing::Routing;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..n.div_ceil(8)).flat_map(|_| r.next_u64().to_le_bytes()).take(n).collect()
}

fn node_targets(r: &Routing, node_id: u32) -> Vec<u64> {
    r.info.targets.iter().filter(|t| t.node_id == node_id).map(|t| t.target_id).collect()
}

fn state_of(r: &Routing, target: u64) -> i32 {
    r.info.chains.iter().flat_map(|c| &c.targets).find(|t| t.target_id == target).map_or(0, |t| t.public_state)
}

/// Every chunk of `inode` has the same version, length and CRC32C (of `data`) on every replica.
async fn assert_replicas_identical(client: &t3fs_client::Client, inode: &proto::Inode, data: &[u8]) {
    let r = client.routing();
    let lay = inode.layout.expect("layout");
    let table = r.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
    let cs = lay.chunk_size as usize;
    for i in 0..data.len().div_ceil(cs) {
        let chain = r.chain(layout::chain_of(&lay, &table.chains, i as u32).unwrap()).unwrap();
        let piece = &data[i * cs..((i + 1) * cs).min(data.len())];
        let mut seen = Vec::new();
        for t in &chain.targets {
            let m = client
                .query_chunk(TargetId(t.target_id), ChunkId::new(InodeId(inode.id), i as u32))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("chunk {i} of inode {} missing on target {}", inode.id, t.target_id));
            assert_eq!(
                (m.length as usize, m.crc32c),
                (piece.len(), crc32c::crc32c(piece)),
                "chunk {i} on {}",
                t.target_id
            );
            seen.push(m.version);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "chunk {i} versions differ: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_failure_writes_continue_and_returning_replica_is_resynced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let client = cluster.client().await.unwrap();
    let user = t3fs_client::UserInfo::default();

    // File A written while all three replicas serve.
    let mut a = bytes(6 << 20, 1);
    let ia = client.create(&user, InodeId::ROOT, b"a", 0o644, true).await.unwrap();
    client.write(&ia, 0, &a).await.unwrap();
    let ia = client.close(&user, InodeId(ia.id), a.len() as u64, true).await.unwrap();

    // Every target reports its disk index (placement spreads chains over disks).
    let r = client.routing();
    assert!(r.info.targets.iter().all(|t| t.disk_index.is_some()), "targets without disk index: {:?}", r.info.targets);

    // Storage server 3 dies.
    let dead_node = cluster.plan.storage[2].node_id;
    let dead = node_targets(&client.routing(), dead_node);
    assert_eq!(dead.len(), 2);
    assert!(cluster.stop_storage(2).await);

    // Writes go on (the client retries until mgmtd has taken the dead replicas out of the chains):
    // a new file B, and an overwrite in the middle of A.
    let b = bytes(5 << 20, 2);
    let ib = client.create(&user, InodeId::ROOT, b"b", 0o644, true).await.unwrap();
    client.write(&ib, 0, &b).await.unwrap();
    let ib = client.close(&user, InodeId(ib.id), b.len() as u64, true).await.unwrap();
    let patch = bytes(1 << 20, 3);
    client.write(&ia, 2_500_000, &patch).await.unwrap();
    a[2_500_000..2_500_000 + patch.len()].copy_from_slice(&patch);
    let r = client.routing();
    for t in &dead {
        let s = state_of(&r, *t);
        assert!(s == PublicTargetState::Offline as i32, "dead target {t} is {s}, expected OFFLINE");
    }
    // Everything acknowledged reads back from the survivors.
    assert!(client.read(&ia, 0, a.len() as u32).await.unwrap() == a);
    assert!(client.read(&ib, 0, b.len() as u32).await.unwrap() == b);

    // The server comes back: its targets are resynced and serve again.
    cluster.start_storage(2).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        client.refresh_routing().await;
        let r = client.routing();
        if dead.iter().all(|t| state_of(&r, *t) == PublicTargetState::Serving as i32) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "returning targets did not become SERVING: {:?}",
            r.info.chains
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_replicas_identical(&client, &ia, &a).await;
    assert_replicas_identical(&client, &ib, &b).await;

    // `t3fs admin list-syncs` shows the finished syncs into the returning targets, every chunk done.
    let data = tmp.path().join("data");
    let list_syncs = |json: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_t3fs"));
        cmd.args(["admin", "--data-dir", data.to_str().unwrap(), "list-syncs"]).env_remove("T3FS_CONFIG");
        if json {
            cmd.arg("--json");
        }
        async move {
            let out = cmd.output().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "list-syncs failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
            stdout
        }
    };
    let table = list_syncs(false).await;
    assert!(table.contains("PHASE") && table.contains("ETA") && table.contains("DONE"), "{table}");
    let v: serde_json::Value = serde_json::from_str(&list_syncs(true).await).unwrap();
    let syncs = v["syncs"].as_array().unwrap();
    for t in &dead {
        let done: Vec<_> = syncs.iter().filter(|s| s["to_target"] == *t && s["phase"] == "DONE").collect();
        assert!(!done.is_empty(), "no finished sync into target {t}: {v}");
        assert!(done.iter().all(|s| s["chunks_done"] == s["chunks_total"]), "{v}");
    }
    // The returning server missed writes: at least one sync transferred chunks and their bytes.
    assert!(syncs.iter().any(|s| s["chunks_done"].as_u64().unwrap() > 0 && s["bytes_done"].as_u64().unwrap() > 0));

    assert!(client.read(&ia, 0, a.len() as u32).await.unwrap() == a);
    drop(client);
    cluster.shutdown().await;
}
