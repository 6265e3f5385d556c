//! Tests of the target state machine: the full transition table, then seeded random properties.
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

use LocalTargetState as L;
use PublicTargetState as P;

const UP: L = L::Uptodate;
const ON: L = L::Online;
const OFF: L = L::Offline;

fn ct(target_id: u64, s: P) -> ChainTarget {
    ChainTarget { target_id, public_state: s as i32 }
}

fn chain(targets: Vec<ChainTarget>) -> ChainInfo {
    ChainInfo { chain_id: 100_001, chain_version: 7, targets, ..Default::default() }
}

fn state_of(c: &ChainInfo, id: u64) -> P {
    public_of(c.targets.iter().find(|t| t.target_id == id).expect("target in chain").public_state)
}

/// Every (local × current public × SERVING peer × SYNCING peer) combination for a subject target
/// X, with X's expected next public state. The SERVING peer is SERVING and UPTODATE (it keeps
/// serving); the SYNCING peer is SYNCING and ONLINE (still syncing) and comes before X in the
/// chain, so it is "already" syncing. Chain layout: [serving peer?, syncing peer?, X].
#[rustfmt::skip]
const TABLE: &[(L, P, bool, bool, P)] = &[
    // local, current, serving peer, syncing peer => next
    (UP,  P::Serving, false, false, P::Serving),
    (UP,  P::Serving, false, true,  P::Serving),
    (UP,  P::Serving, true,  false, P::Serving),
    (UP,  P::Serving, true,  true,  P::Serving),
    (ON,  P::Serving, false, false, P::Serving),
    (ON,  P::Serving, false, true,  P::Serving),
    (ON,  P::Serving, true,  false, P::Serving),
    (ON,  P::Serving, true,  true,  P::Serving),
    (OFF, P::Serving, false, false, P::Lastsrv),
    (OFF, P::Serving, false, true,  P::Lastsrv),
    (OFF, P::Serving, true,  false, P::Offline),
    (OFF, P::Serving, true,  true,  P::Offline),

    (UP,  P::Lastsrv, false, false, P::Serving),
    (UP,  P::Lastsrv, false, true,  P::Serving),
    (UP,  P::Lastsrv, true,  false, P::Waiting),
    (UP,  P::Lastsrv, true,  true,  P::Waiting),
    (ON,  P::Lastsrv, false, false, P::Serving),
    (ON,  P::Lastsrv, false, true,  P::Serving),
    (ON,  P::Lastsrv, true,  false, P::Syncing),
    (ON,  P::Lastsrv, true,  true,  P::Waiting),
    (OFF, P::Lastsrv, false, false, P::Lastsrv),
    (OFF, P::Lastsrv, false, true,  P::Lastsrv),
    (OFF, P::Lastsrv, true,  false, P::Offline),
    (OFF, P::Lastsrv, true,  true,  P::Offline),

    (UP,  P::Syncing, false, false, P::Serving),
    (UP,  P::Syncing, false, true,  P::Serving),
    (UP,  P::Syncing, true,  false, P::Serving),
    (UP,  P::Syncing, true,  true,  P::Serving),
    (ON,  P::Syncing, false, false, P::Waiting),
    (ON,  P::Syncing, false, true,  P::Waiting),
    (ON,  P::Syncing, true,  false, P::Syncing),
    (ON,  P::Syncing, true,  true,  P::Waiting),
    (OFF, P::Syncing, false, false, P::Offline),
    (OFF, P::Syncing, false, true,  P::Offline),
    (OFF, P::Syncing, true,  false, P::Offline),
    (OFF, P::Syncing, true,  true,  P::Offline),

    (UP,  P::Waiting, false, false, P::Waiting),
    (UP,  P::Waiting, false, true,  P::Waiting),
    (UP,  P::Waiting, true,  false, P::Waiting),
    (UP,  P::Waiting, true,  true,  P::Waiting),
    (ON,  P::Waiting, false, false, P::Waiting),
    (ON,  P::Waiting, false, true,  P::Waiting),
    (ON,  P::Waiting, true,  false, P::Syncing),
    (ON,  P::Waiting, true,  true,  P::Waiting),
    (OFF, P::Waiting, false, false, P::Offline),
    (OFF, P::Waiting, false, true,  P::Offline),
    (OFF, P::Waiting, true,  false, P::Offline),
    (OFF, P::Waiting, true,  true,  P::Offline),

    (UP,  P::Offline, false, false, P::Waiting),
    (UP,  P::Offline, false, true,  P::Waiting),
    (UP,  P::Offline, true,  false, P::Waiting),
    (UP,  P::Offline, true,  true,  P::Waiting),
    (ON,  P::Offline, false, false, P::Waiting),
    (ON,  P::Offline, false, true,  P::Waiting),
    (ON,  P::Offline, true,  false, P::Syncing),
    (ON,  P::Offline, true,  true,  P::Waiting),
    (OFF, P::Offline, false, false, P::Offline),
    (OFF, P::Offline, false, true,  P::Offline),
    (OFF, P::Offline, true,  false, P::Offline),
    (OFF, P::Offline, true,  true,  P::Offline),
];

#[test]
fn transition_table() {
    assert_eq!(TABLE.len(), 3 * 5 * 2 * 2, "every combination has a row");
    let mut seen = std::collections::HashSet::new();
    for &(local, current, serving_peer, syncing_peer, want) in TABLE {
        assert!(seen.insert((local as i32, current as i32, serving_peer, syncing_peer)), "duplicate row");
        let (s, q, x) = (1u64, 2u64, 3u64);
        let mut targets = Vec::new();
        if serving_peer {
            targets.push(ct(s, P::Serving));
        }
        if syncing_peer {
            targets.push(ct(q, P::Syncing));
        }
        targets.push(ct(x, current));
        let old = chain(targets);
        let locals: HashMap<u64, L> = [(s, UP), (q, ON), (x, local)].into();
        let got = next_chain(&old, |id| locals[&id]);
        let new = got.clone().unwrap_or_else(|| old.clone());
        let row = format!("row ({local:?}, {current:?}, serving peer {serving_peer}, syncing peer {syncing_peer})");
        assert_eq!(state_of(&new, x), want, "{row}");
        // The SERVING peer always keeps serving; the whole result obeys every invariant.
        if serving_peer {
            assert_eq!(state_of(&new, s), P::Serving, "{row}");
        }
        check_step(&old, |id| locals[&id], got.as_ref()).unwrap_or_else(|e| panic!("{row}: {e}"));
    }
}

/// Examples from research/3fs.md and the issue, step by step.
#[test]
fn failure_and_recovery_walkthrough() {
    // A healthy 3-replica chain.
    let mut c = chain(vec![ct(1, P::Serving), ct(2, P::Serving), ct(3, P::Serving)]);
    let mut locals: HashMap<u64, L> = [(1, UP), (2, UP), (3, UP)].into();
    assert_eq!(next_chain(&c, |id| locals[&id]), None, "nothing changes while all are up");
    // ONLINE is "up" for a SERVING target (a freshly created chain before storage says UPTODATE).
    locals.insert(1, ON);
    assert_eq!(next_chain(&c, |id| locals[&id]), None);
    locals.insert(1, UP);

    // The head fails: OFFLINE, moved to the tail, version bumped.
    locals.insert(1, OFF);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.chain_version, 8);
    assert_eq!(c.targets, vec![ct(2, P::Serving), ct(3, P::Serving), ct(1, P::Offline)]);

    // The other two fail in the same tick: the first of them (the head) is the last server.
    locals.insert(2, OFF);
    locals.insert(3, OFF);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(2, P::Lastsrv), ct(3, P::Offline), ct(1, P::Offline)]);
    assert_eq!(c.chain_version, 9);

    // 1 and 3 come back first: they wait (nothing serves), they must not serve.
    locals.insert(1, ON);
    locals.insert(3, ON);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(2, P::Lastsrv), ct(3, P::Waiting), ct(1, P::Waiting)]);

    // The last server returns: it serves, and one waiting target starts syncing.
    locals.insert(2, ON);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(2, P::Serving), ct(3, P::Syncing), ct(1, P::Waiting)]);
    assert_eq!(next_chain(&c, |id| locals[&id]), None, "one at a time: 1 keeps waiting");

    // 3 finishes its sync: it serves, and 1 starts syncing in the same step.
    locals.insert(3, UP);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(2, P::Serving), ct(3, P::Serving), ct(1, P::Syncing)]);
    locals.insert(1, UP);
    c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(2, P::Serving), ct(3, P::Serving), ct(1, P::Serving)]);
    assert_eq!(c.chain_version, 13);
}

#[test]
fn syncing_source_lost_then_found() {
    // The only SERVING target fails while another syncs from it: the syncing one waits, the failed
    // one is the last server, and syncing resumes when it returns.
    let c = chain(vec![ct(1, P::Serving), ct(2, P::Syncing), ct(3, P::Waiting)]);
    let locals: HashMap<u64, L> = [(1, OFF), (2, ON), (3, ON)].into();
    let c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(1, P::Lastsrv), ct(2, P::Waiting), ct(3, P::Waiting)]);
    let locals: HashMap<u64, L> = [(1, UP), (2, ON), (3, ON)].into();
    let c = next_chain(&c, |id| locals[&id]).unwrap();
    assert_eq!(c.targets, vec![ct(1, P::Serving), ct(2, P::Syncing), ct(3, P::Waiting)]);
}

#[test]
fn unknown_states_count_as_offline() {
    let c = ChainInfo {
        chain_id: 1,
        chain_version: 1,
        targets: vec![
            ct(1, P::Serving),
            ChainTarget { target_id: 2, public_state: 0 },
            ChainTarget { target_id: 3, public_state: 77 },
        ],
        ..Default::default()
    };
    let c = next_chain(&c, |id| if id == 3 { L::Unspecified } else { ON }).unwrap();
    assert_eq!(c.targets, vec![ct(1, P::Serving), ct(2, P::Syncing), ct(3, P::Offline)]);
    // A SERVING target whose local state is unknown is not up.
    let c = chain(vec![ct(1, P::Serving)]);
    assert_eq!(next_chain(&c, |_| L::Unspecified).unwrap().targets, vec![ct(1, P::Lastsrv)]);
}

#[test]
fn version_saturates() {
    let mut c = chain(vec![ct(1, P::Serving)]);
    c.chain_version = u32::MAX;
    assert_eq!(next_chain(&c, |_| OFF).unwrap().chain_version, u32::MAX);
}

/// Checks one application of [`next_chain`] (`got`) to `old` against every invariant.
fn check_step(old: &ChainInfo, local: impl Fn(u64) -> L, got: Option<&ChainInfo>) -> Result<(), String> {
    let new = got.unwrap_or(old);
    let states: Vec<P> = new.targets.iter().map(|t| public_of(t.public_state)).collect();
    let count = |s: P| states.iter().filter(|&&x| x == s).count();
    let up = |id: u64| matches!(local(id), L::Uptodate | L::Online);

    // Version bumps iff something changed; the chain keeps its id and its targets.
    if let Some(n) = got {
        if n.targets == old.targets {
            return Err("Some(..) returned without a change".into());
        }
        if n.chain_version != old.chain_version + 1 || n.chain_id != old.chain_id {
            return Err(format!("version {} -> {}", old.chain_version, n.chain_version));
        }
    }
    let mut a: Vec<u64> = old.targets.iter().map(|t| t.target_id).collect();
    let mut b: Vec<u64> = new.targets.iter().map(|t| t.target_id).collect();
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        return Err(format!("targets changed: {a:?} -> {b:?}"));
    }
    if count(P::Syncing) > 1 {
        return Err(format!("two SYNCING: {states:?}"));
    }
    if count(P::Lastsrv) > 1 || (count(P::Lastsrv) > 0 && count(P::Serving) > 0) {
        return Err(format!("LASTSRV must be alone: {states:?}"));
    }
    if count(P::Syncing) > 0 && count(P::Serving) == 0 {
        return Err(format!("SYNCING without a source: {states:?}"));
    }
    let had = old.targets.iter().any(|t| matches!(public_of(t.public_state), P::Serving | P::Lastsrv));
    if had && count(P::Serving) + count(P::Lastsrv) == 0 {
        return Err(format!("lost the last SERVING/LASTSRV: {:?} -> {states:?}", old.targets));
    }
    let old_serving = old.targets.iter().any(|t| public_of(t.public_state) == P::Serving);
    for t in &new.targets {
        let before = public_of(old.targets.iter().find(|o| o.target_id == t.target_id).expect("same ids").public_state);
        let after = public_of(t.public_state);
        let ok = match after {
            P::Serving => match before {
                P::Serving => up(t.target_id),
                P::Syncing => local(t.target_id) == L::Uptodate,
                P::Lastsrv => !old_serving && up(t.target_id),
                _ => false,
            },
            P::Syncing | P::Waiting => up(t.target_id),
            P::Lastsrv => !up(t.target_id) && matches!(before, P::Serving | P::Lastsrv),
            _ => true,
        };
        if !ok {
            return Err(format!("target {}: {before:?} -> {after:?} with local {:?}", t.target_id, local(t.target_id)));
        }
    }
    // Order: SERVING, LASTSRV, SYNCING, WAITING, OFFLINE; stable within a group.
    if !new.targets.windows(2).all(|w| rank(public_of(w[0].public_state)) <= rank(public_of(w[1].public_state))) {
        return Err(format!("bad order: {states:?}"));
    }
    let pos = |id: u64| old.targets.iter().position(|t| t.target_id == id).expect("same ids");
    for w in new.targets.windows(2) {
        if public_of(w[0].public_state) == public_of(w[1].public_state) && pos(w[0].target_id) > pos(w[1].target_id) {
            return Err(format!("not stable within a group: {:?} -> {:?}", old.targets, new.targets));
        }
    }
    // A fixed point: the same inputs again change nothing.
    if let Some(again) = next_chain(new, &local) {
        return Err(format!("not idempotent: {:?} -> {:?}", new.targets, again.targets));
    }
    Ok(())
}

const PUBLIC: [P; 5] = [P::Serving, P::Lastsrv, P::Syncing, P::Waiting, P::Offline];
const LOCAL: [L; 3] = [UP, ON, OFF];

#[test]
fn random_single_steps_keep_invariants() {
    let mut rng = StdRng::seed_from_u64(0x3f5_c4a1);
    for iter in 0..50_000 {
        let n = rng.random_range(1..=4u64);
        let old = ChainInfo {
            chain_id: 9,
            chain_version: rng.random_range(1..1000),
            targets: (1..=n).map(|id| ct(id, PUBLIC[rng.random_range(0..PUBLIC.len())])).collect(),
            ..Default::default()
        };
        let locals: HashMap<u64, L> = (1..=n).map(|id| (id, LOCAL[rng.random_range(0..LOCAL.len())])).collect();
        let got = next_chain(&old, |id| locals[&id]);
        check_step(&old, |id| locals[&id], got.as_ref())
            .unwrap_or_else(|e| panic!("iteration {iter}: {e}\nold {old:?}\nlocal {locals:?}"));
    }
}

#[test]
fn exhaustive_three_target_chains() {
    // Every 3-target chain (5^3 public states) under every local assignment (3^3).
    for p in 0..125usize {
        let old = chain((0..3).map(|i| ct(i as u64 + 1, PUBLIC[p / 5usize.pow(i) % 5])).collect());
        for l in 0..27usize {
            let local = |id: u64| LOCAL[l / 3usize.pow(id as u32 - 1) % 3];
            let got = next_chain(&old, local);
            check_step(&old, local, got.as_ref()).unwrap_or_else(|e| panic!("{e}\nold {old:?} locals {l}"));
        }
    }
}

#[test]
fn random_walks_never_lose_the_data() {
    // Chains start healthy (all SERVING) and evolve under random local states: every step keeps
    // the invariants, and there is always a SERVING or LASTSRV target to recover from.
    let mut rng = StdRng::seed_from_u64(42);
    for walk in 0..2_000 {
        let mut c = chain((1..=3).map(|id| ct(id, P::Serving)).collect());
        let mut locals: HashMap<u64, L> = (1..=3).map(|id| (id, UP)).collect();
        for step in 0..50 {
            // Change one or two targets' local state per step, like heartbeats trickling in.
            for _ in 0..rng.random_range(1..=2) {
                locals.insert(rng.random_range(1..=3), LOCAL[rng.random_range(0..LOCAL.len())]);
            }
            let got = next_chain(&c, |id| locals[&id]);
            check_step(&c, |id| locals[&id], got.as_ref())
                .unwrap_or_else(|e| panic!("walk {walk} step {step}: {e}\nchain {c:?}\nlocal {locals:?}"));
            if let Some(n) = got {
                c = n;
            }
            assert!(
                c.targets.iter().any(|t| matches!(public_of(t.public_state), P::Serving | P::Lastsrv)),
                "walk {walk} step {step}: {c:?}"
            );
        }
    }
}

#[test]
fn preferred_order_applies_only_while_every_target_serves() {
    let mut c = chain(vec![ct(1, P::Serving), ct(2, P::Serving), ct(3, P::Serving)]);
    c.preferred_order = vec![3, 1, 2];
    let all_up = |_: u64| UP;
    let n = next_chain(&c, all_up).expect("reordered");
    assert_eq!(n.targets.iter().map(|t| t.target_id).collect::<Vec<_>>(), vec![3, 1, 2]);
    assert_eq!((n.chain_version, n.preferred_order.clone()), (c.chain_version + 1, vec![3, 1, 2]));
    assert!(next_chain(&n, all_up).is_none(), "a fixed point");
    // Target 3 fails: the state order rules (3 goes to the tail), not the preference.
    let n = next_chain(&n, |id| if id == 3 { OFF } else { UP }).expect("3 failed");
    assert_eq!(n.targets, vec![ct(1, P::Serving), ct(2, P::Serving), ct(3, P::Offline)]);
    // It comes back: syncs behind the others, then leads again once everyone serves.
    let n = next_chain(&n, |id| if id == 3 { ON } else { UP }).expect("3 syncs");
    assert_eq!(n.targets[2], ct(3, P::Syncing));
    let n = next_chain(&n, all_up).expect("3 serves");
    assert_eq!(n.targets, vec![ct(3, P::Serving), ct(1, P::Serving), ct(2, P::Serving)]);
    // Targets the preference does not list go last; listed ids not in the chain are ignored.
    let mut t = vec![ct(4, P::Serving), ct(2, P::Serving), ct(1, P::Serving)];
    prefer(&mut t, &[9, 1, 2]);
    assert_eq!(t.iter().map(|t| t.target_id).collect::<Vec<_>>(), vec![1, 2, 4]);
    let mut none = t.clone();
    prefer(&mut none, &[]);
    assert_eq!(none, t);
}
