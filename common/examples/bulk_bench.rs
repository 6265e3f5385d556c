//! TCP bulk-plane throughput on loopback: a bulk server whose handler answers reads with a fixed
//! buffer and swallows writes (no disk), and `CONC` concurrent callers through one [`BulkClient`]
//! (the per-peer connection pool), each doing `SIZE`-byte calls for `SECS` seconds per direction.
//!
//! `cargo run --release -p t3fs-common --example bulk_bench -- [SIZE_KIB=1024] [CONC=8] [SECS=5]`
//!
//! Prints GiB/s of payload for reads (server -> client) and writes (client -> server). Payload CRCs
//! are computed on both sides, as on the real data path.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use t3fs_common::bulk::{self, BulkClient, BulkHandler};
use t3fs_common::proto::{BulkRequest, BulkResponse, ReadChunk, UpdateChunk, bulk_request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Sink {
    data: Bytes,
}

impl BulkHandler for Sink {
    async fn handle(&self, req: BulkRequest, payload: Bytes) -> (BulkResponse, Bytes) {
        match req.op {
            Some(bulk_request::Op::Read(r)) => {
                let d = self.data.slice(..(r.length as usize).min(self.data.len()));
                (BulkResponse { payload_crc32c: crc32c::crc32c(&d), ..Default::default() }, d)
            }
            _ => {
                let _ = crc32c::crc32c(&payload);
                (BulkResponse::default(), Bytes::new())
            }
        }
    }
}

async fn run(client: &BulkClient, addr: &str, conc: usize, secs: u64, req: BulkRequest, payload: Bytes) -> f64 {
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, addr, req, payload, bytes) =
            (client.clone(), addr.to_string(), req.clone(), payload.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let (rsp, data) = client.call(&addr, &req, &payload).await.expect("bench call");
                if !data.is_empty() {
                    assert_eq!(crc32c::crc32c(&data), rsp.payload_crc32c);
                }
                bytes.fetch_add((data.len() + payload.len()) as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("bench task");
    }
    bytes.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64() / f64::from(1u32 << 30)
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let size = args.first().copied().unwrap_or(1024) as usize * 1024;
    let conc = args.get(1).copied().unwrap_or(8) as usize;
    let secs = args.get(2).copied().unwrap_or(5);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let cancel = CancellationToken::new();
    let data = Bytes::from(vec![0xA5u8; size]);
    tokio::spawn(bulk::serve(l, Arc::new(Sink { data: data.clone() }), cancel.clone()));
    let client = BulkClient::default();
    let read = BulkRequest {
        op: Some(bulk_request::Op::Read(ReadChunk { length: size as u32, ..Default::default() })),
        ..Default::default()
    };
    let write = BulkRequest { op: Some(bulk_request::Op::Update(UpdateChunk::default())), ..Default::default() };
    println!("TCP bulk plane on loopback: {} KiB per call, {conc} concurrent callers, {secs} s each", size / 1024);
    let r = run(&client, &addr, conc, secs, read, Bytes::new()).await;
    println!("read  (server -> client): {r:.2} GiB/s");
    let w = run(&client, &addr, conc, secs, write, data).await;
    println!("write (client -> server): {w:.2} GiB/s");
    cancel.cancel();
}
