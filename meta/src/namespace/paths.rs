//! Path operations: `mkdirs` (mkdir -p as one transaction) and `real_path` (an inode's absolute
//! path by its parent links).
//!
//! **mkdirs** walks the components below a start directory in one read-write transaction: each
//! directory on the way is read with a conflicting read, as are the dentries looked at, so the
//! whole chain is created atomically (all or nothing) and a concurrent rmdir or rename of a
//! component conflicts with it. Existing directories are fine; an existing non-directory (symlinks
//! are not followed) is NotDirectory. Permissions as a chain of mkdir: search on every directory
//! walked, write+search where a component is created.
//!
//! **real_path** follows `Inode.parent` up to the root in one snapshot. A directory's name is its
//! `Inode.name` when that still matches its dentry in the parent (kept by mkdir and rename), else
//! (directories made before the field existed) it is found by scanning the parent's entries. Files
//! have no parent pointer (hard links may give them several): their path is asked as parent
//! directory + name. Nothing is required of the caller (like getattr, it is inode-addressed).
use t3fs_common::names::validate_name;
use t3fs_common::proto::{DirEntry, Inode};
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{KvError, RangeOpts, Transaction};

use super::mutate::{new_dir_inode, touch_dir};
use super::rename::MAX_DEPTH;
use super::{Caller, MetaStore, get_dentry, get_dir, get_entry_inode, get_inode, is_dir, perm, put_dentry, put_inode};
use crate::keys;

/// Intermediate directories of mkdirs get at least owner write+search (as `mkdir -p`).
const INTERMEDIATE_BITS: u32 = 0o300;
/// Dentries read per range read when scanning a parent for a directory's name.
const SCAN_PAGE: usize = 1024;

/// The components of a relative path: empty and `.` skipped; `..` refused; each a valid name.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(Error::invalid("mkdirs: '..' in the path is not supported")),
            name => {
                validate_name(name)?;
                out.push(name.to_vec());
            }
        }
    }
    if out.is_empty() {
        return Err(Error::invalid("mkdirs: the path names no directory"));
    }
    if out.len() > MAX_DEPTH {
        return Err(Error::invalid(format!("mkdirs: more than {MAX_DEPTH} components")));
    }
    Ok(out)
}

impl MetaStore {
    /// Creates every missing directory of `path` (relative, `a/b/c`) below `parent` and returns the
    /// last one. Existing directories are fine (the last one is returned unchanged); a component
    /// that exists and is not a directory is NotDirectory. The last component gets `mode`,
    /// intermediate ones `mode | 0o300`.
    pub async fn mkdirs(&self, caller: &Caller, parent: InodeId, path: &[u8], mode: u32) -> Result<Inode> {
        let comps = components(path)?;
        // Ids for the worst case (every component missing); unused ones are skipped.
        let ids = self.ids.alloc_many(&*self.db, comps.len()).await?;
        let caller = caller.clone();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, comps, ids) = (caller.clone(), comps.clone(), ids.clone());
            Box::pin(async move { mkdirs_txn(txn, &caller, parent, &comps, &ids, mode).await })
        })
        .await?)
    }

    /// The absolute path of directory `inode` (`name` empty), or of entry `name` in directory
    /// `inode` (which must exist: NotFound otherwise). A file given alone is NotDirectory: files
    /// have no parent pointer, ask with their parent directory and name.
    pub async fn real_path(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        if !name.is_empty() {
            validate_name(name)?;
        }
        let name = name.to_vec();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let name = name.clone();
            Box::pin(async move {
                let dir = get_inode(txn, inode, true)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("inode {inode} not found")))?;
                if !is_dir(&dir) {
                    return Err(Error::new(
                        StatusCode::NotDirectory,
                        format!(
                            "inode {inode} is not a directory: files have no parent link; give the parent and the name"
                        ),
                    )
                    .into());
                }
                let mut path = dir_path(txn, dir).await?;
                if !name.is_empty() {
                    if get_dentry(txn, inode, &name, true).await?.is_none() {
                        return Err(super::mutate::missing(inode, &name));
                    }
                    if path.len() > 1 {
                        path.push(b'/');
                    }
                    path.extend_from_slice(&name);
                }
                Ok(path)
            })
        })
        .await?)
    }
}

async fn mkdirs_txn(
    txn: &mut dyn Transaction,
    caller: &Caller,
    parent: InodeId,
    comps: &[Vec<u8>],
    ids: &[InodeId],
    mode: u32,
) -> Result<Inode, KvError> {
    let mut cur = get_dir(txn, parent, false).await?;
    let now = now_ns();
    for (i, name) in comps.iter().enumerate() {
        let here = InodeId(cur.id);
        perm::check(caller, &cur, perm::X)?;
        if let Some(entry) = get_dentry(txn, here, name, false).await? {
            let next = get_entry_inode(txn, here, &entry, false).await?;
            if !is_dir(&next) {
                return Err(Error::new(
                    StatusCode::NotDirectory,
                    format!("{} in directory {here} exists and is not a directory", super::show(name)),
                )
                .into());
            }
            cur = next;
            continue;
        }
        perm::check_modify_dir(caller, &cur)?;
        let last = i + 1 == comps.len();
        let m = if last { mode } else { mode | INTERMEDIATE_BITS };
        let child = new_dir_inode(caller, &cur, ids[i], name, m, now);
        cur.nlink = cur.nlink.checked_add(1).ok_or_else(|| Error::invalid("too many subdirectories"))?;
        put_inode(txn, &child);
        put_dentry(txn, here, &DirEntry { name: name.clone().into(), inode: child.id, inode_type: child.inode_type });
        touch_dir(txn, &mut cur, now);
        cur = child;
    }
    Ok(cur)
}

/// The absolute path of directory `dir` (snapshot reads).
async fn dir_path(txn: &mut dyn Transaction, mut dir: Inode) -> Result<Vec<u8>, KvError> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_DEPTH {
        if dir.id == InodeId::ROOT.0 {
            names.reverse();
            let mut path = Vec::new();
            for n in &names {
                path.push(b'/');
                path.extend_from_slice(n);
            }
            if path.is_empty() {
                path.push(b'/');
            }
            return Ok(path);
        }
        let parent = InodeId(dir.parent);
        names.push(name_in_parent(txn, &dir, parent).await?);
        dir = get_inode(txn, parent, true)
            .await?
            .ok_or_else(|| Error::internal(format!("directory {}: parent {parent} is missing", dir.id)))?;
    }
    Err(Error::internal(format!("parent chain of directory {} is longer than {MAX_DEPTH}: a loop?", dir.id)).into())
}

/// The name of directory `dir`'s dentry in `parent`: `dir.name` if that dentry names `dir`, else
/// found by scanning the parent's entries.
async fn name_in_parent(txn: &mut dyn Transaction, dir: &Inode, parent: InodeId) -> Result<Vec<u8>, KvError> {
    if !dir.name.is_empty()
        && let Some(e) = get_dentry(txn, parent, &dir.name, true).await?
        && e.inode == dir.id
    {
        return Ok(dir.name.to_vec());
    }
    let (mut begin, end) = keys::dentry_range(parent);
    loop {
        let opts = RangeOpts { limit: SCAN_PAGE, reverse: false, snapshot: true };
        let page = txn.get_range(&begin, &end, opts).await?;
        for kv in &page {
            let e = keys::decode_dentry(parent, &kv.value)?;
            if e.inode == dir.id {
                return Ok(e.name.to_vec());
            }
        }
        match page.last() {
            Some(last) if page.len() == SCAN_PAGE => begin = t3fs_kv::key_after(&last.key),
            _ => break,
        }
    }
    Err(Error::internal(format!("directory {} has no entry in its parent {parent}", dir.id)).into())
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::*;

    const ROOT: InodeId = InodeId::ROOT;

    fn user() -> Caller {
        Caller { uid: 1000, gid: 100, gids: vec![] }
    }

    #[tokio::test]
    async fn mkdirs_creates_what_is_missing_atomically() {
        let s = store().await;
        let u = user();
        let c = s.mkdirs(&u, ROOT, b"a/b/c", 0o700).await.unwrap();
        assert_eq!(c.mode, 0o700);
        let a = s.lookup(&u, ROOT, b"a").await.unwrap();
        assert_eq!((a.mode, a.nlink), (0o700 | 0o300, 3));
        let b = s.lookup(&u, InodeId(a.id), b"b").await.unwrap();
        assert_eq!(s.lookup(&u, InodeId(b.id), b"c").await.unwrap().id, c.id);
        // Existing directories are fine; "." and empty components are skipped.
        assert_eq!(s.mkdirs(&u, ROOT, b"./a//b/c/", 0o755).await.unwrap(), c);
        let d = s.mkdirs(&u, InodeId(a.id), b"b/d", 0o755).await.unwrap();
        assert_eq!(s.real_path(InodeId(d.id), b"").await.unwrap(), b"/a/b/d".to_vec());
        // A file on the way: NotDirectory, and nothing is created.
        s.create(&u, InodeId(b.id), b"f", 0o644, true).await.unwrap();
        let before = s.statfs().await.unwrap().inodes;
        let e = s.mkdirs(&u, ROOT, b"a/b/f/z", 0o755).await.unwrap_err();
        assert_eq!(e.code, StatusCode::NotDirectory, "{e}");
        // Bad paths change nothing either.
        for (bad, code) in [
            (&b"a/../b"[..], StatusCode::InvalidArgument),
            (b"", StatusCode::InvalidArgument),
            (b"/./", StatusCode::InvalidArgument),
            (b"a/b\0c", StatusCode::InvalidArgument),
        ] {
            assert_eq!(s.mkdirs(&u, ROOT, bad, 0o755).await.unwrap_err().code, code, "{bad:?}");
        }
        let long = [b'x'; 256];
        assert_eq!(s.mkdirs(&u, ROOT, &long, 0o755).await.unwrap_err().code, StatusCode::NameTooLong);
        assert_eq!(s.statfs().await.unwrap().inodes, before);
        super::super::check::check_invariants(s.db()).await;
    }

    #[tokio::test]
    async fn mkdirs_checks_permissions_per_component() {
        let s = store().await;
        let (owner, other) = (user(), Caller { uid: 1001, gid: 101, gids: vec![] });
        let p = s.mkdirs(&owner, ROOT, b"p", 0o755).await.unwrap();
        // Walking through p is allowed (search), creating in it is not.
        assert_eq!(s.mkdirs(&other, ROOT, b"p/q", 0o755).await.unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(s.mkdirs(&other, ROOT, b"p", 0o755).await.unwrap().id, p.id, "existing: fine");
        s.setattr(&owner, InodeId(p.id), crate::SetAttr { mode: Some(0o700), ..Default::default() }).await.unwrap();
        assert_eq!(s.mkdirs(&other, ROOT, b"p", 0o755).await.unwrap().id, p.id, "the last one is not searched");
        assert_eq!(s.mkdirs(&other, ROOT, b"p/q", 0o755).await.unwrap_err().code, StatusCode::PermissionDenied);
        // The new directories belong to the caller and inherit the parent's layout.
        let l = t3fs_common::proto::Layout { table_id: 1, chunk_size: 1 << 16, stripe: 1, ..Default::default() };
        s.set_layout(&owner, InodeId(p.id), &l).await.unwrap();
        let z = s.mkdirs(&owner, InodeId(p.id), b"x/y/z", 0o750).await.unwrap();
        assert_eq!((z.uid, z.gid, z.mode, z.layout), (1000, 100, 0o750, Some(l)));
        super::super::check::check_invariants(s.db()).await;
    }

    #[tokio::test]
    async fn racing_mkdirs_agree_on_one_tree() {
        let s = std::sync::Arc::new(store().await);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("r/s/t{}", i % 2);
                s.mkdirs(&user(), ROOT, path.as_bytes(), 0o755).await.unwrap().id
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        for (i, id) in got.iter().enumerate() {
            assert_eq!(*id, got[i % 2], "{got:?}");
        }
        assert_ne!(got[0], got[1]);
        super::super::check::check_invariants(s.db()).await;
    }

    #[tokio::test]
    async fn real_paths_follow_renames_and_old_directories() {
        let s = store().await;
        let u = user();
        assert_eq!(s.real_path(ROOT, b"").await.unwrap(), b"/".to_vec());
        let c = s.mkdirs(&u, ROOT, b"a/b/c", 0o755).await.unwrap();
        let b = InodeId(c.parent);
        assert_eq!(s.real_path(InodeId(c.id), b"").await.unwrap(), b"/a/b/c".to_vec());
        // Renamed within its parent, then moved elsewhere: the stored name follows.
        s.rename(&u, b, b"c", b, b"c2", crate::RenameFlags::default(), "").await.unwrap();
        assert_eq!(s.real_path(InodeId(c.id), b"").await.unwrap(), b"/a/b/c2".to_vec());
        s.rename(&u, b, b"c2", ROOT, b"top", crate::RenameFlags::default(), "").await.unwrap();
        assert_eq!(s.real_path(InodeId(c.id), b"").await.unwrap(), b"/top".to_vec());
        // EXCHANGE of two directories swaps their names.
        let x = s.mkdir(&u, b, b"x", 0o755).await.unwrap();
        let flags = crate::RenameFlags { exchange: true, no_replace: false };
        s.rename(&u, ROOT, b"top", b, b"x", flags, "").await.unwrap();
        assert_eq!(s.real_path(InodeId(c.id), b"").await.unwrap(), b"/a/b/x".to_vec());
        assert_eq!(s.real_path(InodeId(x.id), b"").await.unwrap(), b"/top".to_vec());
        // A directory without a stored name (made before the field existed) is found by a scan.
        let mut old = s.getattr(InodeId(c.id)).await.unwrap();
        old.name = Default::default();
        t3fs_kv::run(&**s.db(), move |txn| {
            let old = old.clone();
            Box::pin(async move {
                put_inode(txn, &old);
                Ok(())
            })
        })
        .await
        .unwrap();
        for i in 0..5 {
            s.create(&u, b, format!("f{i}").as_bytes(), 0o644, true).await.unwrap();
        }
        assert_eq!(s.real_path(InodeId(c.id), b"").await.unwrap(), b"/a/b/x".to_vec());
        // Files: by parent and name only.
        let f = s.lookup(&u, b, b"f3").await.unwrap();
        assert_eq!(s.real_path(b, b"f3").await.unwrap(), b"/a/b/f3".to_vec());
        assert_eq!(s.real_path(ROOT, b"top").await.unwrap(), b"/top".to_vec());
        assert_eq!(s.real_path(InodeId(f.id), b"").await.unwrap_err().code, StatusCode::NotDirectory);
        assert_eq!(s.real_path(b, b"nope").await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.real_path(InodeId(987_654), b"").await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.real_path(b, b"a/b").await.unwrap_err().code, StatusCode::InvalidArgument);
    }
}
