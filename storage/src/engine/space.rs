//! The free-space reserve of one chunk engine: client writes stop while they would leave the
//! engine's file system with less free space than the reserve, and everything else may still use it.
//!
//! Why: a storage disk that fills up must not take its targets down with it. The chunk metadata
//! store (fjall) *poisons* itself when a journal write fails, and from then on every update of the
//! target fails until the storage process restarts, removals included: deleting files could no
//! longer free the space. So a client write (`UPDATE_TYPE_WRITE`, or a truncate that grows a chunk)
//! that needs new blocks is refused with `NoSpace` (ENOSPC at the mount) while the file system's
//! free space, less the blocks of slots written but not yet synced, would drop below the reserve.
//! Removals, shrinking truncates, resync and repair replacements and the metadata store keep the
//! room the reserve leaves them ([`Claim::Reserve`]).
//!
//! What needs new blocks (the engine decides, `Engine::allocate_for`): a slot of a sparse group
//! file that holds no blocks (never written, or punched by trim) needs the chunk's length rounded to
//! 4 KiB; a free slot that still holds blocks (freed since the last trim) needs none, and under the
//! reserve a client write takes such a slot rather than a clean one, so the space of deleted chunks
//! is usable again at once, before trim returns it to the file system. With `preallocate` every
//! slot of an existing group holds blocks; a new group file needs its whole length.
//!
//! Invariants: a `Claim::Reserve` allocation is never refused for space (it may still fail with the
//! file system's own ENOSPC, which maps to `NoSpace` too). The check and the in-flight count are
//! taken under the engine's state lock, so concurrent writes cannot all pass on the same free space.
use std::path::{Path, PathBuf};

use t3fs_common::space::{disk_space, reserve_of};
use t3fs_common::{Error, StatusCode};

/// Who an allocation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// New client data: refused (`NoSpace`) when it would eat into the reserve.
    Client,
    /// Removal, shrink, resync, repair, migration: may use the reserve.
    Reserve,
}

/// How an engine measures its file system's space (a test replaces it).
type Probe = Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// The reserve of one engine directory.
pub(super) struct Space {
    dir: PathBuf,
    configured: Option<u64>,
    probe: std::sync::Mutex<Option<Probe>>,
}

impl Space {
    pub(super) fn new(dir: &Path, configured: Option<u64>) -> Self {
        Space { dir: dir.to_path_buf(), configured, probe: std::sync::Mutex::new(None) }
    }

    /// (free, total) bytes of the engine's file system.
    fn measure(&self) -> Option<(u64, u64)> {
        match self.probe.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(probe) => probe(),
            None => disk_space(&self.dir),
        }
    }

    /// Replaces how space is measured (tests).
    #[cfg(test)]
    pub(super) fn set_probe(&self, probe: Probe) {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }

    /// Free bytes left for client writes (free less the reserve less `in_flight`), and the total;
    /// `None` when the file system cannot be measured.
    pub(super) fn for_clients(&self, in_flight: u64) -> Option<(u64, u64)> {
        let (free, total) = self.measure()?;
        Some((free.saturating_sub(in_flight).saturating_sub(reserve_of(self.configured, total)), total))
    }

    /// Ok when a client write may take `need` more bytes of the file system, with `in_flight` bytes
    /// already promised to writes not yet synced; `NoSpace` otherwise. A file system that cannot be
    /// measured does not stop writes (its own ENOSPC still does).
    pub(super) fn check(&self, need: u64, in_flight: u64) -> Result<(), Error> {
        let Some((free, total)) = self.measure() else { return Ok(()) };
        let reserve = reserve_of(self.configured, total);
        let left = free.saturating_sub(in_flight);
        if left >= reserve.saturating_add(need) {
            return Ok(());
        }
        Err(Error::new(
            StatusCode::NoSpace,
            format!(
                "storage disk {} is full: {} MiB free, of which {} MiB are the reserve kept for removals and \
                 recovery; a write of {} KiB is refused",
                self.dir.display(),
                left >> 20,
                reserve >> 20,
                need.div_ceil(1024)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_the_reserve_and_writes_in_flight() {
        let s = Space::new(Path::new("/nonexistent"), Some(100));
        s.set_probe(Box::new(|| Some((1000, 10_000))));
        assert!(s.check(900, 0).is_ok());
        assert_eq!(s.check(901, 0).unwrap_err().code, StatusCode::NoSpace);
        assert_eq!(s.check(800, 101).unwrap_err().code, StatusCode::NoSpace);
        assert_eq!(s.for_clients(300), Some((600, 10_000)));
        s.set_probe(Box::new(|| Some((50, 10_000))));
        assert_eq!(s.for_clients(0), Some((0, 10_000)), "below the reserve: nothing left for clients");
        s.set_probe(Box::new(|| None));
        assert!(s.check(u64::MAX, 0).is_ok(), "an unmeasurable file system does not stop writes");
    }
}
