//! Directory attributes kept by the daemon, so the kernel's re-read of a parent directory after
//! each create or unlink through this mount costs no round trip to meta.
//!
//! Why: with `default_permissions` the kernel drops a directory's cached attributes after every
//! change in it (create, unlink, ...) and asks for them again (GETATTR) at the next permission
//! check in that directory, i.e. at the next create, stat or unlink of a name in it. Creating N
//! files in one directory cost N extra GETATTR round trips.
//!
//! How: a directory's attributes answered by a GETATTR from meta are kept for `attr_timeout_ms`
//! from the moment meta answered. An exclusive create, mknod or unlink of a non-directory through
//! this mount changes exactly the parent's mtime and ctime, both to the time meta gave the child
//! (meta sets the parent's times and the new or removed inode's ctime from one clock reading), so
//! the kept entry is updated to that time and the next GETATTR of the directory is answered from it,
//! with what is left of its timeout as the kernel's timeout.
//!
//! Invariants:
//! - An entry is never served later than `attr_timeout_ms` after meta produced it, and the kernel
//!   is told to keep it only for the rest of that time: what this mount shows of changes made by
//!   others is never older than what the kernel's own attribute cache allows.
//! - Any other change through this mount that may touch a directory (mkdir, rmdir, rename, link,
//!   symlink, a create that may have opened an existing file, setattr, xattr changes) drops every
//!   entry ([`DirAttrs::clear`]) before it is answered, so this mount's own changes always show.
//! - A GETATTR answer that was asked before a change and arrives after it is not kept (generation
//!   check), so an entry never goes back in time.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use t3fs_common::proto::{self, InodeType};

/// More entries than this: expired ones are dropped at the next insert.
const PRUNE_AT: usize = 4096;

struct Entry {
    inode: proto::Inode,
    /// When meta's answer arrived.
    fetched: Instant,
}

#[derive(Default)]
struct State {
    /// Bumped by every change through this mount; an answer asked for under an older generation
    /// is not kept.
    generation: u64,
    entries: HashMap<u64, Entry>,
}

/// Directory attributes answered by meta, kept for at most `ttl`. See the module note.
pub struct DirAttrs {
    ttl: Duration,
    state: Mutex<State>,
}

impl DirAttrs {
    /// Keeps entries for `ttl` (the mount's `attr_timeout_ms`); zero keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to pass to [`Self::fetched`]; take it before asking meta.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `inode` (a directory's attributes just answered by meta, asked for at `generation`).
    pub fn fetched(&self, inode: &proto::Inode, generation: u64) {
        if self.ttl.is_zero() || inode.inode_type != InodeType::Directory as i32 {
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        if st.generation != generation {
            return;
        }
        if st.entries.len() >= PRUNE_AT {
            let ttl = self.ttl;
            st.entries.retain(|_, e| now.duration_since(e.fetched) < ttl);
        }
        st.entries.insert(inode.id, Entry { inode: inode.clone(), fetched: now });
    }

    /// A non-directory was created in or removed from `dir` through this mount, and meta set the
    /// directory's mtime and ctime to `at_ns`.
    pub fn touched(&self, dir: u64, at_ns: i64) {
        let mut st = self.lock();
        st.generation += 1;
        if let Some(e) = st.entries.get_mut(&dir) {
            e.inode.mtime_ns = e.inode.mtime_ns.max(at_ns);
            e.inode.ctime_ns = e.inode.ctime_ns.max(at_ns);
        }
    }

    /// Drops every entry (a change through this mount whose effect on directories is not known).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.generation += 1;
        st.entries.clear();
    }

    /// The kept attributes of directory `ino` and how much longer the kernel may keep them.
    pub fn get(&self, ino: u64) -> Option<(proto::Inode, Duration)> {
        let st = self.lock();
        let e = st.entries.get(&ino)?;
        let left = self.ttl.checked_sub(e.fetched.elapsed()).filter(|d| !d.is_zero())?;
        Some((e.inode.clone(), left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(id: u64, t: i64) -> proto::Inode {
        proto::Inode {
            id,
            inode_type: InodeType::Directory as i32,
            mode: 0o755,
            nlink: 2,
            mtime_ns: t,
            ctime_ns: t,
            ..Default::default()
        }
    }

    #[test]
    fn serves_fetched_directories_with_touched_times() {
        let c = DirAttrs::new(Duration::from_secs(60));
        assert!(c.get(5).is_none());
        c.fetched(&dir(5, 100), c.generation());
        let (i, left) = c.get(5).unwrap();
        assert_eq!((i.mtime_ns, i.ctime_ns), (100, 100));
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        c.touched(5, 250);
        let (i, _) = c.get(5).unwrap();
        assert_eq!((i.mtime_ns, i.ctime_ns, i.mode, i.nlink), (250, 250, 0o755, 2));
        // Times never go back (replies of concurrent creates may arrive in any order).
        c.touched(5, 200);
        assert_eq!(c.get(5).unwrap().0.mtime_ns, 250);
        // Touching a directory not kept keeps nothing.
        c.touched(6, 300);
        assert!(c.get(6).is_none());
        // Files are never kept.
        let mut f = dir(7, 1);
        f.inode_type = InodeType::File as i32;
        c.fetched(&f, c.generation());
        assert!(c.get(7).is_none());
    }

    #[test]
    fn a_change_drops_entries_and_stale_answers() {
        let c = DirAttrs::new(Duration::from_secs(60));
        c.fetched(&dir(5, 100), c.generation());
        c.fetched(&dir(6, 100), c.generation());
        c.clear();
        assert!(c.get(5).is_none() && c.get(6).is_none());
        // An answer asked for before a change is not kept.
        let g = c.generation();
        c.touched(9, 500);
        c.fetched(&dir(5, 100), g);
        assert!(c.get(5).is_none());
        let g = c.generation();
        c.clear();
        c.fetched(&dir(5, 100), g);
        assert!(c.get(5).is_none());
    }

    #[test]
    fn entries_expire_and_zero_keeps_nothing() {
        let c = DirAttrs::new(Duration::from_millis(20));
        c.fetched(&dir(5, 100), c.generation());
        assert!(c.get(5).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get(5).is_none(), "served past its timeout");
        let z = DirAttrs::new(Duration::ZERO);
        z.fetched(&dir(5, 100), z.generation());
        assert!(z.get(5).is_none());
    }
}
