//! Aligned, zero-initialised byte buffers for O_DIRECT I/O, and the probe that decides whether a
//! directory's file system accepts O_DIRECT.
//!
//! O_DIRECT needs the buffer address, the file offset and the length all multiples of the logical block
//! size; [`ALIGN`] (4 KiB) covers every common device. [`AlignedBuf`] is the one place with `unsafe` on the
//! data path: a heap allocation with a 4 KiB-aligned [`Layout`], always fully initialised (zeroed), freed
//! with the same layout. It converts into [`bytes::Bytes`] without a copy ([`AlignedBuf::into_bytes`]).
use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;

/// Alignment of O_DIRECT buffers, offsets and lengths.
pub const ALIGN: usize = 4096;

/// `n` rounded up to a multiple of [`ALIGN`].
pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A zeroed byte buffer whose address is a multiple of [`ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer exclusively owns its allocation (like a `Vec<u8>`); nothing else aliases it.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` may be 0).
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            // A dangling but aligned pointer, never dereferenced for a non-empty slice nor freed.
            let ptr = NonNull::new(ALIGN as *mut u8).expect("ALIGN is not 0");
            return Self { ptr, len };
        }
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size (len > 0).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, ALIGN).expect("buffer sizes are far below isize::MAX")
    }

    /// Into `Bytes` without copying (the buffer is freed when the last `Bytes` clone drops).
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with exactly this layout, and freed only here.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed, then only written through `&mut [u8]`)
        // bytes owned by `self` for its lifetime; for len 0 a dangling aligned pointer is allowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: O_DIRECT opens fail with EINVAL on this thread, as on a file system that refuses it.
    pub(crate) static REFUSE_DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Opens `path` for reading and writing, with O_DIRECT when `direct`.
pub fn open_rw(path: &Path, direct: bool, create: bool) -> std::io::Result<File> {
    #[cfg(test)]
    if direct && REFUSE_DIRECT.with(|r| r.get()) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(create).truncate(false);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Whether files in `dir` accept O_DIRECT: opens a probe file with O_DIRECT and writes and reads one
/// aligned block (some file systems accept the flag at open and refuse the I/O). EINVAL anywhere means
/// no; other errors are returned.
pub fn probe_direct(dir: &Path) -> std::io::Result<bool> {
    let p = dir.join(".direct-probe");
    let res = (|| {
        let f = match open_rw(&p, true, true) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            r => r?,
        };
        let mut buf = AlignedBuf::zeroed(ALIGN);
        let io = f.write_all_at(&buf, 0).and_then(|_| f.read_exact_at(&mut buf, 0));
        match io {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
            Ok(()) => Ok(true),
        }
    })();
    let _ = std::fs::remove_file(&p);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_become_bytes() {
        for len in [0, 1, 4096, 65536 + 4096] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.iter().all(|x| *x == 0));
            if len > 0 {
                b[len - 1] = 7;
            }
            let bytes = b.into_bytes();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes.last().copied(), (len > 0).then_some(7));
        }
        assert_eq!((align_up(0), align_up(1), align_up(4096), align_up(4097)), (0, 4096, 4096, 8192));
    }

    #[test]
    fn probe_answers_without_leaving_files() {
        let d = tempfile::tempdir().unwrap();
        // ext4/xfs say yes, tmpfs (before Linux 6.6) no; either way the probe file is gone.
        let _ = probe_direct(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
