//! Owners by rendezvous hashing: which meta node owns a directory's operations (the client sends
//! them there, `client/src/meta_route.rs`) and which one collects an unlinked file (`meta/src/gc.rs`).
//!
//! The owner of `key` among a set of node ids is the node with the highest [`weight`]`(key, node)`
//! (highest random weight, "rendezvous" hashing). Invariants:
//! - it depends only on the set of nodes (not their order), so every process with the same routing
//!   picks the same owner;
//! - when a node joins or leaves, only the keys it wins (or won) move;
//! - keys spread evenly over the nodes.
//!
//! Owners only decide who does work, never what is correct: every meta node may serve any request
//! against the one transactional store, so two processes that disagree for a moment (different
//! routing versions) cost conflicts or duplicate work, not correctness.
use crate::proto;
use crate::routing::Routing;

/// The weight of `node` for `key`: splitmix64's finalizer over both ids (well mixed, and the same
/// in every process and version).
pub fn weight(key: u64, node: u32) -> u64 {
    let mut z = key ^ u64::from(node).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sorts `nodes` into the order to try for `key`: nodes for which `last` holds at the end, each
/// part by descending weight (so the first is the owner among the others).
pub fn rendezvous_order<T>(key: u64, nodes: &mut [T], id: impl Fn(&T) -> u32, last: impl Fn(u32) -> bool) {
    nodes.sort_by_key(|n| {
        let id = id(n);
        (last(id), std::cmp::Reverse((weight(key, id), id)))
    });
}

/// The owner of `key` among `nodes`; `None` when there are none.
pub fn owner(key: u64, nodes: &[u32]) -> Option<u32> {
    nodes.iter().copied().max_by_key(|n| (weight(key, *n), *n))
}

/// The live meta nodes (node ids) in `routing`.
pub fn meta_nodes(routing: &Routing) -> Vec<u32> {
    routing.nodes_of_type(proto::NodeType::Meta).map(|n| n.node_id).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn owners_spread_over_nodes_and_do_not_depend_on_listing_order() {
        let mut counts = HashMap::new();
        for key in 1..=3000u64 {
            let o = owner(key, &[3, 7, 11]).unwrap();
            assert_eq!(Some(o), owner(key, &[11, 3, 7]), "the owner is a function of the set of nodes");
            let mut sorted = vec![7, 11, 3];
            rendezvous_order(key, &mut sorted, |n| *n, |_| false);
            assert_eq!(sorted[0], o, "the order starts with the owner");
            *counts.entry(o).or_insert(0) += 1;
        }
        for id in [3, 7, 11] {
            let c = counts.get(&id).copied().unwrap_or(0);
            assert!((800..1200).contains(&c), "node {id} owns {c} of 3000 keys");
        }
        assert_eq!(owner(5, &[]), None);
    }

    #[test]
    fn a_node_leaving_or_joining_moves_only_its_own_keys() {
        for key in 1..=2000u64 {
            let before = owner(key, &[1, 2, 3, 4]).unwrap();
            let after = owner(key, &[1, 2, 4]).unwrap();
            if before != 3 {
                assert_eq!(before, after, "key {key} moved though its owner stayed");
            }
            let joined = owner(key, &[1, 2, 3, 4, 5]).unwrap();
            assert!(joined == before || joined == 5, "a joining node takes keys only for itself");
        }
    }

    #[test]
    fn nodes_marked_last_go_last_in_weight_order() {
        for key in 1..=500u64 {
            let first = owner(key, &[1, 2, 3]).unwrap();
            let mut n = vec![1, 2, 3];
            rendezvous_order(key, &mut n, |n| *n, |id| id == first);
            assert_eq!(n[2], first);
            let rest: Vec<u32> = [1, 2, 3].into_iter().filter(|id| *id != first).collect();
            assert_eq!(Some(n[0]), owner(key, &rest), "the next owner is the owner among the others");
        }
    }
}
