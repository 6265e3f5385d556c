//! Commit throughput of the embedded backend (ignored; run by hand):
//! `cargo test -p t3fs-kv --release --test bench -- --ignored --nocapture`
use std::time::Instant;

use t3fs_kv::embedded::EmbeddedKv;
use t3fs_kv::{Db, run};

async fn bench(db: &Db, clients: usize, per_client: usize) -> f64 {
    let start = Instant::now();
    let tasks = (0..clients).map(|c| {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..per_client {
                let key = format!("bench/{c:04}/{i:08}").into_bytes();
                run(db.as_ref(), |t| {
                    let key = key.clone();
                    Box::pin(async move {
                        let _ = t.get(&key, false).await?;
                        t.set(&key, &[0u8; 100]);
                        Ok(())
                    })
                })
                .await
                .unwrap();
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    (clients * per_client) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn embedded_commit_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let db: Db = EmbeddedKv::open(dir.path()).unwrap();
    for clients in [1, 16, 128] {
        let per_client = 4000 / clients;
        let rate = bench(&db, clients, per_client).await;
        println!("embedded: {clients:>3} concurrent clients: {rate:>8.0} durable commits/s");
    }
}
