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
//! - [`lease`]: the primary lease rules and transactions; `election`: the lease task.
//! - [`metrics`]: the Prometheus metrics, served on `GET /metrics` when `metrics_listen` is set.
//!
//! Several mgmtd may share one KV store: the one holding the lease is primary and serves, the
//! others are standbys answering `NotPrimary` with the primary's address (clients follow it with
//! `t3fs_common::mgmtd_conn::MgmtdConn`). State lives in the KV store and is loaded into memory
//! whenever this mgmtd becomes primary; every routing-visible change is persisted (with a
//! routing-version bump, under the lease) before it is applied in memory and served.
//!
//! After becoming primary, mgmtd bootstraps for `bootstrap_ms`: it collects heartbeats and changes
//! no chain; routing info says `bootstrapping = true` meanwhile. See docs/mgmtd.md.
//!
//! Configs per node type are stored here and pushed with heartbeat replies (`configs.rs`, a child
//! of `service`; see docs/mgmtd.md "Configs"). Users, tokens and client sessions: `accounts`,
//! `accounts_service`. Admin operations: chains (`chain_admin`, `layout_admin`), nodes
//! (`node_admin`); every mgmtd announces itself (`peers`) so the primary lists its standbys in
//! routing info.
mod accounts;
mod accounts_service;
pub mod chain_update;
pub mod config;
pub mod keys;
pub mod lease;
pub mod metrics;

mod checker;
mod election;
mod peers;
mod placement;
mod service;
mod state;
mod store;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use t3fs_common::proto::{NodeInfo, NodeStatus, NodeType, mgmtd_server::MgmtdServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::service::{Cluster, MgmtdService, Role};

/// How long [`Server::shutdown`] waits for gRPC connections to drain before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running mgmtd (all tasks spawned on the caller's tokio runtime).
pub struct Server {
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    metrics_task: Option<JoinHandle<()>>,
    cancel: CancellationToken,
    cluster: Arc<Cluster>,
    grpc_task: JoinHandle<()>,
    checker_task: JoinHandle<()>,
    lease_task: JoinHandle<()>,
}

impl Server {
    /// The address the gRPC service is bound to (the actual port when the config said 0; 127.0.0.1
    /// when it listens on an unspecified address).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The actual address of the Prometheus endpoint, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Whether this mgmtd is the primary now (and trusts its lease).
    pub fn is_primary(&self) -> bool {
        self.cluster.ensure_primary().is_ok()
    }

    /// Stops every task, waits for them, hands the primary lease over (ends it now, so a standby
    /// takes over at its next lease round) and drops the KV handle, so the same store can be
    /// reopened in this process.
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops like a crash as far as the lease is concerned: every task stops and the KV handle is
    /// dropped, but the lease is not handed over, so standbys wait for it to expire. For failover
    /// tests.
    pub async fn kill(self) {
        self.stop(false).await;
    }

    async fn stop(self, hand_over: bool) {
        self.cancel.cancel();
        let _ = self.checker_task.await;
        let _ = self.lease_task.await;
        if let Some(task) = self.metrics_task {
            let _ = task.await;
        }
        let mut grpc_task = self.grpc_task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut grpc_task).await.is_err() {
            tracing::warn!("gRPC connections did not drain in {SHUTDOWN_GRACE:?}; aborting them");
            grpc_task.abort();
            let _ = grpc_task.await;
        }
        if let Some((db, term)) = self.cluster.resign().await
            && hand_over
        {
            match lease::release(db.as_ref(), self.cluster.me().node_id, term).await {
                Ok(true) => tracing::info!(term, "primary lease handed over"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not hand the primary lease over; it expires on its own"),
            }
        }
        // Connection tasks may still hold the service; closing drops the KV handle regardless.
        self.cluster.close().await;
        tracing::info!("mgmtd stopped");
    }
}

/// Opens the KV store and starts mgmtd on it (see [`start_with_db`]).
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    let db = t3fs_kv::open(&config.kv).await.map_err(t3fs_common::Error::from).context("opening the kv store")?;
    start_with_db(config, db).await
}

/// Starts mgmtd on an open KV store (`config.kv` is not used): binds the gRPC listener, runs the
/// first lease round (so when the lease is free, the returned server is already primary, with the
/// state loaded) and starts serving, the lease task and the checker. Several mgmtd sharing one
/// store (tests pass one `MemKv` to each) elect one primary; the others are standbys.
pub async fn start_with_db(config: Config, db: t3fs_kv::Db) -> anyhow::Result<Server> {
    config.validate()?;
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
        grpc_addr: config.advertise.clone().unwrap_or_else(|| grpc_addr.to_string()),
        bulk_addr: String::new(),
        hostname: hostname(),
        last_heartbeat_ms: t3fs_common::now_ms(),
        config_version: 0,
        tags: Vec::new(),
    };
    let registry = t3fs_common::metrics::new_registry();
    let metrics = Arc::new(metrics::MgmtdMetrics::register(&mut registry.lock().unwrap_or_else(|p| p.into_inner())));
    let cluster = Arc::new(
        Cluster::new(config.token.clone(), me, db.clone(), config.bootstrap_period())
            .with_metrics(metrics)
            .with_session_timeout(Duration::from_millis(config.client_session_timeout_ms))
            .with_heartbeat_timeout(Duration::from_millis(config.heartbeat_timeout_ms)),
    );
    let timing = election::Timing {
        length: Duration::from_millis(config.lease_length_ms),
        interval: Duration::from_millis(config.extend_lease_interval_ms),
        margin: Duration::from_millis(config.lease_margin_ms),
    };
    let cancel = CancellationToken::new();
    let (metrics_addr, metrics_task) = match &config.metrics_listen {
        Some(listen) => {
            let (addr, task) = t3fs_common::metrics::serve(listen, registry, cancel.clone())
                .await
                .context("starting the metrics endpoint")?;
            tracing::info!(%addr, "mgmtd metrics endpoint listening");
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    if let Err(e) = election::step(&cluster, &db, timing).await {
        cancel.cancel();
        return Err(anyhow::Error::new(e).context("first lease round"));
    }

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
    let lease_task = election::spawn(cluster.clone(), db, timing, cancel.clone());
    let checker_task = checker::spawn(
        cluster.clone(),
        Duration::from_millis(config.check_interval_ms),
        Duration::from_millis(config.heartbeat_timeout_ms),
        cancel.clone(),
    );
    let role = match cluster.role() {
        Role::Primary { .. } => "primary (bootstrapping)".to_string(),
        Role::Standby { primary } => format!("standby (primary: {})", primary.as_deref().unwrap_or("unknown")),
    };
    tracing::info!(node_id = config.node_id, %grpc_addr, "mgmtd serving as {role}");
    Ok(Server { grpc_addr, metrics_addr, metrics_task, cancel, cluster, grpc_task, checker_task, lease_task })
}

/// Starts mgmtd, serves until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = start(config).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}

fn hostname() -> String {
    t3fs_common::config::hostname()
}
