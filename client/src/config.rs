//! Client configuration and caller identity.
//!
//! [`ClientConfig`] is what an application (or the FUSE daemon) needs to reach a cluster: the mgmtd
//! address and the cluster token. Everything else is found through routing info. [`UserInfo`] is the
//! identity carried in every request header; meta uses it for ownership (and, later, permission checks).
use serde::{Deserialize, Serialize};

/// How a client reaches and talks to a t3fs cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// mgmtd gRPC address (`host:port`), or a comma-separated list of every mgmtd (requests follow the
    /// primary); the only address a client must know.
    pub mgmtd_addr: String,
    /// Token put in every request header: the cluster token (the client may then act for any
    /// uid/gid, like a FUSE mount), or a user token from `t3fs admin user-add` (every request acts
    /// as that user). Empty when the cluster runs without authentication.
    pub token: String,
    /// How often the routing poller asks mgmtd for a newer routing version, in milliseconds. Cheap when
    /// nothing changed; 500 ms lets a client notice chain changes within a second.
    pub routing_refresh_ms: u64,
    /// How long one operation keeps retrying retryable errors (node failover, chain changes) before it
    /// gives up, in milliseconds. 30 s covers a storage target being declared offline by mgmtd.
    pub retry_timeout_ms: u64,
    /// How often the client extends its session at mgmtd, in milliseconds (mgmtd drops a session
    /// `client_session_timeout_ms`, default 60 s, after the last extension). 0: no session.
    pub session_extend_ms: u64,
    /// Use the RDMA bulk transport when the client is built with feature `rdma` and the host has an
    /// RDMA device (else TCP, with a log line).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bulk_rdma: bool,
    /// Send creates, mkdirs and removes to their directory's owner meta node (rendezvous hashing
    /// over the live meta nodes), so one node batches each directory's operations from every
    /// client. Off: every request goes to the client's current meta node (spreads one hot
    /// directory's load over the meta nodes, at the cost of conflicts between them).
    pub dir_owner_routing: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            mgmtd_addr: "127.0.0.1:8000".into(),
            token: String::new(),
            routing_refresh_ms: 500,
            retry_timeout_ms: 30_000,
            session_extend_ms: 10_000,
            bulk_rdma: false,
            dir_owner_routing: true,
        }
    }
}

/// The caller's identity, sent in every request header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub gids: Vec<u32>,
}

impl UserInfo {
    pub fn new(uid: u32, gid: u32) -> Self {
        Self { uid, gid, gids: Vec::new() }
    }

    /// The superuser (uid 0, gid 0).
    pub fn root() -> Self {
        Self::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let c: ClientConfig = t3fs_common::config::parse("mgmtd_addr = \"10.0.0.1:9000\"\ntoken = \"t\"").unwrap();
        assert_eq!(c.mgmtd_addr, "10.0.0.1:9000");
        assert_eq!(c.token, "t");
        assert_eq!(c.routing_refresh_ms, 500);
        assert_eq!(c.retry_timeout_ms, 30_000);
        assert!(t3fs_common::config::parse::<ClientConfig>("mgmtd = \"x\"").is_err());
        let back: ClientConfig = t3fs_common::config::parse(&t3fs_common::config::to_toml(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
