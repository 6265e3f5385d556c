//! Admin node operations, planned against the state like every other change (see `state.rs`):
//! `DisableNode`, `EnableNode` and `UnregisterNode` (research/3fs.md §2 "Admin operations").
//!
//! - A DISABLED node is out of service: its targets count as locally OFFLINE for the state machine
//!   (only HEARTBEAT_CONNECTED nodes' targets are up, see `ClusterState::local_state`), so its
//!   chained targets go OFFLINE at the next check and resync after it is enabled. Its heartbeats are
//!   still accepted (local states, used and free bytes stay current) and its re-registration keeps
//!   it DISABLED; it is never marked failed. Only `EnableNode` ends it.
//! - `EnableNode` makes it HEARTBEAT_CONNECTED when it heartbeated within the heartbeat timeout
//!   (its targets then come back through the state machine: SYNCING, then SERVING), else
//!   HEARTBEAT_FAILED until its next heartbeat.
//! - `UnregisterNode` forgets a node that is not heartbeat-connected and owns no target in any
//!   chain: its record and its free targets are deleted.
//!
//! Operations that would change nothing (disabling a disabled node, enabling an enabled one) are
//! accepted and change nothing (no version bump). Refusals change nothing either.
use std::time::{Duration, Instant};

use t3fs_common::Error;
use t3fs_common::proto::{NodeInfo, NodeStatus, TargetInfo};

use super::{ClusterState, Delta};

impl ClusterState {
    fn node_or_not_found(&self, node_id: u32) -> Result<&NodeInfo, Error> {
        self.nodes.get(&node_id).ok_or_else(|| Error::not_found(format!("node {node_id} is not registered")))
    }

    /// The node with `status`, its targets re-evaluated (free targets follow its liveness).
    fn with_status(&self, node: &NodeInfo, status: NodeStatus) -> Delta {
        let n = NodeInfo { status: status as i32, ..node.clone() };
        let targets: Vec<TargetInfo> = self.targets_of(node.node_id).copied().collect();
        self.finish(vec![n], targets, Vec::new(), false)
    }

    /// `DisableNode`: the delta and the node as it will be.
    pub fn plan_disable(&self, node_id: u32) -> Result<(Delta, NodeInfo), Error> {
        let node = self.node_or_not_found(node_id)?;
        if node.status == NodeStatus::Disabled as i32 {
            return Ok((Delta::default(), node.clone()));
        }
        let delta = self.with_status(node, NodeStatus::Disabled);
        let next = delta.nodes[0].clone();
        Ok((delta, next))
    }

    /// `EnableNode`: connected again if seen within `timeout` before `now`, else failed (until its
    /// next heartbeat). A node that is not disabled is returned unchanged.
    pub fn plan_enable(&self, node_id: u32, now: Instant, timeout: Duration) -> Result<(Delta, NodeInfo), Error> {
        let node = self.node_or_not_found(node_id)?;
        if node.status != NodeStatus::Disabled as i32 {
            return Ok((Delta::default(), node.clone()));
        }
        let recent = self.seen.get(&node_id).is_some_and(|&seen| now.saturating_duration_since(seen) <= timeout);
        let status = if recent { NodeStatus::HeartbeatConnected } else { NodeStatus::HeartbeatFailed };
        let delta = self.with_status(node, status);
        let next = delta.nodes[0].clone();
        Ok((delta, next))
    }

    /// `UnregisterNode`: deletes the node and its targets. Refused while the node is
    /// heartbeat-connected or one of its targets is in a chain.
    pub fn plan_unregister(&self, node_id: u32) -> Result<Delta, Error> {
        let node = self.node_or_not_found(node_id)?;
        if node.status == NodeStatus::HeartbeatConnected as i32 {
            return Err(Error::invalid(format!(
                "node {node_id} is heartbeat-connected; disable it first (or wait until it is marked failed)"
            )));
        }
        if let Some(t) = self.targets_of(node_id).find(|t| t.chain_id != 0) {
            return Err(Error::invalid(format!(
                "node {node_id} still owns target {} in chain {}; remove its targets from their chains first \
                 (t3fs admin update-chain --remove)",
                t.target_id, t.chain_id
            )));
        }
        Ok(Delta {
            removed_nodes: vec![node_id],
            removed_targets: self.targets_of(node_id).map(|t| t.target_id).collect(),
            visible: true,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use t3fs_common::StatusCode;
    use t3fs_common::proto::{
        HeartbeatReq, LocalTarget, LocalTargetState, NodeStatus, NodeType, PublicTargetState, RegisterNodeReq,
    };

    use super::*;
    use crate::state::{ChainEdit, TablePlan};

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn apply(s: &mut ClusterState, d: Delta) {
        let v = d.visible.then(|| s.version() + 1);
        s.apply(d, v);
    }

    fn heartbeat(s: &mut ClusterState, n: u32, now: Instant) {
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
    }

    fn register(s: &mut ClusterState, n: u32, now: Instant) {
        let req = RegisterNodeReq { node_id: n, node_type: NodeType::Storage as i32, ..Default::default() };
        let d = s.plan_register(&req, 1, now, 0).unwrap();
        apply(s, d);
    }

    /// Storage nodes 10, 20, 30 (targets n+1, n+2) in table 1 (R=3), and node 40 with free targets.
    fn cluster(now: Instant) -> ClusterState {
        let mut s = ClusterState::default();
        for n in [10, 20, 30] {
            register(&mut s, n, now);
            heartbeat(&mut s, n, now);
        }
        let TablePlan::New(d, _) = s.plan_create_table(1, 3, "", true, &[]).unwrap() else { panic!("new table") };
        apply(&mut s, d);
        register(&mut s, 40, now);
        heartbeat(&mut s, 40, now);
        s
    }

    fn status(s: &ClusterState, n: u32) -> i32 {
        s.nodes[&n].status
    }

    fn public(s: &ClusterState, t: u64) -> i32 {
        s.targets[&t].public_state
    }

    #[test]
    fn disable_takes_targets_offline_until_enabled() {
        let now = Instant::now();
        let mut s = cluster(now);
        let v = s.version();
        let (d, node) = s.plan_disable(20).unwrap();
        assert_eq!(node.status, NodeStatus::Disabled as i32);
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        // Disabling again changes nothing.
        let (d, _) = s.plan_disable(20).unwrap();
        assert!(!d.visible && d.nodes.is_empty());
        // The checker takes its chained targets offline; the other chains' targets keep serving.
        let d = s.plan_check(now, TIMEOUT, true);
        apply(&mut s, d);
        assert_eq!(public(&s, 21), PublicTargetState::Offline as i32);
        assert_eq!(public(&s, 11), PublicTargetState::Serving as i32);
        // Heartbeats and re-registration keep it disabled; a long silence does not fail it.
        heartbeat(&mut s, 20, now);
        register(&mut s, 20, now);
        assert_eq!(status(&s, 20), NodeStatus::Disabled as i32);
        let d = s.plan_check(now + 2 * TIMEOUT, TIMEOUT, false);
        assert!(d.nodes.iter().all(|n| n.node_id != 20));
        let d = s.plan_check(now, TIMEOUT, true);
        apply(&mut s, d);
        assert_eq!(public(&s, 21), PublicTargetState::Offline as i32, "heartbeats do not bring it back");

        // Enabled after a recent heartbeat: connected; its targets sync, then serve.
        let (d, node) = s.plan_enable(20, now, TIMEOUT).unwrap();
        assert_eq!(node.status, NodeStatus::HeartbeatConnected as i32);
        apply(&mut s, d);
        let d = s.plan_check(now, TIMEOUT, true);
        apply(&mut s, d);
        // It reports UPTODATE, which waits (a target must report ONLINE to start a sync).
        assert_eq!(public(&s, 21), PublicTargetState::Waiting as i32);
        // Enabling again changes nothing.
        let (d, _) = s.plan_enable(20, now, TIMEOUT).unwrap();
        assert!(!d.visible);
    }

    #[test]
    fn free_targets_follow_a_disabled_node_and_enable_after_silence_fails_it() {
        let now = Instant::now();
        let mut s = cluster(now);
        assert_eq!(public(&s, 41), PublicTargetState::Serving as i32);
        let (d, _) = s.plan_disable(40).unwrap();
        apply(&mut s, d);
        assert_eq!(public(&s, 41), PublicTargetState::Offline as i32);
        // Not heard from for longer than the timeout: enabled as failed.
        let (d, node) = s.plan_enable(40, now + 2 * TIMEOUT, TIMEOUT).unwrap();
        assert_eq!(node.status, NodeStatus::HeartbeatFailed as i32);
        apply(&mut s, d);
        assert_eq!(public(&s, 41), PublicTargetState::Offline as i32);
        // Its next heartbeat connects it.
        heartbeat(&mut s, 40, now + 2 * TIMEOUT);
        assert_eq!(status(&s, 40), NodeStatus::HeartbeatConnected as i32);
        assert_eq!(public(&s, 41), PublicTargetState::Serving as i32);
    }

    #[test]
    fn unregister_refusals_change_nothing() {
        let now = Instant::now();
        let mut s = cluster(now);
        let v = s.version();
        let code = |r: Result<Delta, Error>| r.unwrap_err().code;
        assert_eq!(code(s.plan_unregister(99)), StatusCode::NotFound);
        assert_eq!(s.plan_disable(99).unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.plan_enable(99, now, TIMEOUT).unwrap_err().code, StatusCode::NotFound);
        // Connected nodes are refused, with or without chained targets.
        let e = s.plan_unregister(40).unwrap_err();
        assert!(e.message.contains("heartbeat-connected"), "{e}");
        // Disabled but owning chained targets: refused.
        let (d, _) = s.plan_disable(20).unwrap();
        apply(&mut s, d);
        let e = s.plan_unregister(20).unwrap_err();
        assert_eq!(e.code, StatusCode::InvalidArgument);
        assert!(e.message.contains("chain"), "{e}");
        assert_eq!(s.version(), v + 1, "only the disable changed something");
        assert!(s.nodes.contains_key(&20) && s.targets.contains_key(&21));
    }

    #[test]
    fn unregister_deletes_the_node_and_its_free_targets() {
        let now = Instant::now();
        let mut s = cluster(now);
        // A failed node (silent too long) may go.
        let d = s.plan_check(now + 2 * TIMEOUT, TIMEOUT, false);
        apply(&mut s, d);
        assert_eq!(status(&s, 40), NodeStatus::HeartbeatFailed as i32);
        let v = s.version();
        let d = s.plan_unregister(40).unwrap();
        let mut deleted = d.delete_keys();
        deleted.sort();
        assert_eq!(deleted, vec![crate::keys::node(40), crate::keys::target(41), crate::keys::target(42)]);
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        assert!(!s.nodes.contains_key(&40) && !s.targets.contains_key(&41) && !s.targets.contains_key(&42));
        assert!(!s.seen.contains_key(&40) && !s.reported.contains(&40));
        // Its heartbeat is refused now: it must register again.
        let req = HeartbeatReq { node_id: 40, node_type: NodeType::Storage as i32, ..Default::default() };
        assert_eq!(s.plan_heartbeat(&req, now, 0).unwrap_err().code, StatusCode::NotFound);

        // A node whose targets were all removed from their chains may go once disabled.
        let now = Instant::now();
        let mut s = cluster(now);
        for t in [21, 22] {
            let (d, _) = s.plan_update_chain(s.targets[&t].chain_id, ChainEdit::Remove(t)).unwrap();
            apply(&mut s, d);
        }
        let (d, _) = s.plan_disable(20).unwrap();
        apply(&mut s, d);
        let d = s.plan_unregister(20).unwrap();
        assert_eq!(d.removed_targets, vec![21, 22]);
    }
}
