//! Node and layout operations: disable / enable / unregister a node, set a chain's preferred target
//! order, rotate a chain's head, create a new chain-table version (docs/mgmtd.md says when to use
//! each). Each prints what mgmtd returned (the node, the chain or the table).
use anyhow::{Context, bail};
use serde_json::json;
use t3fs_common::proto;

use super::Ctx;
use super::cluster::{print_chain, print_table};
use super::output::{Table, node_status, node_type, print_json};

fn print_node(ctx: &Ctx, n: &proto::NodeInfo) {
    if ctx.json {
        print_json(&json!({
            "node_id": n.node_id,
            "type": node_type(n.node_type),
            "status": node_status(n.status),
            "grpc_addr": n.grpc_addr,
            "hostname": n.hostname,
        }));
    } else {
        let mut t = Table::new(&["ID", "TYPE", "STATUS", "HOST", "GRPC"]);
        t.row(vec![
            n.node_id.to_string(),
            node_type(n.node_type),
            node_status(n.status),
            n.hostname.clone(),
            n.grpc_addr.clone(),
        ]);
        print!("{}", t.render());
    }
}

/// What `t3fs admin disable-node|enable-node` does.
#[derive(Clone, Copy, Debug)]
pub enum NodeSwitch {
    Disable,
    Enable,
}

/// `t3fs admin disable-node NODE` / `enable-node NODE`.
pub async fn switch_node(ctx: &Ctx, node_id: u32, op: NodeSwitch) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let header = Some(ctx.header());
    let node = match op {
        NodeSwitch::Disable => {
            c.disable_node(proto::DisableNodeReq { header, node_id })
                .await
                .map_err(|s| t3fs_common::Error::from_tonic(&s))
                .with_context(|| format!("disable node {node_id}"))?
                .into_inner()
                .node
        }
        NodeSwitch::Enable => {
            c.enable_node(proto::EnableNodeReq { header, node_id })
                .await
                .map_err(|s| t3fs_common::Error::from_tonic(&s))
                .with_context(|| format!("enable node {node_id}"))?
                .into_inner()
                .node
        }
    };
    print_node(ctx, &node.context("mgmtd returned no node")?);
    Ok(())
}

/// `t3fs admin unregister-node NODE`.
pub async fn unregister_node(ctx: &Ctx, node_id: u32) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let rsp = c
        .unregister_node(proto::UnregisterNodeReq { header: Some(ctx.header()), node_id })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("unregister node {node_id}"))?
        .into_inner();
    if ctx.json {
        print_json(&json!({ "node_id": node_id, "routing_version": rsp.routing_version }));
    } else {
        println!("node {node_id} unregistered (routing version {})", rsp.routing_version);
    }
    Ok(())
}

/// Parses `1,2,3` (blanks allowed) into ids; `what` names them in errors.
pub fn parse_id_list<T: std::str::FromStr>(list: &str, what: &str) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse() {
            Ok(v) => out.push(v),
            Err(_) => bail!("invalid {what} list {list:?}: {item:?} is not a number"),
        }
    }
    if out.is_empty() {
        bail!("invalid {what} list {list:?}: give at least one id, comma-separated");
    }
    Ok(out)
}

/// `t3fs admin set-preferred-order CHAIN T1,T2,...` (`None`: `--clear`).
pub async fn set_preferred_order(ctx: &Ctx, chain_id: u32, targets: Option<&str>) -> anyhow::Result<()> {
    let target_ids = match targets {
        Some(list) => parse_id_list(list, "target")?,
        None => Vec::new(),
    };
    let mut c = ctx.mgmtd().await?;
    let chain = c
        .set_preferred_order(proto::SetPreferredOrderReq { header: Some(ctx.header()), chain_id, target_ids })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("set the preferred order of chain {chain_id}"))?
        .into_inner()
        .chain
        .context("mgmtd returned no chain")?;
    print_chain(ctx, &chain);
    Ok(())
}

/// `t3fs admin rotate-head CHAIN`.
pub async fn rotate_head(ctx: &Ctx, chain_id: u32) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let chain = c
        .rotate_chain_head(proto::RotateChainHeadReq { header: Some(ctx.header()), chain_id })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("rotate the head of chain {chain_id}"))?
        .into_inner()
        .chain
        .context("mgmtd returned no chain")?;
    print_chain(ctx, &chain);
    Ok(())
}

/// `t3fs admin create-chain-table --table-id N --new-version --chains C1,C2,...`.
pub async fn create_table_version(ctx: &Ctx, table_id: u32, chains: &str, desc: &str) -> anyhow::Result<()> {
    let chains = parse_id_list(chains, "chain")?;
    let mut c = ctx.mgmtd().await?;
    let table = c
        .create_chain_table(proto::CreateChainTableReq {
            header: Some(ctx.header()),
            table_id,
            desc: desc.to_string(),
            new_version: true,
            chains,
            ..Default::default()
        })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("new version of chain table {table_id}"))?
        .into_inner()
        .table
        .context("mgmtd returned no chain table")?;
    print_table(ctx, &table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list::<u64>("3, 1,2", "target").unwrap(), vec![3, 1, 2]);
        assert!(parse_id_list::<u64>("1,x", "target").unwrap_err().to_string().contains("\"x\""));
        assert!(parse_id_list::<u32>(" , ", "chain").is_err());
    }
}
