//! mgmtd instances announcing themselves, so the primary can list its standbys in routing info and
//! clients learn every mgmtd address from it (`MgmtdConn::learn`).
//!
//! Every mgmtd, primary or standby, runs [`announce`] once per lease round (`crate::election`):
//! one small transaction that writes its own `MGMT` record (`NodeInfo` of type MGMTD with its
//! address and `last_heartbeat_ms` = now, its wall clock) and reads everyone's (a snapshot read,
//! so mgmtd announcing at the same time do not conflict). The primary turns the records into the
//! peers it publishes after itself ([`view`]): HEARTBEAT_CONNECTED while a record is younger than
//! the stale limit (the lease length), HEARTBEAT_FAILED after. The announcement needs no lease: a
//! mgmtd only ever writes its own record. A failed announcement is logged and skipped.
//!
//! The records are not routing state: a change in the published view (a peer appearing, failing,
//! moving, or unregistered) takes a routing version bump (by the primary, under its lease), the
//! timestamps alone do not. Decommissioned mgmtd stay listed as FAILED until `UnregisterNode`
//! deletes their record.
use prost::Message;
use t3fs_common::Error;
use t3fs_common::proto::{NodeInfo, NodeStatus, NodeType};
use t3fs_kv::{KvEngine, RangeOpts};

use crate::keys;

/// Writes `me` (stamped `now_ms`) and returns every mgmtd record, `me` included.
pub async fn announce(db: &dyn KvEngine, me: &NodeInfo, now_ms: u64) -> Result<Vec<NodeInfo>, Error> {
    let record = NodeInfo {
        node_type: NodeType::Mgmtd as i32,
        status: NodeStatus::HeartbeatConnected as i32,
        last_heartbeat_ms: now_ms,
        ..me.clone()
    };
    let key = keys::mgmtd(me.node_id);
    let value = record.encode_to_vec();
    let kvs = t3fs_kv::run(db, |txn| {
        txn.set(&key, &value);
        Box::pin(async move {
            let end = t3fs_kv::prefix_end(keys::MGMTD).expect("ascii prefixes have an end");
            txn.get_range(keys::MGMTD, &end, RangeOpts { snapshot: true, ..Default::default() }).await
        })
    })
    .await?;
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        // A foreign or corrupt record is skipped (it is advisory), not fatal.
        match (keys::parse_mgmtd(&kv.key), NodeInfo::decode(kv.value.as_slice())) {
            (Some(id), Ok(n)) if n.node_id == id => out.push(n),
            (Some(id), Ok(_) | Err(_)) => tracing::warn!(mgmtd = id, "corrupt mgmtd record skipped"),
            (None, _) => {}
        }
    }
    // Our own record as written (the snapshot read may not see our write).
    out.retain(|n| n.node_id != me.node_id);
    out.push(record);
    Ok(out)
}

/// The other mgmtd as the primary `me` publishes them: every record but its own, by id, connected
/// while announced within `stale_ms` of `now_ms`, else failed.
pub fn view(records: &[NodeInfo], me: u32, now_ms: u64, stale_ms: u64) -> Vec<NodeInfo> {
    let mut out: Vec<NodeInfo> = records
        .iter()
        .filter(|n| n.node_id != me)
        .map(|n| {
            let fresh = now_ms.saturating_sub(n.last_heartbeat_ms) <= stale_ms;
            let status = if fresh { NodeStatus::HeartbeatConnected } else { NodeStatus::HeartbeatFailed };
            NodeInfo { node_type: NodeType::Mgmtd as i32, status: status as i32, ..n.clone() }
        })
        .collect();
    out.sort_by_key(|n| n.node_id);
    out
}

/// Whether two views differ in anything routing-visible (timestamps are not).
pub fn differ(a: &[NodeInfo], b: &[NodeInfo]) -> bool {
    a.len() != b.len()
        || a.iter().zip(b).any(|(x, y)| NodeInfo { last_heartbeat_ms: y.last_heartbeat_ms, ..x.clone() } != *y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: u32) -> NodeInfo {
        NodeInfo { node_id: id, grpc_addr: format!("h{id}:1"), ..Default::default() }
    }

    #[tokio::test]
    async fn announcements_are_seen_by_everyone() {
        let db = t3fs_kv::mem::MemKv::new();
        let one = announce(db.as_ref(), &me(1), 1000).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].node_type, one[0].last_heartbeat_ms), (NodeType::Mgmtd as i32, 1000));
        announce(db.as_ref(), &me(2), 1100).await.unwrap();
        let all = announce(db.as_ref(), &me(1), 1200).await.unwrap();
        let mut ids: Vec<(u32, u64)> = all.iter().map(|n| (n.node_id, n.last_heartbeat_ms)).collect();
        ids.sort();
        assert_eq!(ids, vec![(1, 1200), (2, 1100)]);
    }

    #[test]
    fn views_mark_stale_peers_failed_and_ignore_timestamps() {
        let rec = |id: u32, at: u64| NodeInfo { last_heartbeat_ms: at, ..me(id) };
        let v = view(&[rec(3, 500), rec(1, 1000), rec(2, 900)], 1, 1000, 200);
        let got: Vec<(u32, i32)> = v.iter().map(|n| (n.node_id, n.status)).collect();
        assert_eq!(got, vec![(2, NodeStatus::HeartbeatConnected as i32), (3, NodeStatus::HeartbeatFailed as i32)]);
        let later = view(&[rec(3, 500), rec(1, 1100), rec(2, 1050)], 1, 1100, 200);
        assert!(!differ(&v, &later), "a newer timestamp alone is not a change");
        let stale = view(&[rec(3, 500), rec(2, 900)], 1, 1300, 200);
        assert!(differ(&v, &stale), "2 went stale");
        assert!(differ(&v, &v[..1]));
        assert!(!differ(&[], &[]));
    }
}
