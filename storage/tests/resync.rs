//! Resync of a returning (SYNCING) tail by its SERVING predecessor, on the `common` harness: missed
//! writes, writes while syncing, and replicas that are ahead of the chain or differ at the same version
//! (the predecessor is authoritative: sync updates).
use std::time::Duration;

use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, PublicTargetState};
use t3fs_common::{ChunkId, InodeId, StatusCode, TargetId};
use t3fs_storage::ChunkStore;

mod common;
use common::*;
use t3fs_common::metrics::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returning_tail_is_resynced_and_reports_uptodate() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    let (a, b, cc) = (ChunkId::new(InodeId(11), 0), ChunkId::new(InodeId(11), 1), ChunkId::new(InodeId(11), 2));
    // B and C exist on all three replicas.
    for (chunk, data) in [(b, &b"bbbbbbbbbb"[..]), (cc, &b"cccc"[..])] {
        client.call(&c.bulk(0), &write(101, 1, chunk, 0, data), data).await.unwrap();
    }
    c.wait_tail_reports(proto::LocalTargetState::Uptodate, 1).await;

    // A client may not send REPLACE.
    let replace = update(101, 1, a, proto::UpdateType::Replace, 0, b"zz");
    assert_eq!(err(client.call(&c.bulk(0), &replace, b"zz").await), StatusCode::InvalidArgument);
    assert_eq!(c.query(0, a).await, None);

    // While the tail is down: A is created, B overwritten (twice), C removed.
    take_tail_offline(&mut c).await;
    client.call(&c.bulk(0), &write(101, 2, a, 3, b"new chunk"), b"new chunk").await.unwrap();
    client.call(&c.bulk(0), &write(101, 2, b, 2, b"XY"), b"XY").await.unwrap();
    client.call(&c.bulk(0), &write(101, 2, b, 12, b"tail"), b"tail").await.unwrap();
    client.call(&c.bulk(0), &update(101, 2, cc, proto::UpdateType::Remove, 0, b""), &[]).await.unwrap();

    // It comes back ONLINE (it may have missed writes), becomes SYNCING, and the middle resyncs it.
    bring_tail_back_syncing(&mut c).await;
    // Not readable while syncing.
    assert_eq!(err(client.call(&c.bulk(2), &read(301, b, 0, 100), &[]).await), StatusCode::TargetNotServing);
    let list = c.wait_tail_identical().await;
    assert_eq!(list.len(), 3, "{list:?}");
    let tomb = list.iter().find(|m| m.chunk_id.as_ref() == cc.to_bytes()).unwrap();
    assert!(tomb.removed && tomb.version == 2, "{tomb:?}");
    let meta_b = list.iter().find(|m| m.chunk_id.as_ref() == b.to_bytes()).unwrap();
    assert_eq!((meta_b.version, meta_b.removed), (3, false));

    // SyncDone arrived; the tail reports UPTODATE at chain version 3.
    c.wait_tail_reports(proto::LocalTargetState::Uptodate, 3).await;
    assert_eq!(c.servers[2].target_states().synced(TargetId(301)), Some(3));
    // The middle node's resync metrics: one sync done, A and B replaced (12 + 16 bytes), C removed.
    let mut m = scrape(&c.servers[1]).await;
    for _ in 0..100 {
        if sample(&m, "t3fs_storage_syncs_completed_total") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = scrape(&c.servers[1]).await;
    }
    assert_eq!(sample(&m, "t3fs_storage_syncs_completed_total"), Some(1.0), "{m}");
    assert!(sample(&m, "t3fs_storage_resync_chunks_total").unwrap() >= 3.0, "{m}");
    assert!(sample(&m, "t3fs_storage_resync_bytes_total").unwrap() >= 28.0, "{m}");

    // mgmtd makes it SERVING; it serves the same bytes.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 4;
        ch.targets[2].public_state = PublicTargetState::Serving as i32;
    });
    c.wait_routing(v).await;
    for chunk in [a, b] {
        let (_, head) = client.call(&c.bulk(0), &read(101, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
        let (_, tail) = client.call(&c.bulk(2), &read(301, chunk, 0, CHUNK_SIZE), &[]).await.unwrap();
        assert_eq!(head, tail);
    }
    let (_, back) = client.call(&c.bulk(2), &read(301, b, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), b"bbXYbbbbbb\0\0tail");
    assert_eq!(err(client.call(&c.bulk(2), &read(301, cc, 0, 1), &[]).await), StatusCode::ChunkNotFound);
    // Writes replicate normally again.
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 4, a, 0, b"!"), b"!").await.unwrap();
    assert_eq!(c.query(2, a).await.as_ref(), rsp.meta.as_ref());
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_syncing_reach_the_tail_as_replacements() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let chunks: Vec<_> = (0..12).map(|i| ChunkId::new(InodeId(12), i)).collect();
    take_tail_offline(&mut c).await;
    // Versions 1..=3 of every chunk exist only on head and middle.
    for &chunk in &chunks {
        for i in 0..3u32 {
            let data = vec![i as u8 + 1; 1000];
            client.call(&c.bulk(0), &write(101, 2, chunk, i * 500, &data), &data).await.unwrap();
        }
    }
    bring_tail_back_syncing(&mut c).await;
    // Partial writes while the tail syncs: each one reaches the tail before it is acknowledged, as the
    // whole chunk (a plain partial write would leave the tail with zeros where it lacks versions 1..=3).
    let mut tasks = Vec::new();
    for (n, &chunk) in chunks.iter().enumerate() {
        let (client, head) = (client.clone(), c.bulk(0));
        tasks.push(tokio::spawn(async move {
            let mut metas = Vec::new();
            for k in 0..3u32 {
                let data = vec![0xF0 | n as u8; 100];
                let (rsp, _) = client.call(&head, &write(101, 3, chunk, 100 + k * 700, &data), &data).await.unwrap();
                metas.push(rsp.meta.unwrap());
            }
            metas
        }));
    }
    let tail = c.servers[2].store(TargetId(301)).unwrap().clone();
    for (t, &chunk) in tasks.into_iter().zip(&chunks) {
        let metas = t.await.unwrap();
        assert_eq!(metas.last().unwrap().version, 6);
        let at_tail = tail.query(chunk).unwrap().unwrap();
        let last = metas.last().unwrap();
        assert_eq!((at_tail.version, at_tail.length, at_tail.crc32c), (last.version, last.length, last.crc32c));
    }
    let list = c.wait_tail_identical().await;
    assert_eq!(list.len(), chunks.len());
    c.wait_tail_reports(proto::LocalTargetState::Uptodate, 3).await;
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syncing_tail_ahead_of_its_predecessor_is_brought_back() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let err = |r: Result<_, t3fs_common::Error>| r.unwrap_err().code;
    let ch = |i| ChunkId::new(InodeId(31), i);
    // a: blocks the resync; p: tail ahead; q: live only on the tail; r: tombstone only on the tail;
    // t: removed by the chain, live and ahead on the tail; n: only on the tail, written while syncing.
    let (a, p, q, r, t, n) = (ch(0), ch(1), ch(2), ch(3), ch(4), ch(5));
    for i in 0..5u32 {
        client.call(&c.bulk(0), &write(101, 1, p, i, b"p"), b"p").await.unwrap();
    }
    client.call(&c.bulk(0), &write(101, 1, t, 0, b"t"), b"t").await.unwrap();
    let p5 = at_tail(&c, p).unwrap();
    assert_eq!(p5.0, 5);

    // A SERVING target refuses sync updates: they could lower it.
    for (node, target) in [(0, 101), (2, 301)] {
        let lower = sync_update(target, 1, p, proto::UpdateType::Replace, 2, b"lower");
        assert_eq!(err(client.call(&c.bulk(node), &lower, b"lower").await), StatusCode::TargetNotServing);
        let rm = sync_update(target, 1, p, proto::UpdateType::Remove, 5, b"");
        assert_eq!(err(client.call(&c.bulk(node), &rm, &[]).await), StatusCode::TargetNotServing);
    }
    assert_eq!(at_tail(&c, p), Some(p5));

    take_tail_offline(&mut c).await;
    client.call(&c.bulk(0), &write(101, 2, a, 0, b"aaa"), b"aaa").await.unwrap();
    client.call(&c.bulk(0), &update(101, 2, t, proto::UpdateType::Remove, 0, b""), &[]).await.unwrap();
    // The tail applied writes nobody acknowledged (as a head that crashed before forwarding them).
    tamper_tail(
        &c,
        &[
            (p, 6, Some(&b"AHEAD six"[..]), false),
            (p, 7, Some(&b"AHEAD seven"[..]), false),
            (q, 3, Some(&b"only on the tail"[..]), false),
            (r, 4, None, false),
            (t, 9, Some(&b"t ahead"[..]), false),
            (n, 8, Some(&b"n stale"[..]), false),
        ],
    )
    .await;

    // Hold the middle's lock of `a` (the first chunk the resync sends), so the writes below reach the tail
    // before the resync touches their chunks.
    let blocker = c.servers[1].store(TargetId(201)).unwrap().lock(a).await;
    bring_tail_back_syncing(&mut c).await;

    // A SYNCING target takes sync updates, but only REPLACE at a version > 0 or REMOVE.
    let bad = sync_update(301, 3, p, proto::UpdateType::Write, 9, b"w");
    assert_eq!(err(client.call(&c.bulk(2), &bad, b"w").await), StatusCode::InvalidArgument);
    let bad = sync_update(301, 3, p, proto::UpdateType::Replace, 0, b"w");
    assert_eq!(err(client.call(&c.bulk(2), &bad, b"w").await), StatusCode::InvalidArgument);
    assert_eq!(at_tail(&c, p).map(|m| m.0), Some(7));

    // Writes while syncing reach the tail at the chain's version, lower than the tail's.
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 3, p, 0, b"P"), b"P").await.unwrap();
    let p6 = rsp.meta.unwrap();
    assert_eq!((p6.version, p6.length), (6, 5));
    assert_eq!(at_tail(&c, p), Some(summary(&p6)), "acknowledged write not on the tail");
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 3, n, 0, b"n new"), b"n new").await.unwrap();
    let n1 = rsp.meta.unwrap();
    assert_eq!(n1.version, 1);
    assert_eq!(at_tail(&c, n), Some(summary(&n1)));
    drop(blocker);

    let list = c.wait_tail_identical().await;
    let got: Vec<_> = [a, p, q, r, t, n].iter().map(|&x| find(&list, x).map(|m| (m.version, m.removed))).collect();
    assert_eq!(got, vec![Some((1, false)), Some((6, false)), None, None, Some((2, true)), Some((1, false))]);
    make_tail_serving(&c).await;
    for chunk in [a, p, n] {
        assert_same_bytes(&c, &client, chunk).await;
    }
    assert_eq!(err(client.call(&c.bulk(2), &read(301, t, 0, 1), &[]).await), StatusCode::ChunkNotFound);
    // Chunks the tail alone had start over at version 1 and replicate normally (no stale tombstone or
    // version on the tail swallows them as duplicates).
    for chunk in [q, r, t] {
        let (rsp, _) = client.call(&c.bulk(0), &write(101, 4, chunk, 0, b"again"), b"again").await.unwrap();
        let meta = rsp.meta.unwrap();
        assert_eq!(meta.version, if chunk == t { 3 } else { 1 });
        assert_eq!(at_tail(&c, chunk), Some(summary(&meta)), "chunk {chunk}");
        assert_same_bytes(&c, &client, chunk).await;
    }
    assert_eq!(c.listing(2).await, c.listing(0).await);
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syncing_tail_with_other_bytes_at_the_same_version_is_repaired() {
    let mut c = Cluster::start().await;
    let client = BulkClient::default();
    let ch = |i| ChunkId::new(InodeId(32), i);
    // a: blocks the resync; p: the tail holds a stale version 6, the chain then writes its own version 6;
    // s: the tail holds other bytes at the chain's version.
    let (a, p, s) = (ch(0), ch(1), ch(2));
    for i in 0..5u32 {
        client.call(&c.bulk(0), &write(101, 1, p, i, b"p"), b"p").await.unwrap();
    }
    for i in 0..2u32 {
        client.call(&c.bulk(0), &write(101, 1, s, i, b"s"), b"s").await.unwrap();
    }
    take_tail_offline(&mut c).await;
    client.call(&c.bulk(0), &write(101, 2, a, 0, b"aaa"), b"aaa").await.unwrap();
    tamper_tail(&c, &[(p, 6, Some(&b"stale six"[..]), false), (s, 2, Some(&b"XX"[..]), true)]).await;
    let stale_s = at_tail_offline(&c, s);

    let blocker = c.servers[1].store(TargetId(201)).unwrap().lock(a).await;
    bring_tail_back_syncing(&mut c).await;
    assert_eq!(at_tail(&c, s), Some(stale_s));
    assert_eq!(at_tail(&c, p).map(|m| m.0), Some(6));
    // The chain's version 6 of p has other bytes than the tail's stale 6: the tail must take them before
    // the write is acknowledged.
    let (rsp, _) = client.call(&c.bulk(0), &write(101, 3, p, 5, b"P6"), b"P6").await.unwrap();
    let p6 = rsp.meta.unwrap();
    assert_eq!((p6.version, p6.length), (6, 7));
    assert_eq!(at_tail(&c, p), Some(summary(&p6)), "acknowledged write not on the tail");
    drop(blocker);

    let list = c.wait_tail_identical().await;
    assert_eq!(find(&list, s).map(summary), Some((2, 2, crc32c::crc32c(b"ss"))));
    assert_eq!(find(&list, p).map(summary), Some(summary(&p6)));
    make_tail_serving(&c).await;
    for chunk in [a, p, s] {
        assert_same_bytes(&c, &client, chunk).await;
    }
    let (_, back) = client.call(&c.bulk(2), &read(301, p, 0, CHUNK_SIZE), &[]).await.unwrap();
    assert_eq!(back.as_ref(), b"pppppP6");
    // The repaired same-version chunk survives a restart of the tail (its data file is the one its record
    // names) and keeps replicating.
    let v = c.mgmtd.edit_chain(|ch| {
        ch.chain_version = 5;
        ch.targets[2].public_state = PublicTargetState::Offline as i32;
    });
    c.wait_routing(v).await;
    c.stop_tail().await;
    let (store, report) = ChunkStore::open(TargetId(301), c.dirs[2].path()).unwrap();
    assert_eq!((report.orphans_removed, report.damaged.len()), (0, 0));
    assert_eq!(&store.read(s, 0, CHUNK_SIZE).await.unwrap().0[..], b"ss");
    store.close();
    c.stop_servers().await;
    c.mgmtd_cancel.cancel();
}
