//! t3fs-fuse: the FUSE daemon, as a library (`t3fs fuse` calls [`run`]).
//!
//! A thin adapter ([`fs`]) maps kernel requests onto the client library; file handles and local
//! length tracking live in [`handles`], write buffering under a mount-wide budget in [`wbuf`] and
//! its periodic flush in [`flusher`]; inode <-> FUSE attribute conversion in [`attr`]; rename and
//! links in [`links`]; cluster-wide fcntl/flock locks in [`locks`]; extended attributes in
//! [`xattr`]; fallocate in [`falloc`]; close-to-open for cached attributes in [`coherence`]; the
//! permission checks the daemon makes itself (open, access) in [`perm`]; the
//! caller's supplementary groups (for meta's permission checks) in [`creds`]; sequential read-ahead
//! under a mount-wide memory budget in [`prefetch`]; readdirplus and the kernel capabilities in
//! [`dirplus`]. The mount is pure Rust (fuser, no libfuse); FUSE threads only dispatch, the work runs
//! on the caller's tokio runtime.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fuser::{BackgroundSession, MountOption, SessionACL};
use t3fs_client::Client;
use tokio_util::sync::CancellationToken;

pub mod attr;
pub mod coherence;
pub mod config;
pub mod creds;
pub mod data;
pub mod dirattr;
mod dirplus;
pub mod falloc;
pub mod flusher;
pub mod fs;
pub mod handles;
pub mod links;
pub mod locks;
pub mod metrics;
pub mod perm;
pub mod prefetch;
mod seek;
pub mod wbuf;
pub mod xattr;

pub use config::MountConfig;
pub use fs::T3Fs;

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("mounting t3fs at {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Client(#[from] t3fs_common::Error),
}

/// The fuser session options for `cfg`, mounting as root (`as_root`) or as another user.
fn session_config(cfg: &MountConfig, as_root: bool) -> fuser::Config {
    let mut c = fuser::Config::default();
    // default_permissions: the kernel checks mode bits (with the caller's real supplementary groups)
    // on every access, cached lookups and open included, from the attributes meta gave it; meta
    // checks again on every namespace operation. Without it, a path walk through cached dentries
    // would skip directory search permission, and nothing would check opens for data access.
    c.mount_options = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("t3fs".into()),
        MountOption::DefaultPermissions,
    ];
    if cfg.allow_other {
        c.acl = SessionACL::All;
        // Only possible with allow_other: unmount if this process dies, so no
        // "Transport endpoint is not connected" mount is left behind. This goes through a
        // fusermount3 watcher process; root mounts with mount(2) and unmounts with umount(2) instead,
        // because where the watcher is gone (seen with fusermount3 3.14 in containers) fuser's
        // unmount only closes the watcher's socket, nothing unmounts, and `umount_and_join` hangs.
        if !as_root {
            c.mount_options.push(MountOption::AutoUnmount);
        }
    }
    let threads = cfg.threads.max(1);
    c.n_threads = Some(threads);
    c.clone_fd = threads > 1;
    c
}

fn mount_inner(
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> Result<(BackgroundSession, Arc<fs::Inner>), FuseError> {
    let fs = T3Fs::new(client, rt, cfg);
    let inner = fs.inner();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let session = fuser::spawn_mount(fs, mountpoint, &session_config(cfg, as_root))
        .map_err(|source| FuseError::Mount { path: mountpoint.to_path_buf(), source })?;
    inner.kernel.connect(session.notifier());
    Ok((session, inner))
}

/// Mounts t3fs at `mountpoint`, serving requests on background threads (operations run on `rt`).
/// Blocks briefly for the FUSE handshake, so call it off the async threads (e.g. `spawn_blocking`).
/// Dropping the session unmounts; prefer `umount_and_join`.
pub fn mount(
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> Result<BackgroundSession, FuseError> {
    mount_inner(client, rt, mountpoint, cfg).map(|(s, _)| s)
}

/// Connects to the cluster, mounts, serves until `shutdown` fires (or the mount goes away, e.g.
/// `fusermount3 -u`), then writes out buffered data and unmounts cleanly.
pub async fn run(cfg: MountConfig, mountpoint: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::connect(cfg.client_config())
        .await
        .with_context(|| format!("connecting to the t3fs cluster at {}", cfg.mgmtd_addr))?;
    let rt = tokio::runtime::Handle::current();
    let (session, inner) = {
        let (client, mp, cfg) = (client.clone(), mountpoint.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || mount_inner(client, rt, &mp, &cfg)).await.context("mount task")??
    };
    tracing::info!(mountpoint = %mountpoint.display(), fsname = %cfg.fsname, "t3fs mounted");
    let metrics_cancel = CancellationToken::new();
    if let Some(listen) = &cfg.metrics_listen {
        let registry = t3fs_common::metrics::new_registry();
        metrics::register(&mut registry.lock().unwrap_or_else(|p| p.into_inner()));
        match t3fs_common::metrics::serve(listen, registry, metrics_cancel.clone()).await {
            Ok((addr, _task)) => tracing::info!(%addr, "fuse metrics endpoint listening"),
            Err(e) => tracing::warn!(error = %e, "could not start the metrics endpoint; serving without it"),
        }
    }

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => if session.guard.is_finished() {
                tracing::warn!(mountpoint = %mountpoint.display(), "the mount went away; stopping");
                break;
            },
        }
    }

    metrics_cancel.cancel();
    inner.sync_all().await;
    inner.release_all_locks().await;
    let mp = mountpoint.clone();
    let res = tokio::task::spawn_blocking(move || match session.umount_and_join() {
        // Open files or a working directory on the mount: unmount lazily (as `umount -l`), since this
        // daemon goes away either way; what is still open fails with ENOTCONN once it has, instead of
        // leaving a dead mount behind.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            tracing::warn!(mountpoint = %mp.display(), "the mount is busy (open files); detaching it lazily");
            detach(&mp)
        }
        r => r,
    })
    .await
    .context("unmount task")?;
    let mp = mountpoint.clone();
    client.shutdown().await;
    res.map_err(|source| FuseError::Unmount { path: mp, source })?;
    tracing::info!(mountpoint = %mountpoint.display(), "t3fs unmounted");
    Ok(())
}

/// Lazily unmounts `mountpoint` (MNT_DETACH as root, `fusermount3 -u -z` otherwise).
fn detach(mountpoint: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    let out = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg("--").arg(mountpoint).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("fusermount3 -u -z: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_options() {
        let mut cfg = MountConfig::default();
        let c = session_config(&cfg, false);
        assert_eq!(c.n_threads, Some(4));
        assert!(c.clone_fd);
        assert_eq!(c.acl, SessionACL::Owner);
        assert!(c.mount_options.contains(&MountOption::FSName("t3fs".into())));
        assert!(!c.mount_options.contains(&MountOption::AutoUnmount));
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        cfg.allow_other = true;
        cfg.threads = 0;
        let c = session_config(&cfg, false);
        assert_eq!(c.acl, SessionACL::All);
        assert!(c.mount_options.contains(&MountOption::AutoUnmount));
        // Root mounts and unmounts by itself.
        let c = session_config(&cfg, true);
        assert_eq!(c.acl, SessionACL::All);
        assert!(!c.mount_options.contains(&MountOption::AutoUnmount));
        assert_eq!(c.n_threads, Some(1));
        assert!(!c.clone_fd);
    }
}
