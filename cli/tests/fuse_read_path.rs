//! The FUSE read path through a real mount over a real in-process cluster: readdirplus (listings
//! with attributes), O_DIRECT handles (no page cache, no read-ahead, writes go through at once),
//! sequential read-ahead (bytes right, served from prefetched data) and random reads, and file
//! locks between open files of one mount (docs/fuse.md "Locks"; across mounts: fuse_locks.rs).
//!
//! Metrics are process-wide and only grow, so checks compare before/after counts of this test's
//! own operations. Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use t3fs_client::UserInfo;
use t3fs_fuse::metrics::{Op, metrics};

mod support;
use support::{Env, pattern};

fn ops(op: &'static str) -> u64 {
    metrics().ops.get_or_create(&Op { op }).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdirplus_lists_entries_with_their_attributes() {
    let Some(env) = Env::start().await else { return };
    const N: usize = 300;
    env.fs(|m| {
        let d = m.join("d");
        std::fs::create_dir(&d).unwrap();
        for i in 0..N {
            let mut f = File::create(d.join(format!("f{i:04}"))).unwrap();
            f.write_all(&vec![7u8; i]).unwrap();
        }
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("f0001", d.join("link")).unwrap();
    })
    .await;
    let before = ops("readdirplus");
    let listed = env
        .fs(|m| {
            // What `ls -l` does: list, then stat every entry.
            let mut out = Vec::new();
            for e in std::fs::read_dir(m.join("d")).unwrap() {
                let e = e.unwrap();
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                let kind = e.file_type().unwrap();
                out.push((e.file_name().into_string().unwrap(), md.len(), kind.is_dir(), kind.is_symlink()));
            }
            out.sort();
            out
        })
        .await;
    assert!(ops("readdirplus") > before, "the kernel did not use readdirplus");
    assert_eq!(listed.len(), N + 2);
    for (i, (name, len, dir, link)) in listed.iter().take(N).enumerate() {
        assert_eq!((name.as_str(), *len, *dir, *link), (format!("f{i:04}").as_str(), i as u64, false, false));
    }
    assert_eq!((listed[N].0.as_str(), listed[N].3), ("link", true));
    assert_eq!((listed[N + 1].0.as_str(), listed[N + 1].2), ("sub", true));
    // A file removed by another client after opendir: the stream still completes without an
    // error (readdirplus leaves the entry out; a plain readdir page may still name it).
    let mnt = env.mnt.clone();
    let rd = support::blocking(move || std::fs::read_dir(mnt.join("d")).unwrap()).await;
    let dir = env.inode("/d").await;
    env.client.remove(&UserInfo::root(), t3fs_common::InodeId(dir.id), b"f0150", false).await.unwrap();
    let names = support::blocking(move || rd.map(|e| e.unwrap().file_name()).collect::<Vec<_>>()).await;
    assert!(names.len() == N + 1 || names.len() == N + 2, "{}", names.len());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn o_direct_bypasses_caches_and_writes_through() {
    let Some(env) = Env::start().await else { return };
    let data = pattern(1 << 20, 5);
    let d2 = data.clone();
    env.fs(move |m| std::fs::write(m.join("x.bin"), &d2).unwrap()).await;
    let inode = env.inode("/x.bin").await;
    let bypass = metrics().prefetch_bypass.get();

    // Open with O_DIRECT and read 64 KiB; another client overwrites those bytes; the same handle
    // reads the new bytes at once (no page cache, nothing prefetched).
    let mnt = env.mnt.clone();
    let f = support::blocking(move || {
        let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(mnt.join("x.bin")).unwrap();
        let mut buf = vec![0u8; 65536];
        f.read_exact_at(&mut buf, 0).unwrap();
        (f, buf)
    })
    .await;
    let (f, first) = f;
    assert_eq!(first, data[..65536]);
    env.client.write(&inode, 0, &[0xAB; 65536]).await.unwrap();
    let (f, again) = support::blocking(move || {
        let mut buf = vec![0u8; 65536];
        f.read_exact_at(&mut buf, 0).unwrap();
        (f, buf)
    })
    .await;
    assert!(again.iter().all(|&b| b == 0xAB), "O_DIRECT read returned cached bytes");
    assert!(metrics().prefetch_bypass.get() >= bypass + 2, "O_DIRECT reads must bypass read-ahead");

    // An O_DIRECT write is on storage when write(2) returns (before close or fsync).
    let f = support::blocking(move || {
        f.write_all_at(&[0x5A; 4096], 131_072).unwrap();
        f
    })
    .await;
    let got = env.client.read(&inode, 131_072, 4096).await.unwrap();
    assert!(got.iter().all(|&b| b == 0x5A), "O_DIRECT write was not written through");
    // Unaligned sizes and offsets work too (FUSE direct I/O has no alignment rule).
    let (f, odd) = support::blocking(move || {
        let mut buf = vec![0u8; 1000];
        f.read_exact_at(&mut buf, 200_001).unwrap();
        (f, buf)
    })
    .await;
    assert_eq!(odd, data[200_001..201_001]);
    drop(f);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequential_reads_are_prefetched_and_random_reads_are_right() {
    let Some(env) = Env::start().await else { return };
    let data = pattern(24 << 20, 9);
    let d2 = data.clone();
    env.fs(move |m| std::fs::write(m.join("big.bin"), &d2).unwrap()).await;
    let hits = metrics().prefetch_hits.get();
    let fetched = metrics().prefetch_bytes.get();
    let d2 = data.clone();
    env.fs(move |m| {
        let mut got = Vec::new();
        File::open(m.join("big.bin")).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == d2, "sequential read-back differs");
        // Random reads on a fresh handle.
        let f = File::open(m.join("big.bin")).unwrap();
        let mut rng = t3fs_common::layout::SplitMix64::new(3);
        for _ in 0..200 {
            let off = (rng.next_u64() % (d2.len() as u64 - 4096)) as usize;
            let mut buf = [0u8; 4096];
            f.read_exact_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf[..], d2[off..off + 4096], "random read at {off}");
        }
    })
    .await;
    assert!(metrics().prefetch_hits.get() > hits, "no read was served from prefetched data");
    assert!(metrics().prefetch_bytes.get() > fetched);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_between_open_files_of_one_mount() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let p = m.join("lock");
        std::fs::write(&p, b"x").unwrap();
        let a = File::open(&p).unwrap();
        let b = File::open(&p).unwrap();
        // flock: per open file description, so two opens conflict (answered through meta, no ENOSYS).
        // SAFETY: flock on valid descriptors.
        assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let r = unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EWOULDBLOCK)));
        assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_UN) }, 0);
        assert_eq!(unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        // fcntl (POSIX) locks succeed too, once the flock is gone (on t3fs a flock and an fcntl
        // lock of different owners conflict, as on NFS: docs/fuse.md "Locks").
        assert_eq!(unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_UN) }, 0);
        let w = OpenOptions::new().write(true).open(&p).unwrap();
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        // SAFETY: a valid descriptor and a valid flock struct.
        assert_eq!(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETLK, &fl) }, 0, "{}", std::io::Error::last_os_error());
    })
    .await;
    env.stop().await;
}
