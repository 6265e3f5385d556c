//! Raw system calls the FUSE tests make (renameat2, xattrs, utimensat, fallocate, statvfs) with
//! `io::Result` answers, and [`as_user`]: running a list of file-system calls as another user in a
//! child process, for the permission cases (the kernel checks the caller's real credentials, so a
//! thread cannot just switch).
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("test paths have no NUL")
}

pub fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    check(unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) })
}

pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> std::io::Result<()> {
    let (p, n) = (cstr(p), CString::new(name).expect("no NUL"));
    // SAFETY: valid C strings; `value` is readable for `value.len()` bytes.
    check(unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
}

/// getxattr with a `size`-byte buffer (0: the size probe, returning an empty vector of that length).
pub fn getxattr(p: &Path, name: &str, size: usize) -> std::io::Result<Vec<u8>> {
    let (p, n) = (cstr(p), CString::new(name).expect("no NUL"));
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 { std::ptr::null_mut() } else { buf.as_mut_ptr().cast() };
    // SAFETY: valid C strings; `buf` is writable for `size` bytes (or null with size 0).
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.resize(r as usize, 0);
    Ok(buf)
}

pub fn getxattr_all(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let n = getxattr(p, name, 0)?.len();
    getxattr(p, name, n.max(1))
}

/// The sorted names of `p`'s extended attributes.
pub fn listxattr(p: &Path) -> std::io::Result<Vec<String>> {
    let p = cstr(p);
    // SAFETY: valid C string; a null buffer with size 0 asks for the size.
    let n = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; n as usize + 1];
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    let mut names: Vec<String> =
        buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    names.sort();
    Ok(names)
}

pub fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    let (p, n) = (cstr(p), CString::new(name).expect("no NUL"));
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) })
}

/// A timestamp for [`utimens`]: seconds and nanoseconds, or `libc::UTIME_NOW`/`UTIME_OMIT` as nsec.
pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec, tv_nsec: nsec }
}

/// utimensat(2) on `p` (following symlinks) with `[atime, mtime]`.
pub fn utimens(p: &Path, times: [libc::timespec; 2]) -> std::io::Result<()> {
    let p = cstr(p);
    // SAFETY: valid C string; `times` points at two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
}

/// fallocate(2) on an open file.
pub fn fallocate(f: &std::fs::File, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd.
    check(unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) })
}

/// open(2) with raw flags and mode; the caller closes the fd (see [`close`]).
pub fn open(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<libc::c_int> {
    let p = cstr(p);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), flags, mode) };
    if fd < 0 { Err(std::io::Error::last_os_error()) } else { Ok(fd) }
}

pub fn close(fd: libc::c_int) {
    // SAFETY: closes an fd the caller owns.
    unsafe { libc::close(fd) };
}

/// statvfs(2): (block size, blocks, free blocks, available blocks, files, free files, name max).
pub fn statvfs(p: &Path) -> std::io::Result<libc::statvfs> {
    let p = cstr(p);
    // SAFETY: valid C string; `st` is written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// The environment variable carrying the script of an [`as_user`] child.
pub const AS_USER_ENV: &str = "T3FS_TEST_AS_USER_SCRIPT";

/// Runs `script` (one file-system call a line, see [`run_op`]) as `uid`/`gid` with supplementary
/// `groups`, in a child process: this test binary run again with only the test named `entry`
/// (which must call [`as_user_child`] first thing). Returns each line's result: 0 or the errno.
pub fn as_user(entry: &str, uid: u32, gid: u32, groups: &[u32], script: &[String]) -> Vec<i32> {
    let groups = groups.to_vec();
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"]).env(AS_USER_ENV, script.join("\n"));
    cmd.current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (setgroups, setresgid, setresuid) on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("running the test binary as another user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // (The first result shares its line with libtest's "test NAME ... ".)
    let results: Vec<i32> = stdout
        .split("T3FS-RESULT ")
        .skip(1)
        .map(|r| r.lines().next().unwrap_or("").trim().parse().expect("numeric result"))
        .collect();
    assert_eq!(
        results.len(),
        script.len(),
        "the child ran {} of {} ops: {out:?}\n{stdout}\n{}",
        results.len(),
        script.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

/// In an [`as_user`] child (the script variable set): runs the script, printing one
/// `T3FS-RESULT <errno or 0>` line per op, and returns true. Returns false in a normal test run.
pub fn as_user_child() -> bool {
    let Ok(script) = std::env::var(AS_USER_ENV) else { return false };
    for line in script.lines() {
        let r = match run_op(line) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        };
        println!("T3FS-RESULT {r}");
    }
    true
}

/// One op of an [`as_user`] script, words separated by spaces: `open PATH FLAGS MODE` (flags:
/// `r`, `w`, `rw`, `cx` = O_CREAT|O_EXCL|O_WRONLY, `t` = O_WRONLY|O_TRUNC), `mkdir PATH MODE`,
/// `unlink PATH`, `rmdir PATH`, `rename FROM TO`, `link FROM TO`, `symlink TARGET PATH`,
/// `chmod PATH MODE` (octal), `chown PATH UID GID` (-1: unchanged), `truncate PATH LEN`,
/// `utime_now PATH` (both UTIME_NOW), `utime_set PATH SECS`, `stat PATH`, `readdir PATH`,
/// `setxattr PATH NAME`, `getxattr PATH NAME`, `access PATH MASK` (r/w/x letters).
pub fn run_op(line: &str) -> std::io::Result<()> {
    let w: Vec<&str> = line.split(' ').collect();
    let p = |i: usize| Path::new(w[i]);
    let oct = |i: usize| u32::from_str_radix(w[i], 8).expect("octal mode");
    match w[0] {
        "open" => {
            let flags = match w[2] {
                "r" => libc::O_RDONLY,
                "w" => libc::O_WRONLY,
                "rw" => libc::O_RDWR,
                "cx" => libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                "t" => libc::O_WRONLY | libc::O_TRUNC,
                f => panic!("open flags {f}"),
            };
            open(p(1), flags, oct(3)).map(close)
        }
        "mkdir" => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(oct(2)).create(p(1))
        }
        "unlink" => std::fs::remove_file(p(1)),
        "rmdir" => std::fs::remove_dir(p(1)),
        "rename" => std::fs::rename(p(1), p(2)),
        "link" => std::fs::hard_link(p(1), p(2)),
        "symlink" => std::os::unix::fs::symlink(p(1), p(2)),
        "chmod" => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p(1), std::fs::Permissions::from_mode(oct(2)))
        }
        "chown" => {
            let id = |s: &str| s.parse::<i64>().expect("id") as u32;
            let c = cstr(p(1));
            // SAFETY: valid C string.
            check(unsafe { libc::chown(c.as_ptr(), id(w[2]), id(w[3])) })
        }
        "truncate" => {
            let c = cstr(p(1));
            // SAFETY: valid C string.
            check(unsafe { libc::truncate(c.as_ptr(), w[2].parse().expect("length")) })
        }
        "utime_now" => utimens(p(1), [ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_NOW)]),
        "utime_set" => {
            let s = w[2].parse().expect("seconds");
            utimens(p(1), [ts(s, 0), ts(s, 0)])
        }
        "stat" => std::fs::symlink_metadata(p(1)).map(drop),
        "readdir" => std::fs::read_dir(p(1)).and_then(|mut d| d.try_for_each(|e| e.map(drop))),
        "setxattr" => setxattr(p(1), w[2], b"v", 0),
        "getxattr" => getxattr(p(1), w[2], 0).map(drop),
        "access" => {
            let mask = w[2].chars().fold(0, |m, c| {
                m | match c {
                    'r' => libc::R_OK,
                    'w' => libc::W_OK,
                    'x' => libc::X_OK,
                    _ => panic!("access mask {c}"),
                }
            });
            let c = cstr(p(1));
            // SAFETY: valid C string.
            check(unsafe { libc::access(c.as_ptr(), mask) })
        }
        op => panic!("unknown op {op}"),
    }
}
