//! `t3fs local`: a complete t3fs cluster on one machine from one data directory.
//!
//! Layout of the data directory (created on first use, reused afterwards so files survive):
//! ```text
//! DIR/cluster.toml          mgmtd address + cluster token (written once; the rest derives from it)
//! DIR/conf/<daemon>.toml    generated daemon configs (mgmtd, meta, storage-N, fuse)
//! DIR/logs/<daemon>.log     each child's stdout/stderr
//! DIR/run/<daemon>.pid      each child's pid, so a user can kill one and watch the cluster react
//! DIR/run/supervisor.pid    the `t3fs local up` supervisor (what `t3fs local down` signals)
//! DIR/run/ready             exists while the cluster is up (what `up --detach` waits for)
//! DIR/mgmtd/kv, DIR/meta/kv embedded metadata stores
//! DIR/storage-N/target-M/   storage targets (chunk metadata)
//! DIR/storage-N/disk-M/     the chunk engine of disk slot M (data of target-M)
//! ```
//! One mgmtd, one meta and `storage_servers` storage servers with `targets_per_server` targets each;
//! chain table 1 has `replicas`-replica chains placed by mgmtd ([`plan::Shape`]: 3 servers × 2
//! targets, 3 replicas, 1 MiB chunks by default; fixed when the directory is created).
//!
//! Two ways to run it: [`process::up`] (children of the `t3fs` binary, what users run) and
//! [`inproc::LocalCluster`] (every daemon's `start` on the caller's runtime, what tests run).
//! Both use the same generated configs ([`plan`]).
pub mod inproc;
pub mod plan;
pub mod process;
pub mod status;

/// The chain table files are placed on.
pub const CHAIN_TABLE_ID: u32 = 1;
