//! Durability without a clean shutdown: a child process commits and then aborts (no destructors,
//! no flush); the parent reopens the directory and must find every acknowledged commit.
use std::process::Command;

use t3fs_kv::KvEngine;
use t3fs_kv::embedded::EmbeddedKv;

const CHILD_ENV: &str = "T3FS_KV_CRASH_CHILD_DIR";

#[test]
fn acknowledged_commits_survive_abort() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let db = EmbeddedKv::open(std::path::Path::new(&dir)).unwrap();
            for i in 0..100u32 {
                let mut t = db.begin().await.unwrap();
                t.set(&i.to_be_bytes(), b"committed");
                t.commit().await.unwrap();
            }
            let mut t = db.begin().await.unwrap();
            t.set(b"pending", b"never committed");
            std::process::abort();
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "acknowledged_commits_survive_abort", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = EmbeddedKv::open(dir.path()).unwrap();
        let mut t = db.begin().await.unwrap();
        assert!(t.read_version() >= 100, "the commit version was recovered");
        for i in 0..100u32 {
            assert_eq!(t.get(&i.to_be_bytes(), false).await.unwrap(), Some(b"committed".to_vec()), "key {i}");
        }
        assert_eq!(t.get(b"pending", false).await.unwrap(), None);
    });
}
