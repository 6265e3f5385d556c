//! Local target states reported to mgmtd, and fencing of a node that lost contact with mgmtd.
//!
//! **Local state** (what a target knows about its own data, research/3fs.md §2). Every target starts
//! ONLINE when the storage server starts (it may have missed writes while it was down). It is UPTODATE
//! only while one of these holds, derived afresh from every routing snapshot by [`local_state`]:
//! - routing shows it SERVING: mgmtd keeps a target SERVING only while the chain forwards every write to
//!   it, so it never missed an acknowledged write;
//! - routing shows it SYNCING and it received `SyncDone` for exactly the chain version routing shows: its
//!   predecessor transferred every chunk and forwarded every write since, at that chain version.
//!
//! Anything else (LASTSRV, WAITING, OFFLINE, or SYNCING without a matching `SyncDone`) is ONLINE. The rule
//! is deliberately not sticky: a node that polls routing may miss intermediate versions (SERVING ->
//! OFFLINE -> SYNCING within one poll), and a sticky UPTODATE would then let mgmtd promote a stale target.
//! Chain versions only grow, so a `SyncDone` for an older version never counts.
//!
//! **Fencing.** A node that has not had a successful heartbeat reply for `fence_after_ms` may be
//! partitioned from mgmtd and already replaced; it refuses every read and update ([`Fence::check`])
//! until mgmtd answers again (3FS exits instead; research/3fs.md §2).
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use t3fs_common::proto::{LocalTargetState, PublicTargetState};
use t3fs_common::routing::Routing;
use t3fs_common::{ChainId, Error, StatusCode, TargetId};

/// The local state rule (see the module doc). `public` is the target's public state in the current
/// routing snapshot (`None` if routing does not know the target yet), `chain_version` its chain's version
/// there, `synced` the chain version of the last `SyncDone` it received, `current` its state so far.
pub fn local_state(
    current: LocalTargetState,
    public: Option<i32>,
    chain_version: u32,
    synced: Option<u32>,
) -> LocalTargetState {
    match public.map(PublicTargetState::try_from) {
        // Routing not known yet: nothing to learn from it.
        None => current,
        Some(Ok(PublicTargetState::Serving)) => LocalTargetState::Uptodate,
        Some(Ok(PublicTargetState::Syncing)) if synced == Some(chain_version) => LocalTargetState::Uptodate,
        Some(_) => LocalTargetState::Online,
    }
}

#[derive(Clone, Copy, Debug)]
struct TargetState {
    local: LocalTargetState,
    /// Chain version of the last accepted `SyncDone`.
    synced: Option<u32>,
}

/// The local states of this node's targets (in memory: a restart starts every target ONLINE again).
#[derive(Debug)]
pub struct TargetStates {
    states: Mutex<HashMap<TargetId, TargetState>>,
    /// Wakes the heartbeat loop (a `SyncDone` should reach mgmtd promptly).
    pub heartbeat_now: tokio::sync::Notify,
}

impl TargetStates {
    /// Every target starts ONLINE.
    pub fn new(targets: impl IntoIterator<Item = TargetId>) -> Self {
        let init = TargetState { local: LocalTargetState::Online, synced: None };
        Self {
            states: Mutex::new(targets.into_iter().map(|t| (t, init)).collect()),
            heartbeat_now: tokio::sync::Notify::new(),
        }
    }

    /// Applies [`local_state`] to `target` against `routing`; returns the new state and its chain version.
    pub fn observe(&self, target: TargetId, routing: &Routing) -> (LocalTargetState, u32) {
        let info = routing.target(target).ok();
        let chain_version = info.and_then(|t| routing.chain(ChainId(t.chain_id)).ok()).map_or(0, |c| c.chain_version);
        let public = info.map(|t| t.public_state);
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = states.get_mut(&target) else {
            return (LocalTargetState::Offline, chain_version);
        };
        let next = local_state(s.local, public, chain_version, s.synced);
        if next != s.local {
            tracing::info!(target_id = %target, from = ?s.local, to = ?next, chain_version, ?public, "local state");
            s.local = next;
        }
        (next, chain_version)
    }

    /// Records a `SyncDone` for `chain_version` and wakes the heartbeat loop.
    pub fn set_synced(&self, target: TargetId, chain_version: u32) {
        if let Some(s) = self.states.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&target) {
            s.synced = Some(chain_version);
        }
        self.heartbeat_now.notify_one();
    }

    /// The chain version of the last `SyncDone` `target` received.
    pub fn synced(&self, target: TargetId) -> Option<u32> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).get(&target).and_then(|s| s.synced)
    }
}

/// The fencing rule: whether a node whose last successful mgmtd reply was `since_ok` ago must refuse I/O.
pub fn fenced(since_ok: Duration, fence_after: Duration) -> bool {
    since_ok >= fence_after
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tracks the last successful heartbeat reply. Registration counts as one.
#[derive(Debug)]
pub struct Fence {
    last_ok: Mutex<Instant>,
    /// The configured fencing delay in ms (a hot config item: [`Fence::set_after`]).
    after_ms: AtomicU64,
    /// mgmtd's heartbeat timeout in ms from its last heartbeat reply (0: not known yet).
    mgmtd_timeout_ms: AtomicU64,
}

impl Fence {
    pub fn new(after: Duration) -> Self {
        Self {
            last_ok: Mutex::new(Instant::now()),
            after_ms: AtomicU64::new(millis(after)),
            mgmtd_timeout_ms: AtomicU64::new(0),
        }
    }

    /// The fencing delay in force: the configured one, capped at half of mgmtd's heartbeat timeout
    /// ([`t3fs_common::routing::fence_delay`]).
    pub fn after(&self) -> Duration {
        let configured = Duration::from_millis(self.after_ms.load(Ordering::Relaxed));
        let timeout = self.mgmtd_timeout_ms.load(Ordering::Relaxed);
        t3fs_common::routing::fence_delay(configured, (timeout > 0).then(|| Duration::from_millis(timeout)))
    }

    /// mgmtd told its heartbeat timeout (every heartbeat reply; 0 from an older mgmtd: unknown).
    pub fn set_mgmtd_timeout(&self, timeout_ms: u64) {
        self.mgmtd_timeout_ms.store(timeout_ms, Ordering::Relaxed);
    }

    /// Changes the fencing delay (a pushed config); the next check uses it.
    pub fn set_after(&self, after: Duration) {
        self.after_ms.store(millis(after), Ordering::Relaxed);
    }

    /// mgmtd answered.
    pub fn heard_from_mgmtd(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// When mgmtd last answered.
    pub fn last_ok(&self) -> Instant {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(TargetNotServing)` while fenced.
    pub fn check(&self) -> Result<(), Error> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), Error> {
        let since = now.saturating_duration_since(self.last_ok());
        if fenced(since, self.after()) {
            return Err(Error::new(
                StatusCode::TargetNotServing,
                format!("no heartbeat reply from mgmtd for {} ms: node fenced", since.as_millis()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3fs_common::proto;

    const UP: LocalTargetState = LocalTargetState::Uptodate;
    const ON: LocalTargetState = LocalTargetState::Online;

    fn st(s: PublicTargetState) -> Option<i32> {
        Some(s as i32)
    }

    #[test]
    fn local_state_rule() {
        use PublicTargetState::*;
        // Routing unknown: keep the current state (ONLINE after start).
        assert_eq!(local_state(ON, None, 0, None), ON);
        // SERVING: it got every acknowledged write.
        assert_eq!(local_state(ON, st(Serving), 3, None), UP);
        // SYNCING: UPTODATE only with a SyncDone for exactly this chain version.
        assert_eq!(local_state(ON, st(Syncing), 3, None), ON);
        assert_eq!(local_state(ON, st(Syncing), 3, Some(2)), ON);
        assert_eq!(local_state(ON, st(Syncing), 3, Some(3)), UP);
        assert_eq!(local_state(UP, st(Syncing), 4, Some(3)), ON, "not sticky across chain versions");
        assert_eq!(local_state(UP, st(Syncing), 4, None), ON, "SERVING -> SYNCING seen without the OFFLINE between");
        // Any other public state: it may have missed writes.
        for s in [Lastsrv, Waiting, Offline, Unspecified] {
            assert_eq!(local_state(UP, st(s), 3, Some(3)), ON, "{s:?}");
        }
        assert_eq!(local_state(UP, Some(99), 3, Some(3)), ON, "unknown enum value");
    }

    #[test]
    fn target_states_follow_routing() {
        let states = TargetStates::new([TargetId(1)]);
        let routing = |version: u64, chain_version: u32, state: PublicTargetState| {
            Routing::new(proto::RoutingInfo {
                version,
                chains: vec![proto::ChainInfo {
                    chain_id: 7,
                    chain_version,
                    targets: vec![proto::ChainTarget { target_id: 1, public_state: state as i32 }],
                    ..Default::default()
                }],
                targets: vec![proto::TargetInfo {
                    target_id: 1,
                    chain_id: 7,
                    public_state: state as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        assert_eq!(states.observe(TargetId(1), &Routing::default()), (ON, 0));
        assert_eq!(states.observe(TargetId(1), &routing(1, 1, PublicTargetState::Serving)), (UP, 1));
        assert_eq!(states.observe(TargetId(1), &routing(2, 2, PublicTargetState::Offline)), (ON, 2));
        assert_eq!(states.observe(TargetId(1), &routing(3, 3, PublicTargetState::Syncing)), (ON, 3));
        states.set_synced(TargetId(1), 3);
        assert_eq!(states.synced(TargetId(1)), Some(3));
        assert_eq!(states.observe(TargetId(1), &routing(3, 3, PublicTargetState::Syncing)), (UP, 3));
        assert_eq!(states.observe(TargetId(1), &routing(4, 4, PublicTargetState::Syncing)), (ON, 4));
        assert_eq!(
            states.observe(TargetId(2), &routing(4, 4, PublicTargetState::Serving)).0,
            LocalTargetState::Offline
        );
    }

    #[test]
    fn fencing_rule() {
        let after = Duration::from_millis(2500);
        assert!(!fenced(Duration::ZERO, after));
        assert!(!fenced(Duration::from_millis(2499), after));
        assert!(fenced(Duration::from_millis(2500), after));
        assert!(fenced(Duration::from_secs(60), after));
    }

    #[test]
    fn fence_delay_is_capped_at_half_of_mgmtds_timeout() {
        let fence = Fence::new(Duration::from_millis(2500));
        assert_eq!(fence.after(), Duration::from_millis(2500), "mgmtd's timeout not known yet");
        fence.set_mgmtd_timeout(3000);
        assert_eq!(fence.after(), Duration::from_millis(1500), "half of mgmtd's 3 s");
        fence.set_mgmtd_timeout(60_000);
        assert_eq!(fence.after(), Duration::from_millis(2500), "the configured delay when shorter");
        fence.set_mgmtd_timeout(0);
        assert_eq!(fence.after(), Duration::from_millis(2500));
        let t0 = fence.last_ok();
        fence.set_mgmtd_timeout(1000);
        assert!(fence.check_at(t0 + Duration::from_millis(600)).is_err(), "fenced after 500 ms");
    }

    #[test]
    fn fence_trips_without_mgmtd_and_lifts_on_reply() {
        let fence = Fence::new(Duration::from_millis(2500));
        fence.check().unwrap();
        let t0 = fence.last_ok();
        fence.check_at(t0 + Duration::from_millis(2000)).unwrap();
        let err = fence.check_at(t0 + Duration::from_millis(2600)).unwrap_err();
        assert_eq!(err.code, StatusCode::TargetNotServing);
        std::thread::sleep(Duration::from_millis(5));
        fence.heard_from_mgmtd();
        assert!(fence.last_ok() > t0);
        fence.check_at(fence.last_ok() + Duration::from_millis(2000)).unwrap();
        fence.set_after(Duration::from_millis(1000));
        assert_eq!(fence.after(), Duration::from_millis(1000));
        assert!(fence.check_at(fence.last_ok() + Duration::from_millis(2000)).is_err(), "the new delay counts");
    }
}
