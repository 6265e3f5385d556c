//! t3fs-client: the native client library. It is all an application (or the FUSE daemon) needs to
//! use a t3fs cluster.
//!
//! - Routing: a [`RoutingCache`] kept fresh by polling mgmtd. Meta nodes, storage nodes, chains and
//!   their target states all come from it; nothing else is configured.
//! - Metadata ([`meta`]): namespace RPCs to any meta node (meta is stateless, so every node serves
//!   every request). On transport failure the client fails over to another meta node. Rename, links
//!   and batch stat are in [`links`], extended attributes in [`xattr`], directory layouts, mkdirs and
//!   real paths in [`dirs`].
//! - Data ([`data`]): a file's byte range is split by chunk; reads go to any SERVING replica of the
//!   chunk's chain, writes to the chain head (which replicates down the chain before it acks). Chunk
//!   data rides the bulk plane, never gRPC.
//! - Files ([`file`]): `Client::open_path` gives a [`File`] (read_at, write_at with buffering and
//!   periodic length hints, set_len, sync, close) that holds a write session while open.
//! - Batch reads ([`batch`]): many reads in flight into pooled buffers, completions in any order
//!   (the role of 3FS's USRBIO), for data loaders.
//! - Region reads ([`region`]): a read into registered memory the host may not address (GPU
//!   memory, for GPUDirect RDMA): the storage node writes in place where the transport can, and
//!   the client says which parts the caller must copy in or zero.
//!
//! Retries: every operation retries retryable errors ([`StatusCode::is_retryable`]) with exponential
//! backoff until `retry_timeout_ms`, refreshing routing info between tries and re-reading the chain
//! (head, version) on each try. One request id is used for all tries of one logical operation.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use t3fs_common::bulk::BulkClient;
use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto;
use t3fs_common::routing::{Routing, RoutingCache};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod batch;
mod batch_buf;
mod batch_wire;
pub mod channels;
pub mod config;
pub mod data;
pub mod dirs;
pub mod file;
pub mod links;
pub mod locks;
pub mod meta;
mod meta_route;
mod orphans;
pub mod region;
pub mod seek;
pub mod session;
mod shrink;
pub mod xattr;

pub use batch::{
    BatchConfig, BatchReader, BatchStats, BufferPool, Completion, ExternalBuf, PooledBuf, ReadBuf, ReadReq,
};
pub use config::{ClientConfig, UserInfo};
pub use data::{ChunkOp, ChunkPiece};
pub use dirs::DirLayout;
pub use file::{File, OpenOptions};
pub use links::RenameFlags;
pub use locks::LockSpec;
pub use meta::SetAttr;
pub use region::{RegionPart, RegionRead};
pub use seek::Seek;
pub use t3fs_common::{ChunkId, Error, InodeId, Result, StatusCode, TargetId};
pub use xattr::SetXattrMode;

pub type MetaClient = proto::meta_client::MetaClient<tonic::transport::Channel>;

/// Longest wait between two tries of a retried operation.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First wait before retrying.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Explicit routing refreshes (on retry) closer together than this are skipped.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(50);

/// A connected t3fs client. Cheap to share (`Arc`); every method takes `&self`.
pub struct Client {
    cfg: ClientConfig,
    routing: RoutingCache,
    cancel: CancellationToken,
    /// The routing poller and the session extender.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// This client's session id at mgmtd ([`session`]).
    client_id: String,
    /// Meta connections and which node each request goes to ([`meta_route`]).
    meta: meta_route::MetaConns,
    /// Connection used for explicit routing refreshes, and the time of the last one.
    mgmtd: tokio::sync::Mutex<(MgmtdConn, Option<Instant>)>,
    bulk: BulkClient,
    /// Exactly-once channels for chunk updates ([`channels`]).
    channels: channels::UpdateChannels,
    /// Round-robin counter spreading reads over replicas and meta connections over meta nodes.
    rr: AtomicUsize,
}

impl Client {
    /// Starts the routing poller, waits (up to `retry_timeout_ms`) until a meta node is known and
    /// connects to one.
    pub async fn connect(cfg: ClientConfig) -> Result<Arc<Client>> {
        // `mgmtd_addr` may list several mgmtd; requests follow the primary.
        let mgmtd = MgmtdConn::new(&cfg.mgmtd_addr)?;
        let routing = RoutingCache::new();
        // A first fetch now, so a refusal (a wrong token) fails here with mgmtd's answer instead of
        // as a timeout; mgmtd being down or electing is left to the wait below.
        if let Err(e) = routing.refresh_via(&mgmtd, &cfg.token).await
            && !e.is_retryable()
        {
            return Err(e);
        }
        let cancel = CancellationToken::new();
        let poller = routing.spawn_poller(
            cfg.mgmtd_addr.clone(),
            cfg.token.clone(),
            Duration::from_millis(cfg.routing_refresh_ms.max(10)),
            cancel.clone(),
        );
        let client_id = session::new_client_id();
        let mut tasks = vec![poller];
        if cfg.session_extend_ms > 0 {
            tasks.push(session::spawn(
                mgmtd.clone(),
                cfg.token.clone(),
                client_id.clone(),
                Duration::from_millis(cfg.session_extend_ms),
                cancel.clone(),
            ));
        }
        let client = Arc::new(Client {
            routing,
            cancel,
            tasks: Mutex::new(tasks),
            client_id: client_id.clone(),
            meta: meta_route::MetaConns::default(),
            mgmtd: tokio::sync::Mutex::new((mgmtd, None)),
            bulk: BulkClient::choose(&t3fs_common::bulk::TransportPrefs { rdma: cfg.bulk_rdma, ..Default::default() }),
            channels: channels::UpdateChannels::new(client_id.clone()),
            rr: AtomicUsize::new(rand_start()),
            cfg,
        });
        let wait = client
            .routing
            .wait_for(client.retry_timeout(), |r| r.nodes_of_type(proto::NodeType::Meta).next().is_some());
        if let Err(e) = wait.await {
            client.cancel.cancel();
            return Err(Error::new(
                e.code,
                format!("no meta node known from mgmtd {} after {:?}", client.cfg.mgmtd_addr, client.retry_timeout()),
            ));
        }
        if let Err(e) = client.retrying("connect meta", || async { client.meta_conn(None).await.map(|_| ()) }).await {
            client.cancel.cancel();
            return Err(e);
        }
        tracing::info!(mgmtd = %client.cfg.mgmtd_addr, routing_version = client.routing.get().version(), "client connected");
        Ok(client)
    }

    /// Stops the routing poller and the session extender. Calls made afterwards still work until
    /// routing info goes stale.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let handles = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.await;
        }
    }

    /// This client's session id at mgmtd (`t3fs admin list-sessions`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The current routing snapshot.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.get()
    }

    /// The bulk-plane client (to register memory with the transport, e.g. GPU memory for
    /// [`region`] reads).
    pub fn bulk(&self) -> &BulkClient {
        &self.bulk
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn retry_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.retry_timeout_ms)
    }

    fn next_rr(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }

    /// A header for one logical operation (reuse it across retries of that operation).
    fn header(&self, user: &UserInfo, request_id: &str) -> proto::RequestHeader {
        proto::RequestHeader {
            request_id: request_id.to_string(),
            token: self.cfg.token.clone(),
            uid: user.uid,
            gid: user.gid,
            gids: user.gids.clone(),
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or `retry_timeout_ms` passes.
    /// Between tries: backoff, then a routing refresh.
    ///
    /// (`op` is a plain closure returning a future rather than an async closure: futures of async
    /// closures cannot yet be proven `Send` for callers that spawn them.)
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.retry_timeout();
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, tries, "{what}: retrying");
                    tokio::time::sleep(backoff).await;
                    self.refresh_routing().await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    if tries > 1 {
                        tracing::debug!(error = %e, tries, "{what}: giving up");
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Asks mgmtd for newer routing info now (best effort; the poller keeps running regardless).
    pub async fn refresh_routing(&self) {
        let mut g = self.mgmtd.lock().await;
        if g.1.is_some_and(|t| t.elapsed() < MIN_REFRESH_GAP) {
            return;
        }
        g.1 = Some(Instant::now());
        if let Err(e) = self.routing.refresh_via(&g.0, &self.cfg.token).await {
            tracing::debug!(error = %e, "routing refresh failed");
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A per-process starting point for round robin, so many clients do not all hit the same replica.
fn rand_start() -> usize {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (t as usize) ^ (std::process::id() as usize)
}
