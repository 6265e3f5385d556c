//! The target state machine: given a chain and the local state of each of its targets, the chain
//! mgmtd should publish next (3FS's `generateNewChain`, research/3fs.md §2). Pure: no I/O, no
//! clock; the checker calls [`next_chain`] on every chain every `check_interval_ms`.
//!
//! Local states come from storage heartbeats (UPTODATE / ONLINE / OFFLINE); a target on a node
//! that is not heartbeat-connected, or missing from its node's latest heartbeat, is OFFLINE.
//! "Up" below means ONLINE or UPTODATE; an UNSPECIFIED local state counts as OFFLINE, and an
//! UNSPECIFIED (or unknown) public state counts as OFFLINE (it must go through recovery).
//!
//! The old targets are processed group by group, in this order ("SERVING exists" means a target
//! whose *new* state is SERVING at that point; "had SERVING" means the *old* chain had one):
//!
//! | Step | Current public | Local | Condition | Next public |
//! |---|---|---|---|---|
//! | 1 | SERVING | up | — | SERVING |
//! | 1 | SERVING | OFFLINE | (decided in step 4) | LASTSRV or OFFLINE |
//! | 2 | LASTSRV | up | old chain had no SERVING, no SERVING exists | SERVING |
//! | 2 | LASTSRV | OFFLINE | old chain had no SERVING, first LASTSRV of the chain | LASTSRV |
//! | 2 | LASTSRV | OFFLINE | otherwise (stale: the old chain had a SERVING; or a second LASTSRV) | OFFLINE |
//! | 2 | LASTSRV | up | otherwise (stale, or a second LASTSRV) | as WAITING/OFFLINE (step 6) |
//! | 3 | SYNCING | UPTODATE | — | SERVING |
//! | 4 | SERVING (failed in step 1) | OFFLINE | first failed one, no SERVING exists, no LASTSRV kept | LASTSRV |
//! | 4 | SERVING (failed in step 1) | OFFLINE | otherwise | OFFLINE |
//! | 5 | SYNCING | ONLINE | a SERVING exists, no SYNCING assigned yet | SYNCING |
//! | 5 | SYNCING | ONLINE | otherwise | WAITING |
//! | 5 | SYNCING | OFFLINE | — | OFFLINE |
//! | 6 | WAITING / OFFLINE (and step 2's leftovers) | ONLINE | a SERVING exists, no target is SYNCING | SYNCING |
//! | 6 | WAITING / OFFLINE | ONLINE | otherwise | WAITING |
//! | 6 | WAITING / OFFLINE | UPTODATE | — | WAITING |
//! | 6 | WAITING / OFFLINE | OFFLINE | — | OFFLINE |
//! | 7 | any new LASTSRV | — | a SERVING exists | OFFLINE |
//!
//! Then the chain is reordered SERVING…, LASTSRV…, SYNCING…, WAITING…, OFFLINE…, stable within a
//! group (the previous relative order is kept), so a failed target moves to the tail side; when
//! every target is SERVING and the chain has an admin-set preferred order, that order ([`prefer`]).
//! If any
//! state or the order changed, the chain version is bumped by one; otherwise nothing is returned.
//!
//! Choices where 3fs.md leaves room, all made in the safe direction:
//! - A WAITING/OFFLINE target reporting UPTODATE goes to WAITING, not SYNCING (3fs.md and the 3FS
//!   design note's table say so literally). Promoting it would let it reach SERVING one tick later
//!   without a resync in this round, i.e. without the writes it missed while not in the chain.
//!   Storage reports ONLINE for a target that needs (re)syncing, which starts the sync.
//! - A LASTSRV next to an old SERVING target is stale (3FS demotes it as soon as a SERVING exists),
//!   so it never serves again directly, even when it comes back; the SERVING targets hold the
//!   newest data. If it is up it is treated like an OFFLINE target that came back (step 6, so it
//!   may start syncing in the same step); 3FS would take one extra tick (LASTSRV -> OFFLINE ->
//!   SYNCING), which would make the function not idempotent.
//! - Only one target per chain is SYNCING at any time, even if the input had several; the first
//!   in chain order keeps syncing, the others wait.
//!
//! Invariants (checked by the tests below, for any input, valid or not): at most one SYNCING;
//! at most one LASTSRV and never next to a SERVING; SYNCING only while a SERVING exists; a chain
//! that had a SERVING or LASTSRV target still has one; a target only becomes SERVING from SERVING
//! (while up), from SYNCING with UPTODATE, or from LASTSRV (up) when the old chain had no
//! SERVING; applying the function again to its own output with the same local states changes
//! nothing.
use t3fs_common::proto::{ChainInfo, ChainTarget, LocalTargetState, PublicTargetState};

/// The chain to publish after applying the state machine, or `None` when nothing changes.
/// `local` gives each target's current local state.
pub fn next_chain(chain: &ChainInfo, local: impl Fn(u64) -> LocalTargetState) -> Option<ChainInfo> {
    let mut targets = next_targets(&chain.targets, local);
    prefer(&mut targets, &chain.preferred_order);
    if targets == chain.targets {
        return None;
    }
    // 4 billion changes of one chain is beyond any lifetime; saturate rather than wrap, since a
    // wrapped version would look older to storage.
    Some(ChainInfo {
        chain_id: chain.chain_id,
        chain_version: chain.chain_version.saturating_add(1),
        targets,
        preferred_order: chain.preferred_order.clone(),
    })
}

/// While every target is SERVING, puts them in the admin-set `preferred` order (stable; targets it
/// does not list go last). Otherwise, or with no preferred order, leaves the order alone.
pub fn prefer(targets: &mut [ChainTarget], preferred: &[u64]) {
    if preferred.is_empty() || !targets.iter().all(|t| public_of(t.public_state) == PublicTargetState::Serving) {
        return;
    }
    targets.sort_by_key(|t| preferred.iter().position(|&p| p == t.target_id).unwrap_or(usize::MAX));
}

/// A public state as the state machine sees it (UNSPECIFIED and unknown values are OFFLINE).
pub fn public_of(state: i32) -> PublicTargetState {
    match PublicTargetState::try_from(state) {
        Ok(PublicTargetState::Unspecified) | Err(_) => PublicTargetState::Offline,
        Ok(s) => s,
    }
}

/// Position of a state's group in the chain order.
fn rank(state: PublicTargetState) -> u8 {
    match state {
        PublicTargetState::Serving => 0,
        PublicTargetState::Lastsrv => 1,
        PublicTargetState::Syncing => 2,
        PublicTargetState::Waiting => 3,
        PublicTargetState::Offline | PublicTargetState::Unspecified => 4,
    }
}

/// The new targets, in the new order (see the module table).
fn next_targets(old: &[ChainTarget], local: impl Fn(u64) -> LocalTargetState) -> Vec<ChainTarget> {
    use PublicTargetState::{Lastsrv, Offline, Serving, Syncing, Waiting};

    let cur: Vec<PublicTargetState> = old.iter().map(|t| public_of(t.public_state)).collect();
    let loc: Vec<LocalTargetState> = old.iter().map(|t| local(t.target_id)).collect();
    let up = |i: usize| matches!(loc[i], LocalTargetState::Uptodate | LocalTargetState::Online);
    let had_serving = cur.contains(&Serving);
    let mut new: Vec<Option<PublicTargetState>> = vec![None; old.len()];

    // 1. SERVING targets that are up keep serving; the others are decided in step 4.
    let mut failed_serving = Vec::new();
    for i in (0..old.len()).filter(|&i| cur[i] == Serving) {
        if up(i) {
            new[i] = Some(Serving);
        } else {
            failed_serving.push(i);
        }
    }
    let serving_exists = |new: &[Option<PublicTargetState>]| new.contains(&Some(Serving));

    // 2. LASTSRV: serves again when back and nothing else serves; stale next to an old SERVING.
    //    A stale one that is up is left undecided and handled like an OFFLINE target in step 6.
    let mut lastsrv_kept = false;
    for i in (0..old.len()).filter(|&i| cur[i] == Lastsrv) {
        new[i] = if !had_serving && up(i) && !serving_exists(&new) {
            Some(Serving)
        } else if !had_serving && !up(i) && !lastsrv_kept {
            lastsrv_kept = true;
            Some(Lastsrv)
        } else if up(i) {
            None
        } else {
            Some(Offline)
        };
    }

    // 3. A SYNCING target whose sync completed serves.
    for i in (0..old.len()).filter(|&i| cur[i] == Syncing && loc[i] == LocalTargetState::Uptodate) {
        new[i] = Some(Serving);
    }

    // 4. Failed SERVING targets: the first keeps the "last serving" mark if nothing serves now.
    for (k, &i) in failed_serving.iter().enumerate() {
        new[i] = Some(if k == 0 && !lastsrv_kept && !serving_exists(&new) { Lastsrv } else { Offline });
    }

    // 5. SYNCING targets still syncing (ONLINE) continue only while a source serves.
    for i in (0..old.len()).filter(|&i| cur[i] == Syncing && loc[i] != LocalTargetState::Uptodate) {
        new[i] = Some(if !up(i) {
            Offline
        } else if serving_exists(&new) && !new.contains(&Some(Syncing)) {
            Syncing
        } else {
            Waiting
        });
    }

    // 6. WAITING / OFFLINE (and step 2's leftovers): one ONLINE target starts syncing when a
    //    source serves.
    let undecided: Vec<usize> = (0..old.len()).filter(|&i| new[i].is_none()).collect();
    for i in undecided {
        new[i] = Some(if loc[i] == LocalTargetState::Online && serving_exists(&new) && !new.contains(&Some(Syncing)) {
            Syncing
        } else if up(i) {
            Waiting
        } else {
            Offline
        });
    }

    // 7. Once anything serves, a LASTSRV mark is obsolete.
    let serving = serving_exists(&new);
    let mut next: Vec<ChainTarget> = old
        .iter()
        .zip(new)
        .map(|(t, s)| {
            let s = s.expect("step 6 decides every target left undecided");
            let s = if serving && s == Lastsrv { Offline } else { s };
            ChainTarget { target_id: t.target_id, public_state: s as i32 }
        })
        .collect();
    // Stable: the previous relative order is kept within a group.
    next.sort_by_key(|t| rank(public_of(t.public_state)));
    next
}

#[cfg(test)]
#[path = "chain_update_tests.rs"]
mod tests;
