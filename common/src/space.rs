//! Free space of a local file system, and the reserve the daemons keep on it.
//!
//! Storage (`reserved_space_bytes`, its chunk engines) and meta's embedded store each keep a reserve
//! of free space that new data may not use, so that removals, recovery and the metadata stores
//! themselves (fjall poisons a database whose journal write failed) always find room when a disk
//! fills up (docs/storage.md "Full disks").

use std::path::Path;

/// The reserve when none is configured: this fraction of the file system's size (in percent) ...
pub const DEFAULT_RESERVE_PERCENT: u64 = 2;
/// ... but at least this many bytes.
pub const DEFAULT_MIN_RESERVE: u64 = 256 << 20;

/// The reserve of a file system of `total` bytes: `configured`, or by default
/// [`DEFAULT_RESERVE_PERCENT`] of it but at least [`DEFAULT_MIN_RESERVE`].
pub fn reserve_of(configured: Option<u64>, total: u64) -> u64 {
    configured.unwrap_or_else(|| (total / 100 * DEFAULT_RESERVE_PERCENT).max(DEFAULT_MIN_RESERVE))
}

/// Free (available to unprivileged users) and total bytes of the file system holding `path`
/// (`statvfs`), or `None` when it cannot be read.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and `st` is writable memory of the right type, which
    // statvfs fills in when it returns 0 (only then is it read).
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let (frsize, avail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Some((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_reserve_is_two_percent_but_at_least_256_mib() {
        assert_eq!(reserve_of(None, 1 << 30), DEFAULT_MIN_RESERVE);
        assert_eq!(reserve_of(None, 100 << 30), 2 << 30);
        assert_eq!(reserve_of(Some(0), 100 << 30), 0);
        assert_eq!(reserve_of(Some(5 << 20), 1 << 30), 5 << 20);
    }

    #[test]
    fn disk_space_of_a_real_directory() {
        let dir = std::env::temp_dir();
        let (free, total) = disk_space(&dir).expect("statvfs of the temp dir");
        assert!(total > 0 && free <= total, "free {free} total {total}");
        assert_eq!(disk_space(&dir.join("t3fs-no-such-directory")), None);
        assert_eq!(disk_space(Path::new("nul\0byte")), None);
    }
}
