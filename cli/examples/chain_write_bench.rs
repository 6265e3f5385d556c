//! 3-replica write throughput through one chain of an in-process local cluster (mgmtd, meta, three
//! storage nodes on this machine's disk, 3-replica chains): whole-chunk writes, only to chunk
//! indexes that map to the chain of chunk 0, `CONC` in flight, for `SECS` seconds. Every write is
//! applied and made durable on all three replicas before it is acknowledged.
//!
//! `cargo run --release -p t3fs --example chain_write_bench -- [CONC=4] [SECS=10]`
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::UserInfo;
use t3fs_common::{ChainTableId, InodeId, layout};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let conc = args.first().copied().unwrap_or(4) as usize;
    let secs = args.get(1).copied().unwrap_or(10);
    let tmp = tempfile::tempdir()?;
    let cluster = LocalCluster::start(tmp.path()).await?;
    let client = cluster.client().await?;
    let user = UserInfo::root();
    let inode = client.create(&user, InodeId::ROOT, b"bench.bin", 0o644, true).await?;
    let lay = inode.layout.expect("file layout");
    let cs = lay.chunk_size;
    let routing = client.routing();
    let table = routing.table(ChainTableId(lay.table_id), lay.table_version)?;
    let chain = layout::chain_of(&lay, &table.chains, 0)?;
    let indexes: Vec<u32> =
        (0..100_000u32).filter(|&i| layout::chain_of(&lay, &table.chains, i).is_ok_and(|c| c == chain)).collect();
    println!(
        "3-replica writes through chain {chain}: {} KiB chunks, {conc} in flight, {secs} s, data dir {}",
        cs / 1024,
        tmp.path().display()
    );
    let data: Arc<Vec<u8>> = Arc::new((0..cs).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect());
    let inode = Arc::new(inode);
    let next = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, inode, data, next, bytes, indexes) =
            (client.clone(), inode.clone(), data.clone(), next.clone(), bytes.clone(), indexes.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize % indexes.len();
                let off = u64::from(indexes[k]) * u64::from(cs);
                client.write(&inode, off, &data).await.expect("write");
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mib = bytes.load(Ordering::Relaxed) as f64 / f64::from(1u32 << 20);
    println!("{mib:.0} MiB acknowledged: {:.1} MiB/s", mib / started.elapsed().as_secs_f64());
    client.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}
