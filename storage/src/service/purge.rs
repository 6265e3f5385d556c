//! Purging the tombstones of deleted files' chunks (`UPDATE_TYPE_PURGE`).
//!
//! Why: a removal leaves a tombstone (a record keeping the chunk's version, `chunk_store.rs`) so
//! that a replayed older update of the chunk is recognised as a duplicate. Meta's GC removes every
//! chunk index a deleted file's length covers, holes included, so every deleted file left one record
//! per chunk on every replica, forever: a cluster that rotates checkpoints deletes millions of chunks
//! a day, and resync lists every record. A deleted file's chunks are never written again by a client
//! that follows the protocol (inode ids are never reused), so once they are removed their tombstones
//! only cost space. GC sends PURGE for each after the removals (`meta/src/gc.rs`).
//!
//! **Order and invariant.** PURGE goes to the head (`update_version` 0) and travels to the tail.
//! Each hop, under its chunk lock and update permit, first forwards it to its successor (with the
//! head's tombstone version as `update_version`), and drops its own record only if
//! - the successor answered that it keeps no record of the chunk, and
//! - its own record is a committed tombstone at or below the head's version, with no pending update.
//!
//! So the hops without a record are always a suffix of the chain (the tail's side): a predecessor
//! never lacks a record its successor has, and an update that does come later (the head assigns its
//! version) is numbered above every replica's tombstone, or from 1 on a chain that kept nothing.
//! Any failure or refusal leaves the tombstones of that hop and every hop before it, as before.
//! A live chunk or a pending update is never touched: PURGE then changes nothing.
//!
//! **Accepted risk.** An update of the chunk delayed inside the chain for longer than GC takes to
//! remove and purge it (GC waits `gc_delay_ms` after the unlink, and every write session to end)
//! would no longer be a duplicate and would leave an orphan chunk of a deleted file on that
//! replica. No live file's data can be touched that way.
use bytes::Bytes;
use t3fs_common::proto::{self, BulkRequest, BulkResponse, bulk_request};
use t3fs_common::{ChunkId, Error};

use super::StorageService;
use crate::chunk_store::RecordState;

impl StorageService {
    pub(super) async fn purge(&self, request_id: &str, u: proto::UpdateChunk) -> Result<(BulkResponse, Bytes), Error> {
        let chunk = ChunkId::from_bytes(&u.chunk_id)?;
        let store = self.store(u.target_id)?;
        if u.sync || u.repair {
            return Err(Error::invalid("a purge is neither a sync update nor a repair"));
        }
        let at_head = u.update_version == 0;
        self.check_chain(&u, at_head)?;
        let _permit = store.update_permit().await;
        let guard = store.lock(chunk).await;
        let successor = self.check_chain(&u, at_head)?;
        let answer = |left: Option<RecordState>| {
            let meta = match left {
                None => proto::ChunkMeta { chunk_id: u.chunk_id.clone(), ..Default::default() },
                Some(l) => proto::ChunkMeta {
                    removed: l.removed,
                    pending_version: l.pending_version,
                    ..l.meta.to_proto(chunk)
                },
            };
            Ok((BulkResponse { meta: Some(meta), ..Default::default() }, Bytes::new()))
        };
        let before = store.state(&guard)?;
        // The head bounds the purge by its own tombstone: anything else there ends it.
        let bound = if at_head {
            match before {
                Some(s) if s.removed && s.pending_version == 0 => s.meta.version,
                state => return answer(state),
            }
        } else {
            u.update_version
        };
        if let Some(succ) = successor {
            let fwd = BulkRequest {
                request_id: request_id.to_string(),
                token: self.token.clone(),
                op: Some(bulk_request::Op::Update(proto::UpdateChunk {
                    target_id: succ.target.0,
                    update_version: bound,
                    ..u.clone()
                })),
            };
            let (rsp, _) = self.peers.call(&succ.bulk_addr, &fwd, &[]).await.map_err(|e| {
                self.metrics.forward_failures.inc();
                tracing::warn!(successor = %succ.target, error = %e, "forwarding a purge failed");
                e
            })?;
            self.metrics.forwarded_updates.inc();
            if rsp.meta.as_ref().is_none_or(|m| m.version != 0 || m.pending_version != 0) {
                tracing::debug!(successor = %succ.target, meta = ?rsp.meta, "successor kept its record: keeping ours");
                return answer(before);
            }
        }
        let left = store.purge(&guard, bound).await?;
        if before.is_some() && left.is_none() {
            self.metrics.purged_tombstones.inc();
        }
        tracing::debug!(bound, purged = left.is_none(), "purge");
        answer(left)
    }
}
