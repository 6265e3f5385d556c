//! `t3fs`: the one binary. Daemons (`mgmtd`, `meta`, `storage`, `mount`) load their typed config
//! and call their crate's `run`; `admin` operates a running cluster; `local` runs a whole cluster on
//! one machine.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "t3fs", version, about = "t3fs: a distributed parallel file system for AI clusters")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the cluster manager.
    Mgmtd {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a metadata server.
    Meta {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a storage server.
    Storage {
        #[arg(long)]
        config: PathBuf,
    },
    /// Mount t3fs with FUSE at MNT (stays in the foreground; unmounts on SIGINT/SIGTERM).
    Mount {
        #[arg(long)]
        config: PathBuf,
        mountpoint: PathBuf,
    },
    /// Unmount a t3fs FUSE mount, also a dead one ("Transport endpoint is not connected"): stops a
    /// live mount daemon cleanly, else detaches the mount (umount2 MNT_DETACH as root,
    /// `fusermount3 -u -z` otherwise). Refuses mounts that are not t3fs.
    Umount { mountpoint: PathBuf },
    /// Operate a running cluster: nodes, chains, namespace, put/get, fsck.
    Admin(t3fs_cli::admin::AdminArgs),
    /// Data benchmark through the native client: write then read N files (MiB/s, IOPS, files/s).
    Bench(t3fs_cli::bench::BenchArgs),
    /// A whole cluster on this machine.
    Local {
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Start mgmtd, one meta and the storage servers (and a FUSE mount) as child processes; stay
    /// in the foreground until Ctrl-C/SIGTERM/`t3fs local down` (or return once up with
    /// --detach). Re-running on the same directory keeps every file.
    Up {
        /// Where configs, logs, pids, metadata and chunks live.
        #[arg(long, default_value = "t3fs-local")]
        data_dir: PathBuf,
        /// Mount the file system here.
        #[arg(long)]
        mount: Option<PathBuf>,
        /// Run in the background; return once the cluster is up.
        #[arg(long)]
        detach: bool,
        /// Storage servers (new data dirs only; default 3).
        #[arg(long)]
        storage_servers: Option<u32>,
        /// Targets per storage server (new data dirs only; default 2).
        #[arg(long)]
        targets_per_server: Option<u32>,
        /// Replicas per chain, at most the number of storage servers (new data dirs only; default 3).
        #[arg(long)]
        replicas: Option<u32>,
        /// File chunk size in bytes, a power of two (new data dirs only; default 1048576).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// mgmtd's loopback port (new data dirs only; default: a free port).
        #[arg(long)]
        mgmtd_port: Option<u16>,
    },
    /// Stop the local cluster running on a data directory and wait until it is down.
    Down {
        #[arg(long, default_value = "t3fs-local")]
        data_dir: PathBuf,
    },
    /// Print the nodes, targets and chains of a local cluster.
    Status {
        #[arg(long, default_value = "t3fs-local")]
        data_dir: PathBuf,
    },
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let t = token.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        t.cancel();
    });
    Ok(token)
}

fn load<T: serde::de::DeserializeOwned>(p: &Path) -> anyhow::Result<T> {
    Ok(t3fs_common::config::load(p)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Mgmtd { config } => t3fs_mgmtd::run(load(&config)?, shutdown_on_signal()?).await,
        Cmd::Meta { config } => t3fs_meta::run(load(&config)?, shutdown_on_signal()?).await,
        Cmd::Storage { config } => t3fs_storage::run(load(&config)?, shutdown_on_signal()?).await,
        Cmd::Mount { config, mountpoint } => t3fs_fuse::run(load(&config)?, mountpoint, shutdown_on_signal()?).await,
        Cmd::Umount { mountpoint } => t3fs_cli::umount::umount(&mountpoint).await,
        Cmd::Admin(args) => t3fs_cli::admin::run(args).await,
        Cmd::Bench(args) => t3fs_cli::bench::run(args).await,
        Cmd::Local {
            cmd:
                LocalCmd::Up {
                    data_dir,
                    mount,
                    detach,
                    storage_servers,
                    targets_per_server,
                    replicas,
                    chunk_size,
                    mgmtd_port,
                },
        } => {
            let shape = t3fs_cli::local::plan::ShapeArgs {
                storage_servers,
                targets_per_server,
                replicas,
                chunk_size,
                mgmtd_port,
            };
            if detach {
                t3fs_cli::local::process::up_detached(&data_dir, mount, shape).await
            } else {
                t3fs_cli::local::process::up(&data_dir, mount, shape).await
            }
        }
        Cmd::Local { cmd: LocalCmd::Down { data_dir } } => t3fs_cli::local::process::down(&data_dir).await,
        Cmd::Local { cmd: LocalCmd::Status { data_dir } } => t3fs_cli::local::status::print(&data_dir).await,
    }
}

fn main() -> std::process::ExitCode {
    // Called as mount(8)'s helper (`mount.t3fs`, a link to this binary): its own argument syntax.
    let argv: Vec<String> = std::env::args().collect();
    if argv.first().is_some_and(|a| t3fs_cli::mount_helper::called_as_helper(a)) {
        let res = t3fs_cli::mount_helper::parse(&argv[1..]).and_then(|h| t3fs_cli::mount_helper::run(&h));
        return match res {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mount.t3fs: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let level = match cli.cmd {
        Cmd::Local { .. } | Cmd::Umount { .. } => "warn",
        // Admin output is for people and scripts: only the one-line error, no log noise.
        Cmd::Admin(_) | Cmd::Bench(_) => "off",
        _ => "info",
    };
    t3fs_common::telemetry::init(level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio") {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("t3fs: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("t3fs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
