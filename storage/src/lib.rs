//! t3fs-storage: the storage daemon (skeleton). One process serves several *targets* (replica slots,
//! one directory each); each target is a member of one replication chain.
//!
//! - [`chunk_store`]: per-target chunk metadata in fjall over the [`engine`] (size-class slots in large
//!   data files); copy-on-write, crash-safe, two-phase (pending/committed) updates, CRC32C verified on
//!   every read.
//! - [`engine`]: the size-class chunk engine: group files of fixed-size slots, derived allocation bitmaps,
//!   reader pins that defer frees, O_DIRECT I/O.
//! - [`disk`]: disks whose engine the targets on them share, and opening every target.
//! - [`service`]: the bulk-plane handler: chunk reads and two-phase CRAQ chain-replicated updates.
//! - [`admin`]: the `StorageAdmin` gRPC service (chunk metadata queries, `SyncDone`).
//! - [`heartbeat`]: registration with mgmtd and the heartbeat loop.
//! - [`local_state`]: the local target states reported in heartbeats, and fencing.
//! - [`sync`]: the resync worker that brings SYNCING successors up to date.
//! - [`config`]: the typed TOML config.
//! - [`metrics`]: the Prometheus metrics, served on `GET /metrics` when `metrics_listen` is set.
//!
//! [`start`] opens every target, binds both listeners, registers the actual addresses with mgmtd and
//! starts the heartbeat, routing-poll and resync tasks; [`Server::shutdown`] stops everything and closes the
//! targets so the same directories can be reopened in the same process.
pub mod admin;
pub mod chunk_store;
pub mod config;
pub mod disk;
pub mod engine;
pub mod heartbeat;
pub mod local_state;
pub mod metrics;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod service;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use t3fs_common::TargetId;
use t3fs_common::hot_config::{HotState, StorageHot};
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto::storage_admin_server::StorageAdminServer;
use t3fs_common::routing::RoutingCache;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use chunk_store::{ChunkMeta, ChunkStore};
pub use config::{Config, DiskConfig, TargetConfig};
pub use local_state::{Fence, TargetStates};

/// How long `shutdown` waits for a task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running storage daemon (all tasks run on the caller's tokio runtime). Dropping it without
/// [`Server::shutdown`] leaves the tasks running until the runtime ends.
pub struct Server {
    node_id: u32,
    grpc_addr: SocketAddr,
    bulk_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stores: Arc<HashMap<TargetId, ChunkStore>>,
    routing: RoutingCache,
    states: Arc<TargetStates>,
    fence: Arc<Fence>,
    hot: Arc<HotState<StorageHot>>,
}

impl Server {
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// Actual address of the `StorageAdmin` gRPC service.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Actual address of the bulk data plane.
    pub fn bulk_addr(&self) -> SocketAddr {
        self.bulk_addr
    }

    /// Actual address of the Prometheus endpoint, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This node's routing cache (refreshed from mgmtd every `routing_refresh_ms`).
    pub fn routing(&self) -> &RoutingCache {
        &self.routing
    }

    /// The local states this node reports for its targets.
    pub fn target_states(&self) -> &TargetStates {
        &self.states
    }

    /// The pushed (hot) config this node has applied, and its version.
    pub fn hot_config(&self) -> &HotState<StorageHot> {
        &self.hot
    }

    /// The fencing rule in force (its delay follows pushed configs).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The chunk store of a local target.
    pub fn store(&self, target: TargetId) -> Option<&ChunkStore> {
        self.stores.get(&target)
    }

    /// Stops every task, waits for them, and closes the targets' metadata stores (releasing their locks).
    pub async fn shutdown(self) {
        stop(self.cancel, self.tasks, self.stores).await;
        tracing::info!(node_id = self.node_id, "storage server stopped");
    }
}

async fn stop(cancel: CancellationToken, tasks: Vec<JoinHandle<()>>, stores: Arc<HashMap<TargetId, ChunkStore>>) {
    cancel.cancel();
    for mut t in tasks {
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
            tracing::warn!("storage task did not stop in time; aborting it");
            t.abort();
            let _ = t.await;
        }
    }
    let closed = tokio::task::spawn_blocking(move || stores.values().for_each(ChunkStore::close)).await;
    if let Err(e) = closed {
        tracing::error!(error = %e, "closing targets failed");
    }
}

/// Runs every engine's trim (`Engine::trim`: free slots punched out) every `interval`.
fn spawn_trim(
    stores: &Arc<HashMap<TargetId, ChunkStore>>,
    interval: Duration,
    metrics: Arc<metrics::StorageMetrics>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let mut engines: Vec<Arc<engine::Engine>> = Vec::new();
    for s in stores.values() {
        if !engines.iter().any(|e| Arc::ptr_eq(e, s.engine())) {
            engines.push(s.engine().clone());
        }
    }
    let engines = Arc::new(engines);
    t3fs_common::periodic::spawn_every(
        t3fs_common::periodic::First::AfterInterval,
        move || interval,
        cancel,
        move || {
            let (engines, metrics) = (engines.clone(), metrics.clone());
            async move {
                let trimmed = tokio::task::spawn_blocking(move || {
                    engines.iter().map(|e| e.trim(engine::TRIM_MAX_SLOTS)).sum::<u64>()
                })
                .await
                .unwrap_or(0);
                metrics.trimmed_bytes.inc_by(trimmed);
                if trimmed > 0 {
                    tracing::debug!(trimmed, "free chunk slots given back to the file system");
                }
            }
        },
    )
}

/// The address to register: the bound one, with an unspecified IP replaced by loopback (skeleton).
fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
    } else {
        addr.to_string()
    }
}

fn hostname() -> String {
    t3fs_common::config::hostname()
}

/// Opens the targets, binds, starts serving, registers with mgmtd and starts the background tasks.
/// Returns once registered and listening.
/// The bulk client for talking to peers: RDMA when configured and available, else TCP.
fn bulk_client(config: &Config) -> t3fs_common::bulk::BulkClient {
    let prefs = t3fs_common::bulk::TransportPrefs { rdma: config.bulk_rdma, ..Default::default() };
    t3fs_common::bulk::BulkClient::choose(&prefs)
}

pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    let options = engine::EngineOptions {
        preallocate: config.preallocate,
        direct_io: config.direct_io,
        reserved_bytes: config.reserved_space_bytes,
    };
    let to_open = config.clone();
    let stores = tokio::task::spawn_blocking(move || {
        let mut stores = HashMap::new();
        for (id, store, report) in disk::open_stores(&to_open, options)? {
            tracing::info!(
                target_id = id.0,
                chunks = report.live_chunks,
                pending = report.pending,
                migrated = report.migrated,
                damaged = report.damaged.len(),
                engine = %store.engine().dir().display(),
                "target opened"
            );
            stores.insert(id, store);
        }
        Ok::<_, anyhow::Error>(stores)
    })
    .await
    .context("opening targets")??;
    let stores = Arc::new(stores);
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    match serve_and_register(&config, &stores, &cancel, &mut tasks).await {
        Ok(server) => Ok(server),
        Err(e) => {
            stop(cancel, tasks, stores).await;
            Err(e)
        }
    }
}

async fn serve_and_register(
    config: &Config,
    stores: &Arc<HashMap<TargetId, ChunkStore>>,
    cancel: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Server> {
    let mgmtd = MgmtdConn::new(&config.mgmtd_addr).context("mgmtd_addr")?;
    let routing = RoutingCache::new();
    let states = Arc::new(TargetStates::new(stores.keys().copied()));
    // Starts counting now; registration below is the first answer from mgmtd.
    let fence = Arc::new(Fence::new(Duration::from_millis(config.fence_after_ms)));
    let hot = Arc::new(heartbeat::hot_state(
        Duration::from_millis(config.heartbeat_interval_ms),
        Duration::from_millis(config.fence_after_ms),
        fence.clone(),
    ));
    let grpc = TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let bulk =
        TcpListener::bind(&config.bulk_listen).await.with_context(|| format!("binding {}", config.bulk_listen))?;
    let (grpc_addr, bulk_addr) = (grpc.local_addr()?, bulk.local_addr()?);
    let registry = t3fs_common::metrics::new_registry();
    let metrics = Arc::new(metrics::StorageMetrics::register(
        &mut registry.lock().unwrap_or_else(|p| p.into_inner()),
        stores.clone(),
        fence.clone(),
    ));
    let metrics_addr = match &config.metrics_listen {
        Some(listen) => {
            let (addr, task) = t3fs_common::metrics::serve(listen, registry, cancel.clone())
                .await
                .context("starting the metrics endpoint")?;
            tasks.push(task);
            tracing::info!(%addr, "storage metrics endpoint listening");
            Some(addr)
        }
        None => None,
    };

    // Users' tokens, from mgmtd's user table (fetched now and polled with routing below).
    let users = t3fs_common::users::UserCache::new(mgmtd.clone(), config.token.clone());
    let handler = Arc::new(
        service::StorageService::new(config.token.clone(), stores.clone(), routing.clone(), fence.clone())
            .with_peers(bulk_client(config))
            .with_metrics(metrics.clone())
            .with_users(users.clone()),
    );
    // Always running: a pushed config may start (or pause) it whatever the file says.
    let (scrub_hot, file_rate) = (hot.clone(), config.scrub_mib_per_sec);
    let pace = service::scrub::ScrubPace {
        rate: Arc::new(move || scrub_hot.current().scrub_mib_per_sec.unwrap_or(file_rate).saturating_mul(1 << 20)),
        pause: Duration::from_millis(config.scrub_pause_ms),
    };
    let mut targets: Vec<TargetId> = stores.keys().copied().collect();
    targets.sort_unstable();
    tasks.push(service::scrub::spawn_scrubber(handler.clone(), targets, pace, cancel.clone()));
    tasks.push(tokio::spawn(t3fs_common::bulk::serve(bulk, handler, cancel.clone())));
    let sync_board = Arc::new(sync::progress::SyncBoard::default());
    let admin = StorageAdminServer::new(admin::AdminService::new(
        config.token.clone(),
        stores.clone(),
        routing.clone(),
        states.clone(),
        mgmtd.clone(),
        sync_board.clone(),
    ));
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let shutdown = cancel.clone().cancelled_owned();
    tasks.push(tokio::spawn(async move {
        let served =
            tonic::transport::Server::builder().add_service(admin).serve_with_incoming_shutdown(incoming, shutdown);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "storage admin gRPC server failed");
        }
    }));

    let me = heartbeat::NodeIdentity {
        node_id: config.node_id,
        token: config.token.clone(),
        grpc_addr: config.advertise.clone().unwrap_or_else(|| advertised(grpc_addr)),
        bulk_addr: config.bulk_advertise.clone().unwrap_or_else(|| advertised(bulk_addr)),
        hostname: hostname(),
    };
    let register_timeout = Duration::from_millis(config.register_timeout_ms);
    heartbeat::register(&mgmtd, &me, register_timeout).await?;
    fence.heard_from_mgmtd();
    // Best effort: start with routing info so the first requests need not wait for the poller.
    if let Err(e) = routing.refresh_via(&mgmtd, &config.token).await {
        tracing::debug!(error = %e, "initial routing refresh failed");
    }
    tasks.push(routing.spawn_poller(
        config.mgmtd_addr.clone(),
        config.token.clone(),
        Duration::from_millis(config.routing_refresh_ms),
        cancel.clone(),
    ));
    tasks.push(users.spawn_poller(Duration::from_millis(config.routing_refresh_ms), cancel.clone()));
    if config.trim_interval_ms > 0 {
        tasks.push(spawn_trim(stores, Duration::from_millis(config.trim_interval_ms), metrics.clone(), cancel.clone()));
    }
    tasks.push(heartbeat::spawn_heartbeats(
        mgmtd,
        me,
        heartbeat::HeartbeatCtx {
            stores: stores.clone(),
            disks: config.targets.iter().filter_map(|t| Some((TargetId(t.id), t.disk?))).collect(),
            routing: routing.clone(),
            states: states.clone(),
            fence: fence.clone(),
            hot: hot.clone(),
        },
        Duration::from_millis(config.heartbeat_interval_ms),
        cancel.clone(),
    ));
    tasks.push(sync::spawn_sync_worker(
        sync::SyncCtx {
            token: config.token.clone(),
            stores: stores.clone(),
            routing: routing.clone(),
            fence: fence.clone(),
            peers: bulk_client(config),
            metrics,
            board: sync_board,
        },
        cancel.clone(),
    ));
    tracing::info!(node_id = config.node_id, %grpc_addr, %bulk_addr, targets = stores.len(), "storage server started");
    Ok(Server {
        node_id: config.node_id,
        grpc_addr,
        bulk_addr,
        metrics_addr,
        cancel: cancel.clone(),
        tasks: std::mem::take(tasks),
        stores: stores.clone(),
        routing,
        states,
        fence,
        hot,
    })
}

/// `start`, then wait for `shutdown` to fire, then [`Server::shutdown`]. What `t3fs storage --config F` runs.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = start(config).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}
