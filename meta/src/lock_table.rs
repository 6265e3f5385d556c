//! The byte-range lock rules over one inode's lock table, pure (no KV): what conflicts, and how a
//! granted request rewrites its owner's locks. `crate::namespace` runs them inside one KV
//! transaction per request (read the inode's `LOCK` value, decide, write it back).
//!
//! Semantics are POSIX `fcntl` record locks (and BSD `flock` locks as whole-file locks of another
//! kind):
//! - an owner is `(client_id, owner, kind)`; locks of one owner never conflict with each other, and
//!   locks of different kinds (POSIX, flock) never conflict (Linux: the two kinds do not interact);
//! - two locks conflict when their owners differ, their ranges overlap and at least one is a write
//!   lock;
//! - a granted request replaces its owner's locks inside the requested range (upgrade, downgrade,
//!   unlock of a sub-range splits a lock in two), and its owner's adjacent or overlapping locks of
//!   the same type merge into one;
//! - ranges are inclusive `[start, end]`; `end == u64::MAX` means "to the end of the file".
//!
//! Invariant kept by [`apply`]: one owner's locks never overlap one another, and two locks of one
//! owner and type are never adjacent (they would have been merged).
use t3fs_common::proto::{FileLock, LockKind, LockType};
use t3fs_common::{Error, Result};

/// Longest client id accepted in a lock (as for write sessions).
pub const MAX_CLIENT_ID: usize = 256;

/// Whether `a` and `b` belong to the same owner.
pub fn same_owner(a: &FileLock, b: &FileLock) -> bool {
    a.client_id == b.client_id && a.owner == b.owner && a.kind == b.kind
}

fn overlaps(a: &FileLock, b: &FileLock) -> bool {
    a.start <= b.end && b.start <= a.end
}

fn is_write(l: &FileLock) -> bool {
    l.lock_type == LockType::Write as i32
}

/// Whether the held lock `held` stands in the way of `want`.
pub fn conflicts(held: &FileLock, want: &FileLock) -> bool {
    want.lock_type != LockType::Unlock as i32
        && held.kind == want.kind
        && !same_owner(held, want)
        && overlaps(held, want)
        && (is_write(held) || is_write(want))
}

/// The first held lock (in table order) that conflicts with `want`.
pub fn find_conflict<'a>(locks: &'a [FileLock], want: &FileLock) -> Option<&'a FileLock> {
    locks.iter().find(|held| conflicts(held, want))
}

/// Checks a request's lock: an owner, a known kind and type, `start <= end`. `unlock_ok`: whether
/// `LOCK_TYPE_UNLOCK` is allowed (SET: yes; GET: no).
pub fn validate(l: &FileLock, unlock_ok: bool) -> Result<()> {
    if l.client_id.is_empty() || l.client_id.len() > MAX_CLIENT_ID {
        return Err(Error::invalid(format!("a lock needs a client id of 1 to {MAX_CLIENT_ID} bytes")));
    }
    if LockKind::try_from(l.kind).is_err() {
        return Err(Error::invalid(format!("unknown lock kind {}", l.kind)));
    }
    match LockType::try_from(l.lock_type) {
        Ok(LockType::Read | LockType::Write) => {}
        Ok(LockType::Unlock) if unlock_ok => {}
        _ => return Err(Error::invalid(format!("lock type {} is not allowed here", l.lock_type))),
    }
    if l.start > l.end {
        return Err(Error::invalid(format!("lock range {}..={} is empty", l.start, l.end)));
    }
    Ok(())
}

/// Applies the granted request `want` (read, write or unlock) to `locks` (see the module note).
/// The caller checked [`find_conflict`] first. The result is sorted by (start, client, owner).
pub fn apply(locks: &mut Vec<FileLock>, want: &FileLock) {
    let mut out = Vec::with_capacity(locks.len() + 2);
    for l in locks.drain(..) {
        if !same_owner(&l, want) || !overlaps(&l, want) {
            out.push(l);
            continue;
        }
        // Cut `want`'s range out of the owner's lock: what is left before and after stays.
        if l.start < want.start {
            out.push(FileLock { end: want.start - 1, ..l.clone() });
        }
        if l.end > want.end {
            out.push(FileLock { start: want.end + 1, ..l });
        }
    }
    if want.lock_type != LockType::Unlock as i32 {
        let mut new = want.clone();
        // Merge with the owner's adjacent locks of the same type (overlapping ones were cut above).
        out.retain(|l| {
            let adjacent = l.end.checked_add(1) == Some(new.start) || new.end.checked_add(1) == Some(l.start);
            if same_owner(l, &new) && l.lock_type == new.lock_type && adjacent {
                new.start = new.start.min(l.start);
                new.end = new.end.max(l.end);
                false
            } else {
                true
            }
        });
        out.push(new);
    }
    out.sort_by(|a, b| (a.start, &a.client_id, a.owner).cmp(&(b.start, &b.client_id, b.owner)));
    *locks = out;
}

/// Drops every lock of `owner`'s owner; returns how many went.
pub fn release_owner(locks: &mut Vec<FileLock>, owner: &FileLock) -> usize {
    let before = locks.len();
    locks.retain(|l| !same_owner(l, owner));
    before - locks.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const EOF: u64 = u64::MAX;

    /// A POSIX lock of `client`'s `owner` (pid 42) on `[start, end]`.
    pub(crate) fn lk(client: &str, owner: u64, t: LockType, start: u64, end: u64) -> FileLock {
        FileLock {
            client_id: client.into(),
            owner,
            kind: LockKind::Posix as i32,
            lock_type: t as i32,
            start,
            end,
            pid: 42,
            acquired_ns: 0,
        }
    }

    /// (owner, type, start, end) of every lock, in table order.
    fn shape(locks: &[FileLock]) -> Vec<(u64, LockType, u64, u64)> {
        locks.iter().map(|l| (l.owner, LockType::try_from(l.lock_type).unwrap(), l.start, l.end)).collect()
    }

    fn set(locks: &mut Vec<FileLock>, want: FileLock) -> Option<FileLock> {
        if let Some(c) = find_conflict(locks, &want) {
            return Some(c.clone());
        }
        apply(locks, &want);
        None
    }

    use LockType::{Read as R, Unlock as U, Write as W};

    #[test]
    fn conflict_table() {
        // (held, wanted, conflict?) for overlapping ranges of different owners.
        for (held, want, expect) in [(R, R, false), (R, W, true), (W, R, true), (W, W, true)] {
            let h = lk("a", 1, held, 0, 99);
            assert_eq!(conflicts(&h, &lk("b", 1, want, 50, 150)), expect, "{held:?} vs {want:?}");
            assert_eq!(conflicts(&h, &lk("a", 2, want, 50, 150)), expect, "same client, other owner");
            assert!(!conflicts(&h, &lk("a", 1, want, 50, 150)), "own locks never conflict");
            assert!(!conflicts(&h, &lk("b", 1, want, 100, 199)), "adjacent ranges do not overlap");
            assert!(!conflicts(&h, &lk("b", 1, U, 0, EOF)), "unlock never conflicts");
            let mut other_kind = lk("b", 1, want, 0, EOF);
            other_kind.kind = LockKind::Flock as i32;
            assert!(!conflicts(&h, &other_kind), "flock and POSIX locks do not interact");
        }
        assert!(conflicts(&lk("a", 1, W, 10, EOF), &lk("b", 1, R, u64::MAX - 1, EOF)));
    }

    #[test]
    fn split_merge_upgrade_downgrade() {
        let mut t = Vec::new();
        assert!(set(&mut t, lk("a", 1, W, 0, 99)).is_none());
        // Unlocking a middle part splits the lock.
        assert!(set(&mut t, lk("a", 1, U, 40, 59)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 39), (1, W, 60, 99)]);
        // Relocking the hole merges everything back into one lock.
        assert!(set(&mut t, lk("a", 1, W, 40, 59)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 99)]);
        // Downgrade of a middle part: three pieces.
        assert!(set(&mut t, lk("a", 1, R, 10, 19)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 9), (1, R, 10, 19), (1, W, 20, 99)]);
        // Upgrade of an overlapping range swallows the read piece again.
        assert!(set(&mut t, lk("a", 1, W, 5, 25)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 99)]);
        // Adjacent same-type locks merge, different types do not.
        assert!(set(&mut t, lk("a", 1, W, 100, 199)).is_none());
        assert!(set(&mut t, lk("a", 1, R, 200, EOF)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 199), (1, R, 200, EOF)]);
        // Unlock to EOF from the middle leaves the head.
        assert!(set(&mut t, lk("a", 1, U, 150, EOF)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, 149)]);
        // Another owner's locks are untouched by this owner's changes.
        assert!(set(&mut t, lk("b", 2, R, 150, 160)).is_none());
        assert!(set(&mut t, lk("a", 1, U, 0, EOF)).is_none());
        assert_eq!(shape(&t), [(2, R, 150, 160)]);
    }

    #[test]
    fn conflicts_change_nothing_and_report_the_holder() {
        let mut t = Vec::new();
        assert!(set(&mut t, lk("a", 1, W, 0, 99)).is_none());
        assert!(set(&mut t, lk("b", 1, W, 100, 199)).is_none(), "disjoint ranges coexist");
        let c = set(&mut t, lk("b", 1, W, 50, 150)).expect("overlap with a's write lock");
        assert_eq!((c.client_id.as_str(), c.start, c.end), ("a", 0, 99));
        assert_eq!(shape(&t), [(1, W, 0, 99), (1, W, 100, 199)]);
        // Shared read locks coexist; a writer is refused while any reader holds the range.
        let mut t = Vec::new();
        assert!(set(&mut t, lk("a", 1, R, 0, EOF)).is_none());
        assert!(set(&mut t, lk("b", 1, R, 0, EOF)).is_none());
        assert!(set(&mut t, lk("c", 1, W, 10, 10)).is_some());
        // Upgrade is refused while another reader overlaps, fine once it left.
        assert!(set(&mut t, lk("a", 1, W, 0, EOF)).is_some());
        assert_eq!(release_owner(&mut t, &lk("b", 1, U, 0, 0)), 1);
        assert!(set(&mut t, lk("a", 1, W, 0, EOF)).is_none());
        assert_eq!(shape(&t), [(1, W, 0, EOF)]);
    }

    #[test]
    fn validation() {
        assert!(validate(&lk("a", 1, W, 0, EOF), false).is_ok());
        assert!(validate(&lk("a", 1, U, 0, EOF), true).is_ok());
        assert!(validate(&lk("a", 1, U, 0, EOF), false).is_err(), "GET of an unlock");
        assert!(validate(&lk("", 1, W, 0, 1), true).is_err());
        assert!(validate(&lk(&"x".repeat(MAX_CLIENT_ID + 1), 1, W, 0, 1), true).is_err());
        assert!(validate(&lk("a", 1, W, 5, 4), true).is_err());
        let mut bad = lk("a", 1, W, 0, 1);
        bad.lock_type = 9;
        assert!(validate(&bad, true).is_err());
        bad.lock_type = 0;
        assert!(validate(&bad, true).is_err());
        let mut bad = lk("a", 1, W, 0, 1);
        bad.kind = 7;
        assert!(validate(&bad, true).is_err());
    }
}
