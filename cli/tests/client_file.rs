//! The native client's `File` handle on a real in-process cluster: buffered positional writes read
//! back through the same and another handle, sync and close report the length, set_len, read-only
//! handles refuse writes, and a file unlinked by another client while open stays usable until
//! closed (its write session), after which GC takes it.
use std::time::Duration;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{OpenOptions, UserInfo};
use t3fs_common::{InodeId, StatusCode};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_handles_read_write_and_outlive_an_unlink() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
    let a = cluster.client().await.unwrap();
    let b = cluster.client().await.unwrap();
    let root = UserInfo::root();
    a.mkdir(&root, InodeId::ROOT, b"d", 0o755).await.unwrap();

    // Many small contiguous writes (buffered), one big one, and a jump back.
    let data = pattern(5 * (1 << 20) + 77, 3);
    let f = a.open_path(&root, "/d/f.bin", OpenOptions::create()).await.unwrap();
    for piece in data[..3 << 20].chunks(100_000) {
        let at = piece.as_ptr() as usize - data.as_ptr() as usize;
        f.write_at(at as u64, piece).await.unwrap();
    }
    f.write_at(3 << 20, &data[3 << 20..]).await.unwrap();
    f.write_at(10, &data[10..20]).await.unwrap();
    assert_eq!(f.read_at(0, 64).await.unwrap(), &data[..64], "reads see the handle's own writes");
    assert_eq!(f.inode().await.length, data.len() as u64);
    f.sync().await.unwrap();
    assert_eq!(b.resolve_path(&root, "/d/f.bin").await.unwrap().length, data.len() as u64, "sync told meta");

    // Another handle reads it all back; it may not write.
    let r = b.open_path(&root, "/d/f.bin", OpenOptions::read()).await.unwrap();
    assert_eq!(r.read_at(0, data.len() as u32 + 100).await.unwrap(), data);
    assert_eq!(r.write_at(0, b"x").await.unwrap_err().code, StatusCode::PermissionDenied);
    r.close().await.unwrap();

    // set_len cuts; close reports; a second close is refused.
    f.set_len(1000).await.unwrap();
    let closed = f.close().await.unwrap();
    assert_eq!(closed.length, 1000);
    assert!(f.close().await.is_err());
    assert!(f.write_at(0, b"late").await.is_err());
    let missing = a.open_path(&root, "/d/nope", OpenOptions::read()).await.err().expect("no such file");
    assert_eq!(missing.code, StatusCode::NotFound);
    let excl = OpenOptions { exclusive: true, ..OpenOptions::create() };
    assert_eq!(a.open_path(&root, "/d/f.bin", excl).await.err().unwrap().code, StatusCode::AlreadyExists);

    // Open for write here, unlinked there: still written and read, collected after close.
    let w = a.open_path(&root, "/d/w", OpenOptions::create()).await.unwrap();
    w.write_at(0, &data[..2 << 20]).await.unwrap();
    w.sync().await.unwrap();
    let id = w.inode().await.id;
    b.remove(&root, InodeId(a.resolve_path(&root, "/d").await.unwrap().id), b"w", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await; // > the local cluster's GC delay
    w.write_at(2 << 20, b"tail").await.unwrap();
    assert_eq!(w.read_at(0, 16).await.unwrap(), &data[..16], "held by its write session");
    assert_eq!(w.close().await.unwrap().nlink, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while a.getattr(&root, InodeId(id)).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the unlinked file was never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}
