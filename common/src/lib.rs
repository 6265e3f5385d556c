//! t3fs-common: everything every t3fs process shares.
//!
//! - [`ids`]: typed ids (nodes, targets, chains, inodes, chunks) and the 16-byte chunk id encoding.
//! - [`status`]: the stable status codes carried on the wire, their errno mapping, and [`Error`].
//! - [`proto`]: the gRPC schema (mgmtd, meta, storage) and the bulk-plane frame headers.
//! - [`layout`]: the frozen chunk -> chain mapping (never change its output).
//! - [`routing`]: routing-info lookups and a cache kept fresh by polling mgmtd.
//! - [`mgmtd_conn`]: a connection that follows the primary among several mgmtd.
//! - [`bulk`]: the framed-TCP bulk data plane (frame codec and a pooled client).
//! - [`config`], [`telemetry`], [`names`]: config loading, tracing setup (reloadable filter), name validation.
//! - [`hot_config`]: configs mgmtd pushes with heartbeat replies, applied without a restart.
pub mod auth;
pub mod bulk;
pub mod chunk_list;
pub mod config;
pub mod crc;
pub mod hot_config;
pub mod ids;
pub mod layout;
pub mod metrics;
pub mod mgmtd_conn;
pub mod names;
pub mod owner;
pub mod periodic;
pub mod repair;
pub mod routing;
pub mod space;
pub mod status;
pub mod telemetry;
pub mod users;

/// Generated protobuf/gRPC types (package `t3fs`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("t3fs");
}

pub use ids::{ChainId, ChainTableId, ChunkId, InodeId, NodeId, TargetId};
pub use status::{Error, Result, StatusCode};

/// A fresh request id for tracing and idempotency records.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Nanoseconds since the Unix epoch (wall clock), for inode timestamps.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
