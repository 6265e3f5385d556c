//! Pushed configs on running storage servers (fake mgmtd, see `common`): a config in a heartbeat
//! reply is applied without a restart and its version reported; one the node refuses is not.
use std::time::Duration;

use t3fs_common::proto::{self, NodeType};

mod common;
use common::*;

fn push(c: &Cluster, version: u64, toml: &str) {
    let config = proto::NodeConfig { node_type: NodeType::Storage as i32, version, toml: toml.into() };
    c.mgmtd.0.lock().unwrap().config = Some(config);
}

/// How many heartbeats node `node` sent reporting config version `version`.
fn reports(c: &Cluster, node: u32, version: u64) -> usize {
    c.mgmtd.0.lock().unwrap().heartbeats.iter().filter(|h| h.node_id == node && h.config_version == version).count()
}

/// Polls `done` until it holds (or fails the test after 10 s).
async fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_configs_apply_live_and_bad_ones_do_not() {
    let mut c = Cluster::start().await;
    for s in &c.servers {
        assert_eq!((s.hot_config().version(), s.fence().after()), (0, Duration::from_millis(2500)));
    }

    push(&c, 1, "fence_after_ms = 4000\nheartbeat_interval_ms = 50\nlog = \"info,t3fs_storage=debug\"\n");
    wait("every node applies version 1 and reports it", || {
        c.servers.iter().all(|s| s.hot_config().version() == 1) && (1..=3).all(|n| reports(&c, n, 1) > 0)
    })
    .await;
    for s in &c.servers {
        assert_eq!(s.fence().after(), Duration::from_millis(4000));
        assert_eq!(s.hot_config().current().heartbeat_interval_ms, Some(50));
    }

    // Valid for mgmtd, but with the file's heartbeat interval (100 ms) the fence would be below
    // it: refused on the node, which keeps version 1 and says so in its next heartbeats.
    push(&c, 2, "fence_after_ms = 80\n");
    let before = reports(&c, 1, 1);
    wait("three more heartbeats still reporting version 1", || reports(&c, 1, 1) >= before + 3).await;
    assert_eq!(c.servers[0].hot_config().version(), 1);
    assert_eq!(c.servers[0].fence().after(), Duration::from_millis(4000));
    assert_eq!(reports(&c, 1, 2), 0);

    // An empty config reverts every hot item to the file's values.
    push(&c, 3, "");
    wait("every node applies version 3", || c.servers.iter().all(|s| s.hot_config().version() == 3)).await;
    for s in &c.servers {
        assert_eq!(s.fence().after(), Duration::from_millis(2500));
    }
    c.stop_servers().await;
}
