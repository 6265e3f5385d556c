//! Which meta node a namespace request goes to, and the connections to meta nodes.
//!
//! Meta is stateless (every node serves every request against one transactional store), so most
//! requests go to this client's *current* node: picked round robin among the live meta nodes at
//! the first request and again after a transport failure.
//!
//! Creates, mkdirs and removes go to their parent directory's **owner** instead: the live meta
//! node that wins rendezvous hashing of (directory, node id). Each meta node commits the queued
//! operations on one directory in one transaction (meta's per-directory batching, docs/meta.md),
//! so sending every client's operations on a directory to one node is what lets a checkpoint
//! directory written by ranks on many hosts commit in batches. Were they spread over the meta
//! nodes (each client on its own current node), each node's batches would conflict with the
//! others' on the directory inode and retry one at a time. (3FS gets the same effect by having
//! the receiving meta server forward the operation to the owner; routing in the client saves
//! that hop.)
//!
//! Invariants:
//! - The choice affects speed only, never correctness: any node may serve any request.
//! - A node that failed a transport is avoided for [`AVOID_FOR`] (or until routing drops it): its
//!   directories fall to their next node in hash order meanwhile, so a dead owner costs one
//!   failed try, not a retry timeout.
//! - Rendezvous hashing (`t3fs_common::owner`): when a meta node joins or leaves, only the
//!   directories it wins (or won) move; every client with the same routing picks the same owner.
use std::collections::HashMap;
use std::time::Duration;

use t3fs_common::owner::rendezvous_order;
use t3fs_common::proto;
use t3fs_common::routing;
use t3fs_common::{Error, InodeId, Result, StatusCode};
use tokio::time::Instant;

use crate::{Client, MetaClient};

/// How long a node that failed a transport is skipped when picking a directory's owner.
const AVOID_FOR: Duration = Duration::from_secs(5);

/// A connection to one meta node.
#[derive(Clone)]
pub(crate) struct MetaConn {
    pub(crate) node_id: u32,
    pub(crate) client: MetaClient,
}

/// Open meta connections by node, the current node and the nodes to avoid.
#[derive(Default)]
pub(crate) struct MetaConns {
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// node id → (address it was connected at, connection).
    conns: HashMap<u32, (String, MetaConn)>,
    current: Option<u32>,
    /// node id → when its last transport failure was seen.
    failed: HashMap<u32, Instant>,
}

impl MetaConns {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Whether `node` failed a request within the last [`AVOID_FOR`].
    fn avoided(&self, node: u32) -> bool {
        self.failed.get(&node).is_some_and(|at| at.elapsed() < AVOID_FOR)
    }
}

impl Client {
    /// The connection for a namespace request: to the owner of `dir` when given, else to the
    /// current node. Tries the nodes in order until one connects.
    pub(crate) async fn meta_conn(&self, dir: Option<InodeId>) -> Result<MetaConn> {
        let dir = dir.filter(|_| self.cfg.dir_owner_routing);
        if dir.is_none() {
            // The common case, without reading routing: the current node's connection.
            let st = self.meta.state();
            if let Some(c) = st.current.and_then(|id| st.conns.get(&id)) {
                return Ok(c.1.clone());
            }
        }
        let mut nodes = self.meta_nodes();
        if nodes.is_empty() {
            return Err(Error::new(StatusCode::RoutingNotReady, "no meta node in routing info"));
        }
        {
            let mut st = self.meta.state();
            let listed = |id: &u32| nodes.iter().any(|(n, _)| n == id);
            st.failed.retain(|id, _| listed(id));
            // Connections to nodes routing no longer lists are dropped (a node that comes back is
            // connected again).
            st.conns.retain(|id, _| listed(id));
            match dir {
                Some(dir) => rendezvous_order(dir.0, &mut nodes, |n| n.0, |id| st.avoided(id)),
                None => {
                    let start = self.next_rr() % nodes.len();
                    nodes.rotate_left(start);
                    // Round robin, but nodes that failed a request lately last (a stable sort).
                    nodes.sort_by_key(|(id, _)| st.avoided(*id));
                }
            }
        }
        let mut last = None;
        for (node_id, addr) in nodes {
            {
                let mut st = self.meta.state();
                if let Some(c) = st.conns.get(&node_id).filter(|(at, _)| *at == addr).map(|(_, c)| c.clone()) {
                    if dir.is_none() {
                        st.current = Some(node_id);
                    }
                    return Ok(c);
                }
            }
            match routing::connect_channel(&addr).await {
                Ok(ch) => {
                    let conn = MetaConn { node_id, client: MetaClient::new(ch) };
                    let mut st = self.meta.state();
                    st.conns.insert(node_id, (addr.clone(), conn.clone()));
                    if dir.is_none() {
                        st.current = Some(node_id);
                    }
                    tracing::debug!(node = node_id, %addr, "connected to meta");
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(node = node_id, %addr, error = %e, "meta node unreachable");
                    self.meta.state().failed.insert(node_id, Instant::now());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::unavailable("no meta node reachable")))
    }

    /// The live meta nodes in routing: (node id, address).
    fn meta_nodes(&self) -> Vec<(u32, String)> {
        self.routing.get().nodes_of_type(proto::NodeType::Meta).map(|n| (n.node_id, n.grpc_addr.clone())).collect()
    }

    /// The meta node creates, mkdirs and removes in directory `dir` go to now: its owner among the
    /// live meta nodes that have not failed a request in the last few seconds. `None` when no meta
    /// node is known, or with `dir_owner_routing` off (they go to the current node).
    pub fn dir_owner(&self, dir: InodeId) -> Option<u32> {
        if !self.cfg.dir_owner_routing {
            return None;
        }
        let mut nodes = self.meta_nodes();
        let st = self.meta.state();
        rendezvous_order(dir.0, &mut nodes, |n| n.0, |id| st.avoided(id));
        nodes.first().map(|n| n.0)
    }

    /// Drops the connection to `node_id` after a transport failure and avoids the node for a
    /// while: the next try goes to another node.
    pub(crate) fn forget_meta(&self, node_id: u32) {
        let mut st = self.meta.state();
        st.conns.remove(&node_id);
        if st.current == Some(node_id) {
            st.current = None;
        }
        st.failed.insert(node_id, Instant::now());
    }
}
