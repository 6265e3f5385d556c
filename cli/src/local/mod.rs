//! `t3fs local`: a complete t3fs cluster on one machine from one data directory.
//!
//! Layout of the data directory (created on first use, reused afterwards so files survive):
//! ```text
//! DIR/cluster.toml          mgmtd address + cluster token (written once; the rest derives from it)
//! DIR/conf/<daemon>.toml    generated daemon configs (mgmtd, meta, storage-N, fuse)
//! DIR/logs/<daemon>.log     each child's stdout/stderr
//! DIR/run/<daemon>.pid      each child's pid, so a user can kill one and watch the cluster react
//! DIR/mgmtd/kv, DIR/meta/kv embedded metadata stores
//! DIR/storage-N/target-M/   storage targets
//! ```
//! One mgmtd, one meta and [`STORAGE_NODES`] storage servers with [`TARGETS_PER_NODE`] targets
//! each; chain table 1 has 3-replica chains (each chain spans the three storage nodes).
//!
//! Two ways to run it: [`process::up`] (children of the `t3fs` binary, what users run) and
//! [`inproc::LocalCluster`] (every daemon's `start` on the caller's runtime, what tests run).
//! Both use the same generated configs ([`plan`]).
pub mod inproc;
pub mod plan;
pub mod process;
pub mod status;

/// Storage servers in a local cluster (one chain replica on each).
pub const STORAGE_NODES: u32 = 3;
/// Targets on each storage server (= chains in the table).
pub const TARGETS_PER_NODE: u32 = 2;
/// Replicas per chain.
pub const REPLICAS: u32 = 3;
/// The chain table files are placed on.
pub const CHAIN_TABLE_ID: u32 = 1;
