//! Rename, links, symlinks, batch stat, extended attributes and permission checks through the native
//! client against a real in-process cluster (mgmtd, meta, three storage servers).
//!
//! Covered: rename within and across directories (parent pointers and directory link counts),
//! over a file (the replaced inode returned, its chunks freed), RENAME_NOREPLACE and RENAME_EXCHANGE,
//! into its own subtree, a rename repeated with the same request id (meta answers the first outcome,
//! so a retry after a lost answer does not fail); hard links (nlink, data through both names,
//! chunks kept until the last link); symlinks and readlink; batch stat with missing inodes; xattrs
//! with create-only/replace-only and NotFound; PermissionDenied for a user the mode bits deny, a
//! supplementary group granting access, and the sticky root directory.
use std::sync::Arc;

use t3fs_cli::local::inproc::LocalCluster;
use t3fs_client::{Client, RenameFlags, SetXattrMode, UserInfo};
use t3fs_common::proto::{self, InodeType};
use t3fs_common::{InodeId, StatusCode, TargetId};

const ROOT: InodeId = InodeId::ROOT;
const NONE: RenameFlags = RenameFlags { no_replace: false, exchange: false };

struct Env {
    _tmp: tempfile::TempDir,
    cluster: LocalCluster,
    client: Arc<Client>,
    root: UserInfo,
}

impl Env {
    async fn start() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::start(&tmp.path().join("data")).await.unwrap();
        let client = cluster.client().await.unwrap();
        Env { _tmp: tmp, cluster, client, root: UserInfo::root() }
    }

    async fn stop(self) {
        self.client.shutdown().await;
        self.cluster.shutdown().await;
    }

    /// A file with `data`, its length reported to meta.
    async fn file(&self, parent: InodeId, name: &[u8], data: &[u8]) -> proto::Inode {
        let i = self.client.create(&self.root, parent, name, 0o644, true).await.unwrap();
        self.client.write(&i, 0, data).await.unwrap();
        self.client.close(&self.root, InodeId(i.id), data.len() as u64, true).await.unwrap()
    }

    async fn read_all(&self, parent: InodeId, name: &[u8]) -> Vec<u8> {
        let i = self.client.lookup(&self.root, parent, name).await.unwrap();
        self.client.read(&i, 0, i.length as u32).await.unwrap()
    }

    /// Live chunks of `inode` once meta's GC had time to run (polls up to 10 s).
    async fn live_chunks_after_gc(&self, inode: u64) -> usize {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = self.live_chunks(inode).await;
            if n == 0 || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn live_chunks(&self, inode: u64) -> usize {
        let mut n = 0;
        for t in &self.client.routing().info.targets {
            for c in self.client.list_chunks(TargetId(t.target_id)).await.unwrap() {
                if !c.removed && t3fs_common::ChunkId::from_bytes(&c.chunk_id).unwrap().inode == InodeId(inode) {
                    n += 1;
                }
            }
        }
        n
    }

    async fn code<T: std::fmt::Debug>(&self, r: t3fs_client::Result<T>) -> StatusCode {
        r.unwrap_err().code
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_through_the_client() {
    let env = Env::start().await;
    let (c, u) = (&env.client, &env.root);
    let a = env.file(ROOT, b"a", b"alpha").await;
    let d1 = c.mkdir(u, ROOT, b"d1", 0o755).await.unwrap();
    let d2 = c.mkdir(u, ROOT, b"d2", 0o755).await.unwrap();
    let sub = c.mkdir(u, InodeId(d1.id), b"sub", 0o755).await.unwrap();

    // Within a directory, then across.
    assert_eq!(c.rename(u, ROOT, b"a", ROOT, b"b", NONE).await.unwrap(), None);
    assert_eq!(env.code(c.lookup(u, ROOT, b"a").await).await, StatusCode::NotFound);
    assert_eq!(c.lookup(u, ROOT, b"b").await.unwrap().id, a.id);
    c.rename(u, ROOT, b"b", InodeId(d1.id), b"b", NONE).await.unwrap();
    assert_eq!(env.read_all(InodeId(d1.id), b"b").await, b"alpha");

    // A directory across directories: its parent pointer and both parents' link counts.
    c.rename(u, InodeId(d1.id), b"sub", InodeId(d2.id), b"sub2", NONE).await.unwrap();
    assert_eq!(c.getattr(u, InodeId(sub.id)).await.unwrap().parent, d2.id);
    assert_eq!(c.getattr(u, InodeId(d1.id)).await.unwrap().nlink, 2);
    assert_eq!(c.getattr(u, InodeId(d2.id)).await.unwrap().nlink, 3);
    // Into its own subtree.
    let e = c.rename(u, ROOT, b"d2", InodeId(sub.id), b"loop", NONE).await;
    assert_eq!(env.code(e).await, StatusCode::InvalidArgument);
    let e = c.rename(u, ROOT, b"d2", InodeId(d2.id), b"self", NONE).await;
    assert_eq!(env.code(e).await, StatusCode::InvalidArgument);

    // Over a file: the replaced inode comes back with no links left, and its chunks are gone.
    let victim = env.file(ROOT, b"victim", &vec![7u8; 100_000]).await;
    assert!(env.live_chunks(victim.id).await > 0);
    env.file(ROOT, b"repl", b"replacement").await;
    let replaced = c.rename(u, ROOT, b"repl", ROOT, b"victim", NONE).await.unwrap().expect("a replaced inode");
    assert_eq!((replaced.id, replaced.nlink), (victim.id, 0));
    assert_eq!(env.live_chunks_after_gc(victim.id).await, 0);
    assert_eq!(env.read_all(ROOT, b"victim").await, b"replacement");

    // NOREPLACE and EXCHANGE.
    env.file(ROOT, b"p", b"P").await;
    let no_replace = RenameFlags { no_replace: true, exchange: false };
    let exchange = RenameFlags { no_replace: false, exchange: true };
    let e = c.rename(u, ROOT, b"p", ROOT, b"victim", no_replace).await;
    assert_eq!(env.code(e).await, StatusCode::AlreadyExists);
    assert_eq!(c.rename(u, ROOT, b"p", ROOT, b"victim", exchange).await.unwrap(), None);
    assert_eq!(env.read_all(ROOT, b"p").await, b"replacement");
    assert_eq!(env.read_all(ROOT, b"victim").await, b"P");
    let e = c.rename(u, ROOT, b"p", ROOT, b"missing", exchange).await;
    assert_eq!(env.code(e).await, StatusCode::NotFound);
    // A file and a directory in different parents swap, parent pointer included.
    c.rename(u, ROOT, b"p", InodeId(d1.id), b"b", exchange).await.unwrap();
    assert_eq!(env.read_all(ROOT, b"p").await, b"alpha");
    assert_eq!(env.read_all(InodeId(d1.id), b"b").await, b"replacement");
    c.rename(u, InodeId(d2.id), b"sub2", ROOT, b"p", exchange).await.unwrap();
    assert_eq!(c.getattr(u, InodeId(sub.id)).await.unwrap().parent, ROOT.0);
    assert_eq!(env.read_all(InodeId(d2.id), b"sub2").await, b"alpha");

    // The same request id twice: the second is answered with the first outcome, not NotFound.
    env.file(ROOT, b"r1", b"once").await;
    let id = t3fs_common::new_request_id();
    c.rename_entry(u, &id, ROOT, b"r1", ROOT, b"r2", NONE).await.unwrap();
    c.rename_entry(u, &id, ROOT, b"r1", ROOT, b"r2", NONE).await.expect("a repeated request id is not applied twice");
    assert_eq!(env.read_all(ROOT, b"r2").await, b"once");
    assert_eq!(env.code(c.lookup(u, ROOT, b"r1").await).await, StatusCode::NotFound);
    // A fresh id is a new operation.
    let e = c.rename_entry(u, &t3fs_common::new_request_id(), ROOT, b"r1", ROOT, b"r2", NONE).await;
    assert_eq!(env.code(e).await, StatusCode::NotFound);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_symlinks_and_batch_stat() {
    let env = Env::start().await;
    let (c, u) = (&env.client, &env.root);
    let f = env.file(ROOT, b"f", &vec![1u8; 50_000]).await;
    let d = c.mkdir(u, ROOT, b"d", 0o755).await.unwrap();
    let linked = c.link(u, InodeId(f.id), InodeId(d.id), b"g").await.unwrap();
    assert_eq!((linked.id, linked.nlink), (f.id, 2));
    assert_eq!(c.lookup(u, InodeId(d.id), b"g").await.unwrap().id, f.id);
    assert_eq!(env.code(c.link(u, InodeId(f.id), ROOT, b"d").await).await, StatusCode::AlreadyExists);
    assert!(c.link(u, InodeId(d.id), ROOT, b"dirlink").await.is_err(), "no hard links to directories");
    // Removing one name keeps the data; the last one frees it.
    let gone = c.remove(u, ROOT, b"f", false).await.unwrap();
    assert_eq!(gone.nlink, 1);
    assert!(env.live_chunks(f.id).await > 0);
    assert_eq!(env.read_all(InodeId(d.id), b"g").await, vec![1u8; 50_000]);
    let gone = c.remove(u, InodeId(d.id), b"g", false).await.unwrap();
    assert_eq!(gone.nlink, 0);
    assert_eq!(env.live_chunks_after_gc(f.id).await, 0);

    let l = c.symlink(u, ROOT, b"l", b"d/../target").await.unwrap();
    assert_eq!(l.inode_type, InodeType::Symlink as i32);
    assert_eq!(c.readlink(u, InodeId(l.id)).await.unwrap(), b"d/../target");
    assert_eq!(c.lookup(u, ROOT, b"l").await.unwrap().symlink_target, &b"d/../target"[..]);
    assert_eq!(env.code(c.readlink(u, InodeId(d.id)).await).await, StatusCode::InvalidArgument);
    assert_eq!(env.code(c.symlink(u, ROOT, b"l", b"x").await).await, StatusCode::AlreadyExists);
    c.remove(u, ROOT, b"l", false).await.unwrap();

    let got = c.batch_stat(u, &[ROOT, InodeId(d.id), InodeId(f.id), InodeId(l.id), InodeId(1 << 40)]).await.unwrap();
    let ids: Vec<Option<u64>> = got.iter().map(|i| i.as_ref().map(|i| i.id)).collect();
    assert_eq!(ids, vec![Some(ROOT.0), Some(d.id), None, None, None]);
    assert_eq!(got[1].as_ref().unwrap().inode_type, InodeType::Directory as i32);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xattrs_and_permissions_through_the_client() {
    let env = Env::start().await;
    let (c, u) = (&env.client, &env.root);
    let f = InodeId(env.file(ROOT, b"f", b"x").await.id);
    c.set_xattr(u, f, b"user.a", b"1", SetXattrMode::Upsert).await.unwrap();
    c.set_xattr(u, f, b"user.b", b"", SetXattrMode::CreateOnly).await.unwrap();
    let e = c.set_xattr(u, f, b"user.a", b"2", SetXattrMode::CreateOnly).await;
    assert_eq!(env.code(e).await, StatusCode::AlreadyExists);
    let e = c.set_xattr(u, f, b"user.c", b"2", SetXattrMode::ReplaceOnly).await;
    assert_eq!(env.code(e).await, StatusCode::NotFound);
    c.set_xattr(u, f, b"user.a", b"3", SetXattrMode::ReplaceOnly).await.unwrap();
    assert_eq!(c.get_xattr(u, f, b"user.a").await.unwrap(), b"3");
    assert_eq!(c.get_xattr(u, f, b"user.b").await.unwrap(), b"");
    let mut names = c.list_xattr(u, f).await.unwrap();
    names.sort();
    assert_eq!(names, vec![b"user.a".to_vec(), b"user.b".to_vec()]);
    c.remove_xattr(u, f, b"user.a").await.unwrap();
    assert_eq!(env.code(c.get_xattr(u, f, b"user.a").await).await, StatusCode::NotFound);
    assert_eq!(env.code(c.remove_xattr(u, f, b"user.a").await).await, StatusCode::NotFound);
    assert_eq!(env.code(c.list_xattr(u, InodeId(1 << 40)).await).await, StatusCode::NotFound);

    // Another user: a 0755 root directory and root's 0644 file deny it writes.
    let alice = UserInfo { uid: 1000, gid: 1000, gids: vec![] };
    let denied = StatusCode::PermissionDenied;
    let locked = InodeId(c.mkdir(u, ROOT, b"locked", 0o755).await.unwrap().id);
    let lf = InodeId(env.file(locked, b"f", b"x").await.id);
    assert_eq!(env.code(c.create(&alice, locked, b"mine", 0o644, true).await).await, denied);
    assert_eq!(env.code(c.mkdir(&alice, locked, b"mine", 0o755).await).await, denied);
    assert_eq!(env.code(c.remove(&alice, locked, b"f", false).await).await, denied);
    assert_eq!(env.code(c.rename(&alice, locked, b"f", locked, b"g", NONE).await).await, denied);
    assert_eq!(env.code(c.symlink(&alice, locked, b"l", b"f").await).await, denied);
    assert_eq!(env.code(c.link(&alice, lf, locked, b"h").await).await, denied);
    let e = c.set_xattr(&alice, f, b"user.x", b"1", SetXattrMode::Upsert).await;
    assert_eq!(env.code(e).await, denied);
    // The sticky root: alice creates and renames her own entries, not root's.
    let mine = c.create(&alice, ROOT, b"alice", 0o644, true).await.unwrap();
    assert_eq!((mine.uid, mine.gid), (1000, 1000));
    c.rename(&alice, ROOT, b"alice", ROOT, b"alice2", NONE).await.unwrap();
    let eperm = StatusCode::OperationNotPermitted;
    assert_eq!(env.code(c.rename(&alice, ROOT, b"f", ROOT, b"g", NONE).await).await, eperm);
    assert_eq!(env.code(c.remove(&alice, ROOT, b"f", false).await).await, eperm);
    c.remove(&alice, ROOT, b"alice2", false).await.unwrap();
    // Reading the namespace is fine.
    assert_eq!(c.lookup(&alice, ROOT, b"f").await.unwrap().id, f.0);
    assert_eq!(c.get_xattr(&alice, f, b"user.b").await.unwrap(), b"");
    // A directory of alice's group with group write: a supplementary group is enough.
    let shared = c.mkdir(u, ROOT, b"shared", 0o775).await.unwrap();
    c.setattr(u, InodeId(shared.id), t3fs_client::SetAttr { gid: Some(4242), ..Default::default() }).await.unwrap();
    let e = c.create(&alice, InodeId(shared.id), b"a", 0o644, true).await;
    assert_eq!(env.code(e).await, denied);
    let alice_in_group = UserInfo { gids: vec![4242], ..alice.clone() };
    let made = c.create(&alice_in_group, InodeId(shared.id), b"a", 0o644, true).await.unwrap();
    assert_eq!((made.uid, made.gid), (1000, 1000));
    // Nothing the denied calls touched changed.
    assert!(c.lookup(u, locked, b"mine").await.is_err() && c.lookup(u, locked, b"g").await.is_err());
    assert!(c.lookup(u, ROOT, b"g").await.is_err());
    assert_eq!(c.lookup(u, ROOT, b"f").await.unwrap().nlink, 1);
    assert_eq!(c.lookup(u, locked, b"f").await.unwrap().nlink, 1);
    env.stop().await;
}
