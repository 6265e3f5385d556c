//! Model-based property test: random sequences of namespace ops by three users against
//! [`MetaStore`] and against a small in-memory POSIX model, compared after every step (the result
//! or error code of the op, then every directory listing and every inode's type, mode, owner,
//! link count and parent).
//!
//! The model is deliberately naive — a map of inodes and a map of (parent, name) -> inode — and
//! spells out the POSIX rules in the same order the real code checks them (docs/meta.md).
use std::collections::BTreeMap;

use proptest::prelude::*;
use t3fs_kv::mem::MemKv;

use super::check::check_invariants;
use super::tests::{placement, routing_with, table};
use super::*;

const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];
const MODES: [u32; 9] = [0o755, 0o700, 0o777, 0o1777, 0o750, 0o770, 0o311, 0o2775, 0o644];
const ROOT: u64 = 1;
/// An inode id that never exists.
const GHOST: u64 = 0xdead_0000;

fn users() -> [Caller; 3] {
    [
        Caller { uid: 1000, gid: 1000, gids: vec![50] },
        Caller { uid: 1001, gid: 1001, gids: vec![50] },
        Caller { uid: 1002, gid: 50, gids: vec![] },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Non-directories: number of names. (A directory's is computed.)
    nlink: u32,
    parent: u64,
}

type Code = StatusCode;
type Outcome = std::result::Result<u64, Code>;

#[derive(Clone, Debug, Default)]
struct Model {
    nodes: BTreeMap<u64, Node>,
    entries: BTreeMap<(u64, Vec<u8>), u64>,
}

impl Model {
    fn new() -> Self {
        let mut m = Model::default();
        let root = Node { kind: Kind::Dir, mode: 0o1777, uid: 0, gid: 0, nlink: 0, parent: ROOT };
        m.nodes.insert(ROOT, root);
        m
    }
    fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }
    fn dirs(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.kind == Kind::Dir).map(|(id, _)| *id).collect()
    }
    fn get(&self, dir: u64, name: &[u8]) -> Option<u64> {
        self.entries.get(&(dir, name.to_vec())).copied()
    }
    /// The absolute path of directory `id`.
    fn path(&self, mut id: u64) -> Vec<u8> {
        let mut names = Vec::new();
        while id != ROOT {
            let parent = self.node(id).parent;
            let ((_, name), _) =
                self.entries.iter().find(|((p, _), v)| *p == parent && **v == id).expect("a directory has a name");
            names.push(name.clone());
            id = parent;
        }
        if names.is_empty() {
            return b"/".to_vec();
        }
        names.iter().rev().flat_map(|n| std::iter::once(b'/').chain(n.iter().copied())).collect()
    }
    fn children(&self, dir: u64) -> Vec<(Vec<u8>, u64)> {
        self.entries.iter().filter(|((p, _), _)| *p == dir).map(|((_, n), id)| (n.clone(), *id)).collect()
    }
    fn dir_nlink(&self, dir: u64) -> u32 {
        2 + self.children(dir).iter().filter(|(_, id)| self.node(*id).kind == Kind::Dir).count() as u32
    }
    fn allowed(&self, u: &Caller, id: u64, want: u32) -> bool {
        let n = self.node(id);
        let bits = if u.uid == 0 {
            7
        } else if u.uid == n.uid {
            n.mode >> 6 & 7
        } else if u.gid == n.gid || u.gids.contains(&n.gid) {
            n.mode >> 3 & 7
        } else {
            n.mode & 7
        };
        bits & want == want
    }
    fn need(&self, u: &Caller, id: u64, want: u32) -> std::result::Result<(), Code> {
        if self.allowed(u, id, want) { Ok(()) } else { Err(Code::PermissionDenied) }
    }
    fn sticky_ok(&self, u: &Caller, dir: u64, victim: u64) -> std::result::Result<(), Code> {
        let d = self.node(dir);
        let ok = d.mode & 0o1000 == 0 || u.uid == 0 || u.uid == d.uid || u.uid == self.node(victim).uid;
        if ok { Ok(()) } else { Err(Code::OperationNotPermitted) }
    }
    /// Whether `a` is `b` or one of `b`'s ancestors.
    fn ancestor_or_self(&self, a: u64, mut b: u64) -> bool {
        loop {
            if a == b {
                return true;
            }
            if b == ROOT {
                return false;
            }
            b = self.node(b).parent;
        }
    }
    /// Drops one name of `id` (already unlinked from `entries`).
    fn drop_link(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("linked inode exists");
        if n.kind == Kind::Dir {
            self.nodes.remove(&id);
            return;
        }
        n.nlink -= 1;
        if n.nlink == 0 {
            self.nodes.remove(&id);
        }
    }

    fn add(&mut self, u: &Caller, p: u64, name: &[u8], kind: Kind, mode: u32, new_id: u64) -> Outcome {
        self.need(u, p, 1)?;
        if self.get(p, name).is_some() {
            return Err(Code::AlreadyExists);
        }
        self.need(u, p, 3)?;
        let pn = self.node(p).clone();
        let sgid = pn.mode & 0o2000 != 0;
        let mode = match kind {
            Kind::Dir => mode & 0o7777 | pn.mode & 0o2000,
            Kind::File => mode & 0o7777,
            Kind::Symlink => 0o777,
        };
        let gid = if sgid { pn.gid } else { u.gid };
        self.nodes.insert(new_id, Node { kind, mode, uid: u.uid, gid, nlink: 1, parent: p });
        self.entries.insert((p, name.to_vec()), new_id);
        Ok(new_id)
    }

    fn create(&mut self, u: &Caller, p: u64, name: &[u8], mode: u32, excl: bool, new_id: u64) -> Outcome {
        self.need(u, p, 1)?;
        if let Some(id) = self.get(p, name) {
            return match (excl, self.node(id).kind) {
                (true, _) => Err(Code::AlreadyExists),
                (false, Kind::Dir) => Err(Code::IsDirectory),
                (false, _) => Ok(id),
            };
        }
        self.add(u, p, name, Kind::File, mode, new_id)
    }

    fn remove(&mut self, u: &Caller, p: u64, name: &[u8], rmdir: bool) -> Outcome {
        self.need(u, p, 1)?;
        let id = self.get(p, name).ok_or(Code::NotFound)?;
        self.need(u, p, 3)?;
        self.sticky_ok(u, p, id)?;
        match (rmdir, self.node(id).kind == Kind::Dir) {
            (true, false) => return Err(Code::NotDirectory),
            (false, true) => return Err(Code::IsDirectory),
            (true, true) if !self.children(id).is_empty() => return Err(Code::DirectoryNotEmpty),
            _ => {}
        }
        self.entries.remove(&(p, name.to_vec()));
        self.drop_link(id);
        Ok(id)
    }

    fn link(&mut self, u: &Caller, target: u64, p: u64, name: &[u8]) -> Outcome {
        if !self.nodes.contains_key(&target) {
            return Err(Code::NotFound);
        }
        self.need(u, p, 1)?;
        if self.get(p, name).is_some() {
            return Err(Code::AlreadyExists);
        }
        self.need(u, p, 3)?;
        if self.node(target).kind == Kind::Dir {
            return Err(Code::OperationNotPermitted);
        }
        self.nodes.get_mut(&target).expect("checked").nlink += 1;
        self.entries.insert((p, name.to_vec()), target);
        Ok(target)
    }

    fn chmod(&mut self, u: &Caller, id: u64, mode: u32) -> Outcome {
        let n = self.nodes.get(&id).ok_or(Code::NotFound)?;
        if u.uid != 0 && u.uid != n.uid {
            return Err(Code::OperationNotPermitted);
        }
        let in_group = u.uid == 0 || u.gid == n.gid || u.gids.contains(&n.gid);
        let n = self.nodes.get_mut(&id).expect("checked");
        n.mode = mode & 0o7777;
        if !in_group {
            n.mode &= !0o2000;
        }
        Ok(id)
    }

    /// Returns the replaced inode's id if it lost its last name, else 0.
    fn rename(&mut self, u: &Caller, sp: u64, sn: &[u8], dp: u64, dn: &[u8], f: RenameFlags) -> Outcome {
        self.need(u, sp, 1)?;
        self.need(u, dp, 1)?;
        let src = self.get(sp, sn).ok_or(Code::NotFound)?;
        let dst = self.get(dp, dn);
        if f.no_replace && dst.is_some() {
            return Err(Code::AlreadyExists);
        }
        if f.exchange && dst.is_none() {
            return Err(Code::NotFound);
        }
        let is_dir = |m: &Self, id: u64| m.node(id).kind == Kind::Dir;
        if sp != dp {
            if is_dir(self, src) && self.ancestor_or_self(src, dp) {
                return Err(Code::InvalidArgument);
            }
            if let Some(d) = dst.filter(|d| f.exchange && is_dir(self, *d))
                && self.ancestor_or_self(d, sp)
            {
                return Err(Code::InvalidArgument);
            }
        }
        if dst == Some(src) {
            return Ok(0);
        }
        self.need(u, sp, 3)?;
        self.sticky_ok(u, sp, src)?;
        self.need(u, dp, 3)?;
        if let Some(d) = dst {
            self.sticky_ok(u, dp, d)?;
        }
        if sp != dp {
            if is_dir(self, src) {
                self.need(u, src, 2)?;
            }
            if let Some(d) = dst.filter(|d| f.exchange && is_dir(self, *d)) {
                self.need(u, d, 2)?;
            }
        }
        if f.exchange {
            let d = dst.expect("checked");
            self.entries.insert((sp, sn.to_vec()), d);
            self.entries.insert((dp, dn.to_vec()), src);
            self.nodes.get_mut(&src).expect("exists").parent = dp;
            self.nodes.get_mut(&d).expect("exists").parent = sp;
            return Ok(0);
        }
        let mut gone = 0;
        if let Some(d) = dst {
            match (is_dir(self, src), is_dir(self, d)) {
                (true, false) => return Err(Code::NotDirectory),
                (false, true) => return Err(Code::IsDirectory),
                (true, true) if !self.children(d).is_empty() => return Err(Code::DirectoryNotEmpty),
                _ => {}
            }
            self.drop_link(d);
            if !self.nodes.contains_key(&d) {
                gone = d;
            }
        }
        self.entries.remove(&(sp, sn.to_vec()));
        self.entries.insert((dp, dn.to_vec()), src);
        self.nodes.get_mut(&src).expect("exists").parent = dp;
        Ok(gone)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir(usize, u8, usize, usize),
    Create(usize, u8, usize, usize, bool),
    Symlink(usize, u8, usize),
    Remove(usize, u8, usize, bool),
    Link(usize, u8, usize, u8, usize),
    Rename(usize, u8, usize, u8, usize, u8),
    /// user, dir, name (NAMES.len() = the directory itself), mode
    Chmod(usize, u8, usize, usize),
    Lookup(usize, u8, usize),
    Readdir(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let (u, d, n, m) = (0..3usize, any::<u8>(), 0..NAMES.len(), 0..MODES.len());
    prop_oneof![
        3 => (u.clone(), d, n.clone(), m.clone()).prop_map(|(u, d, n, m)| Op::Mkdir(u, d, n, m)),
        3 => (u.clone(), d, n.clone(), m.clone(), any::<bool>()).prop_map(|(u, d, n, m, x)| Op::Create(u, d, n, m, x)),
        1 => (u.clone(), d, n.clone()).prop_map(|(u, d, n)| Op::Symlink(u, d, n)),
        2 => (u.clone(), d, n.clone(), any::<bool>()).prop_map(|(u, d, n, r)| Op::Remove(u, d, n, r)),
        1 => (u.clone(), d, n.clone(), d, n.clone()).prop_map(|(u, a, b, c, e)| Op::Link(u, a, b, c, e)),
        4 => (u.clone(), d, n.clone(), d, n.clone(), 0..3u8)
            .prop_map(|(u, a, b, c, e, f)| Op::Rename(u, a, b, c, e, f)),
        2 => (u.clone(), d, 0..=NAMES.len(), m).prop_map(|(u, d, n, m)| Op::Chmod(u, d, n, m)),
        1 => (u.clone(), d, n).prop_map(|(u, d, n)| Op::Lookup(u, d, n)),
        1 => (u, d).prop_map(|(u, d)| Op::Readdir(u, d)),
    ]
}

fn outcome(r: Result<Inode>) -> Outcome {
    r.map(|i| i.id).map_err(|e| e.code)
}

/// Full comparison of the store with the model.
async fn compare(s: &MetaStore, m: &Model, ctx: &str) {
    let root = Caller::default();
    for dir in m.dirs() {
        let page = s.readdir(&root, InodeId(dir), b"", MAX_READDIR_LIMIT).await.expect(ctx);
        let got: Vec<(Vec<u8>, u64)> = page.entries.iter().map(|e| (e.name.to_vec(), e.inode)).collect();
        assert_eq!(got, m.children(dir), "{ctx}: listing of {dir}");
        assert_eq!(s.real_path(InodeId(dir), b"").await.expect(ctx), m.path(dir), "{ctx}: real path of {dir}");
    }
    let ids: Vec<InodeId> = m.nodes.keys().map(|id| InodeId(*id)).collect();
    let got = s.batch_stat(&ids).await.expect(ctx);
    for (inode, (id, n)) in got.iter().zip(&m.nodes) {
        let i = inode.as_ref().unwrap_or_else(|| panic!("{ctx}: inode {id} missing"));
        let kind = match InodeType::try_from(i.inode_type) {
            Ok(InodeType::Directory) => Kind::Dir,
            Ok(InodeType::Symlink) => Kind::Symlink,
            _ => Kind::File,
        };
        let nlink = if n.kind == Kind::Dir { m.dir_nlink(*id) } else { n.nlink };
        assert_eq!((kind, i.mode, i.uid, i.gid, i.nlink), (n.kind, n.mode, n.uid, n.gid, nlink), "{ctx}: inode {id}");
        if n.kind == Kind::Dir {
            assert_eq!(i.parent, n.parent, "{ctx}: parent of {id}");
        }
    }
    assert_eq!(s.statfs().await.expect(ctx).inodes, m.nodes.len() as u64, "{ctx}: inode count");
}

async fn run_ops(ops: Vec<Op>) {
    let s = MetaStore::open(MemKv::new(), routing_with(vec![table(1, 1, vec![1, 2])]), placement()).await.unwrap();
    let mut m = Model::new();
    let us = users();
    for (step, op) in ops.iter().enumerate() {
        let dirs = m.dirs();
        let dir = |i: u8| dirs[i as usize % dirs.len()];
        let ctx = format!("step {step}: {op:?}");
        let (got, want): (Outcome, Outcome) = match *op {
            Op::Mkdir(u, d, n, mode) => {
                let r = outcome(s.mkdir(&us[u], InodeId(dir(d)), NAMES[n], MODES[mode]).await);
                (r, m.add(&us[u], dir(d), NAMES[n], Kind::Dir, MODES[mode], *r.as_ref().unwrap_or(&0)))
            }
            Op::Create(u, d, n, mode, excl) => {
                let r = outcome(s.create(&us[u], InodeId(dir(d)), NAMES[n], MODES[mode], excl).await);
                (r, m.create(&us[u], dir(d), NAMES[n], MODES[mode], excl, *r.as_ref().unwrap_or(&0)))
            }
            Op::Symlink(u, d, n) => {
                let r = outcome(s.symlink(&us[u], InodeId(dir(d)), NAMES[n], b"target").await);
                (r, m.add(&us[u], dir(d), NAMES[n], Kind::Symlink, 0, *r.as_ref().unwrap_or(&0)))
            }
            Op::Remove(u, d, n, rmdir) => {
                let r = outcome(s.remove(&us[u], InodeId(dir(d)), NAMES[n], rmdir, "").await);
                (r, m.remove(&us[u], dir(d), NAMES[n], rmdir))
            }
            Op::Link(u, sd, sn, dd, dn) => {
                let target = m.get(dir(sd), NAMES[sn]).unwrap_or(GHOST);
                let r = outcome(s.link(&us[u], InodeId(target), InodeId(dir(dd)), NAMES[dn]).await);
                (r, m.link(&us[u], target, dir(dd), NAMES[dn]))
            }
            Op::Rename(u, sd, sn, dd, dn, f) => {
                let flags = RenameFlags { no_replace: f == 1, exchange: f == 2 };
                let r = s.rename(&us[u], InodeId(dir(sd)), NAMES[sn], InodeId(dir(dd)), NAMES[dn], flags, "").await;
                let r = r.map(|i| i.map(|i| i.id).unwrap_or(0)).map_err(|e| e.code);
                (r, m.rename(&us[u], dir(sd), NAMES[sn], dir(dd), NAMES[dn], flags))
            }
            Op::Chmod(u, d, n, mode) => {
                let id = if n == NAMES.len() { dir(d) } else { m.get(dir(d), NAMES[n]).unwrap_or(GHOST) };
                let attrs = SetAttr { mode: Some(MODES[mode]), ..Default::default() };
                (outcome(s.setattr(&us[u], InodeId(id), attrs).await), m.chmod(&us[u], id, MODES[mode]))
            }
            Op::Lookup(u, d, n) => {
                let want = m.need(&us[u], dir(d), 1).and_then(|()| m.get(dir(d), NAMES[n]).ok_or(Code::NotFound));
                (outcome(s.lookup(&us[u], InodeId(dir(d)), NAMES[n]).await), want)
            }
            Op::Readdir(u, d) => {
                let r = s.readdir(&us[u], InodeId(dir(d)), b"", 0).await;
                (
                    r.map(|p| p.entries.len() as u64).map_err(|e| e.code),
                    m.need(&us[u], dir(d), 4).map(|()| m.children(dir(d)).len() as u64),
                )
            }
        };
        assert_eq!(got, want, "{ctx}");
        compare(&s, &m, &ctx).await;
    }
    check_invariants(s.db()).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn namespace_matches_the_posix_model(ops in proptest::collection::vec(op(), 1..48)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}
