//! Admin chain operations, planned against the state like every other change (see `state.rs`):
//! `UpdateChain` (add or remove one target) and `RotateLastSrv` (the escape hatch for a LASTSRV
//! target that never returns). research/3fs.md §2 "Admin operations".
//!
//! Invariants kept: a chain's targets are on distinct nodes; a target is in at most one chain and
//! its `TargetInfo` mirrors its chain entry (chain id, public state); every change bumps the chain
//! version; a chain keeps its SERVING target (remove) and the chain order SERVING…LASTSRV…SYNCING…
//! WAITING…OFFLINE holds afterwards. Nothing here makes a target SERVING: an added target enters
//! OFFLINE and the state machine syncs it; a rotated-in LASTSRV serves only through the state
//! machine, once it is up.
use t3fs_common::proto::{ChainInfo, ChainTarget, NodeStatus, NodeType, PublicTargetState, TargetInfo};
use t3fs_common::{Error, StatusCode};

use super::{ClusterState, Delta, unplaced_public_state};
use crate::chain_update::public_of;

/// What `UpdateChain` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEdit {
    /// Append a free target (in no chain, on a node the chain does not use) as OFFLINE.
    Add(u64),
    /// Take a target out of the chain (it becomes free); refused if no SERVING target would remain.
    Remove(u64),
}

impl ChainEdit {
    /// From the request's `add_target` / `remove_target` (exactly one must be set).
    pub fn from_request(add: u64, remove: u64) -> Result<Self, Error> {
        match (add, remove) {
            (0, 0) => Err(Error::invalid("give a target to add or to remove")),
            (a, 0) => Ok(Self::Add(a)),
            (0, r) => Ok(Self::Remove(r)),
            _ => Err(Error::invalid("add and remove one target at a time")),
        }
    }
}

/// `chain` with `targets` and the next chain version; a preferred order keeps only targets still
/// in the chain.
pub(super) fn bumped(chain: &ChainInfo, targets: Vec<ChainTarget>) -> ChainInfo {
    let preferred_order =
        chain.preferred_order.iter().copied().filter(|id| targets.iter().any(|t| t.target_id == *id)).collect();
    ChainInfo {
        chain_id: chain.chain_id,
        chain_version: chain.chain_version.saturating_add(1),
        targets,
        preferred_order,
    }
}

impl ClusterState {
    pub(super) fn chain_or_not_found(&self, chain_id: u32) -> Result<&ChainInfo, Error> {
        self.chains.get(&chain_id).ok_or_else(|| Error::not_found(format!("chain {chain_id} does not exist")))
    }

    pub(super) fn target_or_not_found(&self, target_id: u64) -> Result<&TargetInfo, Error> {
        self.targets.get(&target_id).ok_or_else(|| Error::not_found(format!("target {target_id} does not exist")))
    }

    /// `UpdateChain`: the delta and the new chain.
    pub fn plan_update_chain(&self, chain_id: u32, edit: ChainEdit) -> Result<(Delta, ChainInfo), Error> {
        let chain = self.chain_or_not_found(chain_id)?;
        let (next, changed) = match edit {
            ChainEdit::Add(target_id) => {
                let t = self.target_or_not_found(target_id)?;
                if t.chain_id != 0 {
                    return Err(Error::new(
                        StatusCode::AlreadyExists,
                        format!("target {target_id} is already in chain {}", t.chain_id),
                    ));
                }
                if self.nodes.get(&t.node_id).is_none_or(|n| n.node_type != NodeType::Storage as i32) {
                    return Err(Error::invalid(format!(
                        "target {target_id}: node {} is not a storage node",
                        t.node_id
                    )));
                }
                let on_node =
                    chain.targets.iter().find(|c| self.targets.get(&c.target_id).map(|x| x.node_id) == Some(t.node_id));
                if let Some(other) = on_node {
                    return Err(Error::invalid(format!(
                        "chain {chain_id} already has target {} on node {}; replicas must be on distinct nodes",
                        other.target_id, t.node_id
                    )));
                }
                let offline = PublicTargetState::Offline as i32;
                let mut targets = chain.targets.clone();
                targets.push(ChainTarget { target_id, public_state: offline });
                (bumped(chain, targets), TargetInfo { chain_id, public_state: offline, ..*t })
            }
            ChainEdit::Remove(target_id) => {
                if !chain.targets.iter().any(|c| c.target_id == target_id) {
                    return Err(Error::not_found(format!("target {target_id} is not in chain {chain_id}")));
                }
                let targets: Vec<ChainTarget> =
                    chain.targets.iter().filter(|c| c.target_id != target_id).copied().collect();
                if !targets.iter().any(|c| public_of(c.public_state) == PublicTargetState::Serving) {
                    return Err(Error::invalid(format!(
                        "removing target {target_id} would leave chain {chain_id} with no SERVING target"
                    )));
                }
                let t = self.target_or_not_found(target_id)?;
                let alive =
                    self.nodes.get(&t.node_id).is_some_and(|n| n.status == NodeStatus::HeartbeatConnected as i32);
                let public = unplaced_public_state(alive && !t.admin_offline, t.local_state) as i32;
                (bumped(chain, targets), TargetInfo { chain_id: 0, public_state: public, ..*t })
            }
        };
        let delta = Delta { chains: vec![next.clone()], targets: vec![changed], visible: true, ..Default::default() };
        Ok((delta, next))
    }

    /// `RotateLastSrv`: the chain has no SERVING target and its LASTSRV is the head. The LASTSRV
    /// moves to the tail as OFFLINE and the next target becomes LASTSRV (the state machine makes it
    /// SERVING once it is up). Writes only the old LASTSRV had may be lost: an escape hatch.
    pub fn plan_rotate_lastsrv(&self, chain_id: u32) -> Result<(Delta, ChainInfo), Error> {
        let chain = self.chain_or_not_found(chain_id)?;
        if chain.targets.iter().any(|c| public_of(c.public_state) == PublicTargetState::Serving) {
            return Err(Error::invalid(format!("chain {chain_id} has a SERVING target; nothing to rotate")));
        }
        let Some(first) = chain.targets.first().filter(|c| public_of(c.public_state) == PublicTargetState::Lastsrv)
        else {
            return Err(Error::invalid(format!("chain {chain_id} has no LASTSRV head; nothing to rotate")));
        };
        if chain.targets.len() < 2 {
            return Err(Error::invalid(format!("chain {chain_id} has no other target to make LASTSRV")));
        }
        let mut targets: Vec<ChainTarget> = chain.targets[1..].to_vec();
        targets[0].public_state = PublicTargetState::Lastsrv as i32;
        targets.push(ChainTarget { target_id: first.target_id, public_state: PublicTargetState::Offline as i32 });
        let next = bumped(chain, targets);
        let mut delta = Delta { chains: vec![next.clone()], visible: true, ..Default::default() };
        for c in &next.targets {
            if let Some(t) = self.targets.get(&c.target_id)
                && t.public_state != c.public_state
            {
                delta.targets.push(TargetInfo { public_state: c.public_state, ..*t });
            }
        }
        Ok((delta, next))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use t3fs_common::proto::{HeartbeatReq, LocalTarget, LocalTargetState, RegisterNodeReq};

    use super::*;
    use crate::state::TablePlan;

    const S: i32 = PublicTargetState::Serving as i32;
    const L: i32 = PublicTargetState::Lastsrv as i32;
    const O: i32 = PublicTargetState::Offline as i32;

    fn apply(s: &mut ClusterState, d: Delta) {
        let v = d.visible.then(|| s.version() + 1);
        s.apply(d, v);
    }

    /// Storage nodes 10, 20, 30, 40 with targets n+1, n+2 (UPTODATE), and table 1 with R=3 over
    /// nodes 10..30 (node 40 registers after the table, so its targets stay free).
    fn cluster() -> ClusterState {
        let now = Instant::now();
        let mut s = ClusterState::default();
        let join = |s: &mut ClusterState, n: u32| {
            let req = RegisterNodeReq { node_id: n, node_type: NodeType::Storage as i32, ..Default::default() };
            let d = s.plan_register(&req, 1, now, 0).unwrap();
            apply(s, d);
            let targets = [u64::from(n) + 1, u64::from(n) + 2].map(|t| LocalTarget {
                target_id: t,
                local_state: LocalTargetState::Uptodate as i32,
                ..Default::default()
            });
            let req = HeartbeatReq {
                node_id: n,
                node_type: NodeType::Storage as i32,
                targets: targets.to_vec(),
                ..Default::default()
            };
            let d = s.plan_heartbeat(&req, now, 0).unwrap();
            apply(s, d);
        };
        for n in [10, 20, 30] {
            join(&mut s, n);
        }
        let TablePlan::New(d, _) = s.plan_create_table(1, 3, "", true, &[]).unwrap() else { panic!("new table") };
        apply(&mut s, d);
        join(&mut s, 40);
        s
    }

    fn states(c: &ChainInfo) -> Vec<(u64, i32)> {
        c.targets.iter().map(|t| (t.target_id, t.public_state)).collect()
    }

    /// TargetInfo mirrors every chain entry, and a target is in at most one chain.
    fn consistent(s: &ClusterState) {
        let mut seen = HashSet::new();
        for c in s.chains.values() {
            for e in &c.targets {
                assert!(seen.insert(e.target_id));
                let t = s.targets[&e.target_id];
                assert_eq!((t.chain_id, t.public_state), (c.chain_id, e.public_state));
            }
        }
        for t in s.targets.values().filter(|t| !seen.contains(&t.target_id)) {
            assert_eq!(t.chain_id, 0, "{t:?}");
        }
    }

    #[test]
    fn edit_from_request() {
        assert_eq!(ChainEdit::from_request(5, 0).unwrap(), ChainEdit::Add(5));
        assert_eq!(ChainEdit::from_request(0, 6).unwrap(), ChainEdit::Remove(6));
        assert!(ChainEdit::from_request(0, 0).is_err());
        assert!(ChainEdit::from_request(5, 6).is_err());
    }

    #[test]
    fn remove_then_add_back_then_sync() {
        let mut s = cluster();
        let chain = s.chains[&100_001].clone();
        assert_eq!(states(&chain), vec![(11, S), (21, S), (31, S)]);
        let (d, next) = s.plan_update_chain(100_001, ChainEdit::Remove(21)).unwrap();
        assert_eq!((next.chain_version, states(&next)), (2, vec![(11, S), (31, S)]));
        let v = s.version();
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        assert_eq!(s.targets[&21].chain_id, 0);
        consistent(&s);

        // Back in: appended OFFLINE, version bumped; the state machine then moves it (UPTODATE
        // waits, ONLINE syncs, UPTODATE after the sync serves).
        let (d, next) = s.plan_update_chain(100_001, ChainEdit::Add(21)).unwrap();
        assert_eq!((next.chain_version, states(&next)), (3, vec![(11, S), (31, S), (21, O)]));
        apply(&mut s, d);
        consistent(&s);
        let now = Instant::now();
        let d = s.plan_check(now, Duration::from_secs(60), true);
        apply(&mut s, d);
        assert_eq!(s.chains[&100_001].targets[2].public_state, PublicTargetState::Waiting as i32);
        let hb = |s: &mut ClusterState, l: LocalTargetState| {
            let targets = vec![
                LocalTarget { target_id: 21, local_state: l as i32, ..Default::default() },
                LocalTarget { target_id: 22, local_state: LocalTargetState::Uptodate as i32, ..Default::default() },
            ];
            let req = HeartbeatReq { node_id: 20, node_type: NodeType::Storage as i32, targets, ..Default::default() };
            let d = s.plan_heartbeat(&req, now, 0).unwrap();
            apply(s, d);
            let d = s.plan_check(now, Duration::from_secs(60), true);
            apply(s, d);
        };
        hb(&mut s, LocalTargetState::Online);
        assert_eq!(s.chains[&100_001].targets[2].public_state, PublicTargetState::Syncing as i32);
        hb(&mut s, LocalTargetState::Uptodate);
        assert_eq!(states(&s.chains[&100_001]), vec![(11, S), (31, S), (21, S)]);
        consistent(&s);
    }

    #[test]
    fn update_chain_refusals_change_nothing() {
        let s = cluster();
        let v = s.version();
        let code = |r: Result<(Delta, ChainInfo), Error>| r.unwrap_err().code;
        assert_eq!(code(s.plan_update_chain(9, ChainEdit::Add(41))), StatusCode::NotFound);
        assert_eq!(code(s.plan_update_chain(100_001, ChainEdit::Add(999))), StatusCode::NotFound);
        // Target 12 is in chain 100002 already; 22 too.
        assert_eq!(code(s.plan_update_chain(100_001, ChainEdit::Add(22))), StatusCode::AlreadyExists);
        assert_eq!(code(s.plan_update_chain(100_001, ChainEdit::Remove(41))), StatusCode::NotFound);
        // A free target on a node the chain uses: take 21 out, then try 22's node via 21... use a
        // fresh removal so node 20 has a free target while 100002 still holds 22.
        let mut s2 = cluster();
        let (d, _) = s2.plan_update_chain(100_002, ChainEdit::Remove(22)).unwrap();
        apply(&mut s2, d);
        let e = s2.plan_update_chain(100_001, ChainEdit::Add(22)).unwrap_err();
        assert!(e.message.contains("distinct nodes"), "{e}");
        // Adding a free target of node 40 works.
        let (_, next) = s.plan_update_chain(100_001, ChainEdit::Add(41)).unwrap();
        assert_eq!(next.targets.len(), 4);
        assert_eq!(s.version(), v, "planning changes nothing");
    }

    #[test]
    fn remove_never_drops_the_last_serving_target() {
        let mut s = cluster();
        for t in [21, 31] {
            let (d, _) = s.plan_update_chain(100_001, ChainEdit::Remove(t)).unwrap();
            apply(&mut s, d);
        }
        let e = s.plan_update_chain(100_001, ChainEdit::Remove(11)).unwrap_err();
        assert!(e.message.contains("no SERVING"), "{e}");
        // A chain of SERVING + OFFLINE: the OFFLINE one may go, the SERVING one may not.
        let (d, _) = s.plan_update_chain(100_001, ChainEdit::Add(41)).unwrap();
        apply(&mut s, d);
        assert!(s.plan_update_chain(100_001, ChainEdit::Remove(11)).is_err());
        let (_, next) = s.plan_update_chain(100_001, ChainEdit::Remove(41)).unwrap();
        assert_eq!(states(&next), vec![(11, S)]);
    }

    #[test]
    fn rotate_lastsrv_moves_the_stuck_head_to_the_tail() {
        let mut s = cluster();
        // Nothing to rotate while a target serves.
        assert!(s.plan_rotate_lastsrv(100_001).is_err());
        assert_eq!(s.plan_rotate_lastsrv(7).unwrap_err().code, StatusCode::NotFound);
        // Every node of chain 100001 fails: 11 is LASTSRV, the others OFFLINE.
        let later = Instant::now() + Duration::from_secs(120);
        let d = s.plan_check(later, Duration::from_secs(60), true);
        apply(&mut s, d);
        assert_eq!(states(&s.chains[&100_001]), vec![(11, L), (21, O), (31, O)]);
        let version = s.chains[&100_001].chain_version;
        let (d, next) = s.plan_rotate_lastsrv(100_001).unwrap();
        assert_eq!(states(&next), vec![(21, L), (31, O), (11, O)]);
        assert_eq!(next.chain_version, version + 1);
        apply(&mut s, d);
        consistent(&s);
        // Node 20 comes back: the new LASTSRV serves, then the others sync behind it.
        let req = HeartbeatReq {
            node_id: 20,
            node_type: NodeType::Storage as i32,
            targets: vec![LocalTarget {
                target_id: 21,
                local_state: LocalTargetState::Online as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = s.plan_heartbeat(&req, later, 0).unwrap();
        apply(&mut s, d);
        let d = s.plan_check(later, Duration::from_secs(60), true);
        apply(&mut s, d);
        assert_eq!(states(&s.chains[&100_001])[0], (21, S));
        consistent(&s);
        // A single-target chain cannot rotate.
        let mut one = ClusterState::default();
        one.chains.insert(
            5,
            ChainInfo {
                chain_id: 5,
                chain_version: 1,
                targets: vec![ChainTarget { target_id: 1, public_state: L }],
                ..Default::default()
            },
        );
        assert!(one.plan_rotate_lastsrv(5).is_err());
    }
}
