//! The FUSE write path through real mounts over a real in-process cluster: large write buffers
//! sent as parallel chunk writes, the periodic flush that publishes an open writer's data to other
//! mounts, and a failed background write-out reported at the application's next close.
//!
//! Skips (with a message) only where /dev/fuse is missing.
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{Env, blocking, pattern};

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns whether it did.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A writer that keeps its file open is seen by another mount once the periodic flush ran; with
/// the flush off, the other mount sees nothing until the writer closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periodic_flush_publishes_an_open_writers_data_to_other_mounts() {
    let Some(env) = Env::start_with(|c| c.flush_interval_ms = 200).await else { return };
    let quiet = env.mount_another_with("quiet", |c| c.flush_interval_ms = 0).await;
    let reader = env.mount_another_with("reader", |c| c.attr_timeout_ms = 0).await;
    let (a, q, r) = (env.mnt.clone(), quiet.mnt.clone(), reader.mnt.clone());
    blocking(move || {
        let data = pattern(300_000, 7);
        // On the flushing mount: written, never closed or fsync'ed.
        let mut w = std::fs::File::create(a.join("live")).unwrap();
        w.write_all(&data).unwrap();
        let seen = eventually(Duration::from_secs(10), || std::fs::read(r.join("live")).unwrap() == data);
        assert!(seen, "the reader never saw the open writer's data (periodic flush every 200 ms)");
        // More data on the same open handle shows up too.
        w.write_all_at(b"tail", data.len() as u64).unwrap();
        let grown =
            eventually(Duration::from_secs(10), || std::fs::read(r.join("live")).unwrap().len() == data.len() + 4);
        assert!(grown, "the reader never saw the second write");

        // On the mount without the periodic flush: nothing is visible before the close.
        let mut w2 = std::fs::File::create(q.join("held")).unwrap();
        w2.write_all(&data).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(std::fs::read(r.join("held")).unwrap().len(), 0, "flush_interval_ms = 0 published early");
        drop(w2);
        assert_eq!(std::fs::read(r.join("held")).unwrap(), data, "close did not publish");
        drop(w);
    })
    .await;
    let flushes = t3fs_fuse::metrics::metrics().periodic_flushes.get();
    assert!(flushes >= 2, "periodic flushes counted: {flushes}");
    reader.stop().await;
    quiet.stop().await;
    env.stop().await;
}

/// A sequential writer's data goes out in buffers of many chunks (sent in parallel) and reads
/// back exactly, across chunk boundaries and an unaligned tail, through the writer's handle, a
/// fresh open, and another mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_buffered_writes_read_back_exactly() {
    let Some(env) = Env::start_with(|c| c.write_buffer_bytes = 3 << 20).await else { return };
    let chunk = env.chunk_size().await;
    let other = env.mount_another("other").await;
    let (a, b) = (env.mnt.clone(), other.mnt.clone());
    blocking(move || {
        let data = pattern(7 * chunk + 12_345, 9);
        let mut f =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(a.join("big")).unwrap();
        // Odd-sized pieces, so buffers end anywhere within a chunk.
        for piece in data.chunks(100_003) {
            f.write_all(piece).unwrap();
        }
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "read through the writer's handle differs");
        drop(f);
        assert!(std::fs::read(a.join("big")).unwrap() == data, "fresh open differs");
        assert!(std::fs::read(b.join("big")).unwrap() == data, "other mount differs");
    })
    .await;
    other.stop().await;
    env.stop().await;
}

/// With every storage server stopped, the periodic flush of a handle's buffered data fails in the
/// background; the application's close reports it (EIO) instead of losing the data silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_background_flush_is_reported_at_close() {
    let Some(mut env) = Env::start().await else { return };
    // A mount of its own whose client gives up quickly, with a fast periodic flush.
    let mnt = env.tmp.path().join("short");
    std::fs::create_dir_all(&mnt).unwrap();
    let client_cfg = t3fs_client::ClientConfig { retry_timeout_ms: 1000, ..env.cluster.client_config() };
    let client = t3fs_client::Client::connect(client_cfg).await.unwrap();
    let mut cfg = env.cluster.mount_config();
    cfg.flush_interval_ms = 200;
    let session = {
        let (client, mnt) = (Arc::clone(&client), mnt.clone());
        let rt = tokio::runtime::Handle::current();
        blocking(move || t3fs_fuse::mount(client, rt, &mnt, &cfg).unwrap()).await
    };
    let path = mnt.join("doomed");
    let f = {
        let path = path.clone();
        blocking(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&pattern(50_000, 3)).unwrap();
            f
        })
        .await
    };
    for i in 0..env.cluster.plan.storage.len() {
        assert!(env.cluster.stop_storage(i).await, "stopping storage {i}");
    }
    let res = blocking(move || {
        // The flush retries for the client's 1 s and fails; give it a few intervals.
        std::thread::sleep(Duration::from_millis(3000));
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        // SAFETY: fd was just taken out of the File, so it is open and owned here.
        let rc = unsafe { libc::close(fd) };
        (rc, std::io::Error::last_os_error().raw_os_error())
    })
    .await;
    assert_eq!(res.0, -1, "close succeeded although the buffered data never reached storage");
    assert_eq!(res.1, Some(libc::EIO), "close's errno");
    blocking(move || session.umount_and_join()).await.unwrap();
    client.shutdown().await;
    env.stop().await;
}

/// A truncate racing the periodic flush (every 1 ms here) never gets the cut length back: the flush
/// could report the length from before the truncate after meta applied it (found by fsx seed
/// 5254463014332288865). The window is a few microseconds between meta's answer and the local
/// length drop, so this test does not catch a regression reliably (it passed 6 of 6 runs with the
/// handle locks released early); it checks the interleaving stays correct, through the daemon
/// (no attribute cache) and after fsync. fsx, which runs on every test run, is the wider net.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_racing_the_periodic_flush_keeps_its_length() {
    // No attribute cache: every size check asks the daemon (and so meta), not the kernel's copy
    // of the setattr reply.
    let Some(env) = Env::start_with(|c| {
        c.flush_interval_ms = 1;
        c.attr_timeout_ms = 0;
    })
    .await
    else {
        return;
    };
    let a = env.mnt.clone();
    blocking(move || {
        let f =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(a.join("t")).unwrap();
        for i in 0..150u64 {
            f.write_all_at(&pattern(9000, i), (1 << 20) + 200_000 + i).unwrap();
            if i % 2 == 0 {
                // A read writes the buffer out; the handle is still unreported (dirty).
                let mut one = [0u8; 1];
                f.read_exact_at(&mut one, 0).unwrap();
            }
            let small = 900_000 + i;
            f.set_len(small).unwrap();
            f.write_all_at(b"x", 600_000).unwrap();
            assert_eq!(f.metadata().unwrap().len(), small, "round {i}: size after the truncate");
            if i % 3 == 0 {
                // The length meta keeps once this handle reported it.
                f.sync_data().unwrap();
                assert_eq!(f.metadata().unwrap().len(), small, "round {i}: size after fsync");
            }
        }
    })
    .await;
    env.stop().await;
}
