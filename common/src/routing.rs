//! Routing info: who serves what. mgmtd owns it; every other process keeps a [`RoutingCache`]
//! refreshed by polling `GetRoutingInfo(known_version)` (mgmtd answers "unchanged" cheaply) on the
//! primary mgmtd, found and followed by [`MgmtdConn`].
//!
//! [`Routing`] indexes one snapshot of `proto::RoutingInfo` for lookups on the data path. Snapshots
//! are immutable and shared by `Arc`; a refresh swaps the whole snapshot.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ids::{ChainId, ChainTableId, NodeId, TargetId};
use crate::mgmtd_conn::MgmtdConn;
use crate::proto::{self, PublicTargetState};
use crate::status::{Error, StatusCode};

/// One indexed snapshot of the routing info.
#[derive(Debug, Default)]
pub struct Routing {
    pub info: proto::RoutingInfo,
    nodes: HashMap<NodeId, usize>,
    chains: HashMap<ChainId, usize>,
    targets: HashMap<TargetId, usize>,
    tables: HashMap<(ChainTableId, u32), usize>,
}

impl Routing {
    pub fn new(info: proto::RoutingInfo) -> Self {
        let nodes = info.nodes.iter().enumerate().map(|(i, n)| (NodeId(n.node_id), i)).collect();
        let chains = info.chains.iter().enumerate().map(|(i, c)| (ChainId(c.chain_id), i)).collect();
        let targets = info.targets.iter().enumerate().map(|(i, t)| (TargetId(t.target_id), i)).collect();
        let tables = info.tables.iter().enumerate().map(|(i, t)| ((ChainTableId(t.table_id), t.version), i)).collect();
        Self { info, nodes, chains, targets, tables }
    }

    pub fn version(&self) -> u64 {
        self.info.version
    }

    pub fn node(&self, id: NodeId) -> Option<&proto::NodeInfo> {
        self.nodes.get(&id).map(|&i| &self.info.nodes[i])
    }

    pub fn chain(&self, id: ChainId) -> Result<&proto::ChainInfo, Error> {
        self.chains
            .get(&id)
            .map(|&i| &self.info.chains[i])
            .ok_or_else(|| Error::new(StatusCode::RoutingNotReady, format!("unknown chain {id}")))
    }

    pub fn target(&self, id: TargetId) -> Result<&proto::TargetInfo, Error> {
        self.targets
            .get(&id)
            .map(|&i| &self.info.targets[i])
            .ok_or_else(|| Error::new(StatusCode::RoutingNotReady, format!("unknown target {id}")))
    }

    /// A chain table by id and version; version 0 means the newest version of that table.
    pub fn table(&self, id: ChainTableId, version: u32) -> Result<&proto::ChainTable, Error> {
        let found = if version == 0 {
            self.info.tables.iter().filter(|t| t.table_id == id.0).max_by_key(|t| t.version)
        } else {
            self.tables.get(&(id, version)).map(|&i| &self.info.tables[i])
        };
        found.ok_or_else(|| Error::new(StatusCode::RoutingNotReady, format!("unknown chain table {id} v{version}")))
    }

    /// The node that hosts a target.
    pub fn node_of_target(&self, id: TargetId) -> Result<&proto::NodeInfo, Error> {
        let t = self.target(id)?;
        self.node(NodeId(t.node_id))
            .ok_or_else(|| Error::new(StatusCode::RoutingNotReady, format!("target {id}: unknown node {}", t.node_id)))
    }

    /// Active nodes of one type.
    pub fn nodes_of_type(&self, ty: proto::NodeType) -> impl Iterator<Item = &proto::NodeInfo> {
        self.info.nodes.iter().filter(move |n| {
            n.node_type == ty as i32
                && matches!(
                    proto::NodeStatus::try_from(n.status),
                    Ok(proto::NodeStatus::HeartbeatConnected | proto::NodeStatus::PrimaryMgmtd)
                )
        })
    }

    /// The successor of `target` in `chain` among targets that take writes (SERVING or SYNCING).
    pub fn successor(&self, chain: &proto::ChainInfo, target: TargetId) -> Option<TargetId> {
        let pos = chain.targets.iter().position(|t| t.target_id == target.0)?;
        chain.targets[pos + 1..].iter().find(|t| is_writable(t.public_state)).map(|t| TargetId(t.target_id))
    }

    /// The chain that holds chunk `index` of a file with layout `l`.
    pub fn chunk_chain(&self, l: &proto::Layout, index: u32) -> Result<&proto::ChainInfo, Error> {
        let table = self.table(ChainTableId(l.table_id), l.table_version)?;
        let chain = crate::layout::chain_of(l, &table.chains, index)?;
        self.chain(chain)
    }

    /// The head of a chain: its first target that takes writes.
    pub fn write_head(&self, chain: &proto::ChainInfo) -> Result<TargetId, Error> {
        chain.targets.iter().find(|t| is_writable(t.public_state)).map(|t| TargetId(t.target_id)).ok_or_else(|| {
            Error::new(StatusCode::TargetNotServing, format!("chain {} has no writable target", chain.chain_id))
        })
    }

    /// The bulk-plane address of the node hosting `target`.
    pub fn bulk_addr(&self, target: TargetId) -> Result<String, Error> {
        let node = self.node_of_target(target)?;
        if node.bulk_addr.is_empty() {
            return Err(Error::new(StatusCode::RoutingNotReady, format!("node {} has no bulk address", node.node_id)));
        }
        Ok(node.bulk_addr.clone())
    }
}

/// The fencing rule (research/3fs.md §2), shared by storage and documented with mgmtd: a storage
/// node that has not had a heartbeat answer from the primary mgmtd for this long stops serving
/// reads and writes. It is its configured delay, but never more than half of mgmtd's heartbeat
/// timeout (`mgmtd_timeout`, learnt from heartbeat replies; `None` before the first one), so the node
/// fences itself well before mgmtd declares it failed and lets other replicas move on without it.
pub fn fence_delay(configured: Duration, mgmtd_timeout: Option<Duration>) -> Duration {
    match mgmtd_timeout {
        Some(t) if !t.is_zero() => configured.min(t / 2),
        _ => configured,
    }
}

/// Public states that accept writes.
pub fn is_writable(state: i32) -> bool {
    state == PublicTargetState::Serving as i32 || state == PublicTargetState::Syncing as i32
}

/// Public states that serve reads.
pub fn is_readable(state: i32) -> bool {
    state == PublicTargetState::Serving as i32
}

/// A shared, refreshable routing snapshot.
#[derive(Clone, Default)]
pub struct RoutingCache {
    current: Arc<RwLock<Arc<Routing>>>,
}

impl RoutingCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot (cheap: an `Arc` clone).
    pub fn get(&self) -> Arc<Routing> {
        self.current.read().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Installs a snapshot if it is newer than the current one.
    pub fn update(&self, info: proto::RoutingInfo) {
        let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
        if info.version >= g.version() {
            *g = Arc::new(Routing::new(info));
        }
    }

    /// Installs the info of a `GetRoutingInfo` answer, if it carries any; returns whether it did.
    fn install(&self, rsp: proto::GetRoutingInfoRsp) -> bool {
        match rsp.info {
            Some(info) => {
                self.update(info);
                true
            }
            None => false,
        }
    }

    /// Fetches routing info from mgmtd once; returns whether it changed.
    pub async fn refresh(&self, mgmtd: &mut MgmtdClient, header: proto::RequestHeader) -> Result<bool, Error> {
        let known = self.get().version();
        let rsp = mgmtd
            .get_routing_info(proto::GetRoutingInfoReq { header: Some(header), known_version: known })
            .await
            .map_err(|st| Error::from_tonic(&st))?
            .into_inner();
        Ok(self.install(rsp))
    }

    /// Fetches routing info once from the primary mgmtd through `conn` (following a takeover);
    /// returns whether it changed. `conn` learns every mgmtd address the info lists.
    pub async fn refresh_via(&self, conn: &MgmtdConn, token: &str) -> Result<bool, Error> {
        self.fetch_via(conn, token, self.get().version()).await
    }

    /// [`RoutingCache::refresh_via`] that takes the whole info even when its version is unchanged:
    /// the targets' used, free and capacity bytes change with every heartbeat without a new version
    /// (mgmtd keeps them in memory only), so whoever reports space (meta's statfs) refetches it so.
    pub async fn refresh_all_via(&self, conn: &MgmtdConn, token: &str) -> Result<bool, Error> {
        self.fetch_via(conn, token, 0).await
    }

    async fn fetch_via(&self, conn: &MgmtdConn, token: &str, known: u64) -> Result<bool, Error> {
        let rsp = conn
            .call(|mut c| {
                let header = proto::RequestHeader {
                    request_id: crate::new_request_id(),
                    token: token.to_string(),
                    ..Default::default()
                };
                async move {
                    c.get_routing_info(proto::GetRoutingInfoReq { header: Some(header), known_version: known }).await
                }
            })
            .await?
            .into_inner();
        if let Some(info) = &rsp.info {
            // Every mgmtd routing info lists (the primary and its standbys) joins the rotation.
            let mgmtd = info.nodes.iter().filter(|n| n.node_type == proto::NodeType::Mgmtd as i32);
            conn.learn(mgmtd.map(|n| n.grpc_addr.as_str()));
        }
        Ok(self.install(rsp))
    }

    /// Polls the primary mgmtd every `interval` until `cancel` fires. `mgmtd_addr` is one address or
    /// a comma-separated list ([`MgmtdConn`] follows the primary). Errors are logged and retried.
    pub fn spawn_poller(
        &self,
        mgmtd_addr: String,
        token: String,
        interval: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_poller_with_space(mgmtd_addr, token, interval, None, cancel)
    }

    /// [`RoutingCache::spawn_poller`] that also takes the whole info, space figures included
    /// ([`RoutingCache::refresh_all_via`]), once every `space_every` when that is set.
    pub fn spawn_poller_with_space(
        &self,
        mgmtd_addr: String,
        token: String,
        interval: Duration,
        space_every: Option<Duration>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let conn = match MgmtdConn::new(&mgmtd_addr) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "routing poller: bad mgmtd address list; not polling");
                return tokio::spawn(async {});
            }
        };
        let cache = self.clone();
        let last_full = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        crate::periodic::spawn_every(
            crate::periodic::First::Now,
            move || interval,
            cancel,
            move || {
                let (cache, conn, token) = (cache.clone(), conn.clone(), token.clone());
                let full = space_every.is_some_and(|every| {
                    let mut last = last_full.lock().unwrap_or_else(|p| p.into_inner());
                    let due = last.elapsed() >= every;
                    if due {
                        *last = tokio::time::Instant::now();
                    }
                    due
                });
                async move {
                    let res = match full {
                        true => cache.refresh_all_via(&conn, &token).await,
                        false => cache.refresh_via(&conn, &token).await,
                    };
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "routing refresh failed");
                    }
                }
            },
        )
    }

    /// Waits until `pred` holds on the current snapshot (polled every 50 ms), or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Routing) -> bool) -> Result<Arc<Routing>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.get();
            if pred(&r) {
                return Ok(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(StatusCode::RoutingNotReady, "timed out waiting for routing info"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub type MgmtdClient = proto::mgmtd_client::MgmtdClient<tonic::transport::Channel>;

/// Connects a gRPC channel to `addr` (`host:port` or `http://host:port`).
pub async fn connect_channel(addr: &str) -> Result<tonic::transport::Channel, Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| Error::invalid(format!("bad address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| Error::unavailable(format!("connecting to {addr}: {e}")))
}

/// Largest message a client takes from mgmtd. The routing info lists every node, chain and target
/// (about 60 bytes per target with its chain); tonic's default limit of 4 MiB would be passed at
/// about 70,000 targets, and then no client or daemon could learn the routing at all.
pub const MAX_MGMTD_MESSAGE: usize = 256 << 20;

/// Connects to one mgmtd address (not a list; use [`MgmtdConn`] to follow the primary).
pub async fn connect_mgmtd(addr: &str) -> Result<MgmtdClient, Error> {
    Ok(proto::mgmtd_client::MgmtdClient::new(connect_channel(addr).await?).max_decoding_message_size(MAX_MGMTD_MESSAGE))
}
