//! The mgmtd gRPC service and the shared [`Cluster`] handle behind it.
//!
//! [`Cluster`] owns the in-memory [`ClusterState`] and the KV handle under one async mutex, so
//! every mutation is plan -> persist -> apply in order, and memory never disagrees with the store.
//! Routing info is served from memory. The KV handle lives inside the mutex so that
//! [`Cluster::close`] can drop it even while gRPC connection tasks still hold the service: after
//! close, requests fail with Unavailable and the embedded store can be reopened in-process.
//!
//! Every handler checks the cluster token first and runs in a tracing span with the request id.
use std::sync::Arc;
use std::time::{Duration, Instant};

use t3fs_common::proto::{self, NodeInfo, mgmtd_server::Mgmtd};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::Db;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::state::{ClusterState, Delta, TablePlan};
use crate::store;

struct Inner {
    state: ClusterState,
    /// `None` once closed.
    db: Option<Db>,
    /// While `Some`, mgmtd is bootstrapping: it collects heartbeats and changes no chain until
    /// this instant. Cleared by the first check after it (with a routing version bump, so everyone
    /// sees `bootstrapping = false`).
    bootstrap_until: Option<Instant>,
}

/// The cluster state shared by the gRPC service and the checker.
pub struct Cluster {
    token: String,
    /// This mgmtd as it appears in routing info.
    me: NodeInfo,
    inner: Mutex<Inner>,
}

impl Cluster {
    /// `bootstrap`: how long after now no chain may change (see [`crate::Config::bootstrap_period`]).
    pub fn new(token: String, me: NodeInfo, state: ClusterState, db: Db, bootstrap: Duration) -> Self {
        let bootstrap_until = Some(Instant::now() + bootstrap);
        Self { token, me, inner: Mutex::new(Inner { state, db: Some(db), bootstrap_until }) }
    }

    /// Persists `delta` if it is visible (with a version bump), then installs it in memory.
    /// Returns the routing version afterwards.
    async fn commit(inner: &mut Inner, delta: Delta) -> Result<u64, Error> {
        if delta.visible {
            let db = inner.db.as_ref().ok_or_else(|| Error::unavailable("mgmtd is shutting down"))?;
            let version = inner.state.version() + 1;
            store::persist(db.as_ref(), &delta.writes(version)).await?;
            inner.state.apply(delta, Some(version));
        } else {
            inner.state.apply(delta, None);
        }
        Ok(inner.state.version())
    }

    pub async fn register(&self, req: &proto::RegisterNodeReq) -> Result<u64, Error> {
        let mut inner = self.inner.lock().await;
        let delta = inner.state.plan_register(req, self.me.node_id, Instant::now(), t3fs_common::now_ms())?;
        Self::commit(&mut inner, delta).await
    }

    pub async fn heartbeat(&self, req: &proto::HeartbeatReq) -> Result<u64, Error> {
        let mut inner = self.inner.lock().await;
        let delta = inner.state.plan_heartbeat(req, Instant::now(), t3fs_common::now_ms())?;
        let before = inner.state.node(req.node_id).map(|n| n.status);
        let version = Self::commit(&mut inner, delta).await?;
        if before == Some(proto::NodeStatus::HeartbeatFailed as i32) {
            tracing::info!(node = req.node_id, "node is back");
        }
        Ok(version)
    }

    /// Routing info, or `None` when `known_version` is current.
    pub async fn routing_info(&self, known_version: u64) -> Option<proto::RoutingInfo> {
        let inner = self.inner.lock().await;
        if inner.state.version() == known_version {
            return None;
        }
        let mut me = self.me.clone();
        me.last_heartbeat_ms = t3fs_common::now_ms();
        Some(inner.state.routing_info(&me, inner.bootstrap_until.is_some()))
    }

    pub async fn create_chain_table(
        &self,
        table_id: u32,
        replicas: u32,
        desc: &str,
    ) -> Result<proto::ChainTable, Error> {
        let mut inner = self.inner.lock().await;
        let settle = inner.bootstrap_until.is_none();
        match inner.state.plan_create_table(table_id, replicas, desc, settle)? {
            TablePlan::Existing(table) => Ok(table),
            TablePlan::New(delta, table) => {
                Self::commit(&mut inner, delta).await?;
                tracing::info!(table_id, chains = table.chains.len(), replicas, "created chain table");
                Ok(table)
            }
        }
    }

    /// One check: fails nodes unseen for longer than `timeout`, then (unless bootstrapping) runs
    /// the target state machine on every chain. Everything it changes is persisted in one
    /// transaction, with one routing version bump, before memory changes.
    pub async fn check(&self, timeout: Duration) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        let bootstrapping = inner.bootstrap_until.is_some_and(|until| now < until);
        let ending_bootstrap = inner.bootstrap_until.is_some() && !bootstrapping;
        let mut delta = inner.state.plan_check(now, timeout, !bootstrapping);
        // The end of bootstrapping is routing-visible (the flag), so it takes a version too.
        delta.visible |= ending_bootstrap;
        if !delta.visible {
            return Ok(());
        }
        let failed: Vec<u32> = delta.nodes.iter().map(|n| n.node_id).collect();
        let chains: Vec<String> = delta.chains.iter().map(describe_chain).collect();
        let version = Self::commit(&mut inner, delta).await?;
        if ending_bootstrap {
            inner.bootstrap_until = None;
            tracing::info!(version, "bootstrapping done; chains follow the target state machine now");
        }
        if !failed.is_empty() {
            tracing::warn!(nodes = ?failed, version, "heartbeat timeout: nodes marked failed, their targets offline");
        }
        for chain in chains {
            tracing::info!(version, "chain updated: {chain}");
        }
        Ok(())
    }

    /// Drops the KV handle (waiting for any in-flight write). Later mutations fail with Unavailable.
    pub async fn close(&self) {
        self.inner.lock().await.db = None;
    }

    fn authenticate(&self, header: &Option<proto::RequestHeader>) -> Result<(), Error> {
        t3fs_common::auth::check_header(&self.token, header.as_ref())
    }
}

/// `chain 100001 v3: 11 SERVING, 21 SYNCING, 31 OFFLINE` for logs.
fn describe_chain(c: &proto::ChainInfo) -> String {
    let targets: Vec<String> = c
        .targets
        .iter()
        .map(|t| {
            let state = proto::PublicTargetState::try_from(t.public_state)
                .map(|s| s.as_str_name().trim_start_matches("PUBLIC_TARGET_STATE_"))
                .unwrap_or("?");
            format!("{} {state}", t.target_id)
        })
        .collect();
    format!("chain {} v{}: {}", c.chain_id, c.chain_version, targets.join(", "))
}

fn request_id(header: &Option<proto::RequestHeader>) -> &str {
    t3fs_common::auth::request_id(header.as_ref())
}

/// The tonic service: a cheap handle on the shared [`Cluster`].
#[derive(Clone)]
pub struct MgmtdService {
    cluster: Arc<Cluster>,
}

impl MgmtdService {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

/// Runs a handler body in `span`, mapping errors onto gRPC statuses (and logging them there).
async fn handle<T>(span: tracing::Span, body: impl Future<Output = Result<T, Error>>) -> Result<Response<T>, Status> {
    async move {
        match body.await {
            Ok(rsp) => Ok(Response::new(rsp)),
            Err(e) => {
                if e.code == StatusCode::Internal || e.code == StatusCode::Io {
                    tracing::error!(error = %e, "request failed");
                } else {
                    tracing::debug!(error = %e, "request refused");
                }
                Err(e.to_tonic())
            }
        }
    }
    .instrument(span)
    .await
}

#[tonic::async_trait]
impl Mgmtd for MgmtdService {
    async fn register_node(
        &self,
        request: Request<proto::RegisterNodeReq>,
    ) -> Result<Response<proto::RegisterNodeRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("register_node", req = %request_id(&req.header), node = req.node_id);
        handle(span, async {
            self.cluster.authenticate(&req.header)?;
            let routing_version = self.cluster.register(&req).await?;
            tracing::info!(node_type = req.node_type, grpc = %req.grpc_addr, bulk = %req.bulk_addr, "node registered");
            Ok(proto::RegisterNodeRsp { routing_version })
        })
        .await
    }

    async fn heartbeat(&self, request: Request<proto::HeartbeatReq>) -> Result<Response<proto::HeartbeatRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("heartbeat", req = %request_id(&req.header), node = req.node_id);
        handle(span, async {
            self.cluster.authenticate(&req.header)?;
            let routing_version = self.cluster.heartbeat(&req).await?;
            Ok(proto::HeartbeatRsp { routing_version })
        })
        .await
    }

    async fn get_routing_info(
        &self,
        request: Request<proto::GetRoutingInfoReq>,
    ) -> Result<Response<proto::GetRoutingInfoRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("get_routing_info", req = %request_id(&req.header), known = req.known_version);
        handle(span, async {
            self.cluster.authenticate(&req.header)?;
            Ok(proto::GetRoutingInfoRsp { info: self.cluster.routing_info(req.known_version).await })
        })
        .await
    }

    async fn create_chain_table(
        &self,
        request: Request<proto::CreateChainTableReq>,
    ) -> Result<Response<proto::CreateChainTableRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("create_chain_table", req = %request_id(&req.header), table = req.table_id);
        handle(span, async {
            self.cluster.authenticate(&req.header)?;
            let table = self.cluster.create_chain_table(req.table_id, req.replicas, &req.desc).await?;
            Ok(proto::CreateChainTableRsp { table: Some(table) })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_cluster_refuses_writes_but_serves_reads() {
        let me = NodeInfo { node_id: 1, ..Default::default() };
        let cluster =
            Cluster::new(String::new(), me, ClusterState::default(), t3fs_kv::mem::MemKv::new(), Duration::ZERO);
        let req = proto::RegisterNodeReq { node_id: 5, node_type: proto::NodeType::Meta as i32, ..Default::default() };
        assert_eq!(cluster.register(&req).await.unwrap(), 1);
        cluster.close().await;
        assert_eq!(cluster.register(&req).await.unwrap_err().code, StatusCode::Unavailable);
        assert_eq!(cluster.routing_info(0).await.unwrap().nodes.len(), 2);
        assert!(cluster.routing_info(1).await.is_none());
    }
}
