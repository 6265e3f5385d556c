//! Hot configs: the config items a running daemon applies without a restart, pushed by mgmtd.
//!
//! mgmtd stores one versioned TOML text per node type (`SetConfig`, KV record `CONF`) and sends it
//! in a heartbeat reply whenever the node's reported `config_version` differs. The text is a
//! *hot config* of that node type ([`StorageHot`], [`MetaHot`]): every item is optional, and an
//! item that is not set means "the value from the daemon's own config file". So pushing an empty
//! config reverts every hot item to the file's values.
//!
//! The same rules run on both sides: mgmtd refuses a text that [`validate_for`] rejects (nothing
//! is stored), and a node parses it again with [`parse`] plus its own check against its file
//! values ([`HotState::offer`]). A config a node refuses (e.g. a node of an older release that
//! does not know an item) is logged once and not applied; the node keeps reporting its old
//! version, so the operator sees it in `t3fs admin list-nodes`.
//!
//! Invariants: a [`HotState`]'s version changes only together with a config that passed every
//! check, after the config took effect (log filter reloaded, daemon hook run, watchers notified).
//! Only one task (the heartbeat loop) calls [`HotState::offer`].
use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::proto::{NodeConfig, NodeType};
use crate::status::Error;

/// Longest config text mgmtd accepts.
pub const MAX_TOML_LEN: usize = 64 * 1024;

/// The hot config of one node type.
pub trait HotConfig: DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The node type this config is for.
    const NODE_TYPE: NodeType;
    /// The log filter (`RUST_LOG` syntax) to install; `None` restores the one the process started with.
    fn log(&self) -> Option<&str>;
    /// Checks what serde cannot (ranges, relations between items that are both set).
    fn validate(&self) -> Result<(), Error>;
}

/// Hot items of a storage server. Unset: the value from its config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageHot {
    /// Log filter, `RUST_LOG` syntax (e.g. `info,t3fs_storage=debug`). Unset: the startup filter.
    pub log: Option<String>,
    /// Interval between heartbeats, ms (> 0); takes effect from the next heartbeat.
    pub heartbeat_interval_ms: Option<u64>,
    /// Fence after this long without a heartbeat answer, ms; must stay above the heartbeat interval
    /// (and below mgmtd's `heartbeat_timeout_ms`). Takes effect at once.
    pub fence_after_ms: Option<u64>,
    /// The background scrub's read rate, MiB/s (0: paused); takes effect from the next chunk.
    pub scrub_mib_per_sec: Option<u64>,
}

/// Hot items of a meta server. Unset: the value from its config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaHot {
    /// Log filter, `RUST_LOG` syntax. Unset: the startup filter.
    pub log: Option<String>,
    /// Interval between heartbeats, ms (> 0); takes effect from the next heartbeat.
    pub heartbeat_interval_ms: Option<u64>,
    /// How long remove/rename results are kept for retries, ms; applies to new checks at once.
    pub idempotency_ttl_ms: Option<u64>,
    /// How often expired idempotency records are deleted, ms (> 0); takes effect after the current wait.
    pub idempotency_clean_interval_ms: Option<u64>,
}

fn positive(what: &str, v: Option<u64>) -> Result<(), Error> {
    match v {
        Some(0) => Err(Error::invalid(format!("{what} must be > 0"))),
        _ => Ok(()),
    }
}

impl HotConfig for StorageHot {
    const NODE_TYPE: NodeType = NodeType::Storage;

    fn log(&self) -> Option<&str> {
        self.log.as_deref()
    }

    fn validate(&self) -> Result<(), Error> {
        positive("heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        positive("fence_after_ms", self.fence_after_ms)?;
        if let (Some(hb), Some(fence)) = (self.heartbeat_interval_ms, self.fence_after_ms)
            && fence <= hb
        {
            return Err(Error::invalid("fence_after_ms must be > heartbeat_interval_ms"));
        }
        Ok(())
    }
}

impl HotConfig for MetaHot {
    const NODE_TYPE: NodeType = NodeType::Meta;

    fn log(&self) -> Option<&str> {
        self.log.as_deref()
    }

    fn validate(&self) -> Result<(), Error> {
        positive("heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        positive("idempotency_clean_interval_ms", self.idempotency_clean_interval_ms)
    }
}

/// Parses and checks a hot config text (deny unknown items, valid log filter, [`HotConfig::validate`]).
pub fn parse<H: HotConfig>(text: &str) -> Result<H, Error> {
    if text.len() > MAX_TOML_LEN {
        return Err(Error::invalid(format!("config is longer than {MAX_TOML_LEN} bytes")));
    }
    let what = H::NODE_TYPE.as_str_name().trim_start_matches("NODE_TYPE_");
    // TOML errors span several lines (with carets); one line reads better in replies and logs.
    let one_line = |m: &str| m.split_whitespace().collect::<Vec<_>>().join(" ");
    let hot: H =
        crate::config::parse(text).map_err(|e| Error::invalid(format!("{what} config: {}", one_line(&e.message))))?;
    if let Some(filter) = hot.log() {
        crate::telemetry::check_filter(filter).map_err(|e| Error::invalid(format!("{what} config: {}", e.message)))?;
    }
    hot.validate().map_err(|e| Error::invalid(format!("{what} config: {}", e.message)))?;
    Ok(hot)
}

/// mgmtd's check of a `SetConfig`: `text` must be a valid hot config of `node_type`. Only node
/// types that heartbeat and apply configs take one (STORAGE, META).
pub fn validate_for(node_type: NodeType, text: &str) -> Result<(), Error> {
    match node_type {
        NodeType::Storage => parse::<StorageHot>(text).map(drop),
        NodeType::Meta => parse::<MetaHot>(text).map(drop),
        other => Err(Error::invalid(format!(
            "node type {} takes no pushed config (only STORAGE and META)",
            other.as_str_name().trim_start_matches("NODE_TYPE_")
        ))),
    }
}

/// A daemon's own check of a parsed config against its file values (e.g. the effective fence
/// must stay above the effective heartbeat interval).
pub type Check<H> = Box<dyn Fn(&H) -> Result<(), Error> + Send + Sync>;
/// A daemon's hook that installs the items it does not read through [`HotState::subscribe`].
pub type Apply<H> = Box<dyn Fn(&H) + Send + Sync>;

/// The hot config a node has applied, and its version (0: none yet).
pub struct HotState<H: HotConfig> {
    tx: watch::Sender<H>,
    version: AtomicU64,
    /// The last version refused (so a config re-sent with every heartbeat is logged once).
    refused: Mutex<Option<u64>>,
    check: Check<H>,
    apply: Apply<H>,
}

impl<H: HotConfig> HotState<H> {
    /// Nothing applied yet (every item from the file). `check` and `apply` as in [`Check`], [`Apply`].
    pub fn new(check: Check<H>, apply: Apply<H>) -> Self {
        Self {
            tx: watch::Sender::new(H::default()),
            version: AtomicU64::new(0),
            refused: Mutex::new(None),
            check,
            apply,
        }
    }

    /// With no daemon-specific check or hook.
    pub fn plain() -> Self {
        Self::new(Box::new(|_| Ok(())), Box::new(|_| {}))
    }

    /// The version applied (what heartbeats report).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The config applied.
    pub fn current(&self) -> H {
        self.tx.borrow().clone()
    }

    /// Notified on every config applied.
    pub fn subscribe(&self) -> watch::Receiver<H> {
        self.tx.subscribe()
    }

    /// A config from a heartbeat reply: applies it if its version differs from the applied one and
    /// it passes every check (then returns true); otherwise logs (once per version) and keeps the
    /// current config and version.
    pub fn offer(&self, config: Option<&NodeConfig>) -> bool {
        let Some(cfg) = config else {
            return false;
        };
        let old = self.version();
        if cfg.version == old || cfg.version == 0 {
            return false;
        }
        let checked = if cfg.node_type == H::NODE_TYPE as i32 {
            parse::<H>(&cfg.toml).and_then(|h| (self.check)(&h).map(|()| h))
        } else {
            Err(Error::invalid(format!("config is for node type {}, not {:?}", cfg.node_type, H::NODE_TYPE)))
        };
        let hot = match checked {
            Ok(hot) => hot,
            Err(e) => {
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if *refused != Some(cfg.version) {
                    tracing::error!(version = cfg.version, kept = old, error = %e, "pushed config refused; not applied");
                    *refused = Some(cfg.version);
                }
                return false;
            }
        };
        if let Err(e) = crate::telemetry::set_filter(hot.log()) {
            // Cannot happen after `parse` checked the filter; keep going with the other items.
            tracing::warn!(error = %e, "pushed log filter not applied");
        }
        (self.apply)(&hot);
        self.tx.send_replace(hot.clone());
        self.version.store(cfg.version, Ordering::Release);
        tracing::info!(version = cfg.version, previous = old, config = ?hot, "pushed config applied");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn cfg(node_type: NodeType, version: u64, toml: &str) -> NodeConfig {
        NodeConfig { node_type: node_type as i32, version, toml: toml.into() }
    }

    #[test]
    fn parses_and_refuses() {
        let s: StorageHot = parse("log = \"debug\"\nfence_after_ms = 4000\n").unwrap();
        assert_eq!(s, StorageHot { log: Some("debug".into()), fence_after_ms: Some(4000), ..Default::default() });
        assert_eq!(parse::<StorageHot>("").unwrap(), StorageHot::default());
        assert_eq!(parse::<MetaHot>("idempotency_ttl_ms = 5").unwrap().idempotency_ttl_ms, Some(5));
        for bad in [
            "bogus = 1",
            "log = 3",
            "log = \"info,x=loud\"",
            "log = \"\"",
            "heartbeat_interval_ms = 0",
            "heartbeat_interval_ms = 100\nfence_after_ms = 100",
            "heartbeat_interval_ms = -1",
            "not toml",
            "idempotency_ttl_ms = 5",
        ] {
            let e = parse::<StorageHot>(bad).unwrap_err();
            assert_eq!(e.code, crate::StatusCode::InvalidArgument, "{bad:?}");
            assert!(e.message.starts_with("STORAGE config: ") && !e.message.contains('\n'), "{e}");
        }
        assert!(parse::<MetaHot>("idempotency_clean_interval_ms = 0").is_err());
        assert!(parse::<MetaHot>("fence_after_ms = 10").is_err());
        assert!(parse::<StorageHot>(&format!("log = \"{}\"", "a".repeat(MAX_TOML_LEN))).is_err());
    }

    #[test]
    fn validate_for_takes_storage_and_meta_only() {
        validate_for(NodeType::Storage, "fence_after_ms = 3000").unwrap();
        validate_for(NodeType::Meta, "idempotency_ttl_ms = 3000").unwrap();
        assert!(validate_for(NodeType::Meta, "fence_after_ms = 3000").is_err());
        for t in [NodeType::Client, NodeType::Fuse, NodeType::Mgmtd, NodeType::Unspecified] {
            assert!(validate_for(t, "").is_err(), "{t:?}");
        }
    }

    #[test]
    fn offer_applies_new_versions_and_keeps_the_old_on_refusal() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let seen = applied.clone();
        let state = HotState::<StorageHot>::new(
            // The daemon's own rule: with its file's heartbeat of 1000 ms, the fence must exceed it.
            Box::new(|h: &StorageHot| match h.fence_after_ms {
                Some(f) if f <= 1000 => Err(Error::invalid("fence_after_ms must be > heartbeat interval 1000")),
                _ => Ok(()),
            }),
            Box::new(move |h: &StorageHot| seen.lock().unwrap().push(h.fence_after_ms)),
        );
        let mut rx = state.subscribe();
        assert_eq!(state.version(), 0);
        assert!(!state.offer(None));
        assert!(!state.offer(Some(&cfg(NodeType::Storage, 0, ""))));
        assert!(state.offer(Some(&cfg(NodeType::Storage, 1, "fence_after_ms = 3000"))));
        assert_eq!(state.version(), 1);
        assert_eq!(state.current().fence_after_ms, Some(3000));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(!state.offer(Some(&cfg(NodeType::Storage, 1, "fence_after_ms = 5000"))), "same version");
        // Refused: unknown item, the daemon's own check, another node type. Nothing changes.
        for bad in [
            cfg(NodeType::Storage, 2, "bogus = 1"),
            cfg(NodeType::Storage, 2, "fence_after_ms = 500"),
            cfg(NodeType::Meta, 2, ""),
        ] {
            assert!(!state.offer(Some(&bad)));
            assert_eq!(state.version(), 1);
            assert_eq!(state.current().fence_after_ms, Some(3000));
        }
        assert!(!rx.has_changed().unwrap());
        // An empty config reverts to the file values; any other version is taken (mgmtd's is the truth).
        assert!(state.offer(Some(&cfg(NodeType::Storage, 3, ""))));
        assert_eq!(state.current(), StorageHot::default());
        assert_eq!(*applied.lock().unwrap(), vec![Some(3000), None]);
    }
}
