//! POSIX semantics of file data through a real FUSE mount (one in-process cluster and mount per
//! test): open flags (O_CREAT|O_EXCL, O_TRUNC, O_APPEND, access modes and EBADF), truncate and
//! extend with zero fill, holes, `SEEK_DATA`/`SEEK_HOLE`, fallocate (default mode, KEEP_SIZE,
//! punch hole, zero range, unsupported modes), unlink of
//! an open file, and close-to-open consistency between two mounts of one cluster. Each claim in
//! docs/semantics.md about these names the test here that checks it.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

mod support;
use support::sys::fallocate;
use support::{Env, errno, pattern};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_flags_and_access_modes() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let p = m.join("f");
        // O_CREAT|O_EXCL: creates once, then EEXIST; the mode is the caller's less its umask.
        let f = OpenOptions::new().write(true).create_new(true).mode(0o640).open(&p).unwrap();
        drop(f);
        // SAFETY: umask only reads and sets this process's mask; set back at once.
        let umask = unsafe {
            let u = libc::umask(0o022);
            libc::umask(u);
            u
        };
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640 & !umask);
        assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(&p)), libc::EEXIST);
        // O_CREAT without O_EXCL opens the existing file, keeping its bytes.
        std::fs::write(&p, b"0123456789").unwrap();
        drop(OpenOptions::new().write(true).create(true).truncate(false).open(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
        // O_TRUNC empties it (through open and through create).
        drop(OpenOptions::new().write(true).truncate(true).open(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        std::fs::write(&p, b"abc").unwrap();
        drop(OpenOptions::new().write(true).create(true).truncate(true).open(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        // O_APPEND: every write lands at the end, wherever the offset was moved.
        std::fs::write(&p, b"head").unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"-1").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"-2").unwrap();
        drop(f);
        // Another handle appending after the first closed sees the new end.
        let mut g = OpenOptions::new().append(true).open(&p).unwrap();
        g.write_all(b"-3").unwrap();
        drop(g);
        assert_eq!(std::fs::read(&p).unwrap(), b"head-1-2-3");
        // Access modes: a read-only fd cannot write, a write-only fd cannot read (EBADF).
        let mut r = File::open(&p).unwrap();
        assert_eq!(errno(r.write(b"x")), libc::EBADF);
        assert_eq!(errno(r.write_at(b"x", 0)), libc::EBADF);
        let mut w = OpenOptions::new().write(true).open(&p).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(errno(w.read(&mut buf)), libc::EBADF);
        // ftruncate on a read-only fd: EINVAL (the kernel's answer for a fd not open for writing).
        assert_eq!(errno(r.set_len(0)), libc::EINVAL);
        drop((r, w));
        assert_eq!(std::fs::read(&p).unwrap(), b"head-1-2-3", "failed calls changed nothing");
        // O_RDWR reads and writes on one handle.
        let mut rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        rw.write_all(b"HE").unwrap();
        let mut rest = String::new();
        rw.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "ad-1-2-3");
        drop(rw);
        // Errors of open: ENOENT, ENOTDIR (a file as a directory), EISDIR (a directory for write).
        assert_eq!(errno(File::open(m.join("missing"))), libc::ENOENT);
        assert_eq!(errno(File::create(m.join("missing/x"))), libc::ENOENT);
        assert_eq!(errno(File::open(m.join("f/x"))), libc::ENOTDIR);
        assert_eq!(errno(File::create(m.join("f/x"))), libc::ENOTDIR);
        std::fs::create_dir(m.join("d")).unwrap();
        assert_eq!(errno(OpenOptions::new().write(true).open(m.join("d"))), libc::EISDIR);
        assert_eq!(errno(OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(&p)), libc::ENOTDIR);
        let long = "n".repeat(256);
        assert_eq!(errno(File::create(m.join(&long))), libc::ENAMETOOLONG);
        assert_eq!(errno(File::open(m.join(&long))), libc::ENAMETOOLONG);
        // A name of exactly 255 bytes is fine.
        std::fs::write(m.join("n".repeat(255)), b"ok").unwrap();
        assert_eq!(std::fs::read(m.join("n".repeat(255))).unwrap(), b"ok");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_extend_and_holes() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await as u64;
    env.fs(move |m| {
        let p = m.join("t");
        std::fs::write(&p, b"abcdef").unwrap();
        // truncate(2) by path, down and up: the regrown bytes are zeros.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(3).unwrap();
        f.set_len(8).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc\0\0\0\0\0");
        // Extend across several chunks: size exact, every new byte zero.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(2 * cs + 17).unwrap();
        drop(f);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len() as u64, 2 * cs + 17);
        assert!(back[3..].iter().all(|&b| b == 0), "extension must read zeros");
        // truncate of a directory: EISDIR; a negative length: EINVAL.
        std::fs::create_dir(m.join("d")).unwrap();
        let c = support::sys::cstr(&m.join("d"));
        // SAFETY: valid C string.
        assert_eq!(
            support::sys::check(unsafe { libc::truncate(c.as_ptr(), 0) }).unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
        let c = support::sys::cstr(&p);
        // SAFETY: valid C string.
        assert_eq!(
            support::sys::check(unsafe { libc::truncate(c.as_ptr(), -1) }).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );

        // Holes: a write far past the end leaves zeros between; reads past the end return nothing.
        let h = m.join("holes");
        let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&h).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        let far = 3 * cs + cs / 2;
        f.write_all_at(b"end", far).unwrap();
        assert_eq!(f.metadata().unwrap().len(), far + 3);
        let mut buf = vec![0xffu8; 100];
        f.read_exact_at(&mut buf, cs - 50).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "a hole reads zeros (even before the writes are flushed)");
        let mut tail = [0u8; 16];
        assert_eq!(f.read_at(&mut tail, far + 3).unwrap(), 0, "read at EOF returns 0 bytes");
        assert_eq!(f.read_at(&mut tail, far + 1000).unwrap(), 0, "read past EOF returns 0 bytes");
        assert_eq!(f.read_at(&mut tail, far).unwrap(), 3, "a read across EOF is short");
        drop(f);
        let all = std::fs::read(&h).unwrap();
        assert_eq!(all.len() as u64, far + 3);
        assert_eq!(&all[..5], b"start");
        assert_eq!(&all[far as usize..], b"end");
        assert!(all[5..far as usize].iter().all(|&b| b == 0), "the hole reads zeros after close");
        // A truncate into the hole region and a write beyond: old bytes never come back.
        let f = OpenOptions::new().write(true).open(&h).unwrap();
        f.set_len(2).unwrap();
        f.write_all_at(b"Z", cs + 1).unwrap();
        drop(f);
        let all = std::fs::read(&h).unwrap();
        assert_eq!(all.len() as u64, cs + 2);
        assert_eq!(&all[..2], b"st");
        assert!(all[2..cs as usize + 1].iter().all(|&b| b == 0));
        assert_eq!(all[cs as usize + 1], b'Z');
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn punch_hole_and_zero_range() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await as u64;
    let len = 5 * cs + 100;
    let mut model = pattern(len as usize, 7);
    let expect = model.clone();
    env.fs(move |m| std::fs::write(m.join("holes"), expect).unwrap()).await;
    let inode = env.inode("/holes").await;
    let mtime = inode.mtime_ns;
    let zero = |model: &mut Vec<u8>, from: u64, to: u64| model[from as usize..to as usize].fill(0);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

    // Over two whole chunks and a part of each neighbour; a buffered write inside the hole is older
    // than the punch, so it reads as zeros too.
    zero(&mut model, cs / 2, 3 * cs + 10);
    let want = model.clone();
    env.fs(move |m| {
        let f = OpenOptions::new().read(true).write(true).open(m.join("holes")).unwrap();
        f.write_all_at(b"buffered", 2 * cs).unwrap();
        fallocate(&f, punch, cs / 2, 5 * cs / 2 + 10).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len, "a punch keeps the size");
        let mut got = vec![0u8; len as usize];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == want, "the hole reads as zeros through the handle");
    })
    .await;
    for index in [1, 2] {
        assert!(env.chunk_replicas(&inode, index).await.iter().all(Option::is_none), "chunk {index} is freed");
    }
    assert!(env.chunk_replicas(&inode, 0).await.iter().all(Option::is_some), "a partly punched chunk stays");
    assert!(env.inode("/holes").await.mtime_ns > mtime, "a punch sets mtime");

    // Past the end a punch does nothing; zero range with KEEP_SIZE zeroes up to the end only;
    // without it, the file grows to the range's end.
    zero(&mut model, 5 * cs, len);
    model.resize((len + cs) as usize, 0);
    let want = model.clone();
    env.fs(move |m| {
        let f = OpenOptions::new().read(true).write(true).open(m.join("holes")).unwrap();
        fallocate(&f, punch, len + 10, cs).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len);
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, 5 * cs, 2 * cs).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len, "KEEP_SIZE keeps the size");
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, len, cs).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len + cs, "zero range grows the file");
        drop(f);
        // A fresh open reads what the daemon serves.
        assert!(std::fs::read(m.join("holes")).unwrap() == want);
    })
    .await;

    // A hole over hundreds of chunks of a sparse file: storage lists what to remove.
    env.fs(move |m| {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("sparse")).unwrap();
        f.write_all_at(b"first", 0).unwrap();
        f.write_all_at(b"middle", 300 * cs).unwrap();
        f.write_all_at(b"last", 600 * cs).unwrap();
        fallocate(&f, punch, 1, 600 * cs - 1).unwrap();
        let mut got = vec![9u8; 5];
        f.read_exact_at(&mut got, 600 * cs - 1).unwrap();
        assert_eq!(&got, b"\0last");
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(&got, b"f\0\0\0\0");
    })
    .await;
    let sparse = env.inode("/sparse").await;
    assert!(env.chunk_replicas(&sparse, 300).await.iter().all(Option::is_none), "the middle chunk is freed");
    assert_eq!(env.chunks_of(sparse.id).await.len(), 6, "chunks 0 and 600 are left, 3 replicas each");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seek_data_and_seek_hole() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await as i64;
    env.fs(move |m| {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("seek")).unwrap();
        f.write_all_at(&[1u8; 100], 0).unwrap();
        f.write_all_at(&vec![3u8; cs as usize], 3 * cs as u64).unwrap();
        f.write_all_at(&[5u8; 10], 5 * cs as u64 + 10).unwrap();
        f.set_len(8 * cs as u64).unwrap();
        f.sync_all().unwrap();
        // Still in this handle's buffer: data all the same.
        f.write_all_at(&[7u8; 50], 7 * cs as u64).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let seek = |off: i64, whence: i32| {
            // SAFETY: lseek on a descriptor this closure's caller keeps open.
            let r = unsafe { libc::lseek(fd, off, whence) };
            if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap()) } else { Ok(r) }
        };
        let (data, hole) = (libc::SEEK_DATA, libc::SEEK_HOLE);
        assert_eq!(seek(0, data), Ok(0));
        assert_eq!(seek(0, hole), Ok(100), "chunk 0 holds 100 bytes");
        assert_eq!(seek(100, data), Ok(3 * cs));
        assert_eq!(seek(3 * cs + 5, data), Ok(3 * cs + 5));
        assert_eq!(seek(3 * cs, hole), Ok(4 * cs));
        assert_eq!(seek(4 * cs, data), Ok(5 * cs), "a chunk's data starts at the chunk");
        assert_eq!(seek(5 * cs, hole), Ok(5 * cs + 20));
        assert_eq!(seek(5 * cs + 20, data), Ok(7 * cs), "the handle's buffered write is data");
        assert_eq!(seek(7 * cs, hole), Ok(7 * cs + 50));
        assert_eq!(seek(7 * cs + 50, data), Err(libc::ENXIO), "only a hole up to the end");
        assert_eq!(seek(7 * cs + 60, hole), Ok(7 * cs + 60));
        assert_eq!(seek(8 * cs, data), Err(libc::ENXIO));
        assert_eq!(seek(8 * cs, hole), Err(libc::ENXIO));
        // A punched chunk becomes a hole.
        fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 3 * cs as u64, cs as u64).unwrap();
        assert_eq!(seek(100, data), Ok(5 * cs));
        // About 1 TB with data only at its two ends: a seek over the middle costs a listing per chain.
        let far = (1i64 << 40) - 10;
        f.set_len(0).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"0123456789", far as u64).unwrap();
        assert_eq!(seek(4, data), Ok(far / cs * cs));
        assert_eq!(seek(4, hole), Ok(4));
        assert_eq!(seek(far, hole), Ok(far + 10));
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fallocate_modes() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await as u64;
    env.fs(move |m| {
        let p = m.join("fa");
        std::fs::write(&p, b"data").unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // Default mode past the end grows the file; the new bytes read as zeros.
        fallocate(&f, 0, 2, cs + 10).unwrap();
        assert_eq!(f.metadata().unwrap().len(), cs + 12);
        // Inside the file it changes nothing.
        fallocate(&f, 0, 0, 3).unwrap();
        assert_eq!(f.metadata().unwrap().len(), cs + 12);
        // KEEP_SIZE never changes the size.
        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 4 * cs).unwrap();
        assert_eq!(f.metadata().unwrap().len(), cs + 12);
        // Punch hole without KEEP_SIZE, collapse and insert range: not supported.
        assert_eq!(errno(fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 2)), libc::EOPNOTSUPP);
        assert_eq!(errno(fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, cs)), libc::EOPNOTSUPP);
        assert_eq!(errno(fallocate(&f, libc::FALLOC_FL_INSERT_RANGE, 0, cs)), libc::EOPNOTSUPP);
        // Bad arguments: EINVAL (the kernel checks these).
        assert_eq!(errno(fallocate(&f, 0, 0, 0)), libc::EINVAL);
        drop(f);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len() as u64, cs + 12);
        assert_eq!(&back[..4], b"data");
        assert!(back[4..].iter().all(|&b| b == 0));
        // A read-only fd: EBADF.
        let r = File::open(&p).unwrap();
        assert_eq!(errno(fallocate(&r, 0, 0, 2 * cs)), libc::EBADF);
        // With buffered writes past the allocated end: the writes win, the size is the max.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"tail", 3 * cs).unwrap();
        fallocate(&f, 0, 0, 2 * cs).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 3 * cs + 4);
        drop(f);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len() as u64, 3 * cs + 4);
        assert_eq!(&back[3 * cs as usize..], b"tail");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlink_of_an_open_file() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let data = pattern(2 * cs + 99, 5);
    env.fs(move |m| {
        let p = m.join("u");
        std::fs::write(&p, &data).unwrap();
        let mut r = File::open(&p).unwrap();
        let mut w = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        // The name is gone at once...
        assert_eq!(errno(File::open(&p)), libc::ENOENT);
        assert_eq!(errno(std::fs::metadata(&p)), libc::ENOENT);
        assert!(std::fs::read_dir(m).unwrap().all(|e| e.unwrap().file_name() != "u"));
        // ...the open handles still read every byte, fstat says nlink 0, writes still land.
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data, "an unlinked open file reads its bytes");
        let st = r.metadata().unwrap();
        assert_eq!(st.nlink(), 0);
        assert_eq!(st.len(), data.len() as u64);
        w.seek(SeekFrom::Start(1)).unwrap();
        w.write_all(b"XY").unwrap();
        w.sync_all().unwrap();
        let mut two = [0u8; 2];
        r.read_exact_at(&mut two, 1).unwrap();
        assert_eq!(&two, b"XY");
        // A new file under the old name is another file.
        std::fs::write(&p, b"new").unwrap();
        r.read_exact_at(&mut two, 1).unwrap();
        assert_eq!(&two, b"XY");
        drop((r, w));
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_to_open_between_two_mounts() {
    // Long attribute and entry TTLs: what B cached must not hide what A closed.
    let ttl = |c: &mut t3fs_fuse::MountConfig| {
        c.attr_timeout_ms = 60_000;
        c.entry_timeout_ms = 60_000;
    };
    let Some(env) = Env::start_with(ttl).await else { return };
    let b = env.mount_another_with("mnt-b", ttl).await;
    let cs = env.chunk_size().await;
    let (a_mnt, b_mnt) = (env.mnt.clone(), b.mnt.clone());
    let data = pattern(3 * cs + 7, 11);
    support::blocking(move || {
        // B has the file cached as empty (a stat, within its attribute TTL)...
        File::create(a_mnt.join("c2o")).unwrap();
        assert_eq!(std::fs::metadata(b_mnt.join("c2o")).unwrap().len(), 0);
        // ...A writes and closes; a reader on B that opens afterwards sees every byte and the length
        // (the open makes B's kernel forget the cached size).
        std::fs::write(a_mnt.join("c2o"), &data).unwrap();
        assert!(std::fs::read(b_mnt.join("c2o")).unwrap() == data, "B sees what A closed");
        // An overwrite and a shrink on A, closed: the next open on B sees them (not its old pages).
        let f = OpenOptions::new().write(true).open(a_mnt.join("c2o")).unwrap();
        f.write_all_at(b"NEW", 5).unwrap();
        f.set_len(cs as u64 + 1).unwrap();
        drop(f);
        let back = std::fs::read(b_mnt.join("c2o")).unwrap();
        assert_eq!(back.len(), cs + 1, "B sees A's truncate after A closed");
        let f = File::open(b_mnt.join("c2o")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), cs as u64 + 1, "fstat after open is fresh too");
        drop(f);
        assert_eq!(&back[5..8], b"NEW");
        // fsync publishes too: a reader on B opening after A's fsync (A still open) sees the data.
        let mut f = OpenOptions::new().write(true).open(a_mnt.join("c2o")).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"SYNCED").unwrap();
        f.sync_all().unwrap();
        let mut head = [0u8; 6];
        File::open(b_mnt.join("c2o")).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(&head, b"SYNCED");
        drop(f);
        // Names: a file A creates is visible on B (a fresh name: no negative entry cached on B).
        std::fs::write(a_mnt.join("fresh"), b"x").unwrap();
        assert_eq!(std::fs::read(b_mnt.join("fresh")).unwrap(), b"x");
    })
    .await;
    b.stop().await;
    env.stop().await;
}
