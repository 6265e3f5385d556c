//! Registration with mgmtd and the heartbeat loop.
//!
//! At start the node registers its actual gRPC and bulk addresses (retrying until mgmtd answers or the
//! configured deadline passes: mgmtd may come up after storage). Every request goes to the primary mgmtd
//! through a [`MgmtdConn`] over the configured address list, which follows a takeover. Then a task sends a heartbeat every
//! interval (or at once when woken, e.g. after a `SyncDone`) with one `LocalTarget` per target: its local
//! state ([`crate::local_state`]), used bytes, the free bytes left for client writes (the file system's
//! free space less the engine's reserve, `crate::engine::space`) and the total bytes of the file system
//! holding its engine (targets reporting the same disk index each report an equal share, so the disk is
//! not counted once per target),
//! and the chain version it knows. mgmtd derives public target
//! states and chain membership from these reports. Every successful reply feeds the node's [`Fence`].
//!
//! Pushed configs: every heartbeat reports the hot config version applied ([`StorageHot`], see
//! `t3fs_common::hot_config`); a reply carrying another version is applied at once (log filter,
//! fence delay; the heartbeat interval from the next wait) and reported by an immediate heartbeat.
//! One that fails to parse, or would leave the fence delay at or below the heartbeat interval
//! (hot items combined with the file's values), is logged and not applied.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use t3fs_common::hot_config::{HotState, StorageHot};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, NodeType};
use t3fs_common::routing::RoutingCache;
use t3fs_common::{Error, StatusCode, TargetId};
use tokio_util::sync::CancellationToken;

use crate::chunk_store::ChunkStore;
use crate::local_state::{Fence, TargetStates};

/// What this node tells mgmtd about itself.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub node_id: u32,
    pub token: String,
    pub grpc_addr: String,
    pub bulk_addr: String,
    pub hostname: String,
}

impl NodeIdentity {
    fn header(&self) -> proto::RequestHeader {
        proto::RequestHeader {
            request_id: t3fs_common::new_request_id(),
            token: self.token.clone(),
            ..Default::default()
        }
    }
}

/// Registers with the primary mgmtd (following it through `mgmtd`), retrying transient failures until
/// `timeout`; fails at once on a permanent error (bad token, bad request).
pub async fn register(mgmtd: &MgmtdConn, me: &NodeIdentity, timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    let addrs = mgmtd.addrs().join(",");
    loop {
        let attempt = mgmtd.call(|mut client| {
            let req = proto::RegisterNodeReq {
                header: Some(me.header()),
                node_id: me.node_id,
                node_type: NodeType::Storage as i32,
                grpc_addr: me.grpc_addr.clone(),
                bulk_addr: me.bulk_addr.clone(),
                hostname: me.hostname.clone(),
            };
            async move { client.register_node(req).await }
        });
        let err = match attempt.await {
            Ok(rsp) => {
                let version = rsp.into_inner().routing_version;
                tracing::info!(node_id = me.node_id, routing_version = version, mgmtd = %mgmtd.current(), "registered with mgmtd");
                return Ok(());
            }
            Err(e) => e,
        };
        let transient = err.is_retryable() || matches!(err.code, StatusCode::Internal | StatusCode::Io);
        if !transient {
            return Err(Error::new(err.code, format!("registering with mgmtd at {addrs}: {}", err.message)));
        }
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(Error::new(
                StatusCode::Unavailable,
                format!("registering with mgmtd at {addrs}: gave up after {timeout:?}: {err}"),
            ));
        }
        tracing::debug!(error = %err, "mgmtd not ready, retrying registration");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// The per-target part of a heartbeat.
pub fn local_targets(
    stores: &HashMap<TargetId, ChunkStore>,
    disks: &HashMap<TargetId, u32>,
    routing: &RoutingCache,
    states: &TargetStates,
) -> Vec<proto::LocalTarget> {
    let r = routing.get();
    // Targets on one disk share its space: each reports an equal share, so sums over targets (meta's
    // statfs sums chains) count the disk once.
    let mut per_disk: HashMap<u32, u64> = HashMap::new();
    for id in stores.keys() {
        if let Some(d) = disks.get(id) {
            *per_disk.entry(*d).or_default() += 1;
        }
    }
    let mut out: Vec<proto::LocalTarget> = stores
        .iter()
        .map(|(id, store)| {
            let (mut local_state, chain_version) = states.observe(*id, &r);
            if store.failed() {
                // Its disk failed (a poisoned metadata store, a data write error): out of the chain
                // until the process restarts.
                local_state = proto::LocalTargetState::Offline;
            }
            let share = disks.get(id).and_then(|d| per_disk.get(d)).copied().unwrap_or(1).max(1);
            let space = store.engine().client_space().map(|(free, total)| (free / share, total / share));
            proto::LocalTarget {
                target_id: id.0,
                local_state: local_state as i32,
                used_bytes: store.used_bytes(),
                chain_version,
                disk_index: disks.get(id).copied(),
                free_bytes: space.map(|(free, _)| free),
                capacity_bytes: space.map(|(_, total)| total),
            }
        })
        .collect();
    out.sort_by_key(|t| t.target_id);
    out
}

/// What the heartbeat loop reads and feeds.
pub struct HeartbeatCtx {
    pub stores: Arc<HashMap<TargetId, ChunkStore>>,
    /// Disk index of each target that has one configured.
    pub disks: HashMap<TargetId, u32>,
    pub routing: RoutingCache,
    pub states: Arc<TargetStates>,
    pub fence: Arc<Fence>,
    /// The pushed config applied (see [`hot_state`]).
    pub hot: Arc<HotState<StorageHot>>,
}

/// The effective heartbeat interval and fence delay: hot items over the file's values.
fn effective(hot: &StorageHot, interval: Duration, fence_after: Duration) -> (Duration, Duration) {
    (
        hot.heartbeat_interval_ms.map_or(interval, Duration::from_millis),
        hot.fence_after_ms.map_or(fence_after, Duration::from_millis),
    )
}

/// The hot config state of a storage node whose config file says `interval` (heartbeats) and
/// `fence_after`: a pushed config must keep the effective fence delay above the effective
/// heartbeat interval; applying one sets `fence`'s delay.
pub fn hot_state(interval: Duration, fence_after: Duration, fence: Arc<Fence>) -> HotState<StorageHot> {
    HotState::new(
        Box::new(move |hot| {
            let (hb, fence_after) = effective(hot, interval, fence_after);
            if fence_after <= hb {
                return Err(Error::invalid(format!(
                    "fence_after_ms {} must be > heartbeat_interval_ms {} (hot items over the file's values)",
                    fence_after.as_millis(),
                    hb.as_millis()
                )));
            }
            Ok(())
        }),
        Box::new(move |hot| fence.set_after(effective(hot, interval, fence_after).1)),
    )
}

/// Sends a heartbeat every `interval` (a hot item may override it) (or when `states.heartbeat_now` is notified) until `cancel` fires,
/// to the primary mgmtd (`mgmtd` follows it across takeovers). Failures are logged; only an answer from
/// the primary feeds the fence.
pub fn spawn_heartbeats(
    mgmtd: MgmtdConn,
    me: NodeIdentity,
    ctx: HeartbeatCtx,
    interval: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let HeartbeatCtx { stores, disks, routing, states, fence, hot } = ctx;
    tokio::spawn(async move {
        loop {
            let beat = async {
                let req = proto::HeartbeatReq {
                    header: Some(me.header()),
                    node_id: me.node_id,
                    node_type: NodeType::Storage as i32,
                    targets: local_targets(&stores, &disks, &routing, &states),
                    config_version: hot.version(),
                };
                let sent = mgmtd.call(|mut c| {
                    let req = req.clone();
                    async move { c.heartbeat(req).await }
                });
                match sent.await {
                    Ok(rsp) => {
                        fence.heard_from_mgmtd();
                        let rsp = rsp.into_inner();
                        fence.set_mgmtd_timeout(rsp.heartbeat_timeout_ms);
                        hot.offer(rsp.config.as_ref())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat failed");
                        false
                    }
                }
            };
            // A slow or unreachable mgmtd must not delay shutdown.
            let applied = tokio::select! {
                _ = cancel.cancelled() => return,
                applied = beat => applied,
            };
            if applied {
                // Report the new config version at once.
                continue;
            }
            let interval = hot.current().heartbeat_interval_ms.map_or(interval, Duration::from_millis);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = states.heartbeat_now.notified() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3fs_common::space::disk_space;

    #[test]
    fn targets_on_one_disk_report_a_share_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let targets = [1u64, 2, 3].map(|id| crate::TargetConfig {
            id,
            path: dir.path().join(format!("t{id}")),
            disk: Some(id as u32 / 3),
        });
        let mut config = crate::Config::new(1, "m", targets.to_vec());
        config.disks = vec![crate::DiskConfig { index: 0, path: dir.path().join("disk0") }];
        let opened = crate::disk::open_stores(&config, crate::engine::EngineOptions::default()).unwrap();
        let stores: HashMap<TargetId, ChunkStore> = opened.into_iter().map(|(id, s, _)| (id, s)).collect();
        let disks = targets.iter().map(|t| (TargetId(t.id), t.disk.unwrap())).collect();
        let states = TargetStates::new(stores.keys().copied());
        let report = local_targets(&stores, &disks, &RoutingCache::new(), &states);
        let (_, total) = disk_space(dir.path()).unwrap();
        let caps: Vec<u64> = report.iter().map(|t| t.capacity_bytes.unwrap()).collect();
        // Targets 1 and 2 share disk 0 (its engine), target 3 is alone on disk 1.
        assert_eq!(caps, vec![total / 2, total / 2, total]);
        stores.values().for_each(ChunkStore::close);
    }
}
