//! Metadata operation rates of an in-process local cluster (meta on the embedded KV store) through
//! the native client, beside the same workload on a local directory (std::fs) in the same run.
//!
//! `cargo run --release -p t3fs --example meta_bench -- [FILES] [TASKS] [DIR]`
//!
//! Five scenarios: one task doing everything in one directory, then TASKS concurrent tasks each in
//! its own directory (FILES split between them), then TASKS concurrent tasks in one shared
//! directory (what a checkpoint written by many ranks into one directory does); then a second meta
//! server joins (same store) and the shared directory is run again through 8 clients, once with
//! directory-owner routing ("owner") and once with each client on its own current meta node
//! ("any"; the local column repeats the shared-directory figure). Per scenario: create (exclusive, empty files),
//! stat (lookup by name), readdir (entries/s over every directory), unlink. Prints one table of
//! operations per second. Figures compare versions on one machine; they are not absolute claims
//! (every daemon shares this process and the loopback network with the client).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, InodeId, UserInfo};

/// Operations per second of the four phases: create, stat, readdir (entries), unlink.
type Rates = [f64; 4];

fn name(t: usize, i: usize) -> String {
    format!("file-{t:03}-{i:07}")
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

/// Runs `f(task)` for every task concurrently and waits for all.
async fn all<F, Fut>(tasks: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks).map(|t| tokio::spawn(f(t))).collect();
    for h in handles {
        h.await.expect("bench task");
    }
}

/// One directory per task, or one for all (`shared`).
fn dir_count(tasks: usize, shared: bool) -> usize {
    if shared { 1 } else { tasks }
}

/// The workload through `clients` (task `t` uses client `t % clients.len()`).
async fn t3fs(clients: &[Arc<Client>], top: &str, files: usize, tasks: usize, shared: bool) -> Rates {
    let client = &clients[0];
    let clients: Arc<Vec<Arc<Client>>> = Arc::new(clients.to_vec());
    let user = UserInfo::default();
    let per = files / tasks;
    let mut dirs = Vec::new();
    for t in 0..dir_count(tasks, shared) {
        dirs.push(InodeId(
            client.mkdirs(&user, InodeId::ROOT, &format!("{top}/d{t}"), 0o755).await.expect("mkdirs").id,
        ));
    }
    let dirs = Arc::new(dirs);
    let run = |op: u8| {
        let (clients, dirs, user) = (clients.clone(), dirs.clone(), user.clone());
        move |t: usize| {
            let (client, dirs, user) = (clients[t % clients.len()].clone(), dirs.clone(), user.clone());
            async move {
                let dir = dirs[t % dirs.len()];
                for i in 0..per {
                    let n = name(t, i);
                    match op {
                        0 => drop(client.create(&user, dir, n.as_bytes(), 0o644, true).await.expect("create")),
                        1 => drop(client.lookup(&user, dir, n.as_bytes()).await.expect("stat")),
                        _ => drop(client.remove(&user, dir, n.as_bytes(), false).await.expect("unlink")),
                    }
                }
            }
        }
    };
    let t = Instant::now();
    all(tasks, run(0)).await;
    let create = rate(per * tasks, t);
    let t = Instant::now();
    all(tasks, run(1)).await;
    let stat = rate(per * tasks, t);
    let t = Instant::now();
    let mut entries = 0;
    for d in dirs.iter() {
        entries += client.readdir(&user, *d).await.expect("readdir").len();
    }
    assert_eq!(entries, per * tasks);
    let readdir = rate(entries, t);
    let t = Instant::now();
    all(tasks, run(2)).await;
    let unlink = rate(per * tasks, t);
    [create, stat, readdir, unlink]
}

async fn local(root: &Path, files: usize, tasks: usize, shared: bool) -> Rates {
    let per = files / tasks;
    let dirs: Vec<PathBuf> = (0..dir_count(tasks, shared)).map(|t| root.join(format!("d{t}"))).collect();
    let dirs = Arc::new(dirs);
    for d in dirs.iter() {
        std::fs::create_dir_all(d).expect("local mkdir");
    }
    let run = |op: u8| {
        let dirs = dirs.clone();
        move |t: usize| {
            let dirs = dirs.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    for i in 0..per {
                        let p = dirs[t % dirs.len()].join(name(t, i));
                        match op {
                            0 => drop(std::fs::File::create_new(&p).expect("local create")),
                            1 => drop(std::fs::metadata(&p).expect("local stat")),
                            _ => std::fs::remove_file(&p).expect("local unlink"),
                        }
                    }
                })
                .await
                .expect("blocking task")
            }
        }
    };
    let t = Instant::now();
    all(tasks, run(0)).await;
    let create = rate(per * tasks, t);
    let t = Instant::now();
    all(tasks, run(1)).await;
    let stat = rate(per * tasks, t);
    let t = Instant::now();
    let mut entries = 0;
    for d in dirs.iter() {
        for e in std::fs::read_dir(d).expect("local readdir") {
            e.expect("local entry");
            entries += 1;
        }
    }
    assert_eq!(entries, per * tasks);
    let readdir = rate(entries, t);
    let t = Instant::now();
    all(tasks, run(2)).await;
    let unlink = rate(per * tasks, t);
    [create, stat, readdir, unlink]
}

/// KV transaction conflicts so far, summed over the meta servers.
fn conflicts(cluster: &LocalCluster) -> u64 {
    cluster.metas().map(|m| m.metrics().kv_counts().1).sum()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let files: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4000);
    let tasks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8).max(1);
    let tmp = tempfile::tempdir_in(args.get(3).map(String::as_str).unwrap_or("/var/tmp")).expect("tempdir");
    let mut cluster = LocalCluster::start(&tmp.path().join("cluster")).await.expect("start the local cluster");
    let client = cluster.client().await.expect("client");
    let mut rows = Vec::new();
    for (label, n, shared) in
        [("1 task, 1 dir", 1, false), ("tasks, 1 dir each", tasks, false), ("tasks, 1 dir", tasks, true)]
    {
        let before = conflicts(&cluster);
        let t = t3fs(std::slice::from_ref(&client), &format!("bench-{n}-{shared}"), files, n, shared).await;
        let c = conflicts(&cluster) - before;
        let dir = tmp.path().join(format!("local-{n}-{shared}"));
        let l = local(&dir, files, n, shared).await;
        let label = if n == 1 { label.to_string() } else { format!("{n} {label}") };
        rows.push((label, t, l, c));
    }
    // A second meta server on the same store, and the shared directory from 8 clients (as from 8
    // hosts), with and without sending a directory's operations to its owner node.
    cluster.add_meta().await.expect("a second meta server");
    let shared_local = rows.last().expect("three rows").2;
    for owner_routing in [true, false] {
        let mut clients = Vec::new();
        for _ in 0..8 {
            let cfg = t3fs_client::ClientConfig { dir_owner_routing: owner_routing, ..cluster.client_config() };
            let c = Client::connect(cfg).await.expect("client");
            while c.routing().nodes_of_type(t3fs_common::proto::NodeType::Meta).count() < 2 {
                c.refresh_routing().await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            clients.push(c);
        }
        let before = conflicts(&cluster);
        let t = t3fs(&clients, &format!("bench-2meta-{owner_routing}"), files, tasks, true).await;
        let c = conflicts(&cluster) - before;
        let how = if owner_routing { "owner" } else { "any" };
        rows.push((format!("{tasks} tasks, 1 dir, 2 meta ({how})"), t, shared_local, c));
        for c in clients {
            c.shutdown().await;
        }
    }
    println!("meta_bench: {files} files per scenario (embedded KV store, in-process cluster, native client)");
    println!("{:<32} {:<8} {:>14} {:>14} {:>8}", "scenario", "op", "t3fs ops/s", "local ops/s", "ratio");
    for (label, t, l, _) in &rows {
        for (i, op) in ["create", "stat", "readdir", "unlink"].iter().enumerate() {
            println!("{label:<32} {op:<8} {:>14.0} {:>14.0} {:>8.3}", t[i], l[i], t[i] / l[i]);
        }
    }
    println!("(readdir: entries per second)");
    for (label, _, _, c) in &rows {
        println!("{label:<32} KV transaction conflicts, all meta servers: {c}");
    }
    client.shutdown().await;
    cluster.shutdown().await;
}
