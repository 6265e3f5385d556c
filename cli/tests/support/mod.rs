//! Shared by the FUSE integration tests: a real in-process cluster with a real FUSE mount on it, in
//! a tempdir, and helpers. (Each test file uses a subset, hence `dead_code` allowed here.)
#![allow(dead_code)]
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, UserInfo};
use t3fs_common::ids::{ChainTableId, ChunkId, InodeId, TargetId};
use t3fs_common::{layout, proto};

pub mod procs;
pub mod sys;

/// A cluster with a FUSE mount on it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub mnt: PathBuf,
    pub cluster: LocalCluster,
    pub client: Arc<Client>,
    session: Option<fuser::BackgroundSession>,
}

impl Env {
    /// Starts a cluster and mounts it; `None` (with a message) where /dev/fuse is missing.
    pub async fn start() -> Option<Env> {
        Self::start_with(|_| {}).await
    }

    /// [`Env::start`] with the mount config adjusted by `tweak` (e.g. `allow_other`).
    pub async fn start_with(tweak: impl FnOnce(&mut t3fs_fuse::MountConfig)) -> Option<Env> {
        Self::start_tweaked(|_| {}, tweak).await
    }

    /// [`Env::start`] with the cluster's configs adjusted by `plan` (e.g. short client session
    /// timeouts) and the mount's by `mount`.
    pub async fn start_tweaked(
        plan: impl FnOnce(&mut t3fs_cli::local::plan::Plan),
        tweak: impl FnOnce(&mut t3fs_fuse::MountConfig),
    ) -> Option<Env> {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("SKIPPED: /dev/fuse is missing on this machine; the FUSE tests cannot run");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let cluster = LocalCluster::start_with(&tmp.path().join("data"), plan).await.unwrap();
        let client = cluster.client().await.unwrap();
        let session = {
            let mut cfg = cluster.mount_config();
            tweak(&mut cfg);
            let (client, mnt) = (client.clone(), mnt.clone());
            let rt = tokio::runtime::Handle::current();
            blocking(move || t3fs_fuse::mount(client, rt, &mnt, &cfg).unwrap()).await
        };
        assert!(is_mounted(&mnt), "{} is not in /proc/mounts after mount", mnt.display());
        Some(Env { tmp, mnt, cluster, client, session: Some(session) })
    }

    /// Another mount of the same cluster (its own client and FUSE session) at `<tmp>/<name>`.
    pub async fn mount_another(&self, name: &str) -> Mount {
        self.mount_another_with(name, |_| {}).await
    }

    /// [`Env::mount_another`] with the mount config adjusted by `tweak`.
    pub async fn mount_another_with(&self, name: &str, tweak: impl FnOnce(&mut t3fs_fuse::MountConfig)) -> Mount {
        let mnt = self.tmp.path().join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        let client = self.cluster.client().await.unwrap();
        let mut cfg = self.cluster.mount_config();
        tweak(&mut cfg);
        let session = {
            let (client, mnt) = (client.clone(), mnt.clone());
            let rt = tokio::runtime::Handle::current();
            blocking(move || t3fs_fuse::mount(client, rt, &mnt, &cfg).unwrap()).await
        };
        assert!(is_mounted(&mnt), "{} is not in /proc/mounts after mount", mnt.display());
        Mount { mnt, client, session: Some(session) }
    }

    /// Runs blocking file-system calls on `mnt`, off the runtime threads that serve FUSE requests.
    pub async fn fs<T: Send + 'static>(&self, f: impl FnOnce(&Path) -> T + Send + 'static) -> T {
        let mnt = self.mnt.clone();
        blocking(move || f(&mnt)).await
    }

    /// The inode of `/name` as meta has it.
    pub async fn inode(&self, path: &str) -> proto::Inode {
        self.client.resolve_path(&UserInfo::root(), path).await.unwrap()
    }

    /// The chunk size of files on this cluster.
    pub async fn chunk_size(&self) -> usize {
        let cs = self.fs(|m| File::create(m.join(".probe")).map(drop)).await;
        cs.unwrap();
        let cs = self.inode("/.probe").await.layout.unwrap().chunk_size as usize;
        self.fs(|m| std::fs::remove_file(m.join(".probe"))).await.unwrap();
        cs
    }

    /// Chunk `index` of `inode` on every replica of its chain (`None` where a replica lacks it).
    pub async fn chunk_replicas(&self, inode: &proto::Inode, index: u32) -> Vec<Option<proto::ChunkMeta>> {
        let routing = self.client.routing();
        let lay = inode.layout.expect("file has a layout");
        let table = routing.table(ChainTableId(lay.table_id), lay.table_version).unwrap();
        let chain = routing.chain(layout::chain_of(&lay, &table.chains, index).unwrap()).unwrap();
        assert_eq!(chain.targets.len(), 3, "3-replica chains");
        let mut out = Vec::new();
        for t in &chain.targets {
            let meta = self.client.query_chunk(TargetId(t.target_id), ChunkId::new(InodeId(inode.id), index)).await;
            out.push(meta.unwrap().filter(|m| !m.removed));
        }
        out
    }

    /// Every live chunk of `inode` on any target.
    pub async fn chunks_of(&self, inode: u64) -> Vec<proto::ChunkMeta> {
        let routing = self.client.routing();
        let mut out = Vec::new();
        for t in &routing.info.targets {
            for c in self.client.list_chunks(TargetId(t.target_id)).await.unwrap() {
                if !c.removed && ChunkId::from_bytes(&c.chunk_id).unwrap().inode == InodeId(inode) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Unmounts (checking the mount is gone and the mountpoint is an empty directory again) and stops
    /// the cluster.
    pub async fn stop(mut self) {
        let session = self.session.take().unwrap();
        blocking(move || session.umount_and_join()).await.unwrap();
        assert!(!is_mounted(&self.mnt), "{} still in /proc/mounts after unmount", self.mnt.display());
        let left = std::fs::read_dir(&self.mnt).unwrap().count();
        assert_eq!(left, 0, "the bare mountpoint directory shows through after unmount");
        self.client.shutdown().await;
        self.cluster.shutdown().await;
    }
}

/// A further mount of an [`Env`]'s cluster ([`Env::mount_another`]); unmount it with [`Mount::stop`]
/// before the `Env`.
pub struct Mount {
    pub mnt: PathBuf,
    pub client: Arc<Client>,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    pub async fn stop(mut self) {
        let session = self.session.take().unwrap();
        blocking(move || session.umount_and_join()).await.unwrap();
        assert!(!is_mounted(&self.mnt), "{} still in /proc/mounts after unmount", self.mnt.display());
        self.client.shutdown().await;
    }
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

pub fn is_mounted(mnt: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == mnt.to_str())
}

pub fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = layout::SplitMix64::new(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Waits (up to 5 s) until no live chunk of `inode` is left on any target; returns what is left.
pub async fn wait_chunks_gone(env: &Env, inode: u64) -> Vec<proto::ChunkMeta> {
    let mut left = env.chunks_of(inode).await;
    // Meta's GC removes them `LOCAL_GC_DELAY_MS` after the unlink (or the last close).
    for _ in 0..200 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = env.chunks_of(inode).await;
    }
    left
}
