//! Registration with mgmtd and the heartbeat loop.
//!
//! At start the server registers (node type META, its actual bound gRPC address), retrying until
//! mgmtd answers or [`REGISTER_TIMEOUT`] passes. Afterwards a task heartbeats every
//! `heartbeat_interval_ms`; on a transport failure it reconnects, and when mgmtd no longer knows
//! the node (NotFound, e.g. after an mgmtd restart on a fresh store) it registers again.
//!
//! Pushed configs ([`MetaHot`], `t3fs_common::hot_config`): every heartbeat reports the version
//! applied; a reply carrying another version is applied at once (log filter, idempotency TTL; the
//! heartbeat and cleanup intervals from their next wait) and reported by an immediate heartbeat.
//! One that fails to parse is logged and not applied.
//!
//! `mgmtd_addr` may list several mgmtd (comma-separated); every request goes to the primary
//! through a [`MgmtdConn`], which follows a takeover.
use std::sync::Arc;
use std::time::Duration;

use t3fs_common::hot_config::{HotState, MetaHot};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::{self, NodeType};
use t3fs_common::routing::MgmtdClient;
use t3fs_common::{Error, StatusCode, new_request_id};
use tokio_util::sync::CancellationToken;

/// How long `start` keeps trying to reach mgmtd.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Who this node is, as mgmtd sees it.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub node_id: u32,
    pub grpc_addr: String,
    pub mgmtd_addr: String,
    pub token: String,
}

impl NodeIdentity {
    fn header(&self) -> proto::RequestHeader {
        proto::RequestHeader { request_id: new_request_id(), token: self.token.clone(), ..Default::default() }
    }

    async fn register_once(&self, mgmtd: &MgmtdConn) -> Result<u64, Error> {
        let rsp = mgmtd
            .call(|mut client| {
                let req = proto::RegisterNodeReq {
                    header: Some(self.header()),
                    node_id: self.node_id,
                    node_type: NodeType::Meta as i32,
                    grpc_addr: self.grpc_addr.clone(),
                    bulk_addr: String::new(),
                    hostname: hostname(),
                };
                async move { client.register_node(req).await }
            })
            .await?;
        Ok(rsp.into_inner().routing_version)
    }

    /// Registers with the primary mgmtd, retrying until success, `timeout` or `cancel`. Returns a
    /// client connected to the primary that answered.
    pub async fn register(&self, timeout: Duration, cancel: &CancellationToken) -> Result<MgmtdClient, Error> {
        let mgmtd = MgmtdConn::new(&self.mgmtd_addr)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let attempt = async {
                self.register_once(&mgmtd).await?;
                mgmtd.client().await.map(|(_, client)| client)
            };
            let err = match attempt.await {
                Ok(client) => {
                    tracing::info!(node_id = self.node_id, addr = %self.grpc_addr, mgmtd = %mgmtd.current(), "registered with mgmtd");
                    return Ok(client);
                }
                Err(e) => e,
            };
            // Only transport-level trouble is worth waiting out; a refusal (bad token, id clash) is final.
            if !err.is_retryable() || tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    err.code,
                    format!("registering with mgmtd {}: {}", self.mgmtd_addr, err.message),
                ));
            }
            tracing::debug!(error = %err, "mgmtd not reachable yet; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::unavailable("cancelled while registering with mgmtd")),
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }

    /// Heartbeats the primary mgmtd every `interval` (unless `hot` overrides it) until `cancel`
    /// fires, applying pushed configs to `hot`. (`_client`, from [`Self::register`], is not
    /// reused: the loop follows the primary through its own [`MgmtdConn`].)
    pub fn spawn_heartbeat(
        self,
        _client: Option<MgmtdClient>,
        interval: Duration,
        hot: Arc<HotState<MetaHot>>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mgmtd = match MgmtdConn::new(&self.mgmtd_addr) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "heartbeat: bad mgmtd address list; not heartbeating");
                    return;
                }
            };
            let mut applied = false;
            loop {
                // Right after applying a config, report its version at once.
                let wait = hot.current().heartbeat_interval_ms.map_or(interval, Duration::from_millis);
                if applied {
                    if cancel.is_cancelled() {
                        return;
                    }
                } else {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                let sent = mgmtd.call(|mut c| {
                    let req = proto::HeartbeatReq {
                        header: Some(self.header()),
                        node_id: self.node_id,
                        node_type: NodeType::Meta as i32,
                        targets: Vec::new(),
                        config_version: hot.version(),
                    };
                    async move { c.heartbeat(req).await }
                });
                applied = false;
                match sent.await {
                    Ok(rsp) => applied = hot.offer(rsp.into_inner().config.as_ref()),
                    Err(e) if e.code == StatusCode::NotFound => {
                        tracing::warn!(error = %e, "mgmtd forgot this node; registering again");
                        if let Err(e) = self.register_once(&mgmtd).await {
                            tracing::warn!(error = %e, "re-registration failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    }
}

/// The hot config state of a meta server: applying a config sets `store`'s idempotency TTL (the
/// file's value when the item is unset, as `store` was opened with it).
pub fn hot_state(store: Arc<crate::MetaStore>) -> HotState<MetaHot> {
    let file_ttl = store.idempotency_ttl();
    HotState::new(
        Box::new(|_| Ok(())),
        Box::new(move |hot: &MetaHot| {
            store.set_idempotency_ttl(hot.idempotency_ttl_ms.map_or(file_ttl, Duration::from_millis));
        }),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
