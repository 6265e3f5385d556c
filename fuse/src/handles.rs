//! Open-file and open-directory state of the FUSE daemon.
//!
//! - a [`WriteBuffer`] per file handle (see [`crate::wbuf`]: contiguous writes go to storage in one
//!   `Client::write` when the buffer is full or the mount's write-buffer budget is spent, or when
//!   the handle is flushed), all counted in one [`WriteBudget`];
//! - [`Handles`]: the fh -> state tables, plus per-inode length tracking. The length in meta is
//!   lazy (updated on close/fsync from the writer's length hint), so while a file is open here the
//!   size we report is `max(meta length, local length)`, where the local length is the highest
//!   byte written (buffered or not) + 1 by any open handle of this mount. A truncate lowers the local
//!   length so a later close cannot resurrect the old size. An inode whose last link goes (unlink, or
//!   a rename over it) while it is open here is marked; its handles keep working on its chunks, skip
//!   Close (meta forgot it), and the last release deletes the chunks. Handles are keyed by inode, not
//!   by name, so a rename of an open file changes nothing here.
//!
//! Invariant: a handle's buffer is only touched with the handle's (async) mutex held, so ops on one
//! handle are serialised; different handles never share a buffer.
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::FileType;
use t3fs_common::proto;

pub use crate::wbuf::{WriteBudget, WriteBuffer};

/// State of one open file handle.
#[derive(Debug)]
pub struct OpenFile {
    /// The inode as of open (its layout is what matters; see [`Handles`] for the length).
    pub inode: proto::Inode,
    pub buf: WriteBuffer,
    /// Opened for writing: release reports to meta even if nothing was written.
    pub writable: bool,
    /// Written since the last Close sent to meta.
    pub dirty: bool,
    /// The write session meta recorded for this handle (0: none); ended by the final Close.
    pub session: u64,
    /// A write-out that failed in the background (the periodic flush): the next flush, fsync or
    /// release reports it, so an application never loses written data without an error.
    pub failed: Option<t3fs_common::Error>,
}

/// A shared open-file handle; its mutex serialises the ops on one handle.
pub type FileRef = Arc<tokio::sync::Mutex<OpenFile>>;

/// One entry of an open directory's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub ino: u64,
    pub kind: FileType,
    pub name: OsString,
}

#[derive(Debug, Default)]
struct InodeLen {
    open: u32,
    meta_len: u64,
    local_len: u64,
    /// Unlinked while open here: meta queued it for GC; `hold` keeps GC off until the last release.
    unlinked: bool,
    /// The session meta recorded to hold the unlinked file for this mount's handles (0: none).
    hold: u64,
}

/// What a handle buffers by default before writing out (see `MountConfig::write_buffer_bytes`).
pub const DEFAULT_WRITE_BUFFER: usize = 16 << 20;
/// What all handles together buffer by default (`MountConfig::write_buffer_memory_bytes`).
pub const DEFAULT_WRITE_MEMORY: u64 = 512 << 20;

/// File and directory handle tables of one mount.
pub struct Handles {
    next_fh: AtomicU64,
    /// fh -> (inode id, handle).
    files: Mutex<HashMap<u64, (u64, FileRef)>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirItem>>>>,
    lens: Mutex<HashMap<u64, InodeLen>>,
    /// Bytes each handle buffers before writing out.
    write_buffer: usize,
    /// Counts the bytes all handles' buffers hold.
    budget: Arc<WriteBudget>,
}

impl Default for Handles {
    fn default() -> Self {
        Self::with_write_buffers(DEFAULT_WRITE_BUFFER, DEFAULT_WRITE_MEMORY)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tables whose handles buffer up to `per_handle` bytes each, all together `memory` bytes
    /// before every write goes straight out.
    pub fn with_write_buffers(per_handle: usize, memory: u64) -> Self {
        Self {
            next_fh: AtomicU64::new(1),
            files: Mutex::default(),
            dirs: Mutex::default(),
            lens: Mutex::default(),
            write_buffer: per_handle,
            budget: WriteBudget::new(memory),
        }
    }

    /// The mount's write-buffer budget.
    pub fn budget(&self) -> &Arc<WriteBudget> {
        &self.budget
    }

    fn alloc_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an open file (with `inode` fresh from meta) and returns its fh.
    pub fn open_file(&self, inode: proto::Inode, writable: bool) -> u64 {
        let fh = self.alloc_fh();
        let ino = inode.id;
        {
            let mut lens = lock(&self.lens);
            let st = lens.entry(ino).or_default();
            st.open += 1;
            st.meta_len = inode.length;
        }
        let buf = WriteBuffer::new(self.write_buffer, self.budget.clone());
        let file = OpenFile { inode, buf, writable, dirty: false, session: 0, failed: None };
        lock(&self.files).insert(fh, (ino, Arc::new(tokio::sync::Mutex::new(file))));
        fh
    }

    pub fn file(&self, fh: u64) -> Option<FileRef> {
        lock(&self.files).get(&fh).map(|(_, f)| f.clone())
    }

    /// Every open handle of an inode, in handle-number order: whoever locks several handles locks
    /// them in this order, so two such lockers cannot deadlock (a `HashMap`'s own order can differ
    /// between two calls once it has grown).
    pub fn files_of(&self, ino: u64) -> Vec<FileRef> {
        let mut files: Vec<(u64, FileRef)> =
            lock(&self.files).iter().filter(|(_, (i, _))| *i == ino).map(|(fh, (_, f))| (*fh, f.clone())).collect();
        files.sort_unstable_by_key(|(fh, _)| *fh);
        files.into_iter().map(|(_, f)| f).collect()
    }

    /// Every open file handle.
    pub fn all_files(&self) -> Vec<FileRef> {
        lock(&self.files).values().map(|(_, f)| f.clone()).collect()
    }

    /// Forgets a file handle; the inode's local length goes with its last handle. Returns the hold
    /// session the caller must end at meta when this was the last handle of an unlinked inode.
    pub fn release_file(&self, fh: u64) -> Option<u64> {
        let (ino, _) = lock(&self.files).remove(&fh)?;
        let mut lens = lock(&self.lens);
        let st = lens.get_mut(&ino)?;
        st.open = st.open.saturating_sub(1);
        if st.open > 0 {
            return None;
        }
        let st = lens.remove(&ino)?;
        (st.unlinked && st.hold != 0).then_some(st.hold)
    }

    /// Records that the last link of `ino` went (meta removed it, by unlink or by a rename over it),
    /// when it had `meta_len` bytes as meta knew it. Returns whether it is open here: then the caller
    /// asks meta to hold it ([`Self::set_hold`]) until the last release, so its handles keep reading
    /// and writing its chunks; otherwise meta's GC takes it after its delay.
    pub fn unlinked(&self, ino: u64, meta_len: u64) -> bool {
        match lock(&self.lens).get_mut(&ino) {
            Some(st) => {
                st.unlinked = true;
                st.meta_len = st.meta_len.max(meta_len);
                true
            }
            None => false,
        }
    }

    /// Records the hold session of an unlinked inode that is open here.
    pub fn set_hold(&self, ino: u64, session: u64) {
        if let Some(st) = lock(&self.lens).get_mut(&ino) {
            st.hold = session;
        }
    }

    /// Whether `ino` was unlinked while open here (its name is gone; meta queued it for GC).
    pub fn is_unlinked(&self, ino: u64) -> bool {
        lock(&self.lens).get(&ino).is_some_and(|st| st.unlinked)
    }

    /// Records that bytes up to `end` were written (possibly still buffered) through this mount.
    pub fn note_write(&self, ino: u64, end: u64) {
        if let Some(st) = lock(&self.lens).get_mut(&ino) {
            st.local_len = st.local_len.max(end);
        }
    }

    /// Records a length read from meta and returns the size to report: `max(meta, local)`.
    pub fn seen(&self, ino: u64, meta_len: u64) -> u64 {
        match lock(&self.lens).get_mut(&ino) {
            Some(st) => {
                st.meta_len = meta_len;
                meta_len.max(st.local_len)
            }
            None => meta_len,
        }
    }

    /// The highest byte written + 1 through this mount while the file is open (0 if none).
    pub fn local_len(&self, ino: u64) -> u64 {
        lock(&self.lens).get(&ino).map(|st| st.local_len).unwrap_or(0)
    }

    /// The length reads are clamped to: `max(last meta length, local length)`.
    pub fn read_len(&self, ino: u64, fallback: u64) -> u64 {
        lock(&self.lens).get(&ino).map(|st| st.meta_len.max(st.local_len)).unwrap_or(fallback)
    }

    /// Records a truncate to `new_len`.
    pub fn truncated(&self, ino: u64, new_len: u64) {
        if let Some(st) = lock(&self.lens).get_mut(&ino) {
            st.local_len = st.local_len.min(new_len);
            st.meta_len = new_len;
        }
    }

    /// Registers an open directory's listing and returns its fh.
    pub fn open_dir(&self, items: Vec<DirItem>) -> u64 {
        let fh = self.alloc_fh();
        lock(&self.dirs).insert(fh, Arc::new(items));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<DirItem>>> {
        lock(&self.dirs).get(&fh).cloned()
    }

    pub fn release_dir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_inode(id: u64, length: u64) -> proto::Inode {
        proto::Inode {
            id,
            inode_type: proto::InodeType::File as i32,
            length,
            layout: Some(proto::Layout { chunk_size: 4096, stripe: 1, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn local_length_tracks_open_handles() {
        let h = Handles::new();
        // Not open: meta's length is the truth.
        assert_eq!(h.seen(5, 10), 10);
        h.note_write(5, 1000);
        assert_eq!(h.local_len(5), 0);

        let a = h.open_file(file_inode(5, 10), true);
        let b = h.open_file(file_inode(5, 10), false);
        assert_ne!(a, b);
        assert_eq!(h.files_of(5).len(), 2);
        h.note_write(5, 500);
        h.note_write(5, 300);
        assert_eq!(h.local_len(5), 500);
        assert_eq!(h.seen(5, 10), 500);
        assert_eq!(h.read_len(5, 0), 500);
        // Meta caught up and beyond (another client extended it).
        assert_eq!(h.seen(5, 800), 800);
        // Truncate lowers the local length too.
        h.truncated(5, 100);
        assert_eq!(h.local_len(5), 100);
        assert_eq!(h.read_len(5, 0), 100);
        h.release_file(a);
        assert_eq!(h.local_len(5), 100);
        h.release_file(b);
        assert_eq!(h.local_len(5), 0);
        assert!(h.file(a).is_none() && h.files_of(5).is_empty());
        assert_eq!(h.read_len(5, 42), 42);
        // Releasing twice is harmless.
        assert_eq!(h.release_file(b), None);
    }

    #[test]
    fn unlinked_while_open() {
        let h = Handles::new();
        assert!(!h.unlinked(9, 10), "not open here");
        let a = h.open_file(file_inode(9, 10), true);
        let b = h.open_file(file_inode(9, 10), true);
        h.note_write(9, 5000);
        assert!(h.unlinked(9, 10) && h.is_unlinked(9));
        h.set_hold(9, 77);
        assert_eq!(h.release_file(a), None, "still open through b");
        h.note_write(9, 7000);
        assert_eq!(h.release_file(b), Some(77), "the last close ends the hold");
        assert!(!h.is_unlinked(9));
        // Open again (a new file that reuses nothing): a plain release.
        let c = h.open_file(file_inode(9, 10), true);
        assert_eq!(h.release_file(c), None);
        // Unlinked without a hold (meta refused it): nothing to end.
        let d = h.open_file(file_inode(9, 10), false);
        assert!(h.unlinked(9, 9000));
        assert_eq!(h.release_file(d), None);
    }

    #[test]
    fn files_of_lists_an_inodes_handles_in_handle_order() {
        // Lockers of several handles rely on one order; a HashMap's changes as it grows.
        let h = Handles::new();
        let mut mine = Vec::new();
        for i in 0..200 {
            let fh = h.open_file(file_inode(if i % 3 == 0 { 7 } else { 8 }, 0), true);
            if i % 3 == 0 {
                mine.push(fh);
            }
        }
        h.release_file(mine.remove(5));
        let got: Vec<*const _> = h.files_of(7).iter().map(Arc::as_ptr).collect();
        let want: Vec<*const _> = mine.iter().map(|&fh| Arc::as_ptr(&h.file(fh).unwrap())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn dir_handles() {
        let h = Handles::new();
        let items = vec![DirItem { ino: 1, kind: FileType::Directory, name: ".".into() }];
        let fh = h.open_dir(items.clone());
        assert_eq!(*h.dir(fh).unwrap(), items);
        h.release_dir(fh);
        assert!(h.dir(fh).is_none());
    }
}
