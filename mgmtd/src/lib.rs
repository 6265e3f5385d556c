//! t3fs-mgmtd: the cluster manager (walking-skeleton version).
//!
//! mgmtd owns cluster membership and placement: which nodes exist (registration, heartbeats,
//! liveness), which storage targets they host, which chains those targets form and which chain
//! tables list the chains. Everyone else polls `GetRoutingInfo(known_version)` for a snapshot.
//!
//! - [`config`]: the typed config.
//! - [`keys`]: the KV key schema (`NODE`, `TGIF`, `CHIF`, `CHIT`, `SING...`).
//! - `store`: loading and persisting records; `state`: the in-memory model and its transitions;
//!   `placement`: chain building; [`chain_update`]: the target state machine (pure);
//!   `service`: the gRPC service; `checker`: the periodic failure detection and chain update task.
//!
//! State lives in the KV store and is loaded into memory at start; every routing-visible change
//! is persisted (with a routing-version bump) before it is applied in memory and served.
//!
//! After start, mgmtd bootstraps for `bootstrap_ms`: it collects heartbeats and changes no chain;
//! routing info says `bootstrapping = true` meanwhile. See docs/mgmtd.md.
//!
//! Not yet (issue 3): the leased primary with standbys, admin chain updates (add/remove target,
//! rotate), configs, users and tokens, client sessions, metrics.
pub mod chain_update;
pub mod config;
pub mod keys;

mod checker;
mod placement;
mod service;
mod state;
mod store;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use t3fs_common::proto::{NodeInfo, NodeStatus, NodeType, mgmtd_server::MgmtdServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::service::{Cluster, MgmtdService};
use crate::state::ClusterState;

/// How long [`Server::shutdown`] waits for gRPC connections to drain before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running mgmtd (all tasks spawned on the caller's tokio runtime).
pub struct Server {
    grpc_addr: SocketAddr,
    cancel: CancellationToken,
    cluster: Arc<Cluster>,
    grpc_task: JoinHandle<()>,
    checker_task: JoinHandle<()>,
}

impl Server {
    /// The address the gRPC service is bound to (the actual port when the config said 0; 127.0.0.1
    /// when it listens on an unspecified address).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Stops every task, waits for them, and drops the KV handle, so the same store can be
    /// reopened in this process.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.checker_task.await;
        let mut grpc_task = self.grpc_task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut grpc_task).await.is_err() {
            tracing::warn!("gRPC connections did not drain in {SHUTDOWN_GRACE:?}; aborting them");
            grpc_task.abort();
            let _ = grpc_task.await;
        }
        // Connection tasks may still hold the service; closing drops the KV handle regardless.
        self.cluster.close().await;
        tracing::info!("mgmtd stopped");
    }
}

/// Opens the KV store, loads the cluster state, binds the gRPC listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    let db = t3fs_kv::open(&config.kv).await.map_err(t3fs_common::Error::from).context("opening the kv store")?;
    let loaded = store::load(db.as_ref()).await.context("loading cluster state")?;
    // Every start is a new routing version: clients refetch, whatever they cached before.
    let version = loaded.version + 1;
    store::persist(db.as_ref(), &[store::version_write(version)]).await.context("bumping the routing version")?;
    if loaded.nodes.iter().any(|n| n.node_id == config.node_id) {
        tracing::warn!(node_id = config.node_id, "a stored node record uses this mgmtd's id; it is not served");
    }
    let (nodes, tables) = (loaded.nodes.len(), loaded.tables.len());

    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let grpc_addr = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port()),
        ip if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port()),
        _ => bound,
    };
    let me = NodeInfo {
        node_id: config.node_id,
        node_type: NodeType::Mgmtd as i32,
        status: NodeStatus::PrimaryMgmtd as i32,
        grpc_addr: grpc_addr.to_string(),
        bulk_addr: String::new(),
        hostname: hostname(),
        last_heartbeat_ms: t3fs_common::now_ms(),
    };
    let state = ClusterState::from_loaded(loaded, version, Instant::now());
    let bootstrap = config.bootstrap_period();
    let cluster = Arc::new(Cluster::new(config.token.clone(), me, state, db, bootstrap));

    let cancel = CancellationToken::new();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = MgmtdServer::new(MgmtdService::new(cluster.clone()));
    let stop = cancel.clone().cancelled_owned();
    let grpc_task = tokio::spawn(async move {
        if let Err(e) =
            tonic::transport::Server::builder().add_service(svc).serve_with_incoming_shutdown(incoming, stop).await
        {
            tracing::error!(error = %e, "mgmtd gRPC server failed");
        }
    });
    let checker_task = checker::spawn(
        cluster.clone(),
        Duration::from_millis(config.check_interval_ms),
        Duration::from_millis(config.heartbeat_timeout_ms),
        cancel.clone(),
    );
    tracing::info!(
        node_id = config.node_id,
        %grpc_addr,
        version,
        nodes,
        tables,
        bootstrap_ms = bootstrap.as_millis() as u64,
        "mgmtd serving (bootstrapping)"
    );
    Ok(Server { grpc_addr, cancel, cluster, grpc_task, checker_task })
}

/// Starts mgmtd, serves until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = start(config).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
