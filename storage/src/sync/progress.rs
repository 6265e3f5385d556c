//! Resync progress: what every sync this node runs (or ran recently) has done, for operators.
//!
//! The worker ([`super::spawn_sync_worker`]) reports each phase of a sync to the [`SyncBoard`]: started
//! (diffing the listings), planned (how many chunks differ), every chunk transferred (and its bytes), and
//! the end (done or failed, with the error). The admin service answers `ListSyncs` from it, which
//! `t3fs admin list-syncs` prints for every storage node; the gauge `t3fs_storage_resync_remaining_chunks`
//! follows the sum of chunks still to transfer.
//!
//! The ETA is the transfer rate so far (chunks done / time since the transfer began) applied to the
//! chunks left; unknown (None) until the first chunk is done. Finished syncs stay listed for
//! [`KEEP_FINISHED`] (at most [`MAX_FINISHED`] of them), so an operator sees how the last ones ended.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use t3fs_common::proto::{self, SyncPhase};

use super::SyncJob;

/// How long a finished sync stays listed.
pub const KEEP_FINISHED: Duration = Duration::from_secs(600);
/// Most finished syncs kept listed (the oldest go first).
pub const MAX_FINISHED: usize = 64;

#[derive(Clone, Debug)]
struct Entry {
    phase: SyncPhase,
    total: u64,
    done: u64,
    bytes: u64,
    started: Instant,
    started_ms: u64,
    /// When the transfer (after the diff) began.
    transfer_started: Option<Instant>,
    finished: Option<Instant>,
    error: String,
}

impl Entry {
    fn elapsed(&self, now: Instant) -> Duration {
        self.finished.unwrap_or(now).saturating_duration_since(self.started)
    }

    fn eta(&self, now: Instant) -> Option<Duration> {
        if self.phase != SyncPhase::Transferring || self.done == 0 {
            return None;
        }
        let spent = now.saturating_duration_since(self.transfer_started?);
        let left = self.total.saturating_sub(self.done);
        Some(spent.mul_f64(left as f64 / self.done as f64))
    }
}

/// The progress of this node's syncs (see the module doc).
#[derive(Debug, Default)]
pub struct SyncBoard {
    entries: Mutex<HashMap<SyncJob, Entry>>,
}

impl SyncBoard {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<SyncJob, Entry>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of counters; keep going.
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A sync (or a retry of it) begins: its counters start again.
    pub fn start(&self, job: SyncJob) {
        let e = Entry {
            phase: SyncPhase::Diffing,
            total: 0,
            done: 0,
            bytes: 0,
            started: Instant::now(),
            started_ms: t3fs_common::now_ms(),
            transfer_started: None,
            finished: None,
            error: String::new(),
        };
        self.with(|m| m.insert(job, e));
    }

    /// The diff found `total` chunks to transfer.
    pub fn planned(&self, job: SyncJob, total: u64) {
        self.with(|m| {
            if let Some(e) = m.get_mut(&job) {
                (e.phase, e.total, e.transfer_started) = (SyncPhase::Transferring, total, Some(Instant::now()));
            }
        });
    }

    /// One chunk was transferred (`bytes` of data; 0 for removals).
    pub fn chunk_done(&self, job: SyncJob, bytes: u64) {
        self.with(|m| {
            if let Some(e) = m.get_mut(&job) {
                e.done += 1;
                e.bytes += bytes;
            }
        });
    }

    /// The sync ended: done, or failed with `error`.
    pub fn finish(&self, job: SyncJob, error: Option<String>) {
        self.with(|m| {
            if let Some(e) = m.get_mut(&job) {
                e.finished = Some(Instant::now());
                match error {
                    None => e.phase = SyncPhase::Done,
                    Some(err) => (e.phase, e.error) = (SyncPhase::Failed, err),
                }
            }
        });
    }

    /// Chunks still to transfer, over every running sync.
    pub fn remaining_chunks(&self) -> u64 {
        self.with(|m| m.values().filter(|e| e.finished.is_none()).map(|e| e.total.saturating_sub(e.done)).sum())
    }

    /// Every listed sync (running first, then the most recently finished), dropping finished syncs
    /// older than [`KEEP_FINISHED`] and beyond [`MAX_FINISHED`].
    pub fn list(&self) -> Vec<proto::SyncProgress> {
        let now = Instant::now();
        self.with(|m| {
            m.retain(|_, e| e.finished.is_none_or(|f| now.saturating_duration_since(f) < KEEP_FINISHED));
            let mut finished: Vec<(Instant, SyncJob)> =
                m.iter().filter_map(|(j, e)| e.finished.map(|f| (f, *j))).collect();
            if finished.len() > MAX_FINISHED {
                finished.sort();
                for (_, j) in &finished[..finished.len() - MAX_FINISHED] {
                    m.remove(j);
                }
            }
            let mut out: Vec<(bool, Instant, proto::SyncProgress)> = m
                .iter()
                .map(|(j, e)| {
                    let p = proto::SyncProgress {
                        chain_id: j.chain.0,
                        chain_version: j.chain_version,
                        from_target: j.from.0,
                        to_target: j.to.0,
                        phase: e.phase as i32,
                        chunks_total: e.total,
                        chunks_done: e.done,
                        bytes_done: e.bytes,
                        started_ms: e.started_ms,
                        elapsed_ms: e.elapsed(now).as_millis() as u64,
                        eta_ms: e.eta(now).map(|d| d.as_millis() as u64),
                        error: e.error.clone(),
                    };
                    (e.finished.is_some(), e.finished.unwrap_or(e.started), p)
                })
                .collect();
            // Running first (oldest start first), then finished (newest first).
            out.sort_by(|a, b| a.0.cmp(&b.0).then(if a.0 { b.1.cmp(&a.1) } else { a.1.cmp(&b.1) }));
            out.into_iter().map(|(_, _, p)| p).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use t3fs_common::{ChainId, TargetId};

    use super::*;

    fn job(chain: u32) -> SyncJob {
        SyncJob { chain: ChainId(chain), chain_version: 3, from: TargetId(10), to: TargetId(20) }
    }

    #[test]
    fn phases_counters_and_eta() {
        let b = SyncBoard::default();
        b.start(job(1));
        let p = &b.list()[0];
        assert_eq!((p.phase, p.chunks_total, p.eta_ms), (SyncPhase::Diffing as i32, 0, None));
        b.planned(job(1), 4);
        assert_eq!(b.remaining_chunks(), 4);
        assert_eq!(b.list()[0].eta_ms, None, "no rate before the first chunk");
        std::thread::sleep(Duration::from_millis(20));
        b.chunk_done(job(1), 100);
        b.chunk_done(job(1), 0);
        let p = &b.list()[0];
        assert_eq!((p.phase, p.chunks_done, p.bytes_done), (SyncPhase::Transferring as i32, 2, 100));
        // Two chunks took >= 20 ms, so the two left take about as long again.
        assert!(p.eta_ms.is_some_and(|ms| ms >= 15), "{p:?}");
        assert_eq!(b.remaining_chunks(), 2);
        b.finish(job(1), None);
        let p = &b.list()[0];
        assert_eq!((p.phase, p.eta_ms), (SyncPhase::Done as i32, None));
        assert_eq!(b.remaining_chunks(), 0);
    }

    #[test]
    fn failures_keep_their_error_and_running_syncs_list_first() {
        let b = SyncBoard::default();
        b.start(job(1));
        b.finish(job(1), Some("routing changed".into()));
        b.start(job(2));
        let l = b.list();
        assert_eq!((l[0].chain_id, l[0].phase), (2, SyncPhase::Diffing as i32));
        assert_eq!((l[1].chain_id, l[1].phase, l[1].error.as_str()), (1, SyncPhase::Failed as i32, "routing changed"));
        // A retry starts the counters again.
        b.start(job(1));
        assert!(b.list().iter().all(|p| p.phase == SyncPhase::Diffing as i32));
    }

    #[test]
    fn finished_syncs_are_bounded() {
        let b = SyncBoard::default();
        for c in 0..(MAX_FINISHED as u32 + 10) {
            b.start(job(c));
            b.finish(job(c), None);
        }
        let l = b.list();
        assert_eq!(l.len(), MAX_FINISHED);
        // The newest are kept, newest first.
        assert_eq!(l[0].chain_id, MAX_FINISHED as u32 + 9);
        assert!(l.iter().all(|p| p.chain_id >= 10));
    }
}
