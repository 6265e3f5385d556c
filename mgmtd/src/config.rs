//! mgmtd's typed config (the TOML file `t3fs mgmtd --config F` reads).
//!
//! Every field has a doc comment and, where one makes sense, a default; unknown fields are refused
//! so a typo never silently falls back to a default.
use serde::{Deserialize, Serialize};
use t3fs_common::Error;

/// mgmtd configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This mgmtd's node id (3FS convention: mgmtd nodes are 1, 2, ...). Must not be 0 and must not
    /// be used by any other node; it appears in routing info as the PRIMARY_MGMTD node.
    pub node_id: u32,
    /// gRPC listen address, e.g. "127.0.0.1:8000"; port 0 picks a free port (tests). If the host is
    /// unspecified (0.0.0.0 / ::), routing info advertises 127.0.0.1 (skeleton) unless `advertise`
    /// is set.
    pub listen: String,
    /// The address other processes use to reach this mgmtd (`host:port`): what routing info and
    /// the lease (hence standbys' `NotPrimary` answers) name. Unset: the bound address as above.
    /// Set it when several mgmtd on different hosts listen on 0.0.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Cluster token. Non-empty: every request's header token must equal it, else the request is
    /// refused with Unauthenticated. Empty: no authentication.
    #[serde(default)]
    pub token: String,
    /// Where cluster state (nodes, targets, chains, chain tables) is persisted,
    /// e.g. `{ backend = "embedded", path = "/var/lib/t3fs/mgmtd" }`.
    pub kv: t3fs_kv::KvConfig,
    /// A node that has not heartbeated for this long is marked HEARTBEAT_FAILED and its targets
    /// OFFLINE. 3FS uses 60 s; our default is shorter because single-machine clusters want quick
    /// failure detection.
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    /// How often the liveness checker runs. Failure detection latency is at most
    /// `heartbeat_timeout_ms + check_interval_ms`.
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u64,
    /// After start, mgmtd changes no chain for this long: it only collects heartbeats (so a
    /// restarted mgmtd learns every target's local state before it acts on it), and routing info
    /// carries `bootstrapping = true`. Nodes and targets still register and heartbeat, and nodes
    /// can still be marked failed. Unset: `heartbeat_timeout_ms` (3FS waits 2 min). 0 disables it
    /// (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_ms: Option<u64>,
    /// How long a primary lease lasts after each extension. Several mgmtd may share one KV store;
    /// the one holding the lease is primary, the others are standbys that refuse requests with
    /// `NotPrimary` naming the primary. A crashed primary is replaced within about
    /// `lease_length_ms + extend_lease_interval_ms` (3FS: 60 s).
    #[serde(default = "default_lease_length_ms")]
    pub lease_length_ms: u64,
    /// How often every mgmtd runs the lease transaction: the primary extends its lease, standbys
    /// check whether it expired (3FS: 10 s).
    #[serde(default = "default_extend_lease_interval_ms")]
    pub extend_lease_interval_ms: u64,
    /// A primary stops serving this long before its lease ends by its own clock, unless it extended
    /// the lease meanwhile. It must exceed the largest wall-clock difference between mgmtd hosts
    /// (standbys judge expiry by their own wall clock), plus scheduling hiccups.
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
    /// A client session (`ExtendClientSession`, sent by native clients and FUSE mounts every
    /// `session_extend_ms`) expires this long after its last extension.
    #[serde(default = "default_client_session_timeout_ms")]
    pub client_session_timeout_ms: u64,
    /// Prometheus endpoint listen address (`host:port`; port 0 picks a free port): `GET /metrics`
    /// serves the metrics listed in docs/metrics.md. Unset: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

fn default_lease_length_ms() -> u64 {
    5000
}

fn default_extend_lease_interval_ms() -> u64 {
    1000
}

fn default_lease_margin_ms() -> u64 {
    1000
}

fn default_heartbeat_timeout_ms() -> u64 {
    5000
}

/// Default of `client_session_timeout_ms`.
pub const DEFAULT_CLIENT_SESSION_TIMEOUT_MS: u64 = 60_000;

fn default_client_session_timeout_ms() -> u64 {
    DEFAULT_CLIENT_SESSION_TIMEOUT_MS
}

fn default_check_interval_ms() -> u64 {
    500
}

impl Config {
    /// A config with defaults for everything but the essentials.
    pub fn new(node_id: u32, listen: impl Into<String>, kv: t3fs_kv::KvConfig) -> Self {
        Self {
            node_id,
            listen: listen.into(),
            advertise: None,
            token: String::new(),
            kv,
            heartbeat_timeout_ms: default_heartbeat_timeout_ms(),
            check_interval_ms: default_check_interval_ms(),
            bootstrap_ms: None,
            lease_length_ms: default_lease_length_ms(),
            extend_lease_interval_ms: default_extend_lease_interval_ms(),
            lease_margin_ms: default_lease_margin_ms(),
            client_session_timeout_ms: default_client_session_timeout_ms(),
            metrics_listen: None,
        }
    }

    /// The bootstrapping period: `bootstrap_ms`, or `heartbeat_timeout_ms` when unset.
    pub fn bootstrap_period(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.bootstrap_ms.unwrap_or(self.heartbeat_timeout_ms))
    }

    /// Rejects configs the daemon cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        if self.node_id == 0 {
            return Err(Error::invalid("mgmtd config: node_id must not be 0"));
        }
        if self.heartbeat_timeout_ms == 0 {
            return Err(Error::invalid("mgmtd config: heartbeat_timeout_ms must be > 0"));
        }
        if self.check_interval_ms == 0 {
            return Err(Error::invalid("mgmtd config: check_interval_ms must be > 0"));
        }
        if self.listen.is_empty() {
            return Err(Error::invalid("mgmtd config: listen must not be empty"));
        }
        t3fs_common::config::check_advertise("mgmtd config: advertise", self.advertise.as_deref())?;
        if self.client_session_timeout_ms < 1000 {
            return Err(Error::invalid("mgmtd config: client_session_timeout_ms must be at least 1000"));
        }
        if self.extend_lease_interval_ms == 0 {
            return Err(Error::invalid("mgmtd config: extend_lease_interval_ms must be > 0"));
        }
        // The primary must get to extend the lease before it stops trusting it.
        if self.extend_lease_interval_ms.saturating_add(self.lease_margin_ms) >= self.lease_length_ms {
            return Err(Error::invalid(
                "mgmtd config: extend_lease_interval_ms + lease_margin_ms must be less than lease_length_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let cfg: Config = t3fs_common::config::parse(
            r#"
            node_id = 1
            listen = "127.0.0.1:0"
            kv = { backend = "embedded", path = "/tmp/x" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.node_id, 1);
        assert_eq!(cfg.token, "");
        assert_eq!(cfg.heartbeat_timeout_ms, 5000);
        assert_eq!(cfg.check_interval_ms, 500);
        assert_eq!(cfg.bootstrap_ms, None);
        assert_eq!(cfg.bootstrap_period(), std::time::Duration::from_millis(5000));
        assert_eq!((cfg.lease_length_ms, cfg.extend_lease_interval_ms, cfg.lease_margin_ms), (5000, 1000, 1000));
        assert_eq!(cfg.advertise, None);
        assert_eq!(cfg.kv, t3fs_kv::KvConfig::Embedded { path: "/tmp/x".into() });
        cfg.validate().unwrap();
        // Round trip through the writer `t3fs local up` uses.
        let text = t3fs_common::config::to_toml(&cfg).unwrap();
        assert_eq!(t3fs_common::config::parse::<Config>(&text).unwrap(), cfg);
        assert_eq!(cfg.metrics_listen, None);
        let with_metrics = Config { metrics_listen: Some("127.0.0.1:9100".into()), ..cfg };
        let text = t3fs_common::config::to_toml(&with_metrics).unwrap();
        assert_eq!(t3fs_common::config::parse::<Config>(&text).unwrap(), with_metrics);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let err = t3fs_common::config::parse::<Config>(
            "node_id = 1\nlisten = \"127.0.0.1:0\"\nkv = { backend = \"mem\" }\nheartbeat_timeot_ms = 3\n",
        );
        assert!(err.is_err());
        let mut cfg = Config::new(1, "127.0.0.1:0", t3fs_kv::KvConfig::Mem);
        cfg.validate().unwrap();
        cfg.node_id = 0;
        assert!(cfg.validate().is_err());
        cfg.node_id = 1;
        cfg.check_interval_ms = 0;
        assert!(cfg.validate().is_err());
        cfg.check_interval_ms = 500;
        cfg.lease_length_ms = 2000;
        assert!(cfg.validate().is_err(), "interval + margin must fit in the lease");
        cfg.lease_length_ms = 2001;
        cfg.validate().unwrap();
        cfg.extend_lease_interval_ms = 0;
        assert!(cfg.validate().is_err());
        cfg.extend_lease_interval_ms = 1000;
        cfg.advertise = Some("a:1,b:2".into());
        assert!(cfg.validate().is_err());
        cfg.advertise = Some("mgmtd-2.example:8000".into());
        cfg.validate().unwrap();
    }

    #[test]
    fn bootstrap_period_defaults_to_the_heartbeat_timeout() {
        let cfg: Config = t3fs_common::config::parse(
            "node_id = 1\nlisten = \"127.0.0.1:0\"\nkv = { backend = \"mem\" }\nheartbeat_timeout_ms = 700\n",
        )
        .unwrap();
        assert_eq!(cfg.bootstrap_period(), std::time::Duration::from_millis(700));
        let cfg: Config = t3fs_common::config::parse(
            "node_id = 1\nlisten = \"127.0.0.1:0\"\nkv = { backend = \"mem\" }\nbootstrap_ms = 0\n",
        )
        .unwrap();
        assert_eq!(cfg.bootstrap_ms, Some(0));
        assert_eq!(cfg.bootstrap_period(), std::time::Duration::ZERO);
        let text = t3fs_common::config::to_toml(&cfg).unwrap();
        assert_eq!(t3fs_common::config::parse::<Config>(&text).unwrap(), cfg);
    }
}
