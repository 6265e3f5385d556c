//! POSIX behaviour of a real FUSE mount over a real in-process cluster (mgmtd, meta, three storage
//! servers, 3-replica chains): one cluster and one mount per test, in a tempdir.
//!
//! Covered: sizes while writes are buffered and after close; `stat` and reads through another handle
//! of a file being written; read-back and overwrite on one handle; truncate down then up (zeros, not
//! old bytes, and the cut chunks gone from every replica); O_TRUNC; O_APPEND; a listing spanning
//! several FUSE readdir pages and several meta pages; ENOTEMPTY, ENOENT, EEXIST, ENAMETOOLONG;
//! chmod; chunks deleted from every replica on unlink (at last close for a file unlinked while
//! open); four threads writing files (and disjoint ranges of one file) at once; a sparse file over
//! many chunks with a hole; fsync on a directory (FUSE fsyncdir); the mount gone after unmount
//! (checked by every test). Rename, links, extended attributes and permissions for other users are
//! in `fuse_links.rs`.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

mod support;
use support::{Env, errno, pattern, wait_chunks_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_while_buffered_and_after_close() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let data = pattern(3 * cs + 123, 1);
    let len = data.len() as u64;
    env.fs(move |m| {
        let p = m.join("a.bin");
        let mut f = File::create(&p).unwrap();
        f.write_all(&data[..1000]).unwrap();
        // Still in the handle's buffer: the size counts it, by path and by handle.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1000, "size includes buffered data");
        assert_eq!(f.metadata().unwrap().len(), 1000);
        f.write_all(&data[1000..]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
        drop(f);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
        assert!(std::fs::read(&p).unwrap() == data, "read-back differs");
    })
    .await;
    // Meta has the length after close.
    assert_eq!(env.inode("/a.bin").await.length, len);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stat_and_read_of_a_file_another_handle_is_writing() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let p = m.join("w.bin");
        let mut w = File::create(&p).unwrap();
        w.write_all(b"hello, ").unwrap();
        let mut r = File::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 7);
        assert_eq!(r.metadata().unwrap().len(), 7);
        // The writer's bytes may still be buffered in its handle; another handle must see them.
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello, ");
        w.write_all(b"world").unwrap();
        assert_eq!(r.metadata().unwrap().len(), 12);
        let mut buf = [0u8; 12];
        r.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello, world");
        drop(r);
        drop(w);
        assert_eq!(std::fs::read(&p).unwrap(), b"hello, world");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrite_and_read_back_on_the_same_handle() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let data = pattern(2 * cs + 5000, 2);
    env.fs(move |m| {
        let p = m.join("o.bin");
        std::fs::write(&p, &data).unwrap();
        let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // Non-contiguous writes, one across a chunk boundary, then reads on the same handle.
        f.seek(SeekFrom::Start(4000)).unwrap();
        f.write_all(b"XYZ").unwrap();
        f.seek(SeekFrom::Start(10)).unwrap();
        f.write_all(b"Q").unwrap();
        f.seek(SeekFrom::Start(cs as u64 - 2)).unwrap();
        f.write_all(b"abcd").unwrap();
        f.seek(SeekFrom::Start(3998)).unwrap();
        let mut buf = [0u8; 7];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, &[data[3998], data[3999], b'X', b'Y', b'Z', data[4003], data[4004]]);
        let mut buf = [0u8; 6];
        f.read_exact_at(&mut buf, cs as u64 - 3).unwrap();
        assert_eq!(&buf, &[data[cs - 3], b'a', b'b', b'c', b'd', data[cs + 2]]);
        drop(f);
        let mut want = data.clone();
        want[4000..4003].copy_from_slice(b"XYZ");
        want[10] = b'Q';
        want[cs - 2..cs + 2].copy_from_slice(b"abcd");
        assert!(std::fs::read(&p).unwrap() == want, "read-back after overwrites differs");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_down_then_up_reads_zeros() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let data = pattern(3 * cs + 100, 3);
    let (down, up) = (cs + cs / 2, 4 * cs);
    {
        let data = data.clone();
        env.fs(move |m| {
            let p = m.join("t.bin");
            std::fs::write(&p, &data).unwrap();
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(down as u64).unwrap();
            assert_eq!(f.metadata().unwrap().len(), down as u64);
            f.set_len(up as u64).unwrap();
            drop(f);
            let back = std::fs::read(&p).unwrap();
            assert_eq!(back.len(), up);
            assert!(back[..down] == data[..down], "bytes below the cut changed");
            assert!(back[down..].iter().all(|&b| b == 0), "the regrown part must read zeros, not old bytes");
            // Truncate with unflushed writes on the handle: the buffer goes out first, then the cut.
            let mut f = OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(b"0123456789").unwrap();
            f.set_len(5).unwrap();
            f.set_len(8).unwrap();
            drop(f);
            assert_eq!(std::fs::read(&p).unwrap(), b"01234\0\0\0");
        })
        .await;
    }
    let inode = env.inode("/t.bin").await;
    assert_eq!(inode.length, 8);
    for i in 1..4 {
        assert_eq!(env.chunk_replicas(&inode, i).await, vec![None; 3], "chunk {i} must be gone after the cut");
    }
    for meta in env.chunk_replicas(&inode, 0).await {
        let meta = meta.expect("chunk 0 on every replica");
        assert_eq!(meta.length, 5, "chunk 0 cut to 5 bytes");
        assert_eq!(meta.crc32c, crc32c::crc32c(b"01234"));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn o_trunc_and_o_append() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let p = m.join("x.txt");
        std::fs::write(&p, b"a long first version").unwrap();
        std::fs::write(&p, b"short").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"short");
        // O_TRUNC through open(2) of an existing file (not create).
        drop(OpenOptions::new().write(true).truncate(true).open(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        std::fs::write(&p, b"short").unwrap();

        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"+one").unwrap();
        f.write_all(b"+two").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"short+one+two");
        // Appends go to the end whatever the handle's position.
        let mut f = OpenOptions::new().read(true).append(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"short+one+two!");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_over_many_readdir_pages() {
    let Some(env) = Env::start().await else { return };
    // > 1024 entries: several meta pages (the client asks for 1024 at a time) and many FUSE
    // readdir calls (a 4 KiB kernel buffer holds about 100 of these names).
    const N: usize = 1100;
    env.fs(|m| {
        let d = m.join("big");
        std::fs::create_dir(&d).unwrap();
        for i in 0..N {
            let name = d.join(format!("entry-{i:05}"));
            if i % 2 == 0 {
                std::fs::create_dir(name).unwrap();
            } else {
                File::create(name).unwrap();
            }
        }
        let mut names: Vec<(String, bool)> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), e.file_type().unwrap().is_dir())
            })
            .collect();
        names.sort();
        let want: Vec<(String, bool)> = (0..N).map(|i| (format!("entry-{i:05}"), i % 2 == 0)).collect();
        assert_eq!(names.len(), N);
        assert!(names == want, "listing differs from what was created");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directories_and_error_codes() {
    let Some(env) = Env::start().await else { return };
    env.fs(|m| {
        let d = m.join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"3").unwrap();
        assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "3");
        assert_eq!(errno(std::fs::remove_dir(&d)), libc::ENOTEMPTY);
        assert_eq!(errno(std::fs::remove_file(&d)), libc::EISDIR);
        assert_eq!(errno(std::fs::remove_dir(d.join("f"))), libc::ENOTDIR);
        assert_eq!(errno(File::open(d.join("f/x"))), libc::ENOTDIR);

        // ENOENT.
        assert_eq!(errno(std::fs::metadata(m.join("nope"))), libc::ENOENT);
        assert_eq!(errno(File::open(m.join("nope"))), libc::ENOENT);
        assert_eq!(errno(std::fs::remove_file(m.join("nope"))), libc::ENOENT);
        assert_eq!(errno(std::fs::remove_dir(m.join("nope"))), libc::ENOENT);
        assert_eq!(errno(File::create(m.join("nope/x"))), libc::ENOENT);

        // EEXIST: mkdir twice, create_new twice, mkdir over a file.
        assert_eq!(errno(std::fs::create_dir(&d)), libc::EEXIST);
        OpenOptions::new().write(true).create_new(true).open(m.join("n")).unwrap();
        assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(m.join("n"))), libc::EEXIST);
        assert_eq!(errno(std::fs::create_dir(m.join("n"))), libc::EEXIST);

        // ENAMETOOLONG (255 bytes is fine).
        assert_eq!(errno(std::fs::write(m.join("x".repeat(256)), b"")), libc::ENAMETOOLONG);
        assert_eq!(errno(std::fs::create_dir(m.join("y".repeat(256)))), libc::ENAMETOOLONG);
        std::fs::write(m.join("z".repeat(255)), b"ok").unwrap();
        assert_eq!(std::fs::read(m.join("z".repeat(255))).unwrap(), b"ok");

        // chmod.
        std::fs::set_permissions(m.join("n"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(std::fs::metadata(m.join("n")).unwrap().mode() & 0o7777, 0o600);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
        let md = std::fs::metadata(&d).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o7777, 0o711);

        // Emptied directories can go.
        std::fs::remove_file(d.join("f")).unwrap();
        std::fs::remove_dir(&d).unwrap();
        assert!(!d.exists());
    })
    .await;
    assert_eq!(env.inode("/n").await.mode & 0o7777, 0o600, "chmod reached meta");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlink_deletes_chunks_on_every_replica() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let data = pattern(3 * cs + 10, 4);
    env.fs(move |m| std::fs::write(m.join("u.bin"), &data).unwrap()).await;
    let inode = env.inode("/u.bin").await;
    for i in 0..4 {
        let reps = env.chunk_replicas(&inode, i).await;
        assert!(reps.iter().all(Option::is_some), "chunk {i} on every replica before unlink: {reps:?}");
    }
    assert_eq!(env.chunks_of(inode.id).await.len(), 4 * 3);
    env.fs(|m| {
        std::fs::remove_file(m.join("u.bin")).unwrap();
        assert_eq!(errno(std::fs::metadata(m.join("u.bin"))), libc::ENOENT);
    })
    .await;
    // Meta's GC removes them after its delay.
    assert_eq!(wait_chunks_gone(&env, inode.id).await, vec![], "no chunk of the unlinked file is left");
    for i in 0..4 {
        assert_eq!(env.chunk_replicas(&inode, i).await, vec![None; 3], "chunk {i} after unlink");
    }

    // Unlinked while open and being written: the handle keeps working, the chunks go at its close.
    let f = env
        .fs(move |m| {
            let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(m.join("open.bin")).unwrap();
            f.write_all(&pattern(3 * cs, 5)).unwrap();
            f.sync_data().unwrap();
            f
        })
        .await;
    let inode = env.inode("/open.bin").await;
    assert!(!env.chunks_of(inode.id).await.is_empty(), "fsync wrote the chunks out");
    let f = env
        .fs(move |m| {
            std::fs::remove_file(m.join("open.bin")).unwrap();
            assert_eq!(errno(std::fs::metadata(m.join("open.bin"))), libc::ENOENT);
            f.write_all_at(b"more", 3 * cs as u64).unwrap();
            let mut buf = [0u8; 8];
            f.read_exact_at(&mut buf, 3 * cs as u64 - 4).unwrap();
            assert_eq!(&buf[..4], &pattern(3 * cs, 5)[3 * cs - 4..]);
            assert_eq!(&buf[4..], b"more");
            f
        })
        .await;
    env.fs(move |_| drop(f)).await;
    // The kernel sends RELEASE after close(2) returns; the release ends the mount's hold, then GC.
    assert_eq!(
        wait_chunks_gone(&env, inode.id).await,
        vec![],
        "chunks of a file unlinked while open go after its last close"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_threads_write_at_once() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let size = 2 * cs + 777;
    env.fs(move |m| {
        // Four files, one per thread, written in odd-sized pieces.
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    let data = pattern(size, 100 + t);
                    let mut f = File::create(m.join(format!("par-{t}"))).unwrap();
                    for piece in data.chunks(50_000 + 1_000 * t as usize) {
                        f.write_all(piece).unwrap();
                    }
                });
            }
        });
        for t in 0..4u64 {
            let back = std::fs::read(m.join(format!("par-{t}"))).unwrap();
            assert!(back == pattern(size, 100 + t), "file par-{t} differs");
        }
        // Four handles of one file, each writing its own quarter (the last quarter first ends the file).
        let shared = m.join("shared");
        File::create(&shared).unwrap();
        let quarter = cs / 2 + 1;
        std::thread::scope(|s| {
            for t in 0..4 {
                let shared = &shared;
                s.spawn(move || {
                    let data = pattern(quarter, 200 + t as u64);
                    let f = OpenOptions::new().write(true).open(shared).unwrap();
                    for (k, piece) in data.chunks(10_000).enumerate() {
                        f.write_all_at(piece, (t * quarter + k * 10_000) as u64).unwrap();
                    }
                });
            }
        });
        let back = std::fs::read(&shared).unwrap();
        assert_eq!(back.len(), 4 * quarter);
        for t in 0..4 {
            assert!(back[t * quarter..(t + 1) * quarter] == pattern(quarter, 200 + t as u64), "quarter {t} differs");
        }
    })
    .await;
    assert_eq!(env.inode("/shared").await.length, 4 * (cs as u64 / 2 + 1));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sparse_file_over_many_chunks() {
    let Some(env) = Env::start().await else { return };
    let cs = env.chunk_size().await;
    let head = pattern(cs + 300, 5);
    let tail = pattern(2 * cs + 1, 6);
    let hole_end = 6 * cs + 17;
    {
        let (head, tail) = (head.clone(), tail.clone());
        env.fs(move |m| {
            let mut f = File::create(m.join("sparse")).unwrap();
            f.write_all(&head).unwrap();
            // Seek past the end, then write: the gap is a hole.
            f.seek(SeekFrom::Start(hole_end as u64)).unwrap();
            f.write_all(&tail).unwrap();
        })
        .await;
    }
    let total = hole_end + tail.len();
    let back = env.fs(|m| std::fs::read(m.join("sparse")).unwrap()).await;
    assert_eq!(back.len(), total);
    assert!(back[..head.len()] == head[..], "head differs");
    assert!(back[head.len()..hole_end].iter().all(|&b| b == 0), "the hole must read zeros");
    assert!(back[hole_end..] == tail[..], "tail differs");
    // Reads inside the hole only, and across its end.
    let (a, b) = env
        .fs(move |m| {
            let f = File::open(m.join("sparse")).unwrap();
            let mut a = vec![1u8; 3 * cs];
            f.read_exact_at(&mut a, 2 * cs as u64 + 5).unwrap();
            let mut b = vec![1u8; 100];
            f.read_exact_at(&mut b, hole_end as u64 - 50).unwrap();
            (a, b)
        })
        .await;
    assert!(a.iter().all(|&x| x == 0), "a read inside the hole must be zeros");
    assert!(b[..50].iter().all(|&x| x == 0) && b[50..] == tail[..50]);
    // Chunks wholly inside the hole were never written.
    let inode = env.inode("/sparse").await;
    assert_eq!(inode.length, total as u64);
    for i in 2..6 {
        assert_eq!(env.chunk_replicas(&inode, i).await, vec![None; 3], "chunk {i} is inside the hole");
    }
    for i in [0, 1, 6, 7, 8] {
        assert!(env.chunk_replicas(&inode, i).await.iter().all(Option::is_some), "chunk {i} holds data");
    }
    env.stop().await;
}

/// The mount's Prometheus metrics count requests, errors by status code and bytes. Counters are
/// process-wide and other tests mount in parallel, so the checks are on increases of at least
/// what this test did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_ops_errors_and_bytes() {
    let Some(env) = Env::start().await else { return };
    let reg = t3fs_common::metrics::new_registry();
    t3fs_fuse::metrics::register(&mut reg.lock().unwrap());
    let sample =
        |series: &str| t3fs_common::metrics::sample(&t3fs_common::metrics::render(&reg), series).unwrap_or(0.0);
    let before = [
        sample("t3fs_fuse_written_bytes_total"),
        sample("t3fs_fuse_read_bytes_total"),
        sample("t3fs_fuse_ops_total{op=\"write\"}"),
        sample("t3fs_fuse_op_errors_total{op=\"lookup\",code=\"NotFound\"}"),
        sample("t3fs_fuse_op_duration_seconds_count{op=\"read\"}"),
    ];
    let data = pattern(300_000, 9);
    env.fs(move |m| {
        std::fs::write(m.join("metrics.bin"), &data).unwrap();
        assert!(std::fs::read(m.join("metrics.bin")).unwrap() == data);
        assert_eq!(errno(std::fs::metadata(m.join("no-such-file"))), libc::ENOENT);
    })
    .await;
    let after = [
        sample("t3fs_fuse_written_bytes_total"),
        sample("t3fs_fuse_read_bytes_total"),
        sample("t3fs_fuse_ops_total{op=\"write\"}"),
        sample("t3fs_fuse_op_errors_total{op=\"lookup\",code=\"NotFound\"}"),
        sample("t3fs_fuse_op_duration_seconds_count{op=\"read\"}"),
    ];
    assert!(after[0] - before[0] >= 300_000.0, "written bytes {before:?} -> {after:?}");
    assert!(after[1] - before[1] >= 300_000.0, "read bytes {before:?} -> {after:?}");
    assert!(after[2] > before[2], "write ops {before:?} -> {after:?}");
    assert!(after[3] > before[3], "lookup NotFound errors {before:?} -> {after:?}");
    assert!(after[4] > before[4], "read latency observations {before:?} -> {after:?}");
    env.stop().await;
}

/// fsync on a directory fd reaches the daemon as FUSE fsyncdir and succeeds. The kernel would turn
/// an ENOSYS answer into success too (and stop asking), so the op counter is what shows the
/// daemon answered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_on_a_directory() {
    let Some(env) = Env::start().await else { return };
    let reg = t3fs_common::metrics::new_registry();
    t3fs_fuse::metrics::register(&mut reg.lock().unwrap());
    let sample = || {
        t3fs_common::metrics::sample(&t3fs_common::metrics::render(&reg), "t3fs_fuse_ops_total{op=\"fsyncdir\"}")
            .unwrap_or(0.0)
    };
    let before = sample();
    env.fs(|m| {
        let d = m.join("synced");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
        File::open(&d).unwrap().sync_all().unwrap();
        // The root too, and a second time on the same directory (a kernel that got ENOSYS would
        // not ask again).
        File::open(m).unwrap().sync_all().unwrap();
        File::open(&d).unwrap().sync_data().unwrap();
        assert_eq!(std::fs::read(d.join("f")).unwrap(), b"x");
    })
    .await;
    let after = sample();
    assert!(after - before >= 3.0, "fsyncdir ops {before} -> {after}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statfs_reports_the_space_storage_reports() {
    let Some(env) = Env::start().await else { return };
    // Storage reports its disks with heartbeats; meta sees them with its next routing refresh.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let (blocks, free) = loop {
        let (blocks, free) = env
            .fs(|m| {
                let st = support::sys::statvfs(m).unwrap();
                (st.f_blocks, st.f_bfree)
            })
            .await;
        if blocks > 0 || tokio::time::Instant::now() > deadline {
            break (blocks, free);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(blocks > 0, "capacity comes from the storage targets");
    assert!(free > 0 && free <= blocks, "free {free} of {blocks} blocks");
    env.stop().await;
}

/// The daemon answers a directory's GETATTR after this mount's own creates and unlinks in it from
/// attributes it keeps (fuse/src/dirattr.rs): what `stat` shows must still be exactly meta's, after
/// each kind of change through the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_attributes_follow_this_mounts_changes() {
    let Some(env) = Env::start().await else { return };
    async fn stat(env: &Env, rel: &'static str) -> (i64, i64, u32, u64) {
        env.fs(move |m| {
            let md = std::fs::metadata(m.join(rel)).unwrap();
            let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
            (ns(md.mtime(), md.mtime_nsec()), ns(md.ctime(), md.ctime_nsec()), md.mode() & 0o7777, md.nlink())
        })
        .await
    }
    let meta = |i: t3fs_common::proto::Inode| (i.mtime_ns, i.ctime_ns, i.mode & 0o7777, u64::from(i.nlink.max(1)));
    env.fs(|m| std::fs::create_dir(m.join("d")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await));
    // Exclusive creates, one after another (each one re-reads the directory's attributes).
    for i in 0..3 {
        let name = format!("d/f{i}");
        env.fs(move |m| OpenOptions::new().write(true).create_new(true).open(m.join(name)).map(drop).unwrap()).await;
        assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after create {i}");
    }
    // A chmod, then a create: the new mode stays.
    env.fs(|m| std::fs::set_permissions(m.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap()).await;
    env.fs(|m| OpenOptions::new().write(true).create_new(true).open(m.join("d/g")).map(drop).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after chmod and create");
    assert_eq!(stat(&env, "d").await.2, 0o700);
    // mkdir (nlink), a non-exclusive create of an existing file, an unlink, a rename, a symlink.
    env.fs(|m| std::fs::create_dir(m.join("d/sub")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after mkdir");
    assert_eq!(stat(&env, "d").await.3, 3);
    env.fs(|m| File::create(m.join("d/g")).map(drop).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after create of an existing file");
    env.fs(|m| std::fs::remove_file(m.join("d/f0")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after unlink");
    env.fs(|m| std::fs::rename(m.join("d/f1"), m.join("d/f9")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after rename");
    env.fs(|m| std::os::unix::fs::symlink("f9", m.join("d/l")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after symlink");
    env.fs(|m| std::fs::remove_dir(m.join("d/sub")).unwrap()).await;
    assert_eq!(stat(&env, "d").await, meta(env.inode("/d").await), "after rmdir");
    assert_eq!(stat(&env, "d").await.3, 2);
    env.stop().await;
}
