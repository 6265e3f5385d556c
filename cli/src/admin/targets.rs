//! `offline-target` (take one storage target out of its chain, or with `--online` put it back) and
//! `set-node-tags` (admin labels on nodes, shown by `list-nodes`). Both are mgmtd operations; see
//! docs/mgmtd.md ("Node tags", "Offline target") for what mgmtd does with them.
use anyhow::{Context, bail};
use serde_json::{Value, json};
use t3fs_common::proto;

use super::Ctx;
use super::cluster::{CHAIN_HEADER, chain_json, chain_row};
use super::output::{Table, local_state, node_status, node_type, print_json, public_state};

/// Parses `key` or `key=value` (mgmtd checks the characters).
pub fn parse_tag(s: &str) -> anyhow::Result<proto::NodeTag> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.is_empty() {
        bail!("invalid tag {s:?}: expected KEY or KEY=VALUE");
    }
    Ok(proto::NodeTag { key: key.to_string(), value: value.to_string() })
}

/// `key=value,key2` as `list-nodes` shows tags (`-` when none).
pub fn tags_string(tags: &[proto::NodeTag]) -> String {
    if tags.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = tags
        .iter()
        .map(|t| if t.value.is_empty() { t.key.clone() } else { format!("{}={}", t.key, t.value) })
        .collect();
    parts.join(",")
}

/// Tags as a JSON object (key -> value).
pub fn tags_json(tags: &[proto::NodeTag]) -> Value {
    Value::Object(tags.iter().map(|t| (t.key.clone(), Value::String(t.value.clone()))).collect())
}

/// `t3fs admin set-node-tags NODE [TAG...] [--add|--remove]`.
pub async fn set_node_tags(ctx: &Ctx, node_id: u32, tags: &[String], mode: proto::SetTagsMode) -> anyhow::Result<()> {
    let tags = tags.iter().map(|t| parse_tag(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut c = ctx.mgmtd().await?;
    let node = c
        .set_node_tags(proto::SetNodeTagsReq { header: Some(ctx.header()), node_id, tags, mode: mode as i32 })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("set the tags of node {node_id}"))?
        .into_inner()
        .node
        .context("mgmtd returned no node")?;
    if ctx.json {
        print_json(&json!({
            "node_id": node.node_id,
            "type": node_type(node.node_type),
            "status": node_status(node.status),
            "tags": tags_json(&node.tags),
        }));
    } else {
        let mut t = Table::new(&["ID", "TYPE", "STATUS", "TAGS"]);
        t.row(vec![
            node.node_id.to_string(),
            node_type(node.node_type),
            node_status(node.status),
            tags_string(&node.tags),
        ]);
        print!("{}", t.render());
    }
    Ok(())
}

/// `t3fs admin offline-target --target T [--online]`.
pub async fn offline_target(ctx: &Ctx, target_id: u64, online: bool) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let what =
        if online { format!("bring target {target_id} online") } else { format!("take target {target_id} offline") };
    let rsp = c
        .offline_target(proto::OfflineTargetReq { header: Some(ctx.header()), target_id, online })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context(what)?
        .into_inner();
    let t = rsp.target.context("mgmtd returned no target")?;
    if ctx.json {
        print_json(&json!({
            "target_id": t.target_id,
            "node_id": t.node_id,
            "chain_id": t.chain_id,
            "admin_offline": t.admin_offline,
            "public_state": public_state(t.public_state),
            "local_state": local_state(t.local_state),
            "chain": rsp.chain.as_ref().map(chain_json),
        }));
        return Ok(());
    }
    let mut tbl = Table::new(&["TARGET", "NODE", "CHAIN", "ADMIN", "PUBLIC", "LOCAL"]);
    tbl.row(vec![
        t.target_id.to_string(),
        t.node_id.to_string(),
        if t.chain_id == 0 { "-".into() } else { t.chain_id.to_string() },
        if t.admin_offline { "offline".into() } else { "online".into() },
        public_state(t.public_state),
        local_state(t.local_state),
    ]);
    print!("{}", tbl.render());
    if let Some(chain) = &rsp.chain {
        let mut ct = Table::new(&CHAIN_HEADER);
        ct.row(chain_row(chain));
        print!("{}", ct.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_print() {
        let t = parse_tag("zone=a=b").unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("zone", "a=b"));
        let t = parse_tag("ssd").unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("ssd", ""));
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("").is_err());
        let tags = [parse_tag("rack=r1").unwrap(), parse_tag("ssd").unwrap()];
        assert_eq!(tags_string(&tags), "rack=r1,ssd");
        assert_eq!(tags_string(&[]), "-");
        assert_eq!(tags_json(&tags), json!({"rack": "r1", "ssd": ""}));
    }
}
