//! `t3fs admin fsck --repair`: rewrites a damaged replica from a good one.
//!
//! For each damaged replica (metadata present, data failing its CRC) whose metadata matches a good
//! replica's (same version, length and CRC32C), read the chunk from the good replica, check it
//! against that CRC, and send it to the damaged target as a *repair* update: `REPLACE` at exactly
//! that version with `repair = true` (storage/src/service/repair.rs). The storage node takes it only
//! if its own copy at that version really is damaged and the content is what its metadata records,
//! so a repair can never change a healthy replica or a chunk's committed content. Replicas whose
//! metadata disagrees (a version or CRC conflict, not bit rot) are left alone: that is resync's job.
use t3fs_common::bulk::BulkClient;
use t3fs_common::proto::{self, bulk_request};
use t3fs_common::routing::Routing;
use t3fs_common::{ChunkId, TargetId};

use super::Ctx;

/// Repairs every `damaged` replica that has a `good` twin; returns one line per attempt.
pub async fn repair_replicas(
    ctx: &Ctx,
    bulk: &BulkClient,
    routing: &Routing,
    chain: &proto::ChainInfo,
    chunk: ChunkId,
    good: &[(TargetId, proto::ChunkMeta)],
    damaged: &[(TargetId, proto::ChunkMeta)],
) -> Vec<String> {
    let mut notes = Vec::new();
    for (bad, m) in damaged {
        let same = |g: &proto::ChunkMeta| (g.version, g.length, g.crc32c) == (m.version, m.length, m.crc32c);
        let Some((src, _)) = good.iter().find(|(_, g)| same(g)) else {
            notes.push(format!("target {bad}: not repaired: no good replica has its version and checksum"));
            continue;
        };
        match repair_one(ctx, bulk, routing, chain, chunk, *src, *bad, m).await {
            Ok(()) => notes.push(format!("target {bad}: repaired from target {src} (version {})", m.version)),
            Err(e) => notes.push(format!("target {bad}: repair from target {src} failed: {e}")),
        }
    }
    notes
}

#[allow(clippy::too_many_arguments)]
async fn repair_one(
    ctx: &Ctx,
    bulk: &BulkClient,
    routing: &Routing,
    chain: &proto::ChainInfo,
    chunk: ChunkId,
    src: TargetId,
    dst: TargetId,
    meta: &proto::ChunkMeta,
) -> Result<(), String> {
    let src_addr = routing.node_of_target(src).map_err(|e| e.to_string())?.bulk_addr.clone();
    let data = t3fs_common::repair::read_good_copy(bulk, &src_addr, &ctx.token, src, chunk, meta)
        .await
        .map_err(|e| format!("reading the good copy: {e}"))?;
    let dst_addr = routing.node_of_target(dst).map_err(|e| e.to_string())?.bulk_addr.clone();
    let fix = proto::BulkRequest {
        request_id: t3fs_common::new_request_id(),
        token: ctx.token.clone(),
        op: Some(bulk_request::Op::Update(t3fs_common::repair::repair_update(
            chain,
            dst,
            chunk,
            meta.version,
            meta.crc32c,
        ))),
    };
    bulk.call(&dst_addr, &fix, &data).await.map_err(|e| e.to_string())?;
    Ok(())
}
