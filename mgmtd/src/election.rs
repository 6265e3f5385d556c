//! The lease task: every `extend_lease_interval_ms` each mgmtd runs the lease transaction
//! ([`crate::lease::acquire`]) and sets its [`Role`](crate::service::Role) from the outcome:
//!
//! - Acquired (a new term): reload all state from the store and bootstrap
//!   ([`Cluster::take_over`]); if that fails, hand the lease back and stay a standby.
//! - Extended: trust the lease until `call start + lease_length_ms - lease_margin_ms`.
//! - Held by someone else: standby, naming the holder while its lease is live.
//! - KV error: nothing changes; a primary stops serving when its trusted window ends, and then
//!   steps down (so it reloads if it ever takes the lease again).
//!
//! Each round also announces this mgmtd in the store and, on the primary, republishes the other
//! mgmtd from their announcements ([`crate::peers`]); a failure there is logged, not fatal.
//!
//! The window starts when the call starts (before the transaction reads the wall clock), so the
//! primary's trust always ends `lease_margin_ms` before the stored `lease_end_ms`; see
//! [`crate::lease`] for the clock assumption.
use std::sync::Arc;
use std::time::{Duration, Instant};

use t3fs_common::Error;
use t3fs_kv::Db;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::lease::{self, Candidate, Outcome};
use crate::peers;
use crate::service::Cluster;

/// The lease settings (from [`crate::Config`]).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub length: Duration,
    pub interval: Duration,
    pub margin: Duration,
}

/// One round of the lease task. Errors (after which nothing changed, or the lease was handed
/// back) are for the caller to log.
pub async fn step(cluster: &Cluster, db: &Db, timing: Timing) -> Result<(), Error> {
    let me = Candidate { node_id: cluster.me().node_id, grpc_addr: cluster.me().grpc_addr.clone() };
    let now_ms = t3fs_common::now_ms();
    let records = peers::announce(db.as_ref(), cluster.me(), now_ms)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "could not announce this mgmtd; retrying next round"))
        .ok();
    let held = cluster.held_term().await;
    let started = Instant::now();
    let valid_until = started + timing.length.saturating_sub(timing.margin);
    match lease::acquire(db.as_ref(), &me, held, timing.length.as_millis() as u64).await? {
        Outcome::Extended(l) => cluster.extended(l.term, valid_until),
        Outcome::Acquired(l) => {
            tracing::info!(term = l.term, node_id = me.node_id, "took the primary lease");
            if let Err(e) = cluster.take_over(l.term, valid_until).await {
                if let Err(e) = lease::release(db.as_ref(), me.node_id, l.term).await {
                    tracing::warn!(error = %e, "could not hand the lease back");
                }
                cluster.follow(None).await;
                return Err(Error::new(e.code, format!("taking over as primary: {}", e.message)));
            }
        }
        Outcome::Held(l) => {
            let live = l.live(t3fs_common::now_ms());
            cluster.follow(live.then_some(l.grpc_addr)).await;
        }
    }
    if let Some(records) = records
        && let Err(e) = cluster.update_peers(&records, now_ms, timing.length.as_millis() as u64).await
    {
        tracing::warn!(error = %e, "could not publish the other mgmtd");
    }
    Ok(())
}

/// Spawns the lease task; it stops when `cancel` fires.
pub fn spawn(cluster: Arc<Cluster>, db: Db, timing: Timing, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(timing.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // `start` ran the first round already.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let round = step(&cluster, &db, timing);
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = round => if let Err(e) = r {
                    tracing::warn!(error = %e, "lease round failed; retrying next interval");
                },
            }
        }
    })
}
