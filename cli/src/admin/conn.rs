//! Finding and reaching the cluster an admin command talks to.
//!
//! Precedence: `--data-dir DIR` (DIR/cluster.toml of `t3fs local up`), then `--config FILE`, then the
//! `T3FS_CONFIG` variable. A config file may be any t3fs TOML (daemon, FUSE, client): only its
//! `mgmtd_addr` and `token` keys are read, everything else is ignored.
//!
//! Every command that needs more than mgmtd first fetches routing info directly, so a wrong token or
//! an unreachable mgmtd fails at once with mgmtd's answer instead of after the client's retry timeout.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use t3fs_client::{Client, ClientConfig, UserInfo};
use t3fs_common::proto;

use super::GlobalOpts;

/// Environment variable naming a config file when neither `--data-dir` nor `--config` is given.
pub const CONFIG_ENV: &str = "T3FS_CONFIG";

/// How long a namespace or data operation keeps retrying before it reports failure.
const RETRY_TIMEOUT_MS: u64 = 15_000;

/// Where the cluster is and who we are.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub mgmtd_addr: String,
    pub token: String,
    pub json: bool,
    pub user: UserInfo,
}

/// Reads `mgmtd_addr` and `token` from a TOML file, ignoring every other key.
pub fn read_cluster_keys(path: &Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_cluster_keys(&text).with_context(|| format!("{}", path.display()))
}

/// [`read_cluster_keys`] on a string.
pub fn parse_cluster_keys(text: &str) -> anyhow::Result<(String, String)> {
    let table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("not valid TOML: {}", one_line(&e)))?;
    let addr = match table.get("mgmtd_addr") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => bail!("`mgmtd_addr` must be a non-empty string"),
        None => bail!("no `mgmtd_addr` key"),
    };
    let token = match table.get("token") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => bail!("`token` must be a string"),
        None => String::new(),
    };
    Ok((addr, token))
}

/// Collapses a multi-line message (TOML errors draw carets) onto one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Ctx {
    pub fn new(g: &GlobalOpts) -> anyhow::Result<Ctx> {
        let (mgmtd_addr, token) = if let Some(dir) = &g.data_dir {
            let p = dir.join("cluster.toml");
            read_cluster_keys(&p).with_context(|| format!("{} is not a t3fs local cluster directory", dir.display()))?
        } else if let Some(p) = &g.config {
            read_cluster_keys(p)?
        } else if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            read_cluster_keys(&PathBuf::from(p)).with_context(|| format!("${CONFIG_ENV}"))?
        } else {
            bail!("no cluster given: pass --data-dir DIR, --config FILE or set ${CONFIG_ENV}");
        };
        let uid = g.uid.unwrap_or(0);
        let gid = g.gid.unwrap_or(uid);
        Ok(Ctx { mgmtd_addr, token, json: g.json, user: UserInfo::new(uid, gid) })
    }

    pub fn header(&self) -> proto::RequestHeader {
        proto::RequestHeader {
            request_id: t3fs_common::new_request_id(),
            token: self.token.clone(),
            uid: self.user.uid,
            gid: self.user.gid,
            gids: Vec::new(),
        }
    }

    /// A gRPC client of mgmtd.
    ///
    /// `mgmtd_addr` may list several mgmtd (comma-separated): a routing probe finds the primary,
    /// following standbys' `NotPrimary` answers, and the client talks to it.
    pub async fn mgmtd(&self) -> anyhow::Result<t3fs_common::routing::MgmtdClient> {
        let conn = t3fs_common::mgmtd_conn::MgmtdConn::new(&self.mgmtd_addr)?;
        if conn.addrs().len() > 1 {
            let header = self.header();
            conn.call(|mut c| {
                let req = proto::GetRoutingInfoReq { header: Some(header.clone()), known_version: 0 };
                async move { c.get_routing_info(req).await }
            })
            .await
            .with_context(|| format!("finding the primary mgmtd among {}", self.mgmtd_addr))?;
        }
        let (_, client) = conn.client().await.with_context(|| format!("connecting to mgmtd {}", self.mgmtd_addr))?;
        Ok(client)
    }

    /// The full routing info, straight from mgmtd.
    pub async fn routing(&self) -> anyhow::Result<proto::RoutingInfo> {
        let mut c = self.mgmtd().await?;
        let rsp = c
            .get_routing_info(proto::GetRoutingInfoReq { header: Some(self.header()), known_version: 0 })
            .await
            .map_err(|s| t3fs_common::Error::from_tonic(&s))
            .with_context(|| format!("mgmtd {}", self.mgmtd_addr))?;
        rsp.into_inner().info.context("mgmtd returned no routing info")
    }

    /// A connected native client (after checking mgmtd answers with this token).
    pub async fn client(&self) -> anyhow::Result<Arc<Client>> {
        self.routing().await?;
        let cfg = ClientConfig {
            mgmtd_addr: self.mgmtd_addr.clone(),
            token: self.token.clone(),
            retry_timeout_ms: RETRY_TIMEOUT_MS,
            ..ClientConfig::default()
        };
        Client::connect(cfg).await.context("connecting the client")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_just_the_two_keys() {
        let (a, t) = parse_cluster_keys("mgmtd_addr = \"1.2.3.4:5\"\ntoken = \"x\"\nother = 3\n[kv]\np = 1").unwrap();
        assert_eq!((a.as_str(), t.as_str()), ("1.2.3.4:5", "x"));
        let (_, t) = parse_cluster_keys("mgmtd_addr = \"h:1\"").unwrap();
        assert_eq!(t, "");
        assert!(parse_cluster_keys("token = \"x\"").is_err());
        assert!(parse_cluster_keys("mgmtd_addr = 5").is_err());
        let e = parse_cluster_keys("mgmtd_addr = ").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn no_cluster_is_an_error() {
        // Only meaningful when the variable is unset in the test environment.
        if std::env::var_os(CONFIG_ENV).is_none() {
            assert!(Ctx::new(&GlobalOpts::default()).is_err());
        }
        let g = GlobalOpts { uid: Some(7), data_dir: Some("/nonexistent-t3fs".into()), ..Default::default() };
        assert!(Ctx::new(&g).is_err());
    }
}
