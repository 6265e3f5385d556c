//! t3fs-meta: the stateless metadata service.
//!
//! Inodes and dentries live in the transactional KV store ([`keys`] documents the schema); the
//! namespace logic ([`namespace::MetaStore`]) is plain async functions over the KV traits, and the
//! gRPC service ([`service::MetaService`]) is a thin adapter over it. Any number of meta servers
//! may share one store: all state is in the KV store, every operation is one transaction.
//!
//! A running server ([`start`]) binds its gRPC port, opens the KV store (creating the root
//! directory if missing), registers with mgmtd (node type META, the actual bound address),
//! heartbeats, and polls routing info (new files get their layout from the chain table in it).
//! With `metrics_listen` set it also serves Prometheus metrics ([`metrics`]) on `GET /metrics`.
//! Configs mgmtd pushes with heartbeat replies ([`MetaHot`]) apply without a restart
//! ([`mgmtd_link`]).
pub mod alloc;
pub mod config;
pub mod gc;
pub mod idem;
pub mod keys;
pub mod length;
pub mod lock_table;
pub mod metrics;
pub mod mgmtd_link;
pub mod namespace;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use t3fs_common::hot_config::{HotState, MetaHot};
use t3fs_common::routing::RoutingCache;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use namespace::{
    Caller, MetaStore, OpenOptions, Placement, ReadDir, RenameFlags, RootAttrs, SetAttr, StatFs, XattrFlags,
};
pub use service::MetaService;

/// How long `shutdown` waits for a task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often meta takes the whole routing info, for the free space statfs reports (a heartbeat
/// changes it without a new routing version).
const SPACE_REFRESH: Duration = Duration::from_secs(2);

/// A running meta server (all tasks on the caller's tokio runtime).
pub struct Server {
    node_id: u32,
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<MetaStore>,
    routing: RoutingCache,
    hot: Arc<HotState<MetaHot>>,
    metrics: Arc<metrics::MetaMetrics>,
}

impl Server {
    /// The node id this server registered with.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The actual bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The actual bound address of the Prometheus endpoint, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The namespace this server serves (for in-process tools and tests).
    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }

    /// The pushed (hot) config this server has applied, and its version.
    pub fn hot_config(&self) -> &HotState<MetaHot> {
        &self.hot
    }

    /// This server's metric handles (what `metrics_listen` serves).
    pub fn metrics(&self) -> &Arc<metrics::MetaMetrics> {
        &self.metrics
    }

    /// The routing cache the server keeps fresh.
    pub fn routing(&self) -> &RoutingCache {
        &self.routing
    }

    /// Stops every task, waits for them, and drops the KV handle (so an embedded store can be
    /// reopened in this process once no other clone of [`Server::store`] is alive).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for mut task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                tracing::warn!("meta task did not stop in time; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        drop(self.store);
        tracing::info!("meta server stopped");
    }
}

/// The address to register: the bound one, with an unspecified host replaced by loopback.
fn advertised(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Binds, opens the store, starts serving, registers with mgmtd and returns once all of it is done.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate().context("invalid meta config")?;
    let db = t3fs_kv::open(&config.kv).await.context("opening the kv store")?;
    start_on(config, db).await
}

/// [`start`] on a store the caller opened (`config.kv` is not opened): several meta servers in
/// one process over one store, as several meta hosts share one FoundationDB cluster (tests and
/// benchmarks of multi-server behavior).
pub async fn start_on(config: Config, db: t3fs_kv::Db) -> anyhow::Result<Server> {
    config.validate().context("invalid meta config")?;
    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let grpc_addr = listener.local_addr().context("reading the bound address")?;
    let registry = t3fs_common::metrics::new_registry();
    let metrics = Arc::new(metrics::MetaMetrics::register(&mut registry.lock().unwrap_or_else(|p| p.into_inner())));
    let db = metrics.wrap_kv(db);
    let routing = RoutingCache::new();
    // Users' tokens, from mgmtd's user table (polled with routing below).
    let mgmtd_conn = t3fs_common::mgmtd_conn::MgmtdConn::new(&config.mgmtd_addr).context("mgmtd_addr")?;
    let users = t3fs_common::users::UserCache::new(mgmtd_conn.clone(), config.token.clone());
    let placement =
        Placement { chain_table_id: config.chain_table_id, chunk_size: config.chunk_size, stripe: config.stripe };
    let idem_ttl = Duration::from_millis(config.idempotency_ttl_ms);
    let store = Arc::new(
        MetaStore::open_with_options(db.clone(), routing.clone(), placement, config.open_options())
            .await
            .context("opening the namespace")?
            .with_idempotency_ttl(idem_ttl)
            .with_metrics(metrics.clone()),
    );

    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut metrics_addr = None;
    if let Some(listen) = &config.metrics_listen {
        let (addr, task) = t3fs_common::metrics::serve(listen, registry, cancel.clone())
            .await
            .context("starting the metrics endpoint")?;
        tracing::info!(%addr, "meta metrics endpoint listening");
        metrics_addr = Some(addr);
        tasks.push(task);
    }
    let hot = Arc::new(mgmtd_link::hot_state(store.clone()));
    let clean_every = Duration::from_millis(config.idempotency_clean_interval_ms);
    let cleaner_hot = hot.clone();
    let cleaner_store = store.clone();
    let settings = move || {
        let interval = cleaner_hot.current().idempotency_clean_interval_ms.map_or(clean_every, Duration::from_millis);
        (cleaner_store.idempotency_ttl(), interval)
    };
    tasks.push(idem::spawn_cleaner(db, settings, cancel.clone()));
    let probe = Arc::new(length::LengthProbe::new(routing.clone(), config.token.clone()));
    let svc = MetaService::new(store.clone(), config.token.clone())
        .with_metrics(metrics.clone())
        .with_users(users.clone())
        .with_length_probe(probe.clone())
        .into_server();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "meta gRPC server failed");
        }
    }));

    let node = mgmtd_link::NodeIdentity {
        node_id: config.node_id,
        grpc_addr: config.advertise.clone().unwrap_or_else(|| advertised(grpc_addr).to_string()),
        mgmtd_addr: config.mgmtd_addr.clone(),
        token: config.token.clone(),
    };
    let mut client = match node.register(mgmtd_link::REGISTER_TIMEOUT, &cancel).await {
        Ok(c) => c,
        Err(e) => {
            // Stop what already runs before reporting.
            Server { node_id: config.node_id, grpc_addr, metrics_addr, cancel, tasks, store, routing, hot, metrics }
                .shutdown()
                .await;
            return Err(anyhow::Error::new(e).context("meta start"));
        }
    };
    // First routing fetch now, so layouts work as soon as start returns (when a table exists).
    let header = t3fs_common::proto::RequestHeader { token: config.token.clone(), ..Default::default() };
    if let Err(e) = routing.refresh(&mut client, header).await {
        tracing::debug!(error = %e, "initial routing fetch failed; the poller retries");
    }
    // statfs reports the targets' free space, which changes without a new routing version.
    tasks.push(routing.spawn_poller_with_space(
        config.mgmtd_addr.clone(),
        config.token.clone(),
        Duration::from_millis(config.routing_refresh_ms),
        Some(SPACE_REFRESH),
        cancel.clone(),
    ));
    tasks.push(users.spawn_poller(Duration::from_millis(config.routing_refresh_ms), cancel.clone()));
    let gc = gc::Gc {
        store: store.clone(),
        routing: routing.clone(),
        bulk: t3fs_common::bulk::BulkClient::default(),
        token: config.token.clone(),
        delay: Duration::from_millis(config.gc_delay_ms),
        probe: Some(probe),
        node_id: config.node_id,
        metrics: metrics.clone(),
    };
    tasks.push(gc::spawn(gc, Duration::from_millis(config.gc_interval_ms), cancel.clone()));
    tasks.push(gc::spawn_session_pruner(
        store.clone(),
        (routing.clone(), config.node_id),
        mgmtd_conn,
        config.token.clone(),
        Duration::from_millis(config.session_prune_interval_ms),
        cancel.clone(),
    ));
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    tasks.push(node.spawn_heartbeat(Some(client), interval, hot.clone(), cancel.clone()));
    tracing::info!(node_id = config.node_id, %grpc_addr, "meta server started");
    Ok(Server { node_id: config.node_id, grpc_addr, metrics_addr, cancel, tasks, store, routing, hot, metrics })
}

/// `start`, then serve until `shutdown` is cancelled, then stop cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = start(config).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_are_advertised_as_loopback() {
        assert_eq!(advertised("0.0.0.0:7".parse().unwrap()).to_string(), "127.0.0.1:7");
        assert_eq!(advertised("[::]:7".parse().unwrap()).to_string(), "[::1]:7");
        assert_eq!(advertised("10.1.2.3:7".parse().unwrap()).to_string(), "10.1.2.3:7");
    }
}
