//! Node tags (`SetNodeTags`) and admin target offlining (`OfflineTarget`, 3FS admin_cli
//! `offline-target`), planned against the state like every other change (see `state.rs`).
//!
//! - Tags are admin labels on a node (`key` or `key=value`), kept sorted by key with unique keys,
//!   persisted in the node record and shown in routing info. Re-registration keeps them. A change
//!   bumps the routing version; setting the tags a node already has changes nothing.
//! - An offline target (`TargetInfo.admin_offline`) counts as locally OFFLINE for the state
//!   machine whatever its node reports (see `ClusterState::local_state`). Offlining a chained
//!   target runs the state machine on its chain at once, so the reply already shows it OFFLINE at
//!   the tail (chain version bumped); it is refused when it is the chain's only SERVING target
//!   (the chain would stop serving writes: disable-node or rotate-lastsrv are the tools for that).
//!   `online` clears the flag; the checker then resyncs the target (SYNCING, then SERVING).
//!   Repeating either is accepted and changes nothing.
use std::collections::{BTreeMap, HashSet};

use t3fs_common::Error;
use t3fs_common::proto::{ChainInfo, LocalTargetState, NodeInfo, NodeTag, PublicTargetState, SetTagsMode, TargetInfo};

use super::{ClusterState, Delta};
use crate::chain_update::{self, public_of};

/// Most tags one node may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag key.
const MAX_KEY_LEN: usize = 64;
/// Longest tag value.
const MAX_VALUE_LEN: usize = 256;

fn check_tag(t: &NodeTag) -> Result<(), Error> {
    let key_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
    if t.key.is_empty() || t.key.len() > MAX_KEY_LEN || !t.key.chars().all(key_ok) {
        return Err(Error::invalid(format!(
            "invalid tag key {:?}: 1-{MAX_KEY_LEN} characters of [A-Za-z0-9._:/-]",
            t.key
        )));
    }
    if t.value.len() > MAX_VALUE_LEN || t.value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "invalid value for tag {:?}: at most {MAX_VALUE_LEN} bytes, no control characters",
            t.key
        )));
    }
    Ok(())
}

impl ClusterState {
    /// `SetNodeTags`: the delta and the node as it will be.
    pub fn plan_set_node_tags(
        &self,
        node_id: u32,
        tags: &[NodeTag],
        mode: SetTagsMode,
    ) -> Result<(Delta, NodeInfo), Error> {
        let node =
            self.nodes.get(&node_id).ok_or_else(|| Error::not_found(format!("node {node_id} is not registered")))?;
        let mut seen = HashSet::new();
        for t in tags {
            check_tag(t)?;
            if !seen.insert(t.key.as_str()) {
                return Err(Error::invalid(format!("tag {:?} given twice", t.key)));
            }
        }
        let mut next: BTreeMap<String, String> = match mode {
            SetTagsMode::Replace => BTreeMap::new(),
            SetTagsMode::Upsert | SetTagsMode::Remove => {
                node.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
            }
        };
        for t in tags {
            if mode == SetTagsMode::Remove {
                next.remove(&t.key);
            } else {
                next.insert(t.key.clone(), t.value.clone());
            }
        }
        if next.len() > MAX_TAGS {
            return Err(Error::invalid(format!("node {node_id} would have {} tags; at most {MAX_TAGS}", next.len())));
        }
        let tags: Vec<NodeTag> = next.into_iter().map(|(key, value)| NodeTag { key, value }).collect();
        if tags == node.tags {
            return Ok((Delta::default(), node.clone()));
        }
        let n = NodeInfo { tags, ..node.clone() };
        let delta = Delta { nodes: vec![n.clone()], visible: true, ..Default::default() };
        Ok((delta, n))
    }

    /// `OfflineTarget`: the delta, the target and its chain (if any) as they will be.
    pub fn plan_offline_target(
        &self,
        target_id: u64,
        online: bool,
    ) -> Result<(Delta, TargetInfo, Option<ChainInfo>), Error> {
        let t = *self.target_or_not_found(target_id)?;
        let chain = (t.chain_id != 0).then(|| self.chains.get(&t.chain_id)).flatten();
        if t.admin_offline != online {
            return Ok((Delta::default(), t, chain.cloned()));
        }
        let mut next = TargetInfo { admin_offline: !online, ..t };
        let Some(chain) = chain else {
            // A free target: only its informational public state follows.
            let delta = self.finish(Vec::new(), vec![next], Vec::new(), true);
            let target = delta.targets[0];
            return Ok((delta, target, None));
        };
        if online {
            // The checker brings it back (it must resync first).
            let delta = Delta { targets: vec![next], visible: true, ..Default::default() };
            return Ok((delta, next, Some(chain.clone())));
        }
        let serving = |c: &ChainInfo| {
            c.targets.iter().filter(|x| public_of(x.public_state) == PublicTargetState::Serving).count()
        };
        let this_serves = chain
            .targets
            .iter()
            .any(|x| x.target_id == target_id && public_of(x.public_state) == PublicTargetState::Serving);
        if this_serves && serving(chain) == 1 {
            return Err(Error::invalid(format!(
                "target {target_id} is the only SERVING target of chain {}; taking it offline would stop the \
                 chain (add or resync another replica first)",
                chain.chain_id
            )));
        }
        let no_failing = HashSet::new();
        let local = |id: u64| {
            if id == target_id { LocalTargetState::Offline } else { self.local_state(id, &no_failing) }
        };
        let mut delta = Delta { visible: true, ..Default::default() };
        let chain = match chain_update::next_chain(chain, local) {
            None => chain.clone(),
            Some(c) => {
                for entry in &c.targets {
                    let base =
                        if entry.target_id == target_id { Some(&next) } else { self.targets.get(&entry.target_id) };
                    if let Some(base) = base
                        && base.public_state != entry.public_state
                    {
                        let changed = TargetInfo { public_state: entry.public_state, ..*base };
                        if entry.target_id == target_id {
                            next = changed;
                        } else {
                            delta.targets.push(changed);
                        }
                    }
                }
                delta.chains.push(c.clone());
                c
            }
        };
        delta.targets.push(next);
        Ok((delta, next, Some(chain)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use t3fs_common::StatusCode;
    use t3fs_common::proto::{HeartbeatReq, LocalTarget, NodeType, RegisterNodeReq};

    use super::*;
    use crate::state::TablePlan;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn apply(s: &mut ClusterState, d: Delta) {
        let v = d.visible.then(|| s.version() + 1);
        s.apply(d, v);
    }

    fn heartbeat(s: &mut ClusterState, n: u32, state: LocalTargetState) {
        let targets = [u64::from(n) + 1, u64::from(n) + 2].map(|t| LocalTarget {
            target_id: t,
            local_state: state as i32,
            ..Default::default()
        });
        let req = HeartbeatReq {
            node_id: n,
            node_type: NodeType::Storage as i32,
            targets: targets.to_vec(),
            ..Default::default()
        };
        let d = s.plan_heartbeat(&req, Instant::now(), 0).unwrap();
        apply(s, d);
    }

    fn register(s: &mut ClusterState, n: u32) {
        let req = RegisterNodeReq { node_id: n, node_type: NodeType::Storage as i32, ..Default::default() };
        let d = s.plan_register(&req, 1, Instant::now(), 0).unwrap();
        apply(s, d);
    }

    /// Storage nodes 10, 20, 30 (targets n+1, n+2) in table 1 (R=3), and node 40 with free targets.
    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        for n in [10, 20, 30] {
            register(&mut s, n);
            heartbeat(&mut s, n, LocalTargetState::Uptodate);
        }
        let TablePlan::New(d, _) = s.plan_create_table(1, 3, "", true, &[]).unwrap() else { panic!("new table") };
        apply(&mut s, d);
        register(&mut s, 40);
        heartbeat(&mut s, 40, LocalTargetState::Uptodate);
        s
    }

    fn tag(key: &str, value: &str) -> NodeTag {
        NodeTag { key: key.into(), value: value.into() }
    }

    #[test]
    fn tags_replace_upsert_remove_and_survive_registration() {
        let mut s = cluster();
        let v = s.version();
        let (d, n) = s.plan_set_node_tags(20, &[tag("zone", "b"), tag("rack", "r1")], SetTagsMode::Replace).unwrap();
        assert_eq!(n.tags, vec![tag("rack", "r1"), tag("zone", "b")], "sorted by key");
        apply(&mut s, d);
        assert_eq!(s.version(), v + 1);
        // The same tags again: nothing changes.
        let (d, _) = s.plan_set_node_tags(20, &[tag("rack", "r1")], SetTagsMode::Upsert).unwrap();
        assert!(!d.visible && d.nodes.is_empty());
        let (d, n) = s.plan_set_node_tags(20, &[tag("zone", "c"), tag("ssd", "")], SetTagsMode::Upsert).unwrap();
        assert_eq!(n.tags, vec![tag("rack", "r1"), tag("ssd", ""), tag("zone", "c")]);
        apply(&mut s, d);
        let (d, n) = s.plan_set_node_tags(20, &[tag("rack", ""), tag("absent", "")], SetTagsMode::Remove).unwrap();
        assert_eq!(n.tags, vec![tag("ssd", ""), tag("zone", "c")]);
        apply(&mut s, d);
        register(&mut s, 20);
        assert_eq!(s.nodes[&20].tags, vec![tag("ssd", ""), tag("zone", "c")], "re-registration keeps tags");
        let (d, n) = s.plan_set_node_tags(20, &[], SetTagsMode::Replace).unwrap();
        assert!(n.tags.is_empty());
        apply(&mut s, d);
    }

    #[test]
    fn bad_tags_change_nothing() {
        let s = cluster();
        let code = |r: Result<(Delta, NodeInfo), Error>| r.unwrap_err().code;
        assert_eq!(code(s.plan_set_node_tags(99, &[], SetTagsMode::Replace)), StatusCode::NotFound);
        for bad in [tag("", "x"), tag("a b", ""), tag(&"k".repeat(65), ""), tag("k", "line\nbreak")] {
            assert_eq!(code(s.plan_set_node_tags(20, &[bad], SetTagsMode::Upsert)), StatusCode::InvalidArgument);
        }
        let e = s.plan_set_node_tags(20, &[tag("a", "1"), tag("a", "2")], SetTagsMode::Upsert).unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        let many: Vec<NodeTag> = (0..=MAX_TAGS).map(|i| tag(&format!("k{i}"), "")).collect();
        assert_eq!(code(s.plan_set_node_tags(20, &many, SetTagsMode::Replace)), StatusCode::InvalidArgument);
        assert!(s.nodes[&20].tags.is_empty());
    }

    #[test]
    fn offline_target_leaves_its_chain_until_online() {
        let mut s = cluster();
        let chain_id = s.targets[&21].chain_id;
        let before = s.chains[&chain_id].clone();
        let (d, t, chain) = s.plan_offline_target(21, false).unwrap();
        let chain = chain.unwrap();
        assert!(t.admin_offline);
        assert_eq!(t.public_state, PublicTargetState::Offline as i32);
        assert_eq!(chain.chain_version, before.chain_version + 1);
        assert_eq!(chain.targets.last().unwrap().target_id, 21, "offline goes to the tail");
        apply(&mut s, d);
        assert_eq!(s.targets[&21].public_state, PublicTargetState::Offline as i32);
        // Heartbeats saying ONLINE do not bring it back; the checker keeps it offline.
        heartbeat(&mut s, 20, LocalTargetState::Online);
        let d = s.plan_check(Instant::now(), TIMEOUT, true);
        apply(&mut s, d);
        assert_eq!(s.targets[&21].public_state, PublicTargetState::Offline as i32);
        assert!(s.targets[&21].admin_offline, "heartbeats keep the admin flag");
        // Again: nothing changes.
        let (d, _, _) = s.plan_offline_target(21, false).unwrap();
        assert!(!d.visible);
        // Online: the checker starts its resync.
        let (d, t, _) = s.plan_offline_target(21, true).unwrap();
        assert!(!t.admin_offline);
        apply(&mut s, d);
        let d = s.plan_check(Instant::now(), TIMEOUT, true);
        apply(&mut s, d);
        assert_eq!(s.targets[&21].public_state, PublicTargetState::Syncing as i32);
    }

    #[test]
    fn offline_refusals_and_free_targets() {
        let mut s = cluster();
        let v = s.version();
        assert_eq!(s.plan_offline_target(999, false).unwrap_err().code, StatusCode::NotFound);
        // Take two of a chain's three targets offline; the last SERVING one is refused.
        let chain_id = s.targets[&11].chain_id;
        let ids: Vec<u64> = s.chains[&chain_id].targets.iter().map(|t| t.target_id).collect();
        for &id in &ids[..2] {
            let (d, _, _) = s.plan_offline_target(id, false).unwrap();
            apply(&mut s, d);
        }
        let e = s.plan_offline_target(ids[2], false).unwrap_err();
        assert!(e.message.contains("only SERVING"), "{e}");
        assert!(!s.targets[&ids[2]].admin_offline);
        assert_eq!(s.version(), v + 2);
        // A free target: its public state follows, no chain.
        assert_eq!(s.targets[&41].public_state, PublicTargetState::Serving as i32);
        let (d, t, chain) = s.plan_offline_target(41, false).unwrap();
        assert!(chain.is_none() && t.public_state == PublicTargetState::Offline as i32);
        apply(&mut s, d);
        let (d, t, _) = s.plan_offline_target(41, true).unwrap();
        assert_eq!(t.public_state, PublicTargetState::Serving as i32);
        apply(&mut s, d);
    }
}
