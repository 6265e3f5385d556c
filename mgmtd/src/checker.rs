//! The checker task: every `check_interval_ms` it marks nodes that have not heartbeated for
//! `heartbeat_timeout_ms` as HEARTBEAT_FAILED, then (once bootstrapping is over) runs the target
//! state machine ([`crate::chain_update`]) on every chain and publishes the changed chains (see
//! [`crate::state::ClusterState::plan_check`]). A node that heartbeats again is marked connected by
//! the heartbeat handler; its targets' public states move on the next check. A failed check (the
//! KV store refused the write) is logged and tried again on the next tick; nothing was changed in
//! memory. Each tick also drops expired client sessions (`crate::accounts_service`).
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::service::Cluster;

/// Spawns the checker on the current runtime; it stops when `cancel` fires.
pub fn spawn(
    cluster: Arc<Cluster>,
    interval: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = cluster.check(timeout).await {
                tracing::warn!(error = %e, "check failed; retrying next tick");
            }
            if let Err(e) = cluster.expire_sessions().await {
                tracing::warn!(error = %e, "expiring client sessions failed; retrying next tick");
            }
        }
    })
}
