//! Registration with mgmtd and the heartbeat loop.
//!
//! At start the server registers (node type META, its actual bound gRPC address), retrying until
//! mgmtd answers or [`REGISTER_TIMEOUT`] passes. Afterwards a task heartbeats every
//! `heartbeat_interval_ms`; on a transport failure it reconnects, and when mgmtd no longer knows
//! the node (NotFound, e.g. after an mgmtd restart on a fresh store) it registers again.
use std::time::Duration;

use t3fs_common::proto::{self, NodeType};
use t3fs_common::routing::{MgmtdClient, connect_mgmtd};
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

    async fn register_once(&self, client: &mut MgmtdClient) -> Result<u64, Error> {
        let req = proto::RegisterNodeReq {
            header: Some(self.header()),
            node_id: self.node_id,
            node_type: NodeType::Meta as i32,
            grpc_addr: self.grpc_addr.clone(),
            bulk_addr: String::new(),
            hostname: hostname(),
        };
        let rsp = client.register_node(req).await.map_err(|st| Error::from_tonic(&st))?;
        Ok(rsp.into_inner().routing_version)
    }

    /// Connects and registers, retrying until success, `timeout` or `cancel`.
    pub async fn register(&self, timeout: Duration, cancel: &CancellationToken) -> Result<MgmtdClient, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let attempt = async {
                let mut client = connect_mgmtd(&self.mgmtd_addr).await?;
                self.register_once(&mut client).await?;
                Ok::<_, Error>(client)
            };
            let err = match attempt.await {
                Ok(client) => {
                    tracing::info!(node_id = self.node_id, addr = %self.grpc_addr, "registered with mgmtd");
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

    /// Heartbeats every `interval` until `cancel` fires.
    pub fn spawn_heartbeat(
        self,
        mut client: Option<MgmtdClient>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                if client.is_none() {
                    match connect_mgmtd(&self.mgmtd_addr).await {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "heartbeat: mgmtd unreachable");
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_mut() else { continue };
                let req = proto::HeartbeatReq {
                    header: Some(self.header()),
                    node_id: self.node_id,
                    node_type: NodeType::Meta as i32,
                    targets: Vec::new(),
                };
                match c.heartbeat(req).await.map_err(|st| Error::from_tonic(&st)) {
                    Ok(_) => {}
                    Err(e) if e.code == StatusCode::NotFound => {
                        tracing::warn!(error = %e, "mgmtd forgot this node; registering again");
                        if let Err(e) = self.register_once(c).await {
                            tracing::warn!(error = %e, "re-registration failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat failed");
                        if e.code == StatusCode::Unavailable {
                            client = None;
                        }
                    }
                }
            }
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
