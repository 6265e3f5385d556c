//! Background scrub: every live chunk of every local target is read back and checked against its
//! block and whole-chunk CRCs at a bounded rate, and a damaged replica is repaired from a good one.
//!
//! Why: reads verify what they read, but data nobody reads (old checkpoints, a cold dataset) can
//! rot on disk unseen until the day it is needed, and by then another replica may be gone too.
//! The scrubber finds the damage while the chain still has good copies and heals it on its own,
//! the same repair `t3fs admin fsck --repair` sends ([`super::repair`]).
//!
//! How: the scrubber walks each target's chunks in id order, a page at a time, verifying each under
//! its chunk lock ([`ChunkStore::verify`]) and sleeping after each so that it reads at most
//! `scrub_mib_per_sec` (a hot item: a pushed config changes the rate from the next chunk, 0 pauses
//! it); after a full pass over every target it pauses `scrub_pause_ms`. A damaged
//! chunk is counted (`t3fs_storage_scrub_damaged_total`), logged, and repaired: its data is read
//! from another SERVING replica of the chain and kept only if that replica has the same version,
//! length and CRC32C as the local record; then it goes through the repair path, which writes it only
//! if the local copy is still damaged and at that version. With no good replica the damage stays
//! logged for an operator (fsck, or resync from the chain).
use std::sync::Arc;
use std::time::Duration;

use t3fs_common::repair::{read_good_copy, repair_update};
use t3fs_common::routing::is_readable;
use t3fs_common::{ChunkId, Error, StatusCode, TargetId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::StorageService;

/// Chunks listed per page of the walk.
const PAGE: usize = 256;

/// The scrub's current read rate in bytes per second (0: paused), asked before every chunk so a
/// pushed config (`scrub_mib_per_sec`) takes effect at once.
pub type ScrubRate = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How fast and how often the scrubber runs (from the storage config and its hot items).
#[derive(Clone)]
pub struct ScrubPace {
    pub rate: ScrubRate,
    /// The pause after a full pass over every target.
    pub pause: Duration,
}

/// While paused, how often the scrubber looks at its rate again.
const PAUSED_CHECK: Duration = Duration::from_secs(1);

/// What scrubbing one chunk found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scrubbed {
    /// The chunk's data checked out (bytes read; 0 for a chunk gone meanwhile).
    Healthy(u64),
    /// Damaged, then repaired from this replica.
    Repaired(TargetId),
    /// Damaged and not repaired (why).
    Damaged(String),
}

impl StorageService {
    /// Verifies one chunk of `target` and repairs it from a good replica if it is damaged.
    pub async fn scrub_chunk(&self, target: TargetId, chunk: ChunkId) -> Result<Scrubbed, Error> {
        let store = self.store(target.0)?;
        let damage = match store.verify(chunk).await {
            Ok(n) => {
                self.metrics.scrubbed_bytes.inc_by(n);
                return Ok(Scrubbed::Healthy(n));
            }
            // The target is closing, or the store cannot answer now: not a finding about the data.
            Err(e) if e.code == StatusCode::Unavailable => return Err(e),
            Err(e) => e,
        };
        self.metrics.scrub_damaged.inc();
        tracing::error!(%chunk, target_id = target.0, error = %damage, "scrub: damaged chunk replica");
        match self.repair_from_chain(target, chunk).await {
            Ok(src) => Ok(Scrubbed::Repaired(src)),
            Err(e) => {
                tracing::error!(%chunk, target_id = target.0, error = %e, "scrub: damaged replica not repaired");
                Ok(Scrubbed::Damaged(e.message))
            }
        }
    }

    /// Reads `chunk` from another SERVING replica of `target`'s chain whose copy has the local
    /// record's version, length and CRC32C, and repairs the local copy with it; returns the source.
    async fn repair_from_chain(&self, target: TargetId, chunk: ChunkId) -> Result<TargetId, Error> {
        let meta = self.store(target.0)?.query(chunk)?.ok_or_else(|| {
            Error::new(StatusCode::ChunkNotFound, format!("chunk {chunk} is no longer live on target {target}"))
        })?;
        let routing = self.routing.get();
        let chain = routing
            .info
            .chains
            .iter()
            .find(|c| c.targets.iter().any(|t| t.target_id == target.0))
            .ok_or_else(|| Error::new(StatusCode::TargetNotServing, format!("target {target} is in no chain")))?;
        let want = meta.to_proto(chunk);
        let mut last = Error::new(StatusCode::TargetNotServing, "no other serving replica in the chain");
        for src in chain.targets.iter().filter(|t| t.target_id != target.0 && is_readable(t.public_state)) {
            let src = TargetId(src.target_id);
            let read = match routing.bulk_addr(src) {
                Ok(addr) => read_good_copy(&self.peers, &addr, &self.token, src, chunk, &want).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(data) => {
                    self.repair(repair_update(chain, target, chunk, meta.version, meta.crc32c), data).await?;
                    return Ok(src);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Runs the scrubber over `targets` of `svc` at `pace` until `cancel` fires.
pub fn spawn_scrubber(
    svc: Arc<StorageService>,
    targets: Vec<TargetId>,
    pace: ScrubPace,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for &target in &targets {
                if scrub_target(&svc, target, &pace.rate, &cancel).await.is_none() {
                    return;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pace.pause) => {}
            }
        }
    })
}

/// One pass over `target`'s chunks; `None` once cancelled.
async fn scrub_target(
    svc: &StorageService,
    target: TargetId,
    rate: &ScrubRate,
    cancel: &CancellationToken,
) -> Option<()> {
    let mut start_after = None;
    loop {
        while rate() == 0 {
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(PAUSED_CHECK) => {}
            }
        }
        let page = match svc.store(target.0) {
            Ok(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.list_page(start_after, None, PAGE, PAGE * 16, false)).await
            }
            Err(_) => return Some(()),
        };
        let (chunks, next) = match page {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(target_id = target.0, error = %e, "scrub: listing chunks failed; next pass");
                return Some(());
            }
            Err(_) => return Some(()),
        };
        for c in chunks {
            let bytes = match svc.scrub_chunk(target, c.chunk).await {
                Ok(Scrubbed::Healthy(n)) => n,
                Ok(_) => u64::from(c.meta.length),
                Err(e) => {
                    tracing::debug!(target_id = target.0, error = %e, "scrub: target unavailable; next pass");
                    return Some(());
                }
            };
            let pause = Duration::from_secs_f64(bytes as f64 / rate().max(1) as f64);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        match next {
            Some(n) => start_after = Some(n),
            None => return Some(()),
        }
    }
}
