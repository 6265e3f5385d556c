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
//! - Rendezvous hashing: when a meta node joins or leaves, only the directories it wins (or won)
//!   move; every client with the same routing picks the same owner.
use std::collections::HashMap;
use std::time::Duration;

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

/// The rendezvous score of `node` for directory `dir`: the owner is the node with the highest.
fn score(dir: InodeId, node: u32) -> u64 {
    // splitmix64's finalizer over both ids: well mixed, and the same in every client.
    let mut z = dir.0 ^ (u64::from(node).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `nodes` in the order to try for directory `dir`: by descending score, nodes in `avoid` last.
pub(crate) fn owner_order(dir: InodeId, nodes: &mut [(u32, String)], avoid: impl Fn(u32) -> bool) {
    nodes.sort_by_key(|(id, _)| (avoid(*id), std::cmp::Reverse(score(dir, *id))));
}

impl Client {
    /// The connection for a namespace request: to the owner of `dir` when given, else to the
    /// current node. Tries the nodes in order until one connects.
    pub(crate) async fn meta_conn(&self, dir: Option<InodeId>) -> Result<MetaConn> {
        let dir = dir.filter(|_| self.cfg.dir_owner_routing);
        let mut nodes = self.meta_nodes();
        if nodes.is_empty() {
            return Err(Error::new(StatusCode::RoutingNotReady, "no meta node in routing info"));
        }
        {
            let mut st = self.meta.state();
            st.failed.retain(|id, at| at.elapsed() < AVOID_FOR && nodes.iter().any(|(n, _)| n == id));
            match dir {
                Some(dir) => owner_order(dir, &mut nodes, |id| st.failed.contains_key(&id)),
                None => {
                    if let Some(c) = st.current.and_then(|id| st.conns.get(&id)) {
                        return Ok(c.1.clone());
                    }
                    let start = self.next_rr() % nodes.len();
                    nodes.rotate_left(start);
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
        owner_order(dir, &mut nodes, |id| st.failed.get(&id).is_some_and(|at| at.elapsed() < AVOID_FOR));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u32]) -> Vec<(u32, String)> {
        ids.iter().map(|id| (*id, format!("n{id}"))).collect()
    }

    fn owner(dir: u64, ids: &[u32]) -> u32 {
        let mut n = nodes(ids);
        owner_order(InodeId(dir), &mut n, |_| false);
        n[0].0
    }

    #[test]
    fn owners_spread_over_nodes_and_do_not_depend_on_listing_order() {
        let mut counts = HashMap::new();
        for dir in 1..=3000u64 {
            let o = owner(dir, &[3, 7, 11]);
            assert_eq!(o, owner(dir, &[11, 3, 7]), "the owner is a function of the set of nodes");
            *counts.entry(o).or_insert(0) += 1;
        }
        for id in [3, 7, 11] {
            let c = counts.get(&id).copied().unwrap_or(0);
            assert!((800..1200).contains(&c), "node {id} owns {c} of 3000 directories");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_directories() {
        for dir in 1..=2000u64 {
            let before = owner(dir, &[1, 2, 3, 4]);
            let after = owner(dir, &[1, 2, 4]);
            if before != 3 {
                assert_eq!(before, after, "directory {dir} moved though its owner stayed");
            }
            // A node joining takes directories only for itself.
            let joined = owner(dir, &[1, 2, 3, 4, 5]);
            assert!(joined == before || joined == 5);
        }
    }

    #[test]
    fn avoided_nodes_go_last_in_hash_order() {
        for dir in 1..=500u64 {
            let first = owner(dir, &[1, 2, 3]);
            let mut n = nodes(&[1, 2, 3]);
            owner_order(InodeId(dir), &mut n, |id| id == first);
            assert_eq!(n[2].0, first);
            let rest: Vec<u32> = [1, 2, 3].into_iter().filter(|id| *id != first).collect();
            assert_eq!(n[0].0, owner(dir, &rest), "the next owner is the owner among the others");
        }
    }
}
