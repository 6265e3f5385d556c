//! `t3fs admin list-syncs`: resync progress on every storage node.
//!
//! Asks each connected storage node for its syncs (`StorageAdmin.ListSyncs`: the syncs it sends as the
//! SERVING predecessor of a SYNCING target, running or finished in the last 10 minutes) and prints one
//! row per sync: chain, targets, phase, chunks done of total, bytes, elapsed time and ETA. A node that
//! does not answer is reported (stderr, and `unreachable` in `--json`) and makes the command fail after
//! printing what the others said, so scripts notice partial answers.
use anyhow::bail;
use serde_json::{Value, json};
use t3fs_common::proto::{self, SyncPhase};

use super::Ctx;
use super::output::{Table, enum_name, print_json};

fn phase(v: i32) -> String {
    enum_name(v, SyncPhase::try_from).trim_start_matches("SYNC_PHASE_").to_string()
}

fn secs(ms: u64) -> String {
    match ms / 1000 {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

fn sync_json(node_id: u32, s: &proto::SyncProgress) -> Value {
    json!({
        "node_id": node_id,
        "chain_id": s.chain_id,
        "chain_version": s.chain_version,
        "from_target": s.from_target,
        "to_target": s.to_target,
        "phase": phase(s.phase),
        "chunks_total": s.chunks_total,
        "chunks_done": s.chunks_done,
        "bytes_done": s.bytes_done,
        "started_ms": s.started_ms,
        "elapsed_ms": s.elapsed_ms,
        "eta_ms": s.eta_ms,
        "error": s.error,
    })
}

/// The syncs of one storage node.
async fn node_syncs(ctx: &Ctx, grpc_addr: &str) -> anyhow::Result<Vec<proto::SyncProgress>> {
    let ch = t3fs_common::routing::connect_channel(grpc_addr).await?;
    let mut admin = proto::storage_admin_client::StorageAdminClient::new(ch);
    let req = proto::ListSyncsReq { header: Some(ctx.header()) };
    let rsp = admin.list_syncs(req).await.map_err(|s| t3fs_common::Error::from_tonic(&s))?;
    Ok(rsp.into_inner().syncs)
}

/// `t3fs admin list-syncs`.
pub async fn list_syncs(ctx: &Ctx) -> anyhow::Result<()> {
    let info = ctx.routing().await?;
    let storage = info.nodes.iter().filter(|n| {
        n.node_type == proto::NodeType::Storage as i32 && n.status == proto::NodeStatus::HeartbeatConnected as i32
    });
    let (mut rows, mut unreachable) = (Vec::new(), Vec::new());
    for n in storage {
        match node_syncs(ctx, &n.grpc_addr).await {
            Ok(syncs) => rows.extend(syncs.into_iter().map(|s| (n.node_id, s))),
            Err(e) => unreachable.push((n.node_id, format!("{e:#}"))),
        }
    }
    if ctx.json {
        let syncs: Vec<Value> = rows.iter().map(|(n, s)| sync_json(*n, s)).collect();
        let bad: Vec<Value> = unreachable.iter().map(|(n, e)| json!({ "node_id": n, "error": e })).collect();
        print_json(&json!({ "syncs": syncs, "unreachable": bad }));
    } else if rows.is_empty() {
        println!("no resync running or finished in the last 10 minutes");
    } else {
        let mut t =
            Table::new(&["NODE", "CHAIN", "VER", "FROM", "TO", "PHASE", "CHUNKS", "MiB", "ELAPSED", "ETA", "ERROR"]);
        for (node, s) in &rows {
            t.row(vec![
                node.to_string(),
                s.chain_id.to_string(),
                s.chain_version.to_string(),
                s.from_target.to_string(),
                s.to_target.to_string(),
                phase(s.phase),
                format!("{}/{}", s.chunks_done, s.chunks_total),
                mib(s.bytes_done),
                secs(s.elapsed_ms),
                s.eta_ms.map_or("-".into(), secs),
                if s.error.is_empty() { "-".into() } else { s.error.clone() },
            ]);
        }
        print!("{}", t.render());
    }
    for (n, e) in &unreachable {
        eprintln!("t3fs: storage node {n} did not answer: {e}");
    }
    if !unreachable.is_empty() {
        bail!("{} storage node(s) did not answer", unreachable.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(secs(1500), "1.5s");
        assert_eq!(secs(61_000), "1m01s");
        assert_eq!(secs(3_725_000), "1h02m");
        assert_eq!(mib(3 << 20), "3.0");
        assert_eq!(phase(SyncPhase::Transferring as i32), "TRANSFERRING");
        assert_eq!(phase(99), "?99");
    }
}
