//! Admin operations on the layout of chains and tables, planned against the state like every
//! other change (see `state.rs`):
//!
//! - `SetPreferredOrder`: stores a preferred order of a chain's targets in the chain record
//!   (`ChainInfo.preferred_order`). It changes neither the targets nor the chain version; while
//!   every target is SERVING the state machine keeps them in that order
//!   ([`crate::chain_update::prefer`]), so the next check applies it (with a chain version bump if
//!   the order changes). Spreading heads over nodes is the point.
//! - `RotateChainHead`: the head (SERVING) moves behind the other SERVING targets, so the next
//!   one leads (3FS's rotate-as-preferred-order, done one step at a time). A set preferred order is
//!   replaced by the new order, or the state machine would undo the rotation.
//! - New chain-table versions: version latest + 1 of an existing table lists an explicit, ordered
//!   set of existing chains (`CreateChainTable{new_version: true, chains}`).
//!
//! Invariants kept: the targets and their states are unchanged by all three (only the order, by
//! rotation); TargetInfo mirrors chains; refusals change nothing.
use std::collections::HashSet;

use t3fs_common::proto::{ChainInfo, ChainTable, ChainTarget, PublicTargetState};
use t3fs_common::{Error, StatusCode};

use super::chain_admin::bumped;
use super::{ClusterState, Delta, MAX_DESC_LEN};
use crate::chain_update::public_of;

fn serving(t: &ChainTarget) -> bool {
    public_of(t.public_state) == PublicTargetState::Serving
}

impl ClusterState {
    /// `SetPreferredOrder`: `order` is exactly the chain's targets, each once, or empty (clears it).
    pub fn plan_set_preferred_order(&self, chain_id: u32, order: &[u64]) -> Result<(Delta, ChainInfo), Error> {
        let chain = self.chain_or_not_found(chain_id)?;
        let mut listed = HashSet::new();
        for &t in order {
            if !listed.insert(t) {
                return Err(Error::invalid(format!("target {t} is listed twice")));
            }
            if !chain.targets.iter().any(|c| c.target_id == t) {
                return Err(Error::invalid(format!("target {t} is not in chain {chain_id}")));
            }
        }
        if !order.is_empty() && listed.len() != chain.targets.len() {
            let missing: Vec<u64> = chain.targets.iter().map(|c| c.target_id).filter(|t| !listed.contains(t)).collect();
            return Err(Error::invalid(format!(
                "a preferred order lists every target of chain {chain_id}; missing {missing:?}"
            )));
        }
        if chain.preferred_order == order {
            return Ok((Delta::default(), chain.clone()));
        }
        let next = ChainInfo { preferred_order: order.to_vec(), ..chain.clone() };
        Ok((Delta { chains: vec![next.clone()], visible: true, ..Default::default() }, next))
    }

    /// `RotateChainHead`: the SERVING head moves behind the other SERVING targets.
    pub fn plan_rotate_head(&self, chain_id: u32) -> Result<(Delta, ChainInfo), Error> {
        let chain = self.chain_or_not_found(chain_id)?;
        let Some(head) = chain.targets.first().filter(|t| serving(t)) else {
            return Err(Error::invalid(format!("chain {chain_id} has no SERVING head")));
        };
        let others = chain.targets[1..].iter().take_while(|t| serving(t)).count();
        if others == 0 {
            return Err(Error::invalid(format!("chain {chain_id} has no other SERVING target to take over as head")));
        }
        let mut targets = chain.targets.clone();
        targets[..=others].rotate_left(1);
        debug_assert_eq!(targets[others], *head);
        let mut next = bumped(chain, targets);
        if !next.preferred_order.is_empty() {
            next.preferred_order = next.targets.iter().map(|t| t.target_id).collect();
        }
        Ok((Delta { chains: vec![next.clone()], visible: true, ..Default::default() }, next))
    }

    /// `CreateChainTable{new_version}`: version latest + 1 of table `table_id` listing `chains` in
    /// this order (each an existing chain, once). An empty `desc` keeps the latest version's.
    pub fn plan_new_table_version(
        &self,
        table_id: u32,
        chains: &[u32],
        desc: &str,
    ) -> Result<(Delta, ChainTable), Error> {
        let latest = self
            .tables
            .range((table_id, 0)..=(table_id, u32::MAX))
            .next_back()
            .map(|(_, t)| t)
            .ok_or_else(|| Error::not_found(format!("chain table {table_id} does not exist; create it first")))?;
        if chains.is_empty() {
            return Err(Error::invalid("a chain table version lists at least one chain"));
        }
        if desc.len() > MAX_DESC_LEN {
            return Err(Error::invalid(format!("description is longer than {MAX_DESC_LEN} bytes")));
        }
        let mut listed = HashSet::new();
        for &c in chains {
            self.chain_or_not_found(c)?;
            if !listed.insert(c) {
                return Err(Error::invalid(format!("chain {c} is listed twice")));
            }
        }
        let version = latest.version.checked_add(1).ok_or_else(|| {
            Error::new(StatusCode::InvalidArgument, format!("chain table {table_id} has no version left"))
        })?;
        let desc = if desc.is_empty() { latest.desc.clone() } else { desc.to_string() };
        let table = ChainTable { table_id, version, chains: chains.to_vec(), desc };
        Ok((Delta { tables: vec![table.clone()], visible: true, ..Default::default() }, table))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use t3fs_common::proto::{HeartbeatReq, LocalTarget, LocalTargetState, NodeType, RegisterNodeReq};

    use super::*;
    use crate::state::TablePlan;

    const S: i32 = PublicTargetState::Serving as i32;
    const O: i32 = PublicTargetState::Offline as i32;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn apply(s: &mut ClusterState, d: Delta) {
        let v = d.visible.then(|| s.version() + 1);
        s.apply(d, v);
    }

    fn heartbeat(s: &mut ClusterState, n: u32, targets: &[u64], now: Instant) {
        let targets = targets
            .iter()
            .map(|&t| LocalTarget {
                target_id: t,
                local_state: LocalTargetState::Uptodate as i32,
                ..Default::default()
            })
            .collect();
        let req = HeartbeatReq { node_id: n, node_type: NodeType::Storage as i32, targets, ..Default::default() };
        let d = s.plan_heartbeat(&req, now, 0).unwrap();
        apply(s, d);
    }

    /// Storage nodes 10, 20, 30 with targets n+1, n+2 in table 1 (R=3, two chains).
    fn cluster(now: Instant) -> ClusterState {
        let mut s = ClusterState::default();
        for n in [10, 20, 30] {
            let req = RegisterNodeReq { node_id: n, node_type: NodeType::Storage as i32, ..Default::default() };
            let d = s.plan_register(&req, 1, now, 0).unwrap();
            apply(&mut s, d);
            heartbeat(&mut s, n, &[u64::from(n) + 1, u64::from(n) + 2], now);
        }
        let TablePlan::New(d, _) = s.plan_create_table(1, 3, "first", true, &[]).unwrap() else { panic!("new table") };
        apply(&mut s, d);
        s
    }

    fn order(c: &ChainInfo) -> Vec<(u64, i32)> {
        c.targets.iter().map(|t| (t.target_id, t.public_state)).collect()
    }

    fn ids(c: &ChainInfo) -> Vec<u64> {
        c.targets.iter().map(|t| t.target_id).collect()
    }

    #[test]
    fn preferred_order_is_applied_by_the_checker_while_all_serve() {
        let now = Instant::now();
        let mut s = cluster(now);
        let chain = s.chains[&100_001].clone();
        let mut want = ids(&chain);
        want.reverse();
        let (d, next) = s.plan_set_preferred_order(100_001, &want).unwrap();
        assert_eq!((next.chain_version, ids(&next)), (chain.chain_version, ids(&chain)), "no reorder yet");
        let v = s.version();
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        // The same order again changes nothing.
        assert!(!s.plan_set_preferred_order(100_001, &want).unwrap().0.visible);
        let d = s.plan_check(now, TIMEOUT, true);
        apply(&mut s, d);
        let c = &s.chains[&100_001];
        assert_eq!((ids(c), c.chain_version), (want.clone(), chain.chain_version + 1));
        assert_eq!(c.preferred_order, want);

        // The preferred head's node fails: the order follows the states, not the preference.
        let head_node = s.targets[&want[0]].node_id;
        let others: Vec<u32> = [10, 20, 30].into_iter().filter(|&n| n != head_node).collect();
        let later = now + TIMEOUT / 2;
        for &n in &others {
            heartbeat(&mut s, n, &[u64::from(n) + 1, u64::from(n) + 2], later + TIMEOUT);
        }
        let d = s.plan_check(later + TIMEOUT + Duration::from_secs(1), TIMEOUT, true);
        apply(&mut s, d);
        let c = &s.chains[&100_001];
        assert_eq!(c.targets.last().map(|t| (t.target_id, t.public_state)), Some((want[0], O)));
        assert_eq!(ids(c)[..2], want[1..]);
        // Clearing is allowed.
        let (_, next) = s.plan_set_preferred_order(100_001, &[]).unwrap();
        assert!(next.preferred_order.is_empty());
    }

    #[test]
    fn preferred_order_refusals_change_nothing() {
        let s = cluster(Instant::now());
        let v = s.version();
        let chain = &s.chains[&100_001];
        let t = ids(chain);
        let code = |r: Result<(Delta, ChainInfo), Error>| r.unwrap_err().code;
        assert_eq!(code(s.plan_set_preferred_order(7, &t)), StatusCode::NotFound);
        assert_eq!(code(s.plan_set_preferred_order(100_001, &t[..2])), StatusCode::InvalidArgument);
        assert_eq!(code(s.plan_set_preferred_order(100_001, &[t[0], t[0], t[1]])), StatusCode::InvalidArgument);
        let other = s.chains[&100_002].targets[0].target_id;
        assert_eq!(code(s.plan_set_preferred_order(100_001, &[t[0], t[1], other])), StatusCode::InvalidArgument);
        assert_eq!(s.version(), v);
        assert!(s.chains[&100_001].preferred_order.is_empty());
    }

    #[test]
    fn rotate_head_moves_the_head_behind_the_serving_targets() {
        let now = Instant::now();
        let mut s = cluster(now);
        let chain = s.chains[&100_001].clone();
        let t = ids(&chain);
        let (d, next) = s.plan_rotate_head(100_001).unwrap();
        assert_eq!(ids(&next), vec![t[1], t[2], t[0]]);
        assert_eq!(next.chain_version, chain.chain_version + 1);
        assert!(next.preferred_order.is_empty());
        apply(&mut s, d);
        // The checker keeps it (no preferred order).
        assert!(s.plan_check(now, TIMEOUT, true).chains.is_empty());

        // With a preferred order, the rotation rewrites it so the checker keeps the rotation.
        let (d, _) = s.plan_set_preferred_order(100_001, &t).unwrap();
        apply(&mut s, d);
        let d = s.plan_check(now, TIMEOUT, true);
        apply(&mut s, d);
        assert_eq!(ids(&s.chains[&100_001]), t);
        let (d, next) = s.plan_rotate_head(100_001).unwrap();
        assert_eq!(next.preferred_order, vec![t[1], t[2], t[0]]);
        apply(&mut s, d);
        assert!(s.plan_check(now, TIMEOUT, true).chains.is_empty());

        // Only SERVING targets take over: with the others OFFLINE there is nothing to rotate to.
        let mut c = s.chains[&100_001].clone();
        c.targets[1].public_state = O;
        c.targets[2].public_state = O;
        s.chains.insert(100_001, c.clone());
        let v = s.version();
        assert_eq!(s.plan_rotate_head(100_001).unwrap_err().code, StatusCode::InvalidArgument);
        c.targets[0].public_state = O;
        s.chains.insert(100_001, c);
        assert!(s.plan_rotate_head(100_001).is_err());
        assert_eq!(s.plan_rotate_head(9).unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.version(), v);
        // S S O: the head goes behind the second SERVING, before the OFFLINE one.
        let mut c = s.chains[&100_002].clone();
        c.targets[2].public_state = O;
        let want = vec![(c.targets[1].target_id, S), (c.targets[0].target_id, S), (c.targets[2].target_id, O)];
        s.chains.insert(100_002, c);
        assert_eq!(order(&s.plan_rotate_head(100_002).unwrap().1), want);
    }

    #[test]
    fn new_table_versions_list_existing_chains() {
        let mut s = cluster(Instant::now());
        let (d, table) = s.plan_new_table_version(1, &[100_002, 100_001], "").unwrap();
        assert_eq!((table.version, table.chains.clone(), table.desc.as_str()), (2, vec![100_002, 100_001], "first"));
        let v = s.version();
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        assert_eq!(s.tables[&(1, 1)].chains.len(), 2, "version 1 stays");
        let (_, table) = s.plan_new_table_version(1, &[100_001], "shrunk").unwrap();
        assert_eq!((table.version, table.desc.as_str()), (3, "shrunk"));
        // A plain CreateChainTable retry still answers with the latest version.
        let TablePlan::Existing(t) = s.plan_create_table(1, 3, "", true, &[]).unwrap() else { panic!("exists") };
        assert_eq!(t.version, 2);

        let code = |r: Result<(Delta, ChainTable), Error>| r.unwrap_err().code;
        assert_eq!(code(s.plan_new_table_version(2, &[100_001], "")), StatusCode::NotFound);
        assert_eq!(code(s.plan_new_table_version(1, &[100_001, 100_009], "")), StatusCode::NotFound);
        assert_eq!(code(s.plan_new_table_version(1, &[100_001, 100_001], "")), StatusCode::InvalidArgument);
        assert_eq!(code(s.plan_new_table_version(1, &[], "")), StatusCode::InvalidArgument);
        assert_eq!(code(s.plan_new_table_version(1, &[100_001], &"x".repeat(5000))), StatusCode::InvalidArgument);
        assert_eq!(s.tables.len(), 2);
    }
}
