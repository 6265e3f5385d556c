//! readdirplus and the kernel capabilities negotiated at `init`.
//!
//! With `readdirplus = true` (the default) the mount asks the kernel for `FUSE_DO_READDIRPLUS` and
//! `FUSE_READDIRPLUS_AUTO`: directory listings then come with each entry's attributes, so the
//! kernel fills its dentry and attribute caches while listing and `ls -l`, `find -type`, `du` or
//! `stat` of every entry need no LOOKUP per entry (with AUTO the kernel switches to plain readdir
//! for streams where it sees no use for the attributes). Entries come from the listing taken at
//! `opendir` (as plain readdir does: offsets are indexes into it, so a changing directory never
//! makes the kernel skip or repeat entries); their attributes come from meta in batches
//! (`BatchStat`, [`BATCH`] at a time). An entry deleted since opendir has no attributes and is
//! left out of the stream.
//!
//! Locks: the mount does not ask for `FUSE_POSIX_LOCKS` or `FUSE_FLOCK_LOCKS`. The kernel then
//! keeps fcntl (POSIX) and flock locks itself: they work between processes using this mount on
//! this host, but other mounts and other clients of the cluster do not see them.
//! t3fs has no cluster-wide lock service, and answering lock requests from this daemon would be
//! just as local while pretending otherwise; docs/fuse.md ("Locks") says so.
use fuser::{Errno, FileHandle, Generation, INodeNo, InitFlags, KernelConfig, ReplyDirectoryPlus, Request};
use t3fs_common::InodeId;

use crate::fs::{T3Fs, fail};

/// Entries whose attributes are fetched per `BatchStat` request.
pub const BATCH: usize = 32;

/// Requests the capabilities this mount uses (called from `Filesystem::init`). Returns whether
/// readdirplus was enabled (the kernel may lack it).
pub fn negotiate(config: &mut KernelConfig, readdirplus: bool, max_readahead: u32) -> bool {
    if max_readahead > 0 {
        let want = match config.set_max_readahead(max_readahead) {
            Ok(_) => max_readahead,
            Err(nearest) => {
                let _ = config.set_max_readahead(nearest);
                nearest
            }
        };
        tracing::debug!(max_readahead = want, "kernel read-ahead");
    }
    if !readdirplus {
        return false;
    }
    match config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO) {
        Ok(()) => true,
        Err(missing) => {
            tracing::info!(?missing, "the kernel does not offer readdirplus; plain readdir only");
            false
        }
    }
}

impl T3Fs {
    /// `readdirplus`: entries of the opendir listing from `offset`, with attributes.
    pub(crate) fn readdirplus_op(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(items) = self.inner().handles.dir(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let user = self.user(req);
        let span = tracing::debug_span!("readdirplus", ino = ino.0, fh = fh.0, offset);
        self.spawn("readdirplus", span, |fs| async move {
            let ttl = fs.attr_ttl.min(fs.entry_ttl);
            let mut i = usize::try_from(offset).unwrap_or(usize::MAX);
            while i < items.len() {
                let batch = &items[i..(i + BATCH).min(items.len())];
                let ids: Vec<InodeId> = batch.iter().map(|it| InodeId(it.ino)).collect();
                let stats = match fs.client.batch_stat(&user, &ids).await {
                    Ok(s) => s,
                    Err(e) => return reply.error(fail("readdirplus", &e)),
                };
                for (k, (item, inode)) in batch.iter().zip(stats).enumerate() {
                    let Some(inode) = inode else { continue };
                    let attr = fs.attr(&inode);
                    let next = (i + k + 1) as u64;
                    if reply.add(INodeNo(item.ino), next, &item.name, &ttl, &attr, Generation(0)) {
                        return reply.ok();
                    }
                }
                i += batch.len();
            }
            reply.ok()
        });
    }
}
