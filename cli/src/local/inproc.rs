//! An in-process local cluster: every daemon's `start` on the caller's tokio runtime.
//!
//! Used by integration tests (and benchmarks) to boot mgmtd, meta and three storage servers on
//! loopback in one process, over the same data-directory layout as `t3fs local up`, so a test can
//! stop the cluster and start it again on the same directory. `DIR/cluster.toml` holds the address
//! mgmtd really bound (port 0 picks a free one), so the `t3fs admin --data-dir DIR` binary works
//! against it.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use t3fs_common::proto;

use super::CHAIN_TABLE_ID;
use super::plan::Plan;
use super::plan::Shape;

/// A running in-process cluster.
pub struct LocalCluster {
    pub plan: Plan,
    mgmtd: Option<t3fs_mgmtd::Server>,
    meta: Option<t3fs_meta::Server>,
    /// Meta servers added with [`Self::add_meta`], on the same store as `meta`.
    more_meta: Vec<t3fs_meta::Server>,
    /// The meta store, shared by every meta server of this process.
    meta_db: Option<t3fs_kv::Db>,
    /// Storage servers by index into `plan.storage`; `None` while stopped (failure injection).
    storage: Vec<Option<t3fs_storage::Server>>,
}

impl LocalCluster {
    /// Starts (or restarts) a cluster on `dir`: mgmtd, meta, storage servers, then the chain table.
    pub async fn start(dir: &Path) -> anyhow::Result<LocalCluster> {
        Self::start_with(dir, |_| {}).await
    }

    /// [`Self::start`] with the daemons' configs adjusted by `tweak` first (e.g. short client
    /// session timeouts for tests).
    pub async fn start_with(dir: &Path, tweak: impl FnOnce(&mut Plan)) -> anyhow::Result<LocalCluster> {
        let mut plan = Plan::load_or_create(dir, Some("127.0.0.1:0"))?;
        tweak(&mut plan);
        let mgmtd = t3fs_mgmtd::start(plan.mgmtd.clone()).await.context("starting mgmtd")?;
        let addr = mgmtd.grpc_addr().to_string();
        plan.meta.mgmtd_addr = addr.clone();
        plan.fuse.mgmtd_addr = addr.clone();
        for s in &mut plan.storage {
            s.mgmtd_addr = addr.clone();
        }
        plan.cluster.mgmtd_addr = addr;
        // Record the real address, so `t3fs admin --data-dir DIR` reaches this cluster (a restart on the
        // same directory binds a new port and rewrites it).
        let cf_path = dir.join("cluster.toml");
        std::fs::write(&cf_path, t3fs_common::config::to_toml(&plan.cluster)?)
            .with_context(|| format!("writing {}", cf_path.display()))?;
        let mut storage = Vec::new();
        for cfg in &plan.storage {
            let server =
                t3fs_storage::start(cfg.clone()).await.with_context(|| format!("starting storage {}", cfg.node_id))?;
            storage.push(Some(server));
        }
        ensure_chain_table(&plan.cluster.mgmtd_addr, &plan.cluster.token, plan.cluster.shape).await?;
        let db = t3fs_kv::open(&plan.meta.kv).await.context("opening the meta store")?;
        let meta = t3fs_meta::start_on(plan.meta.clone(), db.clone()).await.context("starting meta")?;
        Ok(LocalCluster {
            plan,
            mgmtd: Some(mgmtd),
            meta: Some(meta),
            more_meta: Vec::new(),
            meta_db: Some(db),
            storage,
        })
    }

    /// The address clients reach mgmtd at.
    pub fn mgmtd_addr(&self) -> &str {
        &self.plan.cluster.mgmtd_addr
    }

    /// A client config for this cluster.
    pub fn client_config(&self) -> t3fs_client::ClientConfig {
        t3fs_client::ClientConfig {
            mgmtd_addr: self.plan.cluster.mgmtd_addr.clone(),
            token: self.plan.cluster.token.clone(),
            ..t3fs_client::ClientConfig::default()
        }
    }

    /// A FUSE mount config for this cluster.
    pub fn mount_config(&self) -> t3fs_fuse::MountConfig {
        self.plan.fuse.clone()
    }

    /// Connects a native client.
    pub async fn client(&self) -> anyhow::Result<Arc<t3fs_client::Client>> {
        Ok(t3fs_client::Client::connect(self.client_config()).await?)
    }

    /// Storage server `i` (0-based), while it runs.
    pub fn storage(&self, i: usize) -> Option<&t3fs_storage::Server> {
        self.storage.get(i).and_then(Option::as_ref)
    }

    /// The meta server, while it runs.
    pub fn meta(&self) -> Option<&t3fs_meta::Server> {
        self.meta.as_ref()
    }

    /// Starts one more meta server on the same store (node id = the first's + the number added),
    /// as a second meta host would run over one FoundationDB cluster. Returns its node id.
    pub async fn add_meta(&mut self) -> anyhow::Result<u32> {
        let db = self.meta_db.clone().context("the cluster is stopped")?;
        let mut cfg = self.plan.meta.clone();
        cfg.node_id += 1 + self.more_meta.len() as u32;
        cfg.listen = "127.0.0.1:0".into();
        cfg.advertise = None;
        cfg.metrics_listen = None;
        let node_id = cfg.node_id;
        self.more_meta.push(t3fs_meta::start_on(cfg, db).await.context("starting another meta server")?);
        Ok(node_id)
    }

    /// Every running meta server: the first, then those [`Self::add_meta`] started.
    pub fn metas(&self) -> impl Iterator<Item = &t3fs_meta::Server> {
        self.meta.iter().chain(&self.more_meta)
    }

    /// Stops the meta server with node id `node_id` (failure injection). Returns false if none
    /// runs with that id.
    pub async fn stop_meta(&mut self, node_id: u32) -> bool {
        if self.meta.as_ref().is_some_and(|m| m.node_id() == node_id) {
            if let Some(m) = self.meta.take() {
                m.shutdown().await;
            }
            return true;
        }
        match self.more_meta.iter().position(|m| m.node_id() == node_id) {
            Some(i) => {
                self.more_meta.remove(i).shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Stops storage server `i` (0-based) only, as a crash would (failure injection for tests).
    /// Returns false if it was not running.
    pub async fn stop_storage(&mut self, i: usize) -> bool {
        match self.storage.get_mut(i).and_then(Option::take) {
            Some(s) => {
                s.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Starts storage server `i` again on the same directories (after [`Self::stop_storage`]).
    pub async fn start_storage(&mut self, i: usize) -> anyhow::Result<()> {
        let cfg = self.plan.storage.get(i).cloned().context("no such storage server")?;
        let slot = self.storage.get_mut(i).context("no such storage server")?;
        if slot.is_none() {
            *slot = Some(t3fs_storage::start(cfg).await.context("restarting storage")?);
        }
        Ok(())
    }

    /// Stops everything (meta, storage, then mgmtd), releasing every file so `start` can reopen it.
    pub async fn shutdown(mut self) {
        for m in self.meta.take().into_iter().chain(self.more_meta.drain(..)) {
            m.shutdown().await;
        }
        // The last handle of the store: an embedded one closes here, so `start` can reopen it.
        self.meta_db = None;
        for s in self.storage.drain(..).flatten() {
            s.shutdown().await;
        }
        if let Some(m) = self.mgmtd.take() {
            m.shutdown().await;
        }
    }
}

/// Waits until every storage target is registered, then creates chain table 1 unless it exists.
pub async fn ensure_chain_table(mgmtd_addr: &str, token: &str, shape: Shape) -> anyhow::Result<proto::ChainTable> {
    let mut client = t3fs_common::routing::connect_mgmtd(mgmtd_addr).await?;
    let header = || proto::RequestHeader {
        request_id: t3fs_common::new_request_id(),
        token: token.to_string(),
        ..Default::default()
    };
    let want_targets = shape.targets() as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = client
            .get_routing_info(proto::GetRoutingInfoReq { header: Some(header()), known_version: 0 })
            .await
            .map_err(|s| t3fs_common::Error::from_tonic(&s))?
            .into_inner()
            .info
            .unwrap_or_default();
        if let Some(t) = info.tables.iter().find(|t| t.table_id == CHAIN_TABLE_ID) {
            return Ok(t.clone());
        }
        if info.targets.len() >= want_targets {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("only {} of {want_targets} storage targets registered after 60 s", info.targets.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rsp = client
        .create_chain_table(proto::CreateChainTableReq {
            header: Some(header()),
            table_id: CHAIN_TABLE_ID,
            replicas: shape.replicas,
            desc: "local cluster".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))?
        .into_inner();
    rsp.table.context("mgmtd returned no chain table")
}
