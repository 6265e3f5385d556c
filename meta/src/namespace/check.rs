//! Test helper: a full consistency check of the namespace from the raw KV contents.
//!
//! Checks: every dentry names an existing inode of the recorded type; every inode except the root
//! has a dentry (no orphans) unless it is a file with nlink 0 waiting in the GC queue (and every
//! queue entry is such a file); write sessions belong to existing inodes; a directory has exactly one dentry, in the directory its `parent`
//! names, and its parent chain reaches the root (no loops, nothing detached); a directory's nlink
//! is 2 + its subdirectories, a file's or symlink's nlink its number of dentries; xattrs belong to
//! existing inodes; a directory's stored `name`, when set, is the name of its dentry; a directory's
//! default layout is a valid one.
use std::collections::HashMap;

use t3fs_kv::RangeOpts;

use super::*;

async fn scan(db: &Db, prefix: &'static [u8; 4]) -> Vec<t3fs_kv::KeyValue> {
    let end = t3fs_kv::prefix_end(prefix).unwrap();
    t3fs_kv::run(&**db, move |txn| {
        let end = end.clone();
        Box::pin(async move { txn.get_range(prefix, &end, RangeOpts::default()).await })
    })
    .await
    .unwrap()
}

fn id_at(key: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(key[at..at + 8].try_into().unwrap())
}

/// Panics with a description of the first broken invariant.
pub(super) async fn check_invariants(db: &Db) {
    let mut inodes = HashMap::new();
    for kv in scan(db, keys::INODE_PREFIX).await {
        let id = id_at(&kv.key, 4);
        let inode = keys::decode_inode(InodeId(id), &kv.value).unwrap();
        assert_eq!(inode.id, id, "inode key and value disagree");
        inodes.insert(id, inode);
    }
    let root = inodes.get(&InodeId::ROOT.0).expect("the root exists");
    assert!(is_dir(root));
    // dentries per target, subdirectories per directory
    let mut links: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut dentry_names: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for kv in scan(db, keys::DENTRY_PREFIX).await {
        let parent = id_at(&kv.key, 4);
        let entry = keys::decode_dentry(InodeId(parent), &kv.value).unwrap();
        assert_eq!(&kv.key[12..], &entry.name[..], "dentry key and name disagree");
        let p = inodes.get(&parent).unwrap_or_else(|| panic!("dentry in missing directory {parent}"));
        assert!(is_dir(p), "dentry in non-directory {parent}");
        let target = inodes.get(&entry.inode).unwrap_or_else(|| panic!("dangling dentry {entry:?} in {parent}"));
        assert_eq!(target.inode_type, entry.inode_type, "dentry type of {}", entry.inode);
        links.entry(entry.inode).or_default().push(parent);
        if is_dir(target) {
            *subdirs.entry(parent).or_default() += 1;
            dentry_names.insert(entry.inode, entry.name.to_vec());
        }
    }
    // Files whose last link went wait in the GC queue; every queue entry names such a file.
    let mut queued = std::collections::HashSet::new();
    for kv in scan(db, keys::GC_PREFIX).await {
        let (_, id) = keys::gc_key_parts(&kv.key).expect("well-formed GC queue key");
        let inode = inodes.get(&id.0).unwrap_or_else(|| panic!("GC queue entry of missing inode {id}"));
        assert_eq!(inode.nlink, 0, "GC queue entry of linked inode {id}");
        queued.insert(id.0);
    }
    for kv in scan(db, keys::SESSION_PREFIX).await {
        let (id, _) = keys::session_key_parts(&kv.key).expect("well-formed write session key");
        assert!(inodes.contains_key(&id.0), "write session of missing inode {id}");
    }
    for (id, inode) in &inodes {
        let parents = links.get(id).cloned().unwrap_or_default();
        if *id == InodeId::ROOT.0 {
            assert!(parents.is_empty(), "the root has a dentry");
            assert_eq!(inode.nlink, 2 + subdirs.get(id).copied().unwrap_or(0), "root nlink");
            continue;
        }
        if inode.nlink == 0 && inode.inode_type == t3fs_common::proto::InodeType::File as i32 {
            assert!(parents.is_empty(), "unlinked file {id} still has a dentry");
            assert!(queued.contains(id), "unlinked file {id} is not in the GC queue");
            continue;
        }
        assert!(!parents.is_empty(), "orphan inode {id}");
        if is_dir(inode) {
            assert_eq!(parents, vec![inode.parent], "directory {id}: one dentry, in its parent");
            assert_eq!(inode.nlink, 2 + subdirs.get(id).copied().unwrap_or(0), "nlink of directory {id}");
            if !inode.name.is_empty() {
                assert_eq!(Some(&inode.name.to_vec()), dentry_names.get(id), "stored name of directory {id}");
            }
            if let Some(l) = &inode.layout {
                t3fs_common::layout::validate(l).unwrap_or_else(|e| panic!("layout of directory {id}: {e}"));
            }
            let mut cur = inode.parent;
            let mut steps = 0;
            while cur != InodeId::ROOT.0 {
                cur = inodes.get(&cur).unwrap_or_else(|| panic!("directory {id}: ancestor {cur} missing")).parent;
                steps += 1;
                assert!(steps <= inodes.len(), "directory {id}: parent chain loops");
            }
        } else {
            assert_eq!(inode.nlink as usize, parents.len(), "nlink of inode {id}");
        }
    }
    for kv in scan(db, keys::XATTR_PREFIX).await {
        let id = id_at(&kv.key, 4);
        assert!(inodes.contains_key(&id), "xattr of missing inode {id}");
    }
}
