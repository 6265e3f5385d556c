//! A routing info above tonic's default 4 MiB message limit still reaches every node: mgmtd clients
//! take up to `MAX_MGMTD_MESSAGE`. A cluster lists about 60 bytes per target, so the default was
//! passed at about 70,000 targets, and then no daemon or client could learn the routing at all.
use prost::Message;
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, LocalTargetState, PublicTargetState};
use t3fs_common::{ChunkId, InodeId};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_routing_info_over_4_mib_reaches_every_node() {
    let mut c = Cluster::start().await;
    let version = {
        let mut s = c.mgmtd.0.lock().unwrap();
        for chain_id in 2..40_002u32 {
            let ids = [1, 2, 3].map(|k| u64::from(chain_id) * 1000 + k);
            let targets = ids
                .map(|target_id| proto::ChainTarget { target_id, public_state: PublicTargetState::Serving as i32 })
                .to_vec();
            s.extra_chains.push(proto::ChainInfo { chain_id, chain_version: 1, targets, ..Default::default() });
            for (node_id, target_id) in (1..=3).zip(ids) {
                s.extra_targets.push(proto::TargetInfo {
                    target_id,
                    node_id,
                    chain_id,
                    public_state: PublicTargetState::Serving as i32,
                    local_state: LocalTargetState::Uptodate as i32,
                    used_bytes: 3 << 40,
                    disk_index: Some(7),
                    free_bytes: Some(5 << 40),
                    capacity_bytes: Some(8 << 40),
                    admin_offline: false,
                });
            }
        }
        s.version += 1;
        s.version
    };
    let size = c.mgmtd.info().encoded_len();
    assert!(size > 4 << 20, "{size} bytes is not above the default limit");
    c.wait_routing(version).await;
    for s in &c.servers {
        assert_eq!(s.routing().get().info.targets.len(), 3 + 120_000);
    }
    // And the chain still replicates.
    let client = BulkClient::default();
    let chunk = ChunkId::new(InodeId(3), 0);
    client.call(&c.bulk(0), &write(101, 1, chunk, 0, b"big routing"), b"big routing").await.unwrap();
    let (_, data) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(&data[..], b"big routing");
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
