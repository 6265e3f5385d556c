//! The caller's identity for a FUSE request.
//!
//! Meta enforces POSIX permissions from the request header's uid, gid and supplementary groups. A
//! FUSE request carries the caller's fsuid, fsgid and pid, but not its supplementary groups, so they
//! are read from `/proc/<pid>/status` (the `Groups:` line). Two guards against a stale or wrong
//! answer: the groups are only used when the `Uid:`/`Gid:` lines' fs ids match the request's (a
//! reused pid or a process that changed identity gives no groups rather than someone else's), and a
//! cache entry lives [`GROUPS_TTL`] only. Anything unreadable (process gone, pid 0 because the caller
//! is in another pid namespace) means no supplementary groups: the caller gets less access, never
//! more.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use t3fs_client::UserInfo;

/// How long the groups read for a pid are reused.
pub const GROUPS_TTL: Duration = Duration::from_secs(1);
/// Most pids cached; when full, expired entries go, and if none had expired, all of them.
pub const GROUPS_CACHE_MAX: usize = 1024;

/// A process's credentials as `/proc/<pid>/status` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCreds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
}

/// Parses the `Uid:`, `Gid:` (real, effective, saved, fs) and `Groups:` lines of a status file.
pub fn parse_status(text: &str) -> Option<ProcCreds> {
    let (mut fsuid, mut fsgid, mut groups) = (None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let nums = || rest.split_whitespace().map(str::parse::<u32>).collect::<Result<Vec<u32>, _>>().ok();
        match key {
            "Uid" => fsuid = nums().and_then(|v| v.get(3).copied()),
            "Gid" => fsgid = nums().and_then(|v| v.get(3).copied()),
            "Groups" => groups = nums(),
            _ => {}
        }
    }
    Some(ProcCreds { fsuid: fsuid?, fsgid: fsgid?, groups: groups? })
}

struct Cached {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    at: Instant,
}

/// Supplementary groups of callers, by pid.
pub struct GroupCache {
    entries: Mutex<HashMap<u32, Cached>>,
    proc_root: std::path::PathBuf,
}

impl Default for GroupCache {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl GroupCache {
    /// A cache reading `<proc_root>/<pid>/status` (tests point it at a fake tree).
    pub fn new(proc_root: impl Into<std::path::PathBuf>) -> Self {
        Self { entries: Mutex::new(HashMap::new()), proc_root: proc_root.into() }
    }

    /// The identity of a request from `pid` running as `uid`/`gid`.
    pub fn user(&self, pid: u32, uid: u32, gid: u32) -> UserInfo {
        UserInfo { uid, gid, gids: self.groups(pid, uid, gid) }
    }

    fn groups(&self, pid: u32, uid: u32, gid: u32) -> Vec<u32> {
        if pid == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = entries.get(&pid)
                && c.uid == uid
                && c.gid == gid
                && now.duration_since(c.at) < GROUPS_TTL
            {
                return c.groups.clone();
            }
        }
        let path = self.proc_root.join(pid.to_string()).join("status");
        let groups = match std::fs::read_to_string(&path).ok().as_deref().and_then(parse_status) {
            Some(c) if c.fsuid == uid && c.fsgid == gid => c.groups,
            Some(c) => {
                tracing::debug!(pid, uid, gid, fsuid = c.fsuid, fsgid = c.fsgid, "caller's ids changed; no groups");
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= GROUPS_CACHE_MAX && !entries.contains_key(&pid) {
            entries.retain(|_, c| now.duration_since(c.at) < GROUPS_TTL);
            if entries.len() >= GROUPS_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(pid, Cached { uid, gid, groups: groups.clone(), at: now });
        groups
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t77\nPid:\t77\n\
        Uid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nFDSize:\t64\nGroups:\t4 24 1000 \nVmPeak:\t1 kB\n";

    #[test]
    fn parses_fs_ids_and_groups() {
        let c = parse_status(STATUS).unwrap();
        assert_eq!(c, ProcCreds { fsuid: 1001, fsgid: 101, groups: vec![4, 24, 1000] });
        let none = STATUS.replace("Groups:\t4 24 1000 ", "Groups:\t");
        assert_eq!(parse_status(&none).unwrap().groups, Vec::<u32>::new());
        assert!(parse_status("Name:\tx\n").is_none());
        assert!(parse_status(&STATUS.replace("Groups:\t4 24", "Groups:\tfour 24")).is_none());
        assert!(parse_status(&STATUS.replace("\t1001\n", "\n")).is_none(), "no fs uid");
    }

    #[test]
    fn groups_from_proc_with_id_check_and_ttl() {
        let dir = std::env::temp_dir().join(format!("t3fs-creds-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("77")).unwrap();
        std::fs::write(dir.join("77/status"), STATUS).unwrap();
        let cache = GroupCache::new(&dir);
        assert_eq!(cache.user(77, 1001, 101), UserInfo { uid: 1001, gid: 101, gids: vec![4, 24, 1000] });
        // Cached: a change shows only after the TTL.
        std::fs::write(dir.join("77/status"), STATUS.replace("Groups:\t4 24 1000 ", "Groups:\t5")).unwrap();
        assert_eq!(cache.user(77, 1001, 101).gids, vec![4, 24, 1000]);
        std::thread::sleep(GROUPS_TTL + Duration::from_millis(10));
        assert_eq!(cache.user(77, 1001, 101).gids, vec![5]);
        // Ids that do not match the process's: no groups (pid reused, or another identity), cached
        // or not.
        assert!(cache.user(77, 0, 0).gids.is_empty());
        assert!(cache.user(77, 0, 0).gids.is_empty());
        // Unknown pid, pid 0: no groups.
        assert!(cache.user(78, 1001, 101).gids.is_empty());
        assert!(cache.user(0, 1001, 101).gids.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_is_bounded() {
        let cache = GroupCache::new("/nonexistent-proc");
        for pid in 1..=(GROUPS_CACHE_MAX as u32 + 10) {
            cache.user(pid, 1, 1);
        }
        assert!(cache.len() <= GROUPS_CACHE_MAX);
        assert!(cache.len() > 0);
    }

    #[test]
    fn reads_this_process() {
        // SAFETY: getpid/getuid/getgid have no preconditions.
        let (pid, uid, gid) = unsafe { (libc::getpid() as u32, libc::geteuid(), libc::getegid()) };
        let want = parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()).unwrap();
        assert_eq!(GroupCache::default().user(pid, uid, gid).gids, want.groups);
    }
}
