//! Chain placement for a new chain table: which free targets form which chains.
//!
//! Input: free targets (not in any chain) with their nodes. Output: chains of `replicas` targets,
//! each on `replicas` distinct nodes, every target in at most one chain.
//!
//! Greedy round robin: nodes are sorted by id and targets within a node by id. For chain `i` the
//! candidates are the nodes that still have free targets, preferring those with the most left (so
//! uneven nodes do not strand targets), ties broken by round-robin position starting at node
//! `i mod n`; the chosen nodes are then ordered by that round-robin position, so chain heads rotate
//! across nodes. Each chosen node gives its lowest free target. Placement stops when fewer than
//! `replicas` nodes have free targets. The output is a pure function of the input (deterministic).
use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use t3fs_common::Error;

/// Builds chains (each a head-to-tail list of target ids) from `free` = (node id, target id) pairs.
pub fn build_chains(free: &[(u32, u64)], replicas: usize) -> Result<Vec<Vec<u64>>, Error> {
    if replicas == 0 {
        return Err(Error::invalid("replicas must be at least 1"));
    }
    let mut by_node: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(node, target) in free {
        by_node.entry(node).or_default().push(target);
    }
    if by_node.len() < replicas {
        return Err(Error::invalid(format!(
            "{replicas} replicas need {replicas} storage nodes with unplaced targets; found {}",
            by_node.len()
        )));
    }
    let mut queues: Vec<VecDeque<u64>> = by_node
        .into_values()
        .map(|mut targets| {
            targets.sort_unstable();
            targets.dedup();
            targets.into()
        })
        .collect();
    let n = queues.len();
    let mut chains = Vec::new();
    for i in 0.. {
        let rotated = |node: usize| (node + n - i % n) % n;
        let mut eligible: Vec<usize> = (0..n).filter(|&node| !queues[node].is_empty()).collect();
        if eligible.len() < replicas {
            break;
        }
        eligible.sort_by_key(|&node| (Reverse(queues[node].len()), rotated(node)));
        let mut picked = eligible[..replicas].to_vec();
        picked.sort_by_key(|&node| rotated(node));
        let chain: Vec<u64> =
            picked.iter().map(|&node| queues[node].pop_front().expect("eligible nodes have free targets")).collect();
        chains.push(chain);
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// Checks the placement invariants and returns the number of chains.
    fn check(free: &[(u32, u64)], replicas: usize) -> usize {
        let node_of: HashMap<u64, u32> = free.iter().map(|&(n, t)| (t, n)).collect();
        let chains = build_chains(free, replicas).unwrap();
        let mut used = HashSet::new();
        for c in &chains {
            assert_eq!(c.len(), replicas);
            let nodes: HashSet<u32> = c.iter().map(|t| node_of[t]).collect();
            assert_eq!(nodes.len(), replicas, "chain {c:?} repeats a node");
            for t in c {
                assert!(used.insert(*t), "target {t} placed twice");
            }
        }
        chains.len()
    }

    #[test]
    fn three_nodes_two_targets_each() {
        let free = [(1, 11), (1, 12), (2, 21), (2, 22), (3, 31), (3, 32)];
        let chains = build_chains(&free, 3).unwrap();
        // Heads rotate: node 1 heads chain 1, node 2 heads chain 2.
        assert_eq!(chains, vec![vec![11, 21, 31], vec![22, 32, 12]]);
        assert_eq!(check(&free, 3), 2);
        assert_eq!(check(&free, 2), 3);
        assert_eq!(check(&free, 1), 6);
    }

    #[test]
    fn uneven_nodes_do_not_strand_targets() {
        // 4+1+1+1 targets, replicas 2: most-free-first gives 3 chains (the maximum), all using node 1.
        let free = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 5), (3, 6), (4, 7)];
        assert_eq!(check(&free, 2), 3);
        // 2+2+2+2 targets, replicas 3: floor(8 / 3) = 2 chains.
        let free: Vec<(u32, u64)> = (0..8).map(|i| (i / 2 + 1, i as u64 + 1)).collect();
        assert_eq!(check(&free, 3), 2);
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(build_chains(&[(1, 1), (2, 2)], 0).is_err());
        assert!(build_chains(&[(1, 1), (1, 2), (2, 3)], 3).is_err());
        assert!(build_chains(&[], 1).is_err());
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let a = [(3, 31), (1, 12), (2, 21), (1, 11), (3, 32), (2, 22)];
        let b = [(1, 11), (1, 12), (2, 21), (2, 22), (3, 31), (3, 32)];
        assert_eq!(build_chains(&a, 3).unwrap(), build_chains(&b, 3).unwrap());
    }
}
