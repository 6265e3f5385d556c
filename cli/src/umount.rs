//! `t3fs umount MOUNTPOINT`: clears a t3fs FUSE mount, including a dead one whose daemon was
//! killed ("Transport endpoint is not connected").
//!
//! Steps: find the mount in `/proc/self/mountinfo` (the topmost one at that path) and refuse
//! anything that is not t3fs; if a live `t3fs mount` daemon serves it, SIGTERM it so it writes out
//! buffered data and unmounts itself; otherwise (or if that did not finish in time) detach the mount:
//! `umount2(MNT_DETACH)` as root, `fusermount3 -u -z` as anyone else.
//!
//! Invariants: the mount point is never `stat`ed through the mount (a dead one fails with ENOTCONN),
//! only its parent is resolved; nothing but a t3fs mount is ever unmounted.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a live daemon gets to unmount itself after SIGTERM before the mount is detached.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount id (field 1), unique while mounted.
    pub id: u32,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// t3fs mounts: type `fuse.t3fs` (mounted through fusermount3 with the subtype), or plain
    /// `fuse`/`fuseblk` with t3fs's default source name (root mounts via mount(2) carry no subtype).
    pub fn is_t3fs(&self) -> bool {
        self.fs_type == "fuse.t3fs" || (self.fs_type.starts_with("fuse") && self.source == "t3fs")
    }
}

/// Decodes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses mountinfo text (see proc(5)): field 5 is the mount point; after the ` - ` separator come
/// the file system type and the source. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let id = pre.next()?.parse().ok()?;
            let mp = pre.nth(3)?;
            let mut post = post.split(' ');
            let fs_type = post.next()?.to_string();
            let source = String::from_utf8_lossy(&unescape(post.next()?)).into_owned();
            let mount_point = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(mp)));
            Some(MountEntry { id, mount_point, fs_type, source })
        })
        .collect()
}

/// The topmost mount at `path` (the last listed; later mounts stack on earlier ones).
pub fn find_mount(path: &Path) -> anyhow::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text).into_iter().rev().find(|m| m.mount_point == path))
}

/// `path` made absolute with symlinks resolved, without touching `path` itself when that fails
/// (a dead FUSE mount cannot be stat'ed): the parent is resolved and the last name appended.
pub fn resolve_mount_point(path: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    match (abs.parent(), abs.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => {
            let parent = parent.canonicalize().with_context(|| format!("resolving {}", parent.display()))?;
            Ok(parent.join(name))
        }
        _ => Ok(abs),
    }
}

/// A running `t3fs mount ... MOUNTPOINT` process serving `mount_point`, found through /proc.
fn find_daemon(mount_point: &Path) -> Option<i32> {
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        let is_t3fs = args.first().is_some_and(|a| Path::new(std::ffi::OsStr::from_bytes(a)).ends_with("t3fs"));
        if !is_t3fs || args.get(1) != Some(&b"mount".as_slice()) {
            continue;
        }
        let Some(last) = args.last() else { continue };
        let arg = Path::new(std::ffi::OsStr::from_bytes(last));
        let full = if arg.is_absolute() {
            arg.to_path_buf()
        } else {
            let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else { continue };
            cwd.join(arg)
        };
        let full = resolve_mount_point(&full).unwrap_or(full);
        if full == mount_point {
            return Some(pid);
        }
    }
    None
}

/// Detaches the mount at once (lazy unmount): root calls umount2(2), others fusermount3.
fn detach(mount_point: &Path) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = CString::new(mount_point.as_os_str().as_bytes()).context("mount point contains a NUL byte")?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call; umount2 reads only it.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            bail!("umount2({}, MNT_DETACH): {e}", mount_point.display());
        }
        return Ok(());
    }
    let mut last_err = None;
    for prog in ["fusermount3", "fusermount"] {
        match std::process::Command::new(prog).args(["-u", "-z"]).arg(mount_point).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => bail!("{prog} -u -z {}: {}", mount_point.display(), String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => last_err = Some(format!("{prog}: {e}")),
        }
    }
    bail!("cannot unmount {} as non-root: {}", mount_point.display(), last_err.unwrap_or_default())
}

/// `t3fs umount MOUNTPOINT`. Errors (exit 1): not a mount point, not a t3fs mount, unmount failed.
pub async fn umount(path: &Path) -> anyhow::Result<()> {
    let mp = resolve_mount_point(path)?;
    let Some(entry) = find_mount(&mp)? else { bail!("{} is not mounted", mp.display()) };
    if !entry.is_t3fs() {
        bail!(
            "{} is not a t3fs mount (type {}, source {}); not unmounting it",
            mp.display(),
            entry.fs_type,
            entry.source
        );
    }
    if let Some(pid) = find_daemon(&mp) {
        // SAFETY: kill(2) on a pid just read from /proc whose command line is `t3fs mount ... MP`.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
            let deadline = tokio::time::Instant::now() + CLEAN_TIMEOUT;
            while tokio::time::Instant::now() < deadline {
                if find_mount(&mp)?.is_none_or(|m| m.id != entry.id) {
                    println!("unmounted {} (the t3fs mount daemon, pid {pid}, stopped cleanly)", mp.display());
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("t3fs: the mount daemon (pid {pid}) did not unmount within 30 s; detaching the mount");
        }
    }
    detach(&mp)?;
    println!("unmounted {} (detached; no live t3fs daemon served it)", mp.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
42 27 0:39 / /tmp/a\\040b rw,nosuid,nodev,relatime - fuse t3fs rw,user_id=0,group_id=0
43 27 0:40 / /mnt/x rw,relatime shared:5 - fuse.t3fs myfs rw,user_id=1000
44 27 0:41 / /mnt/y rw,relatime - fuse.sshfs host:/ rw
bad line without separator
";

    #[test]
    fn parses_escapes_optional_fields_and_types() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!((m[1].fs_type.as_str(), m[1].source.as_str()), ("fuse", "t3fs"));
        assert_eq!((m[2].id, m[2].mount_point.as_path()), (43, Path::new("/mnt/x")));
        assert_eq!(m[2].fs_type, "fuse.t3fs");
        assert!(m[1].is_t3fs() && m[2].is_t3fs());
        assert!(!m[0].is_t3fs() && !m[3].is_t3fs());
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b\\011"), b"a\\b\t");
        assert_eq!(unescape("a\\9x\\"), b"a\\9x\\");
    }

    #[test]
    fn resolves_a_missing_last_component_through_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let canon = d.path().canonicalize().unwrap();
        assert_eq!(resolve_mount_point(&d.path().join("nope")).unwrap(), canon.join("nope"));
        assert_eq!(resolve_mount_point(d.path()).unwrap(), canon);
        assert!(resolve_mount_point(&d.path().join("a/b")).is_err());
    }
}
