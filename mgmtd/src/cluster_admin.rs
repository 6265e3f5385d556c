//! The [`Cluster`] side of the admin node and layout operations (planning lives in
//! `state::node_admin` / `state::layout_admin`) and of publishing the other mgmtd
//! (`crate::peers`). Each is primary-only and follows plan -> persist (one lease-checked KV
//! transaction with the routing version bump) -> apply, through `Cluster::commit`.
//!
//! Node operations (tags too) and new chain-table versions are allowed while bootstrapping (they
//! change no chain); `SetPreferredOrder`, `RotateChainHead` and `OfflineTarget` are refused then,
//! like `UpdateChain`.
use std::time::Instant;

use t3fs_common::Error;
use t3fs_common::proto::{ChainInfo, ChainTable, NodeInfo, NodeStatus, NodeTag, NodeType, SetTagsMode, TargetInfo};

use super::{Cluster, describe_chain};
use crate::state::Delta;
use crate::{keys, peers};

fn status_name(status: i32) -> &'static str {
    NodeStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("?")
}

impl Cluster {
    /// `DisableNode`.
    pub async fn disable_node(&self, node_id: u32) -> Result<NodeInfo, Error> {
        let mut inner = self.lock_primary().await?;
        let (delta, node) = inner.state.plan_disable(node_id)?;
        let changed = delta.visible;
        let version = self.commit(&mut inner, delta).await?;
        if changed {
            tracing::warn!(version, node_id, "admin disable-node: its targets count as offline until enabled");
        }
        Ok(node)
    }

    /// `EnableNode`.
    pub async fn enable_node(&self, node_id: u32) -> Result<NodeInfo, Error> {
        let mut inner = self.lock_primary().await?;
        let (delta, node) = inner.state.plan_enable(node_id, Instant::now(), self.heartbeat_timeout)?;
        let changed = delta.visible;
        let version = self.commit(&mut inner, delta).await?;
        if changed {
            tracing::info!(version, node_id, status = status_name(node.status), "admin enable-node");
        }
        Ok(node)
    }

    /// `UnregisterNode`: a registered node (see `plan_unregister`), or another mgmtd whose record
    /// has gone stale.
    pub async fn unregister_node(&self, node_id: u32) -> Result<u64, Error> {
        let mut inner = self.lock_primary().await?;
        if node_id == self.me.node_id {
            return Err(Error::invalid(format!("node {node_id} is this (primary) mgmtd")));
        }
        let delta = if inner.state.node(node_id).is_some() {
            inner.state.plan_unregister(node_id)?
        } else {
            match inner.peers.iter().find(|n| n.node_id == node_id) {
                None => return Err(Error::not_found(format!("node {node_id} is not registered"))),
                Some(n) if n.status == NodeStatus::HeartbeatConnected as i32 => {
                    return Err(Error::invalid(format!(
                        "mgmtd {node_id} is alive (it announced itself recently); stop it first"
                    )));
                }
                Some(_) => Delta { deletes: vec![keys::mgmtd(node_id)], visible: true, ..Default::default() },
            }
        };
        let version = self.commit(&mut inner, delta).await?;
        inner.peers.retain(|n| n.node_id != node_id);
        tracing::warn!(version, node_id, "admin unregister-node: node forgotten");
        Ok(version)
    }

    /// `SetPreferredOrder` (empty `order` clears it).
    pub async fn set_preferred_order(&self, chain_id: u32, order: &[u64]) -> Result<ChainInfo, Error> {
        let mut inner = self.lock_for_chain_change().await?;
        let (delta, chain) = inner.state.plan_set_preferred_order(chain_id, order)?;
        let version = self.commit(&mut inner, delta).await?;
        tracing::info!(version, ?order, "admin set-preferred-order: {}", describe_chain(&chain));
        Ok(chain)
    }

    /// `RotateChainHead`.
    pub async fn rotate_head(&self, chain_id: u32) -> Result<ChainInfo, Error> {
        let mut inner = self.lock_for_chain_change().await?;
        let (delta, chain) = inner.state.plan_rotate_head(chain_id)?;
        let version = self.commit(&mut inner, delta).await?;
        self.metrics.chain_changes.inc();
        tracing::info!(version, "admin rotate-head: {}", describe_chain(&chain));
        Ok(chain)
    }

    /// `SetNodeTags`.
    pub async fn set_node_tags(&self, node_id: u32, tags: &[NodeTag], mode: SetTagsMode) -> Result<NodeInfo, Error> {
        let mut inner = self.lock_primary().await?;
        let (delta, node) = inner.state.plan_set_node_tags(node_id, tags, mode)?;
        let changed = delta.visible;
        let version = self.commit(&mut inner, delta).await?;
        if changed {
            let tags: Vec<String> = node.tags.iter().map(|t| format!("{}={}", t.key, t.value)).collect();
            tracing::info!(version, node_id, ?tags, "admin set-node-tags");
        }
        Ok(node)
    }

    /// `OfflineTarget` (with `online`: undo). Chained targets change chains: refused while
    /// bootstrapping, like `UpdateChain`.
    pub async fn offline_target(&self, target_id: u64, online: bool) -> Result<(TargetInfo, Option<ChainInfo>), Error> {
        let mut inner = self.lock_for_chain_change().await?;
        let (delta, target, chain) = inner.state.plan_offline_target(target_id, online)?;
        let changed = delta.visible;
        let chain_changed = !delta.chains.is_empty();
        let version = self.commit(&mut inner, delta).await?;
        if chain_changed {
            self.metrics.chain_changes.inc();
        }
        if changed {
            let chain = chain.as_ref().map(describe_chain).unwrap_or_else(|| "no chain".into());
            tracing::warn!(version, target_id, online, "admin offline-target: {chain}");
        }
        Ok((target, chain))
    }

    /// `CreateChainTable{new_version}`.
    pub async fn new_table_version(&self, table_id: u32, chains: &[u32], desc: &str) -> Result<ChainTable, Error> {
        let mut inner = self.lock_primary().await?;
        let (delta, table) = inner.state.plan_new_table_version(table_id, chains, desc)?;
        let version = self.commit(&mut inner, delta).await?;
        tracing::info!(version, table_id, table_version = table.version, chains = chains.len(), "chain table version");
        Ok(table)
    }

    /// Publishes the other mgmtd from their announcements (`records`, read at `now_ms`): a change
    /// in what routing info shows takes a routing version bump. Nothing on a standby.
    pub async fn update_peers(&self, records: &[NodeInfo], now_ms: u64, stale_ms: u64) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        if inner.term.is_none() {
            return Ok(());
        }
        let view = peers::view(records, self.me.node_id, now_ms, stale_ms);
        // Records that share an id with a registered node are not listed (that id is taken).
        let view: Vec<NodeInfo> = view.into_iter().filter(|n| inner.state.node(n.node_id).is_none()).collect();
        if peers::differ(&inner.peers, &view) {
            let version = self.commit(&mut inner, Delta { visible: true, ..Default::default() }).await?;
            let listed: Vec<(u32, &str)> = view.iter().map(|n| (n.node_id, status_name(n.status))).collect();
            tracing::info!(version, peers = ?listed, "other mgmtd changed");
        }
        debug_assert!(view.iter().all(|n| n.node_type == NodeType::Mgmtd as i32));
        inner.peers = view;
        Ok(())
    }
}
