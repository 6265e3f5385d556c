//! Config commands: the hot configs mgmtd stores per node type and pushes with heartbeat replies
//! (docs/mgmtd.md "Configs"): `set-config` replaces one from a TOML file, `get-config` prints it
//! with the version each node of that type has applied.
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use t3fs_common::proto::{self, NodeType};

use super::Ctx;
use super::output::print_json;

/// The node types that take a pushed config.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigNodeType {
    Storage,
    Meta,
}

impl ConfigNodeType {
    fn proto(self) -> NodeType {
        match self {
            Self::Storage => NodeType::Storage,
            Self::Meta => NodeType::Meta,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Meta => "meta",
        }
    }
}

/// `t3fs admin set-config --node-type T [--expected-version N] FILE` (`-`: standard input).
pub async fn set_config(ctx: &Ctx, ty: ConfigNodeType, file: &Path, expected: Option<u64>) -> anyhow::Result<()> {
    let toml = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the config from standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    // mgmtd checks it too; checking here gives the error before any network round trip.
    t3fs_common::hot_config::validate_for(ty.proto(), &toml)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("{} is not a valid {} config", file.display(), ty.name()))?;
    let mut c = ctx.mgmtd().await?;
    let req = proto::SetConfigReq {
        header: Some(ctx.header()),
        node_type: ty.proto() as i32,
        toml,
        expected_version: expected,
    };
    let rsp = c
        .set_config(req)
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("set {} config", ty.name()))?;
    let config = rsp.into_inner().config.context("mgmtd returned no config")?;
    if ctx.json {
        print_json(&json!({ "node_type": ty.name(), "version": config.version }));
    } else {
        println!("{} config version {} stored; nodes apply it with their next heartbeat", ty.name(), config.version);
    }
    Ok(())
}

/// `t3fs admin get-config --node-type T`: the TOML text (as stored, so it can be edited and set
/// again), preceded by comment lines with its version and each node's applied version.
pub async fn get_config(ctx: &Ctx, ty: ConfigNodeType) -> anyhow::Result<()> {
    let mut c = ctx.mgmtd().await?;
    let rsp = c
        .get_config(proto::GetConfigReq { header: Some(ctx.header()), node_type: ty.proto() as i32 })
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .with_context(|| format!("get {} config", ty.name()))?;
    let config = rsp.into_inner().config.context("mgmtd returned no config")?;
    let info = ctx.routing().await?;
    let nodes: Vec<(u32, u64)> =
        info.nodes.iter().filter(|n| n.node_type == ty.proto() as i32).map(|n| (n.node_id, n.config_version)).collect();
    if ctx.json {
        let nodes: Vec<Value> = nodes.iter().map(|(id, v)| json!({ "node_id": id, "config_version": v })).collect();
        print_json(&json!({
            "node_type": ty.name(),
            "version": config.version,
            "toml": config.toml,
            "nodes": nodes,
        }));
        return Ok(());
    }
    if config.version == 0 {
        println!("# no {} config set (every node uses its config file)", ty.name());
    } else {
        println!("# {} config version {}", ty.name(), config.version);
    }
    for (id, v) in nodes {
        let note = if v == config.version { "" } else { " (not current)" };
        println!("# node {id}: applied version {v}{note}");
    }
    print!("{}", config.toml);
    if !config.toml.is_empty() && !config.toml.ends_with('\n') {
        println!();
    }
    Ok(())
}
