//! Per-directory default layouts and round-robin chain allocation.
//!
//! A directory inode may carry a default layout in `Inode.layout` (only `table_id`, `chunk_size`
//! and `stripe` are meaningful there). Files created in the directory take it; a new subdirectory
//! gets a copy at mkdir (later changes to the parent do not propagate). A directory without one —
//! the root of a fresh store, and every directory below that never had `set_layout` in its
//! ancestry — uses the meta config's [`Placement`], so changing the config still moves those.
//!
//! **Round-robin base index** (3FS's `ChainAllocator`): a directory keeps `chain_alloc_counter` in
//! its inode. A file created in it gets `base_index = counter % chains` and the counter advances by
//! the file's stripe, so consecutive files tile the table's chains: after `k` creates in one
//! directory (one table of `n` chains, stripe `s`), every chain is in the stripe of either
//! `floor(k*s/n)` or `ceil(k*s/n)` of them. The first create (counter 0) starts at a random index,
//! so directories do not all start on chain 0. The shuffle seed of each file is random.
//!
//! **Conflicts.** The counter lives in the directory inode, which every create already reads with a
//! conflicting read and rewrites (mtime/ctime; the conflicting read is what serializes create
//! against rmdir of the parent). Concurrent creates in one directory therefore already conflict on
//! that key; the counter adds no new hot key and stays exact. (A separate per-directory key would
//! not avoid that conflict while the parent's times are updated per create.)
use t3fs_common::proto::{Inode, Layout};
use t3fs_common::routing::Routing;
use t3fs_common::{ChainTableId, Error, InodeId, Result, StatusCode, now_ns};

use super::{Caller, MetaStore, Placement, is_dir, must_inode, perm, put_inode};

/// The layout template files in `dir` are created with: the directory's own, else the config's.
pub(super) fn dir_template(dir: &Inode, placement: &Placement) -> Layout {
    match &dir.layout {
        Some(l) if l.chunk_size != 0 && l.stripe != 0 => *l,
        _ => Layout {
            table_id: placement.chain_table_id,
            chunk_size: placement.chunk_size,
            stripe: placement.stripe,
            ..Default::default()
        },
    }
}

/// The layout of a new file in `dir` from the current routing, advancing the directory's
/// round-robin counter (the caller writes `dir`).
pub(super) fn next_file_layout(routing: &Routing, placement: &Placement, dir: &mut Inode) -> Result<Layout> {
    let t = dir_template(dir, placement);
    let table = routing.table(ChainTableId(t.table_id), 0)?;
    let n = table.chains.len() as u32;
    if n == 0 {
        return Err(Error::new(StatusCode::RoutingNotReady, format!("chain table {} has no chains", t.table_id)));
    }
    let stripe = t.stripe.min(n);
    let counter = match dir.chain_alloc_counter {
        0 => rand::random_range(1..=u64::from(u32::MAX)),
        c => c,
    };
    let base_index = (counter % u64::from(n)) as u32;
    // 0 means "not started": skip it when the counter wraps.
    dir.chain_alloc_counter = counter.wrapping_add(u64::from(stripe)).max(1);
    Ok(Layout {
        table_id: table.table_id,
        table_version: table.version,
        chunk_size: t.chunk_size,
        stripe,
        base_index,
        seed: rand::random::<u64>(),
    })
}

/// What a directory's default layout may be: a chain table routing knows, a chunk size the layout
/// rules accept, a stripe of 1 ..= the table's chain count (newest version). Returns the stored form.
pub fn validate_dir_layout(routing: &Routing, layout: &Layout) -> Result<Layout> {
    t3fs_common::layout::validate(layout)?;
    let table = routing
        .table(ChainTableId(layout.table_id), 0)
        .map_err(|_| Error::invalid(format!("chain table {} does not exist", layout.table_id)))?;
    let n = table.chains.len() as u32;
    if layout.stripe > n {
        return Err(Error::invalid(format!(
            "stripe {} exceeds the {n} chains of chain table {}",
            layout.stripe, layout.table_id
        )));
    }
    Ok(Layout { table_id: layout.table_id, chunk_size: layout.chunk_size, stripe: layout.stripe, ..Default::default() })
}

impl MetaStore {
    /// Sets directory `dir`'s default layout (owner or root only). Files created in it afterwards,
    /// and subdirectories made afterwards, use it; existing files keep theirs.
    pub async fn set_layout(&self, caller: &Caller, dir: InodeId, layout: &Layout) -> Result<Inode> {
        let stored = validate_dir_layout(&self.routing.get(), layout)?;
        let caller = caller.clone();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let caller = caller.clone();
            Box::pin(async move {
                let mut inode = must_inode(txn, dir, false).await?;
                if !is_dir(&inode) {
                    return Err(Error::new(
                        StatusCode::NotDirectory,
                        format!("inode {dir} is not a directory (a file's layout is fixed at create)"),
                    )
                    .into());
                }
                if !caller.is_root() && caller.uid != inode.uid {
                    return Err(
                        perm::not_permitted(format!("uid {} may not set the layout of {dir}", caller.uid)).into()
                    );
                }
                inode.layout = Some(stored);
                inode.ctime_ns = now_ns();
                put_inode(txn, &inode);
                Ok(inode)
            })
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use t3fs_kv::mem::MemKv;

    use super::super::tests::{placement, routing_with, table};
    use super::*;

    const ROOT: InodeId = InodeId::ROOT;

    fn user(uid: u32) -> Caller {
        Caller { uid, gid: 100, gids: vec![] }
    }

    async fn store() -> MetaStore {
        let tables = vec![table(1, 1, vec![1, 2]), table(2, 1, (10..18).collect()), table(2, 2, (10..22).collect())];
        MetaStore::open(MemKv::new(), routing_with(tables), placement()).await.unwrap()
    }

    fn want(table_id: u32, chunk_size: u32, stripe: u32) -> Layout {
        Layout { table_id, chunk_size, stripe, ..Default::default() }
    }

    #[tokio::test]
    async fn files_and_subdirectories_inherit_the_directory_layout() {
        let s = store().await;
        let u = user(1000);
        let d = s.mkdir(&u, ROOT, b"d", 0o755).await.unwrap();
        assert_eq!(d.layout, None, "no layout of its own: the config's applies");
        let f = s.create(&u, InodeId(d.id), b"f0", 0o644, true).await.unwrap();
        let l = f.layout.unwrap();
        assert_eq!((l.table_id, l.table_version, l.chunk_size, l.stripe), (1, 1, 1 << 20, 2));

        let d = s.set_layout(&u, InodeId(d.id), &want(2, 64 << 10, 4)).await.unwrap();
        assert_eq!(d.layout, Some(want(2, 64 << 10, 4)));
        let f = s.create(&u, InodeId(d.id), b"f1", 0o644, true).await.unwrap();
        let l = f.layout.unwrap();
        // The newest version of table 2 (12 chains).
        assert_eq!((l.table_id, l.table_version, l.chunk_size, l.stripe), (2, 2, 64 << 10, 4));
        assert!(l.base_index < 12);
        // A subdirectory made now copies the layout; a later change of the parent does not reach it.
        let sub = s.mkdir(&u, InodeId(d.id), b"sub", 0o755).await.unwrap();
        assert_eq!(sub.layout, Some(want(2, 64 << 10, 4)));
        s.set_layout(&u, InodeId(d.id), &want(1, 1 << 20, 1)).await.unwrap();
        let g = s.create(&u, InodeId(sub.id), b"g", 0o644, true).await.unwrap();
        assert_eq!(g.layout.unwrap().chunk_size, 64 << 10);
        // Existing files keep theirs.
        assert_eq!(s.getattr(InodeId(f.id)).await.unwrap().layout.unwrap().chunk_size, 64 << 10);
        super::super::check::check_invariants(s.db()).await;
    }

    #[tokio::test]
    async fn round_robin_spreads_files_evenly_over_the_chains() {
        let s = store().await;
        let root = Caller::default();
        let d = s.mkdir(&root, ROOT, b"d", 0o755).await.unwrap();
        s.set_layout(&root, InodeId(d.id), &want(2, 1 << 20, 5)).await.unwrap();
        // 12 chains, stripe 5: after k files each chain is in floor or ceil(5k/12) stripes.
        let mut uses: HashMap<u32, u32> = HashMap::new();
        let mut bases = Vec::new();
        for k in 1..=30u32 {
            let f = s.create(&root, InodeId(d.id), format!("f{k}").as_bytes(), 0o644, true).await.unwrap();
            let l = f.layout.unwrap();
            bases.push(l.base_index);
            for i in 0..l.stripe {
                *uses.entry((l.base_index + i) % 12).or_default() += 1;
            }
            let (lo, hi) = (5 * k / 12, (5 * k).div_ceil(12));
            for chain in 0..12 {
                let u = uses.get(&chain).copied().unwrap_or(0);
                assert!((lo..=hi).contains(&u), "after {k} files chain {chain} is used {u} times: {bases:?}");
            }
        }
        // Consecutive files continue where the previous stripe ended.
        for w in bases.windows(2) {
            assert_eq!(w[1], (w[0] + 5) % 12, "{bases:?}");
        }
    }

    #[tokio::test]
    async fn first_create_starts_at_a_random_chain() {
        let tables = vec![table(1, 1, (0..64).collect())];
        let p = Placement { stripe: 1, ..placement() };
        let s = MetaStore::open(MemKv::new(), routing_with(tables), p).await.unwrap();
        let mut firsts = std::collections::HashSet::new();
        for i in 0..16 {
            let d = s.mkdir(&Caller::default(), ROOT, format!("d{i}").as_bytes(), 0o755).await.unwrap();
            let f = s.create(&Caller::default(), InodeId(d.id), b"f", 0o644, true).await.unwrap();
            firsts.insert(f.layout.unwrap().base_index);
        }
        // 16 random starts out of 64 chains: all equal has probability 64^-15.
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[tokio::test]
    async fn set_layout_checks_its_input_and_the_caller() {
        let s = store().await;
        let (owner, other) = (user(1000), user(1001));
        let d = s.mkdir(&owner, ROOT, b"d", 0o777).await.unwrap();
        let f = s.create(&owner, InodeId(d.id), b"f", 0o666, true).await.unwrap();
        let dir = InodeId(d.id);
        let cases = [
            (want(9, 1 << 20, 1), StatusCode::InvalidArgument),  // no such table
            (want(1, 3000, 1), StatusCode::InvalidArgument),     // not a power of two
            (want(1, 1 << 30, 1), StatusCode::InvalidArgument),  // too large
            (want(1, 1 << 20, 0), StatusCode::InvalidArgument),  // zero stripe
            (want(1, 1 << 20, 3), StatusCode::InvalidArgument),  // more than the table's 2 chains
            (want(2, 1 << 20, 13), StatusCode::InvalidArgument), // newest version has 12
        ];
        for (l, code) in cases {
            assert_eq!(s.set_layout(&owner, dir, &l).await.unwrap_err().code, code, "{l:?}");
        }
        let ok = want(2, 1 << 20, 12);
        assert_eq!(s.set_layout(&other, dir, &ok).await.unwrap_err().code, StatusCode::OperationNotPermitted);
        assert_eq!(s.set_layout(&owner, InodeId(f.id), &ok).await.unwrap_err().code, StatusCode::NotDirectory);
        assert_eq!(s.set_layout(&owner, InodeId(999_999), &ok).await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.getattr(dir).await.unwrap().layout, None, "failures changed nothing");
        // Owner and root may; the other fields of the request are not stored.
        let noisy = Layout { table_version: 7, base_index: 3, seed: 9, ..ok };
        assert_eq!(s.set_layout(&owner, dir, &noisy).await.unwrap().layout, Some(ok));
        assert_eq!(s.set_layout(&Caller::default(), ROOT, &ok).await.unwrap().layout, Some(ok));
        // The root's own layout now overrides the config for new files there.
        let top = s.create(&owner, ROOT, b"top", 0o644, true).await.unwrap();
        assert_eq!(top.layout.unwrap().table_id, 2);
    }
}
