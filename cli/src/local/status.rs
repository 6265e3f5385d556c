//! `t3fs local status`: nodes, targets and chains of a local cluster, as mgmtd sees them, plus
//! which of the recorded child pids are alive.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use t3fs_common::proto;

use super::plan::{ClusterFile, Plan};

/// The pid recorded for a daemon, if any.
pub fn read_pid(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join("run").join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}

/// Whether a process with this pid exists and has not exited (a zombie waiting to be reaped, e.g.
/// a detached supervisor whose new parent does not reap, counts as exited).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence; no memory is involved.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // /proc/PID/stat: "pid (comm) S ..." — the state follows the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => true,
    }
}

/// Fetches the full routing info from mgmtd.
pub async fn fetch_routing(mgmtd_addr: &str, token: &str) -> anyhow::Result<proto::RoutingInfo> {
    let mut c = t3fs_common::routing::connect_mgmtd(mgmtd_addr).await?;
    let header = proto::RequestHeader {
        request_id: t3fs_common::new_request_id(),
        token: token.to_string(),
        ..Default::default()
    };
    let rsp = c
        .get_routing_info(proto::GetRoutingInfoReq { header: Some(header), known_version: 0 })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))?;
    rsp.into_inner().info.context("mgmtd returned no routing info")
}

fn name<E: std::fmt::Debug>(v: i32, f: impl Fn(i32) -> Result<E, prost::UnknownEnumValue>) -> String {
    f(v).map(|e| format!("{e:?}").to_uppercase()).unwrap_or_else(|_| format!("?{v}"))
}

/// Renders routing info as the tables `t3fs local status` prints.
pub fn render(info: &proto::RoutingInfo) -> String {
    let now = t3fs_common::now_ms();
    let mut s = String::new();
    let _ = writeln!(s, "routing version {}", info.version);
    let _ = writeln!(
        s,
        "\nNODES\n{:<8} {:<8} {:<20} {:<22} {:<22} {:>8}",
        "id", "type", "status", "grpc", "bulk", "last hb"
    );
    for n in &info.nodes {
        let age = if n.last_heartbeat_ms == 0 {
            "-".into()
        } else {
            format!("{:.1}s", now.saturating_sub(n.last_heartbeat_ms) as f64 / 1000.0)
        };
        let _ = writeln!(
            s,
            "{:<8} {:<8} {:<20} {:<22} {:<22} {:>8}",
            n.node_id,
            name(n.node_type, proto::NodeType::try_from),
            name(n.status, proto::NodeStatus::try_from),
            n.grpc_addr,
            n.bulk_addr,
            age
        );
    }
    let _ = writeln!(
        s,
        "\nTARGETS\n{:<10} {:<8} {:<10} {:<10} {:<10} {:>12}",
        "id", "node", "chain", "public", "local", "used bytes"
    );
    for t in &info.targets {
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:<10} {:<10} {:<10} {:>12}",
            t.target_id,
            t.node_id,
            t.chain_id,
            name(t.public_state, proto::PublicTargetState::try_from),
            name(t.local_state, proto::LocalTargetState::try_from),
            t.used_bytes
        );
    }
    let _ = writeln!(s, "\nCHAINS (head -> tail)");
    for c in &info.chains {
        let targets: Vec<String> = c
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.target_id, name(t.public_state, proto::PublicTargetState::try_from)))
            .collect();
        let _ = writeln!(s, "chain {:<10} v{:<4} {}", c.chain_id, c.chain_version, targets.join(" -> "));
    }
    for t in &info.tables {
        let _ = writeln!(s, "\nCHAIN TABLE {} v{} ({}): {} chains", t.table_id, t.version, t.desc, t.chains.len());
    }
    s
}

/// `t3fs local status --data-dir DIR`.
pub async fn print(dir: &Path) -> anyhow::Result<()> {
    let cf: ClusterFile = t3fs_common::config::load(&dir.join("cluster.toml"))
        .with_context(|| format!("{} is not a t3fs local cluster directory", dir.display()))?;
    let plan = Plan::load_or_create(dir, None)?;
    println!("data dir {}", plan.dir.display());
    let mut names = plan.daemon_names();
    names.push("fuse".into());
    for n in names {
        match read_pid(&plan.dir, &n) {
            Some(pid) if pid_alive(pid) => println!("  {n:<10} pid {pid:<8} running"),
            Some(pid) => println!("  {n:<10} pid {pid:<8} NOT RUNNING"),
            None => {}
        }
    }
    match fetch_routing(&cf.mgmtd_addr, &cf.token).await {
        Ok(info) => print!("{}", render(&info)),
        Err(e) => println!("mgmtd at {} is not answering: {e:#}", cf.mgmtd_addr),
    }
    Ok(())
}
