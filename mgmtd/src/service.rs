//! The mgmtd gRPC service and the shared [`Cluster`] handle behind it.
//!
//! [`Cluster`] owns the in-memory [`ClusterState`] and the KV handle under one async mutex, so
//! every mutation is plan -> persist -> apply in order, and memory never disagrees with the store.
//! Routing info is served from memory. The KV handle lives inside the mutex so that
//! [`Cluster::close`] can drop it even while gRPC connection tasks still hold the service: after
//! close, requests fail with Unavailable and the embedded store can be reopened in-process.
//!
//! Primary or standby ([`Role`], driven by `crate::election`): only the primary serves. A standby,
//! or a primary whose lease may have run out ([`Role::Primary::valid_until`]), refuses every
//! request with `NotPrimary` naming the primary it knows. A primary's writes check the lease term
//! inside their transaction ([`store::persist_as_primary`]); one that fails that way steps down at
//! once. Taking over reloads the whole state from the store and starts a bootstrapping period.
//!
//! Every handler runs in a tracing span with the request id and checks, after the role, the token
//! (`t3fs_common::users`): admin operations need the cluster token or an admin user's token,
//! meta/storage registration and heartbeats the cluster token, everything else any valid token.
//! Configs per node type (`SetConfig`, `GetConfig`, the heartbeat push) live in `configs.rs`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use t3fs_common::mgmtd_conn::{not_primary, primary_hint};
use t3fs_common::proto::{self, NodeInfo, mgmtd_server::Mgmtd};
use t3fs_common::users::{Directory, Principal};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::Db;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Node operations, preferred order, head rotation, table versions, other mgmtd.
#[path = "cluster_admin.rs"]
mod cluster_admin;

use self::configs::Configs;
use crate::accounts::Accounts;
use crate::metrics::MgmtdMetrics;
use crate::state::{ChainEdit, ClusterState, Delta, TablePlan};
use crate::store;

#[path = "configs.rs"]
mod configs;

/// The tonic service over [`Cluster`].
#[path = "grpc.rs"]
mod grpc;
pub use grpc::MgmtdService;

pub(crate) struct Inner {
    pub(crate) state: ClusterState,
    /// Users and client sessions (`crate::accounts_service`).
    pub(crate) accounts: Accounts,
    /// `None` once closed.
    pub(crate) db: Option<Db>,
    /// While `Some`, mgmtd is bootstrapping: it collects heartbeats and changes no chain until
    /// this instant. Cleared by the first check after it (with a routing version bump, so everyone
    /// sees `bootstrapping = false`).
    bootstrap_until: Option<Instant>,
    /// The lease term `state` was loaded under; `None` on a standby (which writes nothing).
    pub(crate) term: Option<u64>,
    /// Configs per node type (`configs.rs`), loaded with `state`.
    configs: Configs,
    /// The other mgmtd as published in routing info (`crate::peers`); empty on a standby.
    peers: Vec<NodeInfo>,
}

/// Whether this mgmtd serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Refuses requests, naming `primary` (its address) when known.
    Standby { primary: Option<String> },
    /// Holds the lease in `term`; serves until `valid_until` unless the lease is extended.
    Primary { term: u64, valid_until: Instant },
}

/// The cluster state shared by the gRPC service, the checker and the lease task.
pub struct Cluster {
    pub(crate) token: String,
    /// This mgmtd as it appears in routing info.
    me: NodeInfo,
    /// Bootstrapping period after each takeover.
    bootstrap: Duration,
    /// A node silent for longer is failed (the checker's timeout; `EnableNode` uses it too).
    heartbeat_timeout: Duration,
    role: std::sync::Mutex<Role>,
    inner: Mutex<Inner>,
    pub(crate) metrics: Arc<MgmtdMetrics>,
    /// The users of `inner.accounts`, for token checks without the state lock.
    pub(crate) users: std::sync::RwLock<Arc<Directory>>,
    /// A client session expires this long after its last extension.
    pub(crate) session_timeout: Duration,
}

impl Cluster {
    /// A standby with no state; `crate::election` makes it primary. `bootstrap`: how long after a
    /// takeover no chain may change (see [`crate::Config::bootstrap_period`]).
    pub fn new(token: String, me: NodeInfo, db: Db, bootstrap: Duration) -> Self {
        let inner = Inner {
            state: ClusterState::default(),
            accounts: Accounts::default(),
            db: Some(db),
            bootstrap_until: None,
            term: None,
            configs: Configs::default(),
            peers: Vec::new(),
        };
        Self {
            token,
            me,
            bootstrap,
            heartbeat_timeout: Duration::from_secs(30),
            role: std::sync::Mutex::new(Role::Standby { primary: None }),
            inner: Mutex::new(inner),
            metrics: Arc::default(),
            users: std::sync::RwLock::default(),
            session_timeout: Duration::from_millis(crate::config::DEFAULT_CLIENT_SESSION_TIMEOUT_MS),
        }
    }

    /// Client sessions expire `timeout` after their last extension (default 60 s).
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Publishes the state and RPC metrics in `metrics` (default: handles registered nowhere).
    pub fn with_metrics(mut self, metrics: Arc<MgmtdMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sets the heartbeat timeout `EnableNode` judges liveness by (default 30 s).
    pub fn with_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_role(&self, role: Role) {
        self.metrics.set_role(match role {
            Role::Primary { term, .. } => Some(term),
            Role::Standby { .. } => None,
        });
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
    }

    /// Recomputes the state gauges (this mgmtd counts as a node while it holds a state).
    fn publish(&self, inner: &Inner) {
        let me = std::iter::once(&self.me).filter(|_| inner.term.is_some());
        let others = inner.state.nodes().filter(|n| n.node_id != self.me.node_id);
        self.metrics.census(inner.state.version(), me.chain(others), inner.state.targets(), inner.state.chain_count());
        self.metrics.config_versions(|ty| inner.configs.version(ty));
    }

    /// Ok while this mgmtd is primary and its lease is trusted; else `NotPrimary` naming the
    /// primary if known.
    pub fn ensure_primary(&self) -> Result<(), Error> {
        match self.role() {
            Role::Primary { valid_until, .. } if Instant::now() < valid_until => Ok(()),
            Role::Primary { .. } => Err(not_primary(None)),
            Role::Standby { primary } => Err(not_primary(primary.as_deref())),
        }
    }

    /// The term this mgmtd holds as a trusted primary. A primary whose lease may have run out
    /// steps down first (so it takes over again, with a reload, if nobody else did).
    pub async fn held_term(&self) -> Option<u64> {
        match self.role() {
            Role::Primary { term, valid_until } if Instant::now() < valid_until => Some(term),
            Role::Primary { term, .. } => {
                tracing::warn!(term, "primary lease not extended in time; stepping down");
                self.step_down(None).await;
                None
            }
            Role::Standby { .. } => None,
        }
    }

    /// The lease was extended in `term`: trust it until `valid_until`.
    pub fn extended(&self, term: u64, valid_until: Instant) {
        let mut role = self.role.lock().unwrap_or_else(|p| p.into_inner());
        if let Role::Primary { term: t, valid_until: v } = &mut *role
            && *t == term
        {
            *v = valid_until;
        }
    }

    /// Someone else holds the lease: be (or become) a standby naming `primary`.
    pub async fn follow(&self, primary: Option<String>) {
        if let Role::Primary { term, .. } = self.role() {
            tracing::warn!(term, primary = primary.as_deref().unwrap_or("?"), "lost the primary lease; standing by");
            self.step_down(primary).await;
        } else {
            self.set_role(Role::Standby { primary });
        }
    }

    async fn step_down(&self, primary: Option<String>) {
        self.set_role(Role::Standby { primary });
        self.forget(&mut *self.inner.lock().await);
    }

    /// Drops the state of a former primary (it is stale from now on).
    fn forget(&self, inner: &mut Inner) {
        inner.term = None;
        inner.state = ClusterState::default();
        inner.accounts = Accounts::default();
        self.set_users(&inner.accounts);
        inner.configs = Configs::default();
        inner.bootstrap_until = None;
        inner.peers.clear();
        self.publish(inner);
    }

    /// Becomes primary in `term` (the lease was just taken): reloads everything from the store,
    /// bumps the routing version (under the lease), resets liveness (every stored node counts as
    /// seen now) and starts bootstrapping. On failure this mgmtd stays a standby.
    pub async fn take_over(&self, term: u64, valid_until: Instant) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        self.forget(&mut inner);
        let db = inner.db.clone().ok_or_else(|| Error::unavailable("mgmtd is shutting down"))?;
        let mut loaded = store::load(db.as_ref()).await?;
        let accounts = crate::accounts::load(db.as_ref()).await?;
        let configs = std::mem::take(&mut loaded.configs);
        // Every takeover is a new routing version: clients refetch, whatever they cached before.
        let version = loaded.version + 1;
        store::persist_as_primary(db.as_ref(), &[store::version_write(version)], self.me.node_id, term).await?;
        if loaded.nodes.iter().any(|n| n.node_id == self.me.node_id) {
            tracing::warn!(node_id = self.me.node_id, "a stored node record uses this mgmtd's id; it is not served");
        }
        let (nodes, tables) = (loaded.nodes.len(), loaded.tables.len());
        let now = Instant::now();
        inner.state = ClusterState::from_loaded(loaded, version, now);
        inner.accounts = accounts;
        self.set_users(&inner.accounts);
        inner.configs = Configs::from_loaded(configs);
        inner.term = Some(term);
        inner.bootstrap_until = Some(now + self.bootstrap);
        self.set_role(Role::Primary { term, valid_until });
        self.publish(&inner);
        tracing::info!(
            node_id = self.me.node_id,
            term,
            version,
            nodes,
            tables,
            bootstrap_ms = self.bootstrap.as_millis() as u64,
            "primary mgmtd: state reloaded, bootstrapping"
        );
        Ok(())
    }

    /// The state, locked, if it is a primary's (a request admitted just before a step-down must not
    /// see the emptied state of a standby).
    pub(crate) async fn lock_primary(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>, Error> {
        let inner = self.inner.lock().await;
        if inner.term.is_some() {
            return Ok(inner);
        }
        drop(inner);
        Err(self.ensure_primary().err().unwrap_or_else(|| not_primary(None)))
    }

    /// The state, locked, if this mgmtd is primary (background tasks: no error for a standby).
    pub(crate) async fn inner_if_primary(&self) -> Option<tokio::sync::MutexGuard<'_, Inner>> {
        let inner = self.inner.lock().await;
        inner.term.is_some().then_some(inner)
    }

    /// The term to release at shutdown (if primary), and stops serving.
    pub async fn resign(&self) -> Option<(Db, u64)> {
        let role = self.role();
        self.set_role(Role::Standby { primary: None });
        let mut inner = self.inner.lock().await;
        let db = inner.db.clone();
        self.forget(&mut inner);
        match role {
            Role::Primary { term, .. } => db.map(|db| (db, term)),
            Role::Standby { .. } => None,
        }
    }

    /// Writes `sets` and deletes `clears` in one lease-checked transaction; losing the lease steps
    /// down (as in [`Self::commit`]).
    pub(crate) async fn write(
        &self,
        inner: &mut Inner,
        sets: &[store::Write],
        clears: &[Vec<u8>],
    ) -> Result<(), Error> {
        let db = inner.db.as_ref().ok_or_else(|| Error::unavailable("mgmtd is shutting down"))?;
        let term = inner.term.ok_or_else(|| not_primary(None))?;
        let res = store::write_as_primary(db.as_ref(), sets, clears, self.me.node_id, term).await;
        if let Err(e) = &res
            && e.code == StatusCode::NotPrimary
        {
            tracing::warn!(term, error = %e, "lost the primary lease while writing; standing by");
            self.set_role(Role::Standby { primary: primary_hint(e) });
            self.forget(inner);
        }
        res
    }

    /// Persists `delta` if it is visible (with a version bump, under the lease), then installs it
    /// in memory. Returns the routing version afterwards. Losing the lease steps down.
    async fn commit(&self, inner: &mut Inner, delta: Delta) -> Result<u64, Error> {
        if delta.visible {
            let version = inner.state.version() + 1;
            self.write(inner, &delta.writes(version), &delta.delete_keys()).await?;
            inner.state.apply(delta, Some(version));
        } else {
            inner.state.apply(delta, None);
        }
        self.publish(inner);
        Ok(inner.state.version())
    }

    /// Writes `writes` in one transaction under the lease. Losing the lease steps down.
    async fn persist(&self, inner: &mut Inner, writes: &[store::Write]) -> Result<(), Error> {
        self.write(inner, writes, &[]).await
    }

    pub async fn register(&self, req: &proto::RegisterNodeReq) -> Result<u64, Error> {
        let mut inner = self.lock_primary().await?;
        let delta = inner.state.plan_register(req, self.me.node_id, Instant::now(), t3fs_common::now_ms())?;
        self.commit(&mut inner, delta).await
    }

    /// The routing version and, when the node's config version is not the stored one, its
    /// node type's config.
    pub async fn heartbeat(&self, req: &proto::HeartbeatReq) -> Result<(u64, Option<proto::NodeConfig>), Error> {
        let mut inner = self.lock_primary().await?;
        let delta = inner.state.plan_heartbeat(req, Instant::now(), t3fs_common::now_ms())?;
        let before = inner.state.node(req.node_id).map(|n| n.status);
        let version = self.commit(&mut inner, delta).await?;
        if before == Some(proto::NodeStatus::HeartbeatFailed as i32) {
            tracing::info!(node = req.node_id, "node is back");
        }
        Ok((version, inner.configs.for_node(req.node_type, req.config_version)))
    }

    /// Routing info, or `None` when `known_version` is current.
    pub async fn routing_info(&self, known_version: u64) -> Result<Option<proto::RoutingInfo>, Error> {
        let inner = self.lock_primary().await?;
        if inner.state.version() == known_version {
            return Ok(None);
        }
        let mut me = self.me.clone();
        me.last_heartbeat_ms = t3fs_common::now_ms();
        Ok(Some(inner.state.routing_info(&me, &inner.peers, inner.bootstrap_until.is_some())))
    }

    pub async fn create_chain_table(
        &self,
        table_id: u32,
        replicas: u32,
        desc: &str,
        explicit: &[Vec<u64>],
    ) -> Result<proto::ChainTable, Error> {
        let mut inner = self.lock_primary().await?;
        let settle = inner.bootstrap_until.is_none();
        match inner.state.plan_create_table(table_id, replicas, desc, settle, explicit)? {
            TablePlan::Existing(table) => Ok(table),
            TablePlan::New(delta, table) => {
                self.commit(&mut inner, delta).await?;
                tracing::info!(table_id, chains = table.chains.len(), replicas, "created chain table");
                Ok(table)
            }
        }
    }

    /// The state for an admin chain change: primary, and not bootstrapping (no chain changes then).
    async fn lock_for_chain_change(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>, Error> {
        let inner = self.lock_primary().await?;
        if inner.bootstrap_until.is_some() {
            return Err(Error::unavailable("mgmtd is bootstrapping; chains cannot change yet, retry later"));
        }
        Ok(inner)
    }

    /// `UpdateChain`: add or remove one target (see `state::chain_admin`).
    pub async fn update_chain(&self, chain_id: u32, edit: ChainEdit) -> Result<proto::ChainInfo, Error> {
        let mut inner = self.lock_for_chain_change().await?;
        let (delta, chain) = inner.state.plan_update_chain(chain_id, edit)?;
        let version = self.commit(&mut inner, delta).await?;
        self.metrics.chain_changes.inc();
        tracing::info!(version, ?edit, "admin update-chain: {}", describe_chain(&chain));
        Ok(chain)
    }

    /// `RotateLastSrv`: the escape hatch for a LASTSRV target that never returns.
    pub async fn rotate_lastsrv(&self, chain_id: u32) -> Result<proto::ChainInfo, Error> {
        let mut inner = self.lock_for_chain_change().await?;
        let (delta, chain) = inner.state.plan_rotate_lastsrv(chain_id)?;
        let version = self.commit(&mut inner, delta).await?;
        self.metrics.chain_changes.inc();
        tracing::warn!(
            version,
            "admin rotate-lastsrv (writes only the old LASTSRV had may be lost): {}",
            describe_chain(&chain)
        );
        Ok(chain)
    }

    /// One check: fails nodes unseen for longer than `timeout`, then (unless bootstrapping) runs
    /// the target state machine on every chain. Everything it changes is persisted in one
    /// transaction, with one routing version bump, before memory changes.
    pub async fn check(&self, timeout: Duration) -> Result<(), Error> {
        if self.ensure_primary().is_err() {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        if inner.term.is_none() {
            return Ok(());
        }
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
        let version = self.commit(&mut inner, delta).await?;
        if ending_bootstrap {
            inner.bootstrap_until = None;
            tracing::info!(version, "bootstrapping done; chains follow the target state machine now");
        }
        if !failed.is_empty() {
            tracing::warn!(nodes = ?failed, version, "heartbeat timeout: nodes marked failed, their targets offline");
        }
        self.metrics.chain_changes.inc_by(chains.len() as u64);
        for chain in chains {
            tracing::info!(version, "chain updated: {chain}");
        }
        Ok(())
    }

    /// Drops the KV handle (waiting for any in-flight write). Later mutations fail with Unavailable.
    pub async fn close(&self) {
        self.inner.lock().await.db = None;
    }

    /// Installs the token directory of `accounts`.
    pub(crate) fn set_users(&self, accounts: &Accounts) {
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(accounts.directory());
    }

    /// The role check (only a primary serves; standbys name the primary whatever the token), then
    /// the token check: any valid token (the cluster token or a user's).
    pub(crate) fn admit_any(&self, header: &Option<proto::RequestHeader>) -> Result<Principal, Error> {
        self.ensure_primary()?;
        let token = header.as_ref().map(|h| h.token.as_str()).unwrap_or("");
        let users = self.users.read().unwrap_or_else(|p| p.into_inner()).clone();
        users.authenticate(&self.token, token)
    }

    /// [`Self::admit_any`] for admin operations: the cluster token or an admin user.
    pub(crate) fn admit(&self, header: &Option<proto::RequestHeader>) -> Result<Principal, Error> {
        let p = self.admit_any(header)?;
        p.require_admin()?;
        Ok(p)
    }

    /// [`Self::admit_any`] for daemon operations (meta/storage registration and heartbeats, the
    /// user table): the cluster token only.
    pub(crate) fn admit_cluster(&self, header: &Option<proto::RequestHeader>) -> Result<Principal, Error> {
        let p = self.admit_any(header)?;
        p.require_cluster()?;
        Ok(p)
    }

    /// Registration and heartbeats: meta and storage nodes need the cluster token; clients and
    /// FUSE mounts any valid token.
    fn admit_node(&self, header: &Option<proto::RequestHeader>, node_type: i32) -> Result<Principal, Error> {
        let client = [proto::NodeType::Client as i32, proto::NodeType::Fuse as i32].contains(&node_type);
        if client { self.admit_any(header) } else { self.admit_cluster(header) }
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

pub(crate) fn request_id(header: &Option<proto::RequestHeader>) -> &str {
    t3fs_common::auth::request_id(header.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{self, Candidate, Outcome};

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    async fn primary(db: &Db, id: u32) -> Cluster {
        let me = NodeInfo { node_id: id, grpc_addr: format!("h{id}:1"), ..Default::default() };
        let cluster = Cluster::new(String::new(), me, db.clone(), Duration::ZERO);
        let cand = Candidate { node_id: id, grpc_addr: format!("h{id}:1") };
        let Outcome::Acquired(l) = lease::acquire(db.as_ref(), &cand, None, 600_000).await.unwrap() else {
            panic!("lease not free")
        };
        cluster.take_over(l.term, far()).await.unwrap();
        cluster
    }

    fn meta_req() -> proto::RegisterNodeReq {
        proto::RegisterNodeReq { node_id: 5, node_type: proto::NodeType::Meta as i32, ..Default::default() }
    }

    #[tokio::test]
    async fn closed_cluster_refuses_writes_but_serves_reads() {
        let db: Db = t3fs_kv::mem::MemKv::new();
        let cluster = primary(&db, 1).await;
        assert_eq!(cluster.register(&meta_req()).await.unwrap(), 2);
        cluster.close().await;
        assert_eq!(cluster.register(&meta_req()).await.unwrap_err().code, StatusCode::Unavailable);
        assert_eq!(cluster.routing_info(0).await.unwrap().unwrap().nodes.len(), 2);
        assert!(cluster.routing_info(2).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn standbys_refuse_and_a_deposed_primary_cannot_write() {
        let db: Db = t3fs_kv::mem::MemKv::new();
        let standby = Cluster::new(String::new(), NodeInfo::default(), db.clone(), Duration::ZERO);
        assert_eq!(standby.ensure_primary().unwrap_err().code, StatusCode::NotPrimary);
        assert_eq!(standby.register(&meta_req()).await.unwrap_err().code, StatusCode::NotPrimary);
        standby.follow(Some("h1:1".into())).await;
        assert_eq!(primary_hint(&standby.ensure_primary().unwrap_err()).as_deref(), Some("h1:1"));

        let one = primary(&db, 1).await;
        one.ensure_primary().unwrap();
        assert_eq!(one.register(&meta_req()).await.unwrap(), 2);
        // 2 takes the lease behind 1's back (as after 1's lease expired): 1's next write fails,
        // names 2, and 1 steps down.
        lease::release(db.as_ref(), 1, 1).await.unwrap();
        let two = primary(&db, 2).await;
        assert_eq!(two.routing_info(0).await.unwrap().unwrap().version, 3, "the takeover reloaded and bumped");
        let e = one.register(&meta_req()).await.unwrap_err();
        assert_eq!(e.code, StatusCode::NotPrimary);
        assert_eq!(primary_hint(&e).as_deref(), Some("h2:1"));
        assert_eq!(one.role(), Role::Standby { primary: Some("h2:1".into()) });
        assert_eq!(one.routing_info(0).await.unwrap_err().code, StatusCode::NotPrimary, "no empty snapshot");
        assert_eq!(two.register(&meta_req()).await.unwrap(), 4);
        // A primary whose lease ran out (not extended in time) refuses and steps down.
        two.extended(2, Instant::now());
        assert_eq!(two.ensure_primary().unwrap_err().code, StatusCode::NotPrimary);
        assert_eq!(two.held_term().await, None);
        assert!(matches!(two.role(), Role::Standby { .. }));
    }
}
