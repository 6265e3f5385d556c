//! `mount.t3fs`: the helper mount(8) runs for t3fs, so `/etc/fstab` lines and `mount -t t3fs`
//! work. Install it as a link to the `t3fs` binary (`ln -s /usr/local/bin/t3fs /sbin/mount.t3fs`);
//! the binary acts as the helper when called by that name.
//!
//! mount(8) calls `mount.t3fs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]`. SOURCE is
//! informational (`t3fs`). Options: `config=FILE` (the FUSE mount config; default
//! `/etc/t3fs/fuse.toml`), `log=FILE` (the daemon's output; default `/var/log/t3fs-mount.log`);
//! generic mount options (`rw`, `defaults`, `_netdev`, `nofail`, `noauto`, `user`, ...) are
//! ignored. The helper starts `t3fs mount --config FILE MOUNTPOINT` in its own session (it keeps
//! running after the helper returns), waits until MOUNTPOINT is mounted (up to
//! [`MOUNT_WAIT`]) and exits 0, or exits 1 with the reason (and the daemon's last log lines) if
//! the daemon stops or the mount does not appear. Unmount with `umount MOUNTPOINT` or `t3fs umount`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the helper waits for the mount to appear.
pub const MOUNT_WAIT: Duration = Duration::from_secs(60);
/// The config used when `-o config=` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/t3fs/fuse.toml";
/// Where the daemon's output goes when `-o log=` is not given.
pub const DEFAULT_LOG: &str = "/var/log/t3fs-mount.log";

/// Whether the binary was called as the mount helper (by the name in `argv[0]`).
pub fn called_as_helper(argv0: &str) -> bool {
    matches!(Path::new(argv0).file_name().and_then(|n| n.to_str()), Some("mount.t3fs" | "mount.fuse.t3fs"))
}

/// What mount(8) asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    pub mountpoint: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Parses `mount.t3fs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]` (without argv[0]).
pub fn parse(args: &[String]) -> anyhow::Result<HelperArgs> {
    let mut positional = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.extend(it.next().context("-o needs options")?.split(',').map(str::to_string)),
            "-n" | "-s" | "-f" | "-v" => {}
            s if s.starts_with("-o") => opts.extend(s[2..].split(',').map(str::to_string)),
            s if s.starts_with('-') => bail!("unknown flag {s}"),
            _ => positional.push(a.clone()),
        }
    }
    let [_source, mountpoint] = positional.as_slice() else {
        bail!("usage: mount.t3fs SOURCE MOUNTPOINT [-o config=FILE,log=FILE,...]");
    };
    let mut out = HelperArgs {
        mountpoint: PathBuf::from(mountpoint),
        config: PathBuf::from(DEFAULT_CONFIG),
        log: PathBuf::from(DEFAULT_LOG),
    };
    for o in opts.iter().filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("config", v)) if !v.is_empty() => out.config = PathBuf::from(v),
            Some(("log", v)) if !v.is_empty() => out.log = PathBuf::from(v),
            Some(("config" | "log", _)) => bail!("option {o} needs a value"),
            // Generic mount(8) options are for the kernel or mount itself.
            _ => {}
        }
    }
    Ok(out)
}

/// Starts the mount daemon detached and waits for the mount.
pub fn run(h: &HelperArgs) -> anyhow::Result<()> {
    if !h.config.is_file() {
        bail!("config {} is not a file (pass -o config=FILE)", h.config.display());
    }
    let mnt = h.mountpoint.canonicalize().with_context(|| format!("mount point {}", h.mountpoint.display()))?;
    if crate::local::process::is_mounted(&mnt) {
        bail!("{} is already mounted", mnt.display());
    }
    let exe = std::env::current_exe().context("finding the t3fs binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&h.log)
        .with_context(|| format!("opening the log {}", h.log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--config").arg(&h.config).arg(&mnt);
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe; the daemon outlives the helper in its own session.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the t3fs mount daemon")?;
    let start = Instant::now();
    loop {
        if crate::local::process::is_mounted(&mnt) {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("the mount daemon exited ({st}) before mounting; see {}:\n{}", h.log.display(), tail(&h.log));
        }
        if start.elapsed() > MOUNT_WAIT {
            let _ = child.kill();
            bail!("{} did not appear within {MOUNT_WAIT:?}; see {}", mnt.display(), h.log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn names_and_arguments() {
        assert!(called_as_helper("/sbin/mount.t3fs"));
        assert!(called_as_helper("mount.fuse.t3fs"));
        assert!(!called_as_helper("/usr/bin/t3fs"));
        let h = parse(&args("t3fs /mnt/t3fs -o rw,_netdev,config=/etc/x.toml,log=/tmp/l")).unwrap();
        assert_eq!(
            h,
            HelperArgs { mountpoint: "/mnt/t3fs".into(), config: "/etc/x.toml".into(), log: "/tmp/l".into() }
        );
        let h = parse(&args("t3fs /mnt -n -v")).unwrap();
        assert_eq!((h.config.to_str(), h.log.to_str()), (Some(DEFAULT_CONFIG), Some(DEFAULT_LOG)));
        assert_eq!(parse(&args("t3fs /mnt -oconfig=/c")).unwrap().config, PathBuf::from("/c"));
        assert!(parse(&args("t3fs")).is_err());
        assert!(parse(&args("t3fs /a /b")).is_err());
        assert!(parse(&args("t3fs /a -o config=")).is_err());
        assert!(parse(&args("t3fs /a -x")).is_err());
        assert!(parse(&args("t3fs /a -o")).is_err());
    }
}
