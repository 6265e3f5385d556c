//! Cluster and placement commands: what mgmtd knows (nodes, targets, chains, chain tables) and
//! creating chain tables.
use anyhow::{Context, bail};
use serde_json::{Value, json};
use t3fs_common::proto;

use super::Ctx;
use super::output::{Table, local_state, node_status, node_type, print_json, public_state};

fn heartbeat_age(ms: u64) -> Option<f64> {
    (ms != 0).then(|| t3fs_common::now_ms().saturating_sub(ms) as f64 / 1000.0)
}

/// `t3fs admin list-nodes`.
pub async fn list_nodes(ctx: &Ctx) -> anyhow::Result<()> {
    let info = ctx.routing().await?;
    if ctx.json {
        let nodes: Vec<Value> = info
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "node_id": n.node_id,
                    "type": node_type(n.node_type),
                    "status": node_status(n.status),
                    "grpc_addr": n.grpc_addr,
                    "bulk_addr": n.bulk_addr,
                    "hostname": n.hostname,
                    "last_heartbeat_ms": n.last_heartbeat_ms,
                    "tags": super::targets::tags_json(&n.tags),
                })
            })
            .collect();
        print_json(&json!({ "routing_version": info.version, "nodes": nodes }));
        return Ok(());
    }
    let mut t = Table::new(&["ID", "TYPE", "STATUS", "HOST", "GRPC", "BULK", "LAST HB", "TAGS"]);
    for n in &info.nodes {
        t.row(vec![
            n.node_id.to_string(),
            node_type(n.node_type),
            node_status(n.status),
            n.hostname.clone(),
            n.grpc_addr.clone(),
            if n.bulk_addr.is_empty() { "-".into() } else { n.bulk_addr.clone() },
            heartbeat_age(n.last_heartbeat_ms).map_or("-".into(), |s| format!("{s:.1}s ago")),
            super::targets::tags_string(&n.tags),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `t3fs admin list-targets`.
pub async fn list_targets(ctx: &Ctx) -> anyhow::Result<()> {
    let info = ctx.routing().await?;
    if ctx.json {
        let targets: Vec<Value> = info
            .targets
            .iter()
            .map(|t| {
                json!({
                    "target_id": t.target_id,
                    "node_id": t.node_id,
                    "chain_id": t.chain_id,
                    "public_state": public_state(t.public_state),
                    "local_state": local_state(t.local_state),
                    "admin_offline": t.admin_offline,
                    "used_bytes": t.used_bytes,
                    "free_bytes": t.free_bytes,
                    "capacity_bytes": t.capacity_bytes,
                })
            })
            .collect();
        print_json(&json!({ "routing_version": info.version, "targets": targets }));
        return Ok(());
    }
    let mut t = Table::new(&["TARGET", "NODE", "CHAIN", "PUBLIC", "LOCAL", "USED BYTES", "FREE BYTES", "CAPACITY"]);
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for x in &info.targets {
        t.row(vec![
            x.target_id.to_string(),
            x.node_id.to_string(),
            if x.chain_id == 0 { "-".into() } else { x.chain_id.to_string() },
            public_state(x.public_state),
            if x.admin_offline {
                format!("{} (admin offline)", local_state(x.local_state))
            } else {
                local_state(x.local_state)
            },
            x.used_bytes.to_string(),
            opt(x.free_bytes),
            opt(x.capacity_bytes),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub(super) fn chain_json(c: &proto::ChainInfo) -> Value {
    let targets: Vec<Value> = c
        .targets
        .iter()
        .map(|t| json!({ "target_id": t.target_id, "public_state": public_state(t.public_state) }))
        .collect();
    json!({
        "chain_id": c.chain_id,
        "chain_version": c.chain_version,
        "targets": targets,
        "preferred_order": c.preferred_order,
    })
}

pub(super) const CHAIN_HEADER: [&str; 4] = ["CHAIN", "VERSION", "TARGETS (head -> tail)", "PREFERRED"];

pub(super) fn chain_row(c: &proto::ChainInfo) -> Vec<String> {
    let targets: Vec<String> =
        c.targets.iter().map(|t| format!("{}({})", t.target_id, public_state(t.public_state))).collect();
    let preferred: Vec<String> = c.preferred_order.iter().map(|t| t.to_string()).collect();
    let preferred = if preferred.is_empty() { "-".to_string() } else { preferred.join(",") };
    vec![c.chain_id.to_string(), c.chain_version.to_string(), targets.join(" -> "), preferred]
}

/// Prints one chain table (a command's result).
pub(super) fn print_table(ctx: &Ctx, table: &proto::ChainTable) {
    if ctx.json {
        print_json(&table_json(table));
    } else {
        let mut t = Table::new(&TABLE_HEADER);
        t.row(table_row(table));
        print!("{}", t.render());
    }
}

/// Prints one chain (a command's result).
pub(super) fn print_chain(ctx: &Ctx, c: &proto::ChainInfo) {
    if ctx.json {
        print_json(&chain_json(c));
    } else {
        let mut t = Table::new(&CHAIN_HEADER);
        t.row(chain_row(c));
        print!("{}", t.render());
    }
}

/// `t3fs admin list-chains`.
pub async fn list_chains(ctx: &Ctx) -> anyhow::Result<()> {
    let info = ctx.routing().await?;
    if ctx.json {
        let chains: Vec<Value> = info.chains.iter().map(chain_json).collect();
        print_json(&json!({ "routing_version": info.version, "chains": chains }));
        return Ok(());
    }
    let mut t = Table::new(&CHAIN_HEADER);
    for c in &info.chains {
        t.row(chain_row(c));
    }
    print!("{}", t.render());
    Ok(())
}

/// `t3fs admin update-chain --chain C (--add T | --remove T)` (0 = not given).
pub async fn update_chain(ctx: &Ctx, chain_id: u32, add: u64, remove: u64) -> anyhow::Result<()> {
    if add == 0 && remove == 0 {
        bail!("invalid update-chain: give --add TARGET or --remove TARGET (target ids start at 1)");
    }
    let mut c = ctx.mgmtd().await?;
    let rsp = c
        .update_chain(proto::UpdateChainReq {
            header: Some(ctx.header()),
            chain_id,
            add_target: add,
            remove_target: remove,
        })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("update chain {chain_id}"))?;
    let chain = rsp.into_inner().chain.context("mgmtd returned no chain")?;
    print_chain(ctx, &chain);
    Ok(())
}

/// `t3fs admin rotate-lastsrv --chain C`.
pub async fn rotate_lastsrv(ctx: &Ctx, chain_id: u32) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let rsp = c
        .rotate_last_srv(proto::RotateLastSrvReq { header: Some(ctx.header()), chain_id })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("rotate lastsrv of chain {chain_id}"))?;
    let chain = rsp.into_inner().chain.context("mgmtd returned no chain")?;
    print_chain(ctx, &chain);
    Ok(())
}

pub(super) fn table_json(t: &proto::ChainTable) -> Value {
    json!({ "table_id": t.table_id, "version": t.version, "chains": t.chains, "desc": t.desc })
}

pub(super) fn table_row(t: &proto::ChainTable) -> Vec<String> {
    let chains: Vec<String> = t.chains.iter().map(|c| c.to_string()).collect();
    vec![t.table_id.to_string(), t.version.to_string(), t.chains.len().to_string(), chains.join(","), t.desc.clone()]
}

pub(super) const TABLE_HEADER: [&str; 5] = ["TABLE", "VERSION", "#CHAINS", "CHAINS", "DESC"];

/// `t3fs admin list-chain-tables`.
pub async fn list_chain_tables(ctx: &Ctx) -> anyhow::Result<()> {
    let info = ctx.routing().await?;
    if ctx.json {
        let tables: Vec<Value> = info.tables.iter().map(table_json).collect();
        print_json(&json!({ "routing_version": info.version, "tables": tables }));
        return Ok(());
    }
    let mut t = Table::new(&TABLE_HEADER);
    for x in &info.tables {
        t.row(table_row(x));
    }
    print!("{}", t.render());
    Ok(())
}

/// `t3fs admin create-chain-table --table-id N --replicas R [--desc S]`.
///
/// `explicit`: chains to create as given (targets head first) instead of automatic placement.
pub async fn create_chain_table(
    ctx: &Ctx,
    table_id: u32,
    replicas: u32,
    desc: &str,
    explicit: &[Vec<u64>],
) -> anyhow::Result<()> {
    if table_id == 0 {
        bail!("invalid chain table spec: --table-id must be at least 1");
    }
    if replicas == 0 {
        bail!("invalid chain table spec: --replicas must be at least 1");
    }
    let mut c = ctx.mgmtd().await?;
    let rsp = c
        .create_chain_table(proto::CreateChainTableReq {
            header: Some(ctx.header()),
            table_id,
            replicas,
            desc: desc.to_string(),
            explicit_chains: explicit.iter().map(|t| proto::TargetList { targets: t.clone() }).collect(),
            ..Default::default()
        })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context("create chain table")?;
    let table = rsp.into_inner().table.context("mgmtd returned no chain table")?;
    print_table(ctx, &table);
    Ok(())
}
