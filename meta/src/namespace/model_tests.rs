//! Reference-model test: random operation sequences against [`MetaStore`] and a plain in-memory
//! tree, compared after every step (results, error codes, listings, directory link counts).
use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use t3fs_kv::mem::MemKv;

use super::tests::{placement, routing_with, table};
use super::*;

/// A node of the model tree: a file or a directory (with its entries), with its real inode id.
#[derive(Clone, Debug)]
enum Node {
    File(u64),
    Dir(u64, BTreeMap<Vec<u8>, Node>),
}

impl Node {
    fn id(&self) -> u64 {
        match self {
            Node::File(id) | Node::Dir(id, _) => *id,
        }
    }
    fn count(&self) -> u64 {
        match self {
            Node::File(_) => 1,
            Node::Dir(_, m) => 1 + m.values().map(Node::count).sum::<u64>(),
        }
    }
}

type Path = Vec<Vec<u8>>;

/// Every node with its path (root first).
fn walk(node: &Node, path: Path, out: &mut Vec<(Path, Node)>) {
    out.push((path.clone(), node.clone()));
    if let Node::Dir(_, m) = node {
        for (name, child) in m {
            let mut p = path.clone();
            p.push(name.clone());
            walk(child, p, out);
        }
    }
}

fn entries_mut<'a>(root: &'a mut Node, path: &Path) -> &'a mut BTreeMap<Vec<u8>, Node> {
    let mut cur = root;
    for name in path {
        cur = match cur {
            Node::Dir(_, m) => m.get_mut(name).expect("path exists in the model"),
            Node::File(_) => panic!("path runs through a file"),
        };
    }
    match cur {
        Node::Dir(_, m) => m,
        Node::File(_) => panic!("not a directory"),
    }
}

/// Compares a directory's full listing and link count with the model.
async fn check_dir(s: &MetaStore, node: &Node) {
    let Node::Dir(id, m) = node else { return };
    let mut got = Vec::new();
    let mut after = Vec::new();
    loop {
        let page = s.readdir(&Caller::default(), InodeId(*id), &after, 3).await.unwrap();
        for e in &page.entries {
            got.push((e.name.to_vec(), e.inode, e.inode_type));
        }
        if !page.more {
            break;
        }
        after = got.last().map(|e| e.0.clone()).unwrap();
    }
    let want: Vec<_> = m
        .iter()
        .map(|(n, c)| {
            let ty = if matches!(c, Node::Dir(..)) { InodeType::Directory } else { InodeType::File };
            (n.clone(), c.id(), ty as i32)
        })
        .collect();
    assert_eq!(got, want, "listing of directory {id}");
    let subdirs = m.values().filter(|c| matches!(c, Node::Dir(..))).count() as u32;
    assert_eq!(s.getattr(InodeId(*id)).await.unwrap().nlink, 2 + subdirs, "nlink of directory {id}");
}

async fn run_model(seed: u64, steps: usize) {
    let s = MetaStore::open(MemKv::new(), routing_with(vec![table(1, 1, vec![1, 2, 3])]), placement()).await.unwrap();
    let mut model = Node::Dir(InodeId::ROOT.0, BTreeMap::new());
    let mut rng = StdRng::seed_from_u64(seed);
    let names: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let caller = Caller::default();
    for step in 0..steps {
        let mut all = Vec::new();
        walk(&model, Vec::new(), &mut all);
        // Parents: directories at depth <= 2, and now and then a file (=> NotDirectory).
        let candidates: Vec<&(Path, Node)> = all
            .iter()
            .filter(|(p, n)| p.len() <= 2 && (matches!(n, Node::Dir(..)) || rng.random_ratio(1, 10)))
            .collect();
        let (ppath, pnode) = candidates[rng.random_range(0..candidates.len())].clone();
        let parent = InodeId(pnode.id());
        let name = names[rng.random_range(0..names.len())];
        let op = rng.random_range(0..7u32);
        let ctx = format!("seed {seed} step {step}: op {op} parent {ppath:?} name {}", show(name));

        if let Node::File(_) = pnode {
            let got = match op {
                0 => s.mkdir(&caller, parent, name, 0o755).await.map(|_| ()),
                1 | 2 => s.create(&caller, parent, name, 0o644, op == 1).await.map(|_| ()),
                3 | 4 => s.remove(&caller, parent, name, op == 4, "").await.map(|_| ()),
                5 => s.lookup(&caller, parent, name).await.map(|_| ()),
                _ => s.readdir(&caller, parent, b"", 2).await.map(|_| ()),
            };
            assert_eq!(got.unwrap_err().code, StatusCode::NotDirectory, "{ctx}");
            continue;
        }

        let existing = entries_mut(&mut model, &ppath).get(name).cloned();
        match op {
            0 => {
                let got = s.mkdir(&caller, parent, name, 0o755).await;
                match existing {
                    Some(_) => assert_eq!(got.unwrap_err().code, StatusCode::AlreadyExists, "{ctx}"),
                    None => {
                        let i = got.expect(&ctx);
                        entries_mut(&mut model, &ppath).insert(name.to_vec(), Node::Dir(i.id, BTreeMap::new()));
                    }
                }
            }
            1 | 2 => {
                let exclusive = op == 1;
                let got = s.create(&caller, parent, name, 0o644, exclusive).await;
                match existing {
                    Some(_) if exclusive => assert_eq!(got.unwrap_err().code, StatusCode::AlreadyExists, "{ctx}"),
                    Some(Node::Dir(..)) => assert_eq!(got.unwrap_err().code, StatusCode::IsDirectory, "{ctx}"),
                    Some(Node::File(id)) => assert_eq!(got.expect(&ctx).id, id, "{ctx}"),
                    None => {
                        let i = got.expect(&ctx);
                        assert!(i.layout.is_some(), "{ctx}");
                        entries_mut(&mut model, &ppath).insert(name.to_vec(), Node::File(i.id));
                    }
                }
            }
            3 | 4 => {
                let rmdir = op == 4;
                let got = s.remove(&caller, parent, name, rmdir, "").await;
                let want = match &existing {
                    None => Err(StatusCode::NotFound),
                    Some(Node::File(_)) if rmdir => Err(StatusCode::NotDirectory),
                    Some(Node::Dir(..)) if !rmdir => Err(StatusCode::IsDirectory),
                    Some(Node::Dir(_, m)) if !m.is_empty() => Err(StatusCode::DirectoryNotEmpty),
                    Some(n) => Ok(n.id()),
                };
                assert_eq!(got.map(|i| i.id).map_err(|e| e.code), want, "{ctx}");
                if want.is_ok() {
                    entries_mut(&mut model, &ppath).remove(name);
                }
            }
            5 => {
                let got = s.lookup(&caller, parent, name).await.map(|i| (i.id, is_dir(&i))).map_err(|e| e.code);
                let want = existing.map(|n| (n.id(), matches!(n, Node::Dir(..)))).ok_or(StatusCode::NotFound);
                assert_eq!(got, want, "{ctx}");
            }
            _ => {
                let limit = rng.random_range(1..4u32);
                let page = s.readdir(&caller, parent, name, limit).await.expect(&ctx);
                let after: Vec<Vec<u8>> =
                    entries_mut(&mut model, &ppath).keys().filter(|k| k.as_slice() > name).cloned().collect();
                let got: Vec<Vec<u8>> = page.entries.iter().map(|e| e.name.to_vec()).collect();
                let n = after.len().min(limit as usize);
                assert_eq!(got, after[..n].to_vec(), "{ctx}");
                assert_eq!(page.more, after.len() > n, "{ctx}");
            }
        }
        // The parent (and its own parent's link count) match the model after every step.
        let mut all = Vec::new();
        walk(&model, Vec::new(), &mut all);
        for (p, n) in &all {
            if *p == ppath || (ppath.len() == p.len() + 1 && ppath.starts_with(p)) {
                check_dir(&s, n).await;
            }
        }
    }
    // Final full comparison.
    let mut all = Vec::new();
    walk(&model, Vec::new(), &mut all);
    for (_, n) in &all {
        check_dir(&s, n).await;
    }
    assert_eq!(s.statfs().await.unwrap().inodes, model.count(), "seed {seed}: inode count");
}

#[tokio::test]
async fn namespace_matches_the_reference_model() {
    for seed in 0..8 {
        run_model(seed, 300).await;
    }
}
