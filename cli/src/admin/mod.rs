//! `t3fs admin`: operator commands against a running cluster.
//!
//! - Finding the cluster ([`conn`]): `--data-dir DIR` of a `t3fs local up` cluster, `--config FILE`
//!   (any t3fs TOML with `mgmtd_addr` and `token`) or the `T3FS_CONFIG` variable.
//! - Cluster and placement ([`cluster`]): nodes, targets, chains, chain tables; node and layout
//!   operations ([`cluster_ops`]): disable/enable/unregister a node, preferred order, head rotation;
//!   node tags and offlining one target ([`targets`]).
//! - Users and sessions ([`users`]): user-add/remove/set-token/list, list-sessions.
//! - Resync progress ([`syncs`]): list-syncs.
//! - Configs ([`config`]): the hot configs mgmtd pushes to storage and meta nodes.
//! - Data ([`fsck`]): one chunk's metadata on a target; fsck of a file or tree against every replica;
//!   records of deleted files swept up ([`orphans`]: gc-orphans).
//! - Namespace ([`namespace`], [`transfer`], [`layout`]): ls, stat, mkdir, rm, mv, ln, chmod, chown,
//!   du, put, get, set-layout, as root unless `--uid/--gid` say otherwise.
//!
//! Output: human tables by default, one JSON document on stdout with `--json`. Exit codes: 0 success,
//! 1 the operation failed (one line `t3fs: <error>` on stderr, printed by `main`), 2 usage errors
//! (clap). A failed check (fsck finding bad chunks) is an error too, after its report is printed.
use std::path::PathBuf;

use clap::{Args, Subcommand};

pub mod cluster;
pub mod cluster_ops;
pub mod config;
pub mod conn;
pub mod fsck;
pub mod layout;
pub mod namespace;
pub mod orphans;
pub mod output;
pub mod repair;
pub mod syncs;
pub mod targets;
pub mod transfer;
pub mod users;

pub use conn::Ctx;

/// `t3fs admin [OPTIONS] <COMMAND>`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

/// Options every admin command takes (before or after the command name).
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Data directory of a cluster started by `t3fs local up` (reads DIR/cluster.toml).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A t3fs TOML file with `mgmtd_addr` and `token` (daemon, FUSE or client config). Default: $T3FS_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one machine-readable JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Act as this uid in namespace commands (default 0, root).
    #[arg(long, global = true, value_name = "UID")]
    pub uid: Option<u32>,
    /// Act as this gid in namespace commands (default: the uid's value, or 0).
    #[arg(long, global = true, value_name = "GID")]
    pub gid: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Nodes known to mgmtd (type, status, addresses, heartbeat age).
    ListNodes,
    /// Storage targets (node, chain, public and local state, used bytes).
    ListTargets,
    /// Chains with their targets, head first.
    ListChains,
    /// Chain tables (id, version, chains, description).
    ListChainTables,
    /// Create a chain table over every free storage target; or, with --new-version --chains, the next
    /// version of an existing table listing exactly those chains.
    CreateChainTable {
        /// Id of the table (> 0).
        #[arg(long)]
        table_id: u32,
        /// Replicas per chain (targets on distinct nodes); required for a new table.
        #[arg(long, required_unless_present = "new_version")]
        replicas: Option<u32>,
        /// Free-form description (for a new version: empty keeps the previous one).
        #[arg(long, default_value = "")]
        desc: String,
        /// Create version latest+1 of an existing table instead of a new table.
        #[arg(long, requires = "chains", conflicts_with = "replicas")]
        new_version: bool,
        /// Comma-separated chain ids of the new version, in order (with --new-version).
        #[arg(long, value_name = "C1,C2,..", requires = "new_version")]
        chains: Option<String>,
        /// Place chains explicitly instead of automatically: one --chain per chain, its free
        /// targets head first (each on a different node, --replicas of them). Repeat for every chain.
        #[arg(long = "chain", value_name = "T1,T2,..", conflicts_with = "new_version")]
        explicit: Vec<String>,
    },
    /// Take a node out of service: its targets count as offline (chains move on without them) until
    /// enable-node. Its heartbeats are still accepted.
    DisableNode {
        /// Node id.
        node_id: u32,
    },
    /// Put a disabled node back in service (its targets resync, then serve).
    EnableNode {
        /// Node id.
        node_id: u32,
    },
    /// Forget a node that is failed or disabled and owns no target in any chain (or a stale mgmtd).
    UnregisterNode {
        /// Node id.
        node_id: u32,
    },
    /// Set a node's tags (KEY or KEY=VALUE): replaces them all (none given: clears them), or with
    /// --add adds/updates the given ones, or with --remove removes the given keys. list-nodes shows them.
    SetNodeTags {
        /// Node id.
        node_id: u32,
        /// Tags: KEY or KEY=VALUE (keys: [A-Za-z0-9._:/-]).
        #[arg(value_name = "TAG")]
        tags: Vec<String>,
        /// Add these tags (replacing the values of keys already set), keep the others.
        #[arg(long, conflicts_with = "remove")]
        add: bool,
        /// Remove these keys (values are ignored), keep the others.
        #[arg(long)]
        remove: bool,
    },
    /// Take one storage target offline (3FS offline-target): its chain moves on without it at once
    /// (it goes to the tail as OFFLINE) until --online, after which it resyncs and serves. Refused for
    /// a chain's only SERVING target.
    OfflineTarget {
        /// Storage target id.
        #[arg(long)]
        target: u64,
        /// Undo: put the target back in service.
        #[arg(long)]
        online: bool,
    },
    /// Set the order a chain's targets take while all of them serve (the first is the head).
    #[command(group = clap::ArgGroup::new("order").required(true).args(["targets", "clear"]))]
    SetPreferredOrder {
        /// Chain id.
        chain: u32,
        /// Every target of the chain, comma-separated, head first.
        #[arg(value_name = "T1,T2,..")]
        targets: Option<String>,
        /// Remove the chain's preferred order.
        #[arg(long)]
        clear: bool,
    },
    /// Move a chain's head behind its other SERVING targets (the next one leads). Bumps the chain version.
    RotateHead {
        /// Chain id.
        chain: u32,
    },
    /// Add a free target to a chain (it syncs, then serves) or remove one (refused if no SERVING target
    /// would remain). Bumps the chain version.
    #[command(group = clap::ArgGroup::new("edit").required(true).args(["add", "remove"]))]
    UpdateChain {
        /// Chain id.
        #[arg(long)]
        chain: u32,
        /// Target to add: in no chain, on a node the chain does not use yet.
        #[arg(long, value_name = "TARGET")]
        add: Option<u64>,
        /// Target to remove from the chain.
        #[arg(long, value_name = "TARGET")]
        remove: Option<u64>,
    },
    /// Escape hatch for a chain whose LASTSRV target never returns: move it to the tail as OFFLINE and
    /// make the next target LASTSRV. Writes only the old LASTSRV had may be lost.
    RotateLastsrv {
        /// Chain id.
        #[arg(long)]
        chain: u32,
    },
    /// Resync progress on every storage node: running syncs (chunks done/total, bytes, ETA) and those
    /// finished in the last 10 minutes.
    ListSyncs,
    /// Add a user (or with --update change its name, groups and admin flag). Prints its token once.
    UserAdd {
        /// The user's uid (meta acts as this uid for every request with its token).
        #[arg(long)]
        uid: u32,
        /// Unique name, [A-Za-z0-9._-].
        #[arg(long)]
        name: String,
        /// Primary group (default: the uid).
        #[arg(long)]
        gid: Option<u32>,
        /// Supplementary groups, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "GID,..")]
        groups: Vec<u32>,
        /// May run admin operations (chain tables, users, nodes).
        #[arg(long)]
        admin: bool,
        /// Use this token (16-256 printable characters) instead of a generated one.
        #[arg(long, conflicts_with = "update")]
        token: Option<String>,
        /// Change an existing user; its token stays.
        #[arg(long)]
        update: bool,
    },
    /// Remove a user: its token stops working within one routing poll interval.
    UserRemove { uid: u32 },
    /// Replace a user's token (generated unless --token). Prints the new token once.
    UserSetToken {
        uid: u32,
        #[arg(long)]
        token: Option<String>,
    },
    /// Users (uid, name, groups, admin flag; never tokens).
    UserList,
    /// Live client sessions (native clients and FUSE mounts) at mgmtd.
    ListSessions,
    /// Store a node type's hot config (a TOML file of its run-time items, `-` for stdin) in mgmtd;
    /// the nodes apply it with their next heartbeat, without a restart. Bumps the config version.
    SetConfig {
        /// Node type the config is for.
        #[arg(long, value_enum)]
        node_type: config::ConfigNodeType,
        /// Refuse unless the stored version is this one (guards against concurrent edits).
        #[arg(long, value_name = "N")]
        expected_version: Option<u64>,
        /// The TOML file (`-`: standard input).
        file: PathBuf,
    },
    /// Print a node type's hot config as stored in mgmtd, with each node's applied version.
    GetConfig {
        /// Node type.
        #[arg(long, value_enum)]
        node_type: config::ConfigNodeType,
    },
    /// Metadata of one chunk on one storage target.
    QueryChunk {
        /// Storage target id.
        #[arg(long)]
        target: u64,
        /// Inode id of the file.
        #[arg(long)]
        inode: u64,
        /// Chunk index within the file.
        #[arg(long)]
        index: u32,
    },
    /// Metadata of every live chunk on one storage target (optionally of one file only).
    DumpChunkmeta {
        /// Storage target id.
        #[arg(long)]
        target: u64,
        /// Only this file's chunks.
        #[arg(long)]
        inode: Option<u64>,
    },
    /// Check every chunk of a file (or every file under a directory) on every replica of its chain:
    /// metadata must agree and every replica's data must match its CRC32C. Exits 1 if any chunk is bad.
    Fsck {
        /// Absolute path inside t3fs.
        path: String,
        /// Compare replica metadata only; do not read chunk data.
        #[arg(long)]
        meta_only: bool,
        /// Rewrite replicas whose data fails its CRC from a replica whose data is good.
        #[arg(long)]
        repair: bool,
    },
    /// Find chunk records (live chunks and tombstones) of files that no longer exist, on every
    /// SERVING replica, and drop them: REMOVE where live, then PURGE. GC does this for every file it
    /// deletes; this sweeps up what it could not (and tombstones from before it purged).
    GcOrphans {
        /// Report what would be dropped; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a directory (or show one file).
    Ls {
        /// Long listing: type, mode, owner, size, inode.
        #[arg(short = 'l')]
        long: bool,
        path: String,
    },
    /// Every attribute of one inode.
    Stat { path: String },
    /// Create a directory.
    Mkdir {
        /// Create missing parents; an existing directory is fine.
        #[arg(short = 'p')]
        parents: bool,
        /// Permission bits, octal.
        #[arg(long, default_value = "755")]
        mode: String,
        path: String,
    },
    /// Remove a file, symlink or empty directory.
    Rm {
        /// Remove a directory and everything under it.
        #[arg(short = 'r')]
        recursive: bool,
        path: String,
    },
    /// Rename SRC to DST (an existing DST file is replaced).
    Mv { src: String, dst: String },
    /// Create a hard link LINK to the file TARGET, or with -s a symlink LINK pointing at TARGET.
    Ln {
        /// Symbolic link (TARGET is stored as given).
        #[arg(short = 's')]
        symbolic: bool,
        target: String,
        link: String,
    },
    /// Copy a local file into t3fs (creating or overwriting PATH), 4 MiB at a time.
    Put { local: PathBuf, path: String },
    /// Copy a t3fs file to a local file, 4 MiB at a time.
    Get { path: String, local: PathBuf },
    /// Set permission bits (octal, e.g. 644 or 0755).
    Chmod { mode: String, path: String },
    /// Set owner (UID) or owner and group (UID:GID).
    Chown { owner: String, path: String },
    /// Set a directory's default layout: files created in it (and subdirectories made later) use it.
    SetLayout {
        /// A directory.
        path: String,
        /// Chain table new files are placed on (its newest version).
        #[arg(long, value_name = "N")]
        chain_table: u32,
        /// Chunk size: bytes, or with K/M (power of two, 4K ..= 64M).
        #[arg(long, value_name = "SIZE")]
        chunk_size: String,
        /// Chains each new file is striped over (at most the table's chain count).
        #[arg(long, value_name = "K")]
        stripe: u32,
    },
    /// Total length of the files under PATH (recursive; hard-linked files once), with file and directory counts.
    Du { path: String },
}

/// Runs one admin command.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.global)?;
    match args.cmd {
        AdminCmd::ListNodes => cluster::list_nodes(&ctx).await,
        AdminCmd::ListTargets => cluster::list_targets(&ctx).await,
        AdminCmd::ListChains => cluster::list_chains(&ctx).await,
        AdminCmd::ListChainTables => cluster::list_chain_tables(&ctx).await,
        AdminCmd::CreateChainTable { table_id, replicas, desc, new_version, chains, explicit } => match chains {
            Some(chains) if new_version => cluster_ops::create_table_version(&ctx, table_id, &chains, &desc).await,
            _ => {
                let explicit = explicit
                    .iter()
                    .map(|c| cluster_ops::parse_id_list::<u64>(c, "target"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                cluster::create_chain_table(&ctx, table_id, replicas.unwrap_or(0), &desc, &explicit).await
            }
        },
        AdminCmd::DisableNode { node_id } => {
            cluster_ops::switch_node(&ctx, node_id, cluster_ops::NodeSwitch::Disable).await
        }
        AdminCmd::EnableNode { node_id } => {
            cluster_ops::switch_node(&ctx, node_id, cluster_ops::NodeSwitch::Enable).await
        }
        AdminCmd::UnregisterNode { node_id } => cluster_ops::unregister_node(&ctx, node_id).await,
        AdminCmd::SetPreferredOrder { chain, targets, clear: _ } => {
            cluster_ops::set_preferred_order(&ctx, chain, targets.as_deref()).await
        }
        AdminCmd::SetNodeTags { node_id, tags, add, remove } => {
            let mode = match (add, remove) {
                (true, _) => t3fs_common::proto::SetTagsMode::Upsert,
                (_, true) => t3fs_common::proto::SetTagsMode::Remove,
                _ => t3fs_common::proto::SetTagsMode::Replace,
            };
            targets::set_node_tags(&ctx, node_id, &tags, mode).await
        }
        AdminCmd::OfflineTarget { target, online } => targets::offline_target(&ctx, target, online).await,
        AdminCmd::RotateHead { chain } => cluster_ops::rotate_head(&ctx, chain).await,
        AdminCmd::UpdateChain { chain, add, remove } => {
            cluster::update_chain(&ctx, chain, add.unwrap_or(0), remove.unwrap_or(0)).await
        }
        AdminCmd::RotateLastsrv { chain } => cluster::rotate_lastsrv(&ctx, chain).await,
        AdminCmd::ListSyncs => syncs::list_syncs(&ctx).await,
        AdminCmd::UserAdd { uid, name, gid, groups, admin, token, update } => {
            let u = users::NewUser {
                uid,
                name,
                gid: gid.unwrap_or(uid),
                gids: groups,
                admin,
                token: token.unwrap_or_default(),
                update,
            };
            users::user_add(&ctx, u).await
        }
        AdminCmd::UserRemove { uid } => users::user_remove(&ctx, uid).await,
        AdminCmd::UserSetToken { uid, token } => users::user_set_token(&ctx, uid, token.unwrap_or_default()).await,
        AdminCmd::UserList => users::user_list(&ctx).await,
        AdminCmd::ListSessions => users::list_sessions(&ctx).await,
        AdminCmd::SetConfig { node_type, expected_version, file } => {
            config::set_config(&ctx, node_type, &file, expected_version).await
        }
        AdminCmd::GetConfig { node_type } => config::get_config(&ctx, node_type).await,
        AdminCmd::QueryChunk { target, inode, index } => fsck::query_chunk(&ctx, target, inode, index).await,
        AdminCmd::DumpChunkmeta { target, inode } => fsck::dump_chunkmeta(&ctx, target, inode).await,
        AdminCmd::Fsck { path, meta_only, repair } => fsck::fsck(&ctx, &path, !meta_only, repair).await,
        AdminCmd::GcOrphans { dry_run } => orphans::gc_orphans(&ctx, dry_run).await,
        AdminCmd::Ls { long, path } => namespace::ls(&ctx, &path, long).await,
        AdminCmd::Stat { path } => namespace::stat(&ctx, &path).await,
        AdminCmd::Mkdir { parents, mode, path } => namespace::mkdir(&ctx, &path, parents, &mode).await,
        AdminCmd::Rm { recursive, path } => namespace::rm(&ctx, &path, recursive).await,
        AdminCmd::Mv { src, dst } => namespace::mv(&ctx, &src, &dst).await,
        AdminCmd::Ln { symbolic, target, link } => namespace::ln(&ctx, &target, &link, symbolic).await,
        AdminCmd::Put { local, path } => transfer::put(&ctx, &local, &path).await,
        AdminCmd::Get { path, local } => transfer::get(&ctx, &path, &local).await,
        AdminCmd::Chmod { mode, path } => namespace::chmod(&ctx, &mode, &path).await,
        AdminCmd::Chown { owner, path } => namespace::chown(&ctx, &owner, &path).await,
        AdminCmd::Du { path } => namespace::du(&ctx, &path).await,
        AdminCmd::SetLayout { path, chain_table, chunk_size, stripe } => {
            layout::set_layout(&ctx, &path, chain_table, &chunk_size, stripe).await
        }
    }
}
