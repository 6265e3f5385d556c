//! The POSIX namespace over the transactional KV store, free of gRPC so it is tested directly.
//!
//! [`MetaStore`] is stateless apart from caches (routing, the inode id batch): every operation is
//! one KV transaction run through [`t3fs_kv::run`], which retries conflicts, so any number of meta
//! servers can share one store. Read-only operations read a snapshot and add no conflicts.
//! Mutations read the parent inode and the dentry they look at with *conflicting* reads, so two
//! operations on the same name (or a create racing an rmdir of the parent) conflict and one retries
//! against the other's result.
//!
//! Invariants kept by every mutation (see [`crate::keys`] for the schema):
//! - a dentry names an existing inode; a directory's `nlink` is 2 + its subdirectories;
//! - a file's `nlink` counts its dentries; at 0 its inode is deleted in the same transaction and
//!   returned to the caller, who frees its chunks (GC and open-file protection are issue 5);
//! - names are validated ([`validate_name`]) before the store is touched: bad input changes nothing;
//! - a deleted inode's xattrs are deleted in the same transaction.
//!
//! POSIX permissions are enforced for the [`Caller`] ([`perm`] has the rules); docs/meta.md lists
//! the order of checks per op.
//!
//! New files take their layout from their directory ([`layout`]: per-directory default layouts,
//! round-robin base index); `paths` has mkdirs (mkdir -p in one transaction) and real paths.
#[cfg(test)]
mod check;
mod dir_batch;
pub mod layout;
mod locks;
#[cfg(test)]
mod model_tests;
mod mutate;
mod paths;
pub mod perm;
pub use gc_queue::Finish;
mod gc_queue;
#[cfg(test)]
mod proptest_model;
mod rename;
mod sessions;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_concurrency;
#[cfg(test)]
mod tests_perm;
#[cfg(test)]
mod tests_rename;
#[cfg(test)]
mod tests_space;
mod xattr;

use std::borrow::Cow;
use std::time::Duration;

use t3fs_common::names::validate_name;
use t3fs_common::proto::{DirEntry, Inode, InodeType, Layout};
use t3fs_common::routing::RoutingCache;
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{Db, KvError, RangeOpts, Transaction};

use crate::alloc::IdAllocator;
use crate::keys;

pub use dir_batch::MAX_BATCH as MAX_DIR_BATCH;
pub use mutate::{CloseLength, SYMLINK_MAX, SetAttr};
pub use rename::RenameFlags;
pub use xattr::{XATTR_NAME_MAX, XATTR_TOTAL_MAX, XATTR_VALUE_MAX, XattrFlags};

/// Most inodes one `batch_stat` may ask for.
pub const MAX_BATCH_STAT: usize = 4096;
/// Default lifetime of idempotency records (3FS: 30 min).
pub const DEFAULT_IDEM_TTL: Duration = Duration::from_secs(30 * 60);

/// readdir page size when the request says 0 (as 3FS).
pub const DEFAULT_READDIR_LIMIT: u32 = 128;
/// Largest readdir page.
pub const MAX_READDIR_LIMIT: u32 = 4096;
/// Inodes read per transaction by `statfs`'s scan.
const STATFS_PAGE: usize = 1024;

/// How new files are placed (from the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Chain table new files use (its newest version at create time).
    pub chain_table_id: u32,
    /// Chunk size of new files.
    pub chunk_size: u32,
    /// Wanted stripe; capped by the table's chain count.
    pub stripe: u32,
}

/// Owner and mode of the root directory, applied when a fresh store gets its root (never later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootAttrs {
    pub uid: u32,
    pub gid: u32,
    /// Default 0o1777 (world-writable and sticky, like /tmp): any user of a fresh file system can
    /// create their own top-level entries; deployments that pre-create per-user directories use 0o755.
    pub mode: u32,
}

impl Default for RootAttrs {
    fn default() -> Self {
        Self { uid: 0, gid: 0, mode: 0o1777 }
    }
}

/// Who is asking (from the request header): owner of new inodes and subject of permission checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// One page of a directory listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadDir {
    /// Entries in byte order of their names.
    pub entries: Vec<DirEntry>,
    /// More entries follow the last one returned.
    pub more: bool,
}

/// File system totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    /// Logical capacity: over every chain, the smallest capacity among its targets (each chain
    /// keeps one logical copy), as storage reports it in heartbeats; 0 while nothing is reported.
    pub capacity_bytes: u64,
    /// Logical free space, the same way from the targets' free bytes (`None` while unreported).
    pub free_bytes: Option<u64>,
    /// Sum of file lengths (logical bytes, before replication).
    pub used_bytes: u64,
    /// Number of inodes (counted by a paged scan: exact when the namespace is quiet).
    pub inodes: u64,
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Options of [`MetaStore::open_with_options`] that only apply to a fresh store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Owner and mode of a missing root directory.
    pub root: RootAttrs,
    /// Inode id counter shards for a store without sharded allocation yet ([`crate::alloc`]).
    pub id_shards: u32,
    /// Free space kept on the store's disk (a local store only, [`t3fs_kv::KvEngine::space`]): new
    /// names and xattrs are refused with NoSpace below it. `None`: 2% of the disk, at least 256 MiB.
    pub reserved_space: Option<u64>,
    /// How long statfs reuses its count of inodes and file bytes (ten times the scan's duration if
    /// that is longer); zero (the default here; the meta server's `statfs_cache_ms` is
    /// [`DEFAULT_STATFS_CACHE`]): a scan on every call ([`MetaStore::statfs`]).
    pub statfs_cache: Duration,
}

/// The meta server's default `statfs_cache_ms`.
pub const DEFAULT_STATFS_CACHE: Duration = Duration::from_secs(5);

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            root: RootAttrs::default(),
            id_shards: crate::alloc::DEFAULT_SHARDS,
            reserved_space: None,
            statfs_cache: Duration::ZERO,
        }
    }
}

/// The namespace: inodes and dentries in a KV store.
pub struct MetaStore {
    db: Db,
    routing: RoutingCache,
    placement: Placement,
    ids: IdAllocator,
    /// How long idempotency records are honoured, in ms (a hot config item).
    idem_ttl_ms: std::sync::atomic::AtomicU64,
    /// Creates, mkdirs and removes queued per directory ([`dir_batch`]).
    dir_batches: std::sync::Arc<dir_batch::DirBatches>,
    /// Where batch sizes are recorded (none in tests of the namespace alone).
    metrics: Option<std::sync::Arc<crate::metrics::MetaMetrics>>,
    /// See [`OpenOptions::reserved_space`].
    reserved_space: Option<u64>,
    /// See [`OpenOptions::statfs_cache`].
    statfs_ttl: Duration,
    /// The last inode scan of statfs.
    statfs_cache: tokio::sync::Mutex<Option<InodeScan>>,
}

/// One inode scan of statfs: when it ended, how long it took, (inodes in use, file bytes).
type InodeScan = (std::time::Instant, Duration, (u64, u64));

impl MetaStore {
    /// Opens the namespace in `db`, creating the root directory (with [`RootAttrs::default`]) if it
    /// is missing.
    pub async fn open(db: Db, routing: RoutingCache, placement: Placement) -> Result<Self> {
        Self::open_with_root(db, routing, placement, RootAttrs::default()).await
    }

    /// [`MetaStore::open`] with the owner and mode a missing root directory is created with.
    pub async fn open_with_root(db: Db, routing: RoutingCache, placement: Placement, root: RootAttrs) -> Result<Self> {
        Self::open_with_options(db, routing, placement, OpenOptions { root, ..Default::default() }).await
    }

    /// [`MetaStore::open`] with every option: creates a missing root and sets up (or migrates) the
    /// inode id counters.
    pub async fn open_with_options(
        db: Db,
        routing: RoutingCache,
        placement: Placement,
        opts: OpenOptions,
    ) -> Result<Self> {
        let probe = Layout { chunk_size: placement.chunk_size, stripe: placement.stripe, ..Default::default() };
        t3fs_common::layout::validate(&probe)?;
        let idem_ttl_ms = std::sync::atomic::AtomicU64::new(ttl_ms(DEFAULT_IDEM_TTL));
        let ids = IdAllocator::new(opts.id_shards);
        let dir_batches = Default::default();
        let store = Self {
            db,
            routing,
            placement,
            ids,
            idem_ttl_ms,
            dir_batches,
            metrics: None,
            reserved_space: opts.reserved_space,
            statfs_ttl: opts.statfs_cache,
            statfs_cache: Default::default(),
        };
        store.ensure_root(opts.root).await?;
        store.ids.init(&*store.db).await?;
        Ok(store)
    }

    /// Records the namespace's own metrics (per-directory batch sizes) in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::MetaMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets how long idempotency records are honoured (default [`DEFAULT_IDEM_TTL`]).
    pub fn with_idempotency_ttl(self, ttl: Duration) -> Self {
        self.set_idempotency_ttl(ttl);
        self
    }

    /// Changes how long idempotency records are honoured, on a running server (a pushed config).
    pub fn set_idempotency_ttl(&self, ttl: Duration) {
        self.idem_ttl_ms.store(ttl_ms(ttl), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long idempotency records are honoured.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_millis(self.idem_ttl_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The KV handle (tests and tools).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Why an operation that adds to the store (a new name, an xattr) must be refused now: the
    /// local store's disk is down to its reserve (`None`: go ahead). Removals, renames, attribute
    /// changes and closes never ask: they must work on a full disk, to free space. Without the
    /// reserve, a store whose journal write fails poisons itself and every later commit fails
    /// until meta restarts (docs/meta.md "Full disk").
    fn space_refusal(&self, what: &str) -> Option<Error> {
        let (free, total) = self.db.space()?;
        let reserve = t3fs_common::space::reserve_of(self.reserved_space, total);
        (free < reserve).then(|| {
            Error::new(
                StatusCode::NoSpace,
                format!(
                    "the metadata store's disk is full ({} MiB free, below the {} MiB reserve): {what} refused; \
                     removals still work",
                    free >> 20,
                    reserve >> 20
                ),
            )
        })
    }

    /// [`Self::space_refusal`] as a result.
    fn check_space(&self, what: &str) -> Result<()> {
        self.space_refusal(what).map_or(Ok(()), Err)
    }

    async fn ensure_root(&self, attrs: RootAttrs) -> Result<()> {
        let created = t3fs_kv::run(&*self.db, |txn| {
            let attrs = attrs.clone();
            Box::pin(async move {
                if txn.get(&keys::inode_key(InodeId::ROOT), false).await?.is_some() {
                    return Ok(false);
                }
                let now = now_ns();
                let root = Inode {
                    id: InodeId::ROOT.0,
                    inode_type: InodeType::Directory as i32,
                    mode: attrs.mode & 0o7777,
                    uid: attrs.uid,
                    gid: attrs.gid,
                    nlink: 2,
                    atime_ns: now,
                    mtime_ns: now,
                    ctime_ns: now,
                    parent: InodeId::ROOT.0,
                    ..Default::default()
                };
                put_inode(txn, &root);
                Ok(true)
            })
        })
        .await?;
        if created {
            tracing::info!("created the root directory");
        }
        Ok(())
    }

    /// The inode `name` in directory `parent` names (needs search permission on `parent`).
    pub async fn lookup(&self, caller: &Caller, parent: InodeId, name: &[u8]) -> Result<Inode> {
        validate_name(name)?;
        let (name, caller) = (name.to_vec(), caller.clone());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (name, caller) = (name.clone(), caller.clone());
            Box::pin(async move {
                let dir = get_dir(txn, parent, true).await?;
                perm::check(&caller, &dir, perm::X)?;
                let entry = get_dentry(txn, parent, &name, true)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("{} not found in directory {parent}", show(&name))))?;
                get_entry_inode(txn, parent, &entry, true).await
            })
        })
        .await?)
    }

    /// An inode's attributes.
    pub async fn getattr(&self, id: InodeId) -> Result<Inode> {
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move { get_inode(txn, id, true).await?.ok_or_else(|| not_found(id).into()) })
        })
        .await?)
    }

    /// The attributes of each of `ids`, in order (`None` where an inode does not exist); one
    /// snapshot, at most [`MAX_BATCH_STAT`] ids.
    pub async fn batch_stat(&self, ids: &[InodeId]) -> Result<Vec<Option<Inode>>> {
        if ids.len() > MAX_BATCH_STAT {
            return Err(Error::invalid(format!("batch stat of {} inodes; the limit is {MAX_BATCH_STAT}", ids.len())));
        }
        let ids = ids.to_vec();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let ids = ids.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.push(get_inode(txn, id, true).await?);
                }
                Ok(out)
            })
        })
        .await?)
    }

    /// One page of directory `dir`: entries after `start_after` (empty = from the start), at most
    /// `limit` (0 = [`DEFAULT_READDIR_LIMIT`], capped at [`MAX_READDIR_LIMIT`]). Needs read permission.
    pub async fn readdir(&self, caller: &Caller, dir: InodeId, start_after: &[u8], limit: u32) -> Result<ReadDir> {
        if start_after.len() > t3fs_common::names::NAME_MAX {
            return Err(Error::new(StatusCode::NameTooLong, "readdir cursor is longer than any name"));
        }
        let limit = if limit == 0 { DEFAULT_READDIR_LIMIT } else { limit.min(MAX_READDIR_LIMIT) } as usize;
        let (begin, end) = keys::dentry_range(dir);
        let begin =
            if start_after.is_empty() { begin } else { t3fs_kv::key_after(&keys::dentry_key(dir, start_after)) };
        let caller = caller.clone();
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (begin, end, caller) = (begin.clone(), end.clone(), caller.clone());
            Box::pin(async move {
                let d = get_dir(txn, dir, true).await?;
                perm::check(&caller, &d, perm::R)?;
                let opts = RangeOpts { limit: limit + 1, reverse: false, snapshot: true };
                let kvs = txn.get_range(&begin, &end, opts).await?;
                let more = kvs.len() > limit;
                let entries =
                    kvs.iter().take(limit).map(|kv| keys::decode_dentry(dir, &kv.value)).collect::<Result<Vec<_>>>()?;
                Ok(ReadDir { entries, more })
            })
        })
        .await?)
    }

    /// Capacity and free space from routing info ([`space_of`], always current); inodes in use and
    /// the sum of file lengths from a paged scan of the inodes (each page its own snapshot
    /// transaction), cached ([`OpenOptions::statfs_cache`]).
    pub async fn statfs(&self) -> Result<StatFs> {
        let (capacity_bytes, free_bytes) = space_of(&self.routing.get());
        let (inodes, used_bytes) = self.inode_totals().await?;
        Ok(StatFs { capacity_bytes, free_bytes, used_bytes, inodes })
    }

    /// (inodes in use, sum of file lengths). The scan costs about 0.6 µs per inode (2 s for three
    /// million files, on the embedded store), and `df`, monitoring agents and programs checking for
    /// room call statfs all the time: so a result is reused for `statfs_cache`, or ten times as long
    /// as its scan took if that is longer (scanning at most a tenth of the time however often
    /// statfs is called); concurrent calls wait for one scan instead of each running their own.
    /// A cache of zero scans every time.
    async fn inode_totals(&self) -> Result<(u64, u64)> {
        let mut cached = self.statfs_cache.lock().await;
        if let Some((at, took, totals)) = *cached
            && !self.statfs_ttl.is_zero()
            && at.elapsed() < self.statfs_ttl.max(took * 10)
        {
            return Ok(totals);
        }
        let started = std::time::Instant::now();
        let (mut inodes, mut used) = (0u64, 0u64);
        let mut scan = t3fs_kv::PageScan::new(keys::inode_range(), STATFS_PAGE);
        while let Some(page) = scan.next(&*self.db).await? {
            for kv in &page {
                let inode = keys::decode_inode(keys::inode_id_of(&kv.key), &kv.value)?;
                // Unlinked files waiting for GC still hold space but are no longer in the namespace.
                if inode.nlink > 0 || is_dir(&inode) {
                    inodes += 1;
                }
                if inode.inode_type == InodeType::File as i32 {
                    used = used.saturating_add(inode.length);
                }
            }
        }
        *cached = Some((std::time::Instant::now(), started.elapsed(), (inodes, used)));
        Ok((inodes, used))
    }
}

/// Logical (capacity, free) bytes of the cluster: summed over chains, each chain counting the
/// smallest value among its targets that report one (a chain stores one copy of its data on every
/// target, so the fullest replica limits it). Free is `None` when no target reports it.
pub fn space_of(routing: &t3fs_common::routing::Routing) -> (u64, Option<u64>) {
    let (mut capacity, mut free, mut any_free) = (0u64, 0u64, false);
    for chain in &routing.info.chains {
        let targets = chain.targets.iter().filter_map(|t| routing.target(t3fs_common::TargetId(t.target_id)).ok());
        let (mut cap, mut fr): (Option<u64>, Option<u64>) = (None, None);
        for t in targets {
            if let Some(c) = t.capacity_bytes {
                cap = Some(cap.map_or(c, |x| x.min(c)));
            }
            if let Some(f) = t.free_bytes {
                fr = Some(fr.map_or(f, |x| x.min(f)));
            }
        }
        capacity = capacity.saturating_add(cap.unwrap_or(0));
        if let Some(f) = fr {
            free = free.saturating_add(f);
            any_free = true;
        }
    }
    (capacity, any_free.then_some(free))
}

/// Whether an inode is a directory.
pub fn is_dir(inode: &Inode) -> bool {
    inode.inode_type == InodeType::Directory as i32
}

/// A name for messages (names are bytes, not necessarily UTF-8).
pub(crate) fn show(name: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(name)
}

fn not_found(id: InodeId) -> Error {
    Error::not_found(format!("inode {id} not found"))
}

pub(crate) async fn get_inode(
    txn: &mut dyn Transaction,
    id: InodeId,
    snapshot: bool,
) -> Result<Option<Inode>, KvError> {
    match txn.get(&keys::inode_key(id), snapshot).await? {
        Some(v) => Ok(Some(keys::decode_inode(id, &v)?)),
        None => Ok(None),
    }
}

/// Loads an inode that must be a directory (NotFound / NotDirectory otherwise).
pub(crate) async fn get_dir(txn: &mut dyn Transaction, id: InodeId, snapshot: bool) -> Result<Inode, KvError> {
    let inode = get_inode(txn, id, snapshot).await?.ok_or_else(|| not_found(id))?;
    if !is_dir(&inode) {
        return Err(Error::new(StatusCode::NotDirectory, format!("inode {id} is not a directory")).into());
    }
    Ok(inode)
}

pub(crate) async fn get_dentry(
    txn: &mut dyn Transaction,
    parent: InodeId,
    name: &[u8],
    snapshot: bool,
) -> Result<Option<DirEntry>, KvError> {
    match txn.get(&keys::dentry_key(parent, name), snapshot).await? {
        Some(v) => Ok(Some(keys::decode_dentry(parent, &v)?)),
        None => Ok(None),
    }
}

/// The inode a dentry names; a dangling dentry is corruption (Internal).
pub(crate) async fn get_entry_inode(
    txn: &mut dyn Transaction,
    parent: InodeId,
    entry: &DirEntry,
    snapshot: bool,
) -> Result<Inode, KvError> {
    let id = InodeId(entry.inode);
    get_inode(txn, id, snapshot).await?.ok_or_else(|| {
        Error::internal(format!("dangling dentry {} in directory {parent} -> inode {id}", show(&entry.name))).into()
    })
}

pub(crate) fn put_inode(txn: &mut dyn Transaction, inode: &Inode) {
    txn.set(&keys::inode_key(InodeId(inode.id)), &keys::encode_inode(inode));
}

/// A file lost its last link: its inode stays (nlink 0, still readable through open handles) and
/// goes into the GC queue, which removes its chunks and then the inode (`crate::gc`).
pub(crate) fn retire_file(txn: &mut dyn Transaction, inode: &Inode, now: i64) {
    put_inode(txn, inode);
    txn.set(&keys::gc_key(u64::try_from(now).unwrap_or(0), InodeId(inode.id)), b"");
}

/// Deletes an inode and everything keyed by it (xattrs).
pub(crate) fn delete_inode(txn: &mut dyn Transaction, id: InodeId) {
    txn.clear(&keys::inode_key(id));
    let (b, e) = keys::xattr_range(id);
    txn.clear_range(&b, &e);
}

/// Loads an inode that must exist (NotFound otherwise).
pub(crate) async fn must_inode(txn: &mut dyn Transaction, id: InodeId, snapshot: bool) -> Result<Inode, KvError> {
    get_inode(txn, id, snapshot).await?.ok_or_else(|| not_found(id).into())
}

pub(crate) fn put_dentry(txn: &mut dyn Transaction, parent: InodeId, entry: &DirEntry) {
    txn.set(&keys::dentry_key(parent, &entry.name), &keys::encode_dentry(entry));
}
