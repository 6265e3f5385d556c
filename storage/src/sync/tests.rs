//! Unit tests of the resync planning: which syncs routing asks for, and the chunk diff.
use super::*;
use crate::chunk_store::ChunkMeta;
use t3fs_common::InodeId;

fn id(i: u32) -> ChunkId {
    ChunkId::new(InodeId(3), i)
}

fn live(i: u32, version: u64, crc: u32) -> ListedChunk {
    ListedChunk {
        chunk: id(i),
        meta: ChunkMeta { version, length: 10, crc32c: crc, chain_version: 1 },
        removed: false,
        pending_version: 0,
    }
}

fn tomb(i: u32, version: u64) -> ListedChunk {
    ListedChunk {
        chunk: id(i),
        meta: ChunkMeta { version, length: 0, crc32c: 0, chain_version: 1 },
        removed: true,
        pending_version: 0,
    }
}

fn remote(items: &[ListedChunk]) -> HashMap<ChunkId, Remote> {
    items
        .iter()
        .map(|l| {
            let r = Remote {
                version: l.meta.version,
                length: l.meta.length,
                crc32c: l.meta.crc32c,
                removed: l.removed,
                pending: l.pending_version != 0,
            };
            (l.chunk, r)
        })
        .collect()
}

#[test]
fn diff_sends_what_the_replica_lacks() {
    let local = [live(1, 3, 7), live(2, 2, 5), live(3, 4, 1), tomb(4, 6), tomb(5, 2), live(6, 1, 1), tomb(7, 3)];
    let rem = remote(&[
        live(1, 3, 7), // equal
        live(2, 1, 9), // older
        tomb(3, 2),    // removed remotely at an older version
        live(4, 5, 2), // live remotely, removed locally
        tomb(5, 2),    // equal tombstones
        // 6: missing remotely
        // 7: tombstone missing remotely
        live(8, 4, 4), // remote only: dropped there
        tomb(9, 2),    // remote-only tombstone: dropped too (its version would swallow a re-creation)
    ]);
    let actions = diff(&local, &rem);
    assert_eq!(
        actions,
        vec![
            Action::Send(id(2)),
            Action::Send(id(3)),
            Action::Send(id(4)),
            Action::Send(id(6)),
            Action::Send(id(7)),
            Action::Forget(id(8)),
            Action::Forget(id(9)),
        ]
    );
    // Nothing to do between identical listings.
    assert!(diff(&local, &remote(&local)).is_empty());
    // An equal chunk with a pending version on the replica is sent (the sync update drops the pending one).
    let mut pending = remote(&local);
    pending.get_mut(&id(1)).unwrap().pending = true;
    assert_eq!(diff(&local, &pending), vec![Action::Send(id(1))]);
}

#[test]
fn diff_sends_over_replicas_ahead_or_different_at_the_same_version() {
    // The predecessor is authoritative: a replica ahead of it, or different at the same version, gets the
    // predecessor's state as a sync update (no "diverged" outcome any more).
    let local = [live(1, 3, 7), live(2, 3, 7), tomb(3, 2), live(4, 2, 1), tomb(5, 2)];
    let rem = remote(&[live(1, 3, 8), live(2, 4, 7), live(3, 5, 1), tomb(4, 2), tomb(5, 9)]);
    assert_eq!(
        diff(&local, &rem),
        vec![Action::Send(id(1)), Action::Send(id(2)), Action::Send(id(3)), Action::Send(id(4)), Action::Send(id(5))]
    );
    // Same version and CRC but another length is a difference too.
    let mut other_len = remote(&[live(1, 3, 7)]);
    other_len.get_mut(&id(1)).unwrap().length = 11;
    assert_eq!(diff(&[live(1, 3, 7)], &other_len), vec![Action::Send(id(1))]);
}

fn routing(chain_version: u32, states: &[(u64, PublicTargetState)]) -> Routing {
    Routing::new(proto::RoutingInfo {
        version: 1,
        chains: vec![proto::ChainInfo {
            chain_id: 1,
            chain_version,
            targets: states
                .iter()
                .map(|(t, s)| proto::ChainTarget { target_id: *t, public_state: *s as i32 })
                .collect(),
            ..Default::default()
        }],
        targets: states
            .iter()
            .map(|(t, s)| proto::TargetInfo {
                target_id: *t,
                chain_id: 1,
                public_state: *s as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

#[test]
fn only_the_last_serving_target_syncs_its_syncing_successor() {
    use PublicTargetState::*;
    let all = [TargetId(101), TargetId(201), TargetId(301)];
    let r = routing(3, &[(101, Serving), (201, Serving), (301, Syncing)]);
    let job = SyncJob { chain: ChainId(1), chain_version: 3, from: TargetId(201), to: TargetId(301) };
    assert_eq!(sync_jobs(&r, all), vec![job]);
    assert_eq!(sync_jobs(&r, [TargetId(101)]), vec![]);
    // A LASTSRV/OFFLINE target between them is skipped.
    let r = routing(4, &[(101, Serving), (201, Offline), (301, Syncing)]);
    assert_eq!(sync_jobs(&r, all), vec![SyncJob { chain_version: 4, from: TargetId(101), ..job }]);
    // Nothing to do when the successor is SERVING, WAITING or absent.
    assert!(sync_jobs(&routing(5, &[(101, Serving), (201, Serving), (301, Serving)]), all).is_empty());
    assert!(sync_jobs(&routing(5, &[(101, Serving), (201, Waiting)]), all).is_empty());
    assert!(sync_jobs(&Routing::default(), all).is_empty());
}
