//! Repair of one damaged replica (`t3fs admin fsck --repair`).
//!
//! The admin tool finds a replica whose data fails its CRC check, reads the chunk from a replica
//! whose data is good, and sends it here as `UPDATE_TYPE_REPLACE` with `repair = true`, straight to
//! the damaged target, at exactly the version both replicas' metadata record. This node takes it
//! only when all of these hold, under the chunk lock, and otherwise changes nothing:
//!
//! - the request's chain version matches routing and the target is a writable member of the chain;
//! - the local record is live and at exactly `update_version`;
//! - the payload has the length and CRC32C the *local* metadata records (so a repair can only restore
//!   the content this replica already committed to, never change it);
//! - the local data really is damaged: reading it fails (CRC mismatch, missing or short file).
//!
//! Then the record is dropped and the good content written back at the same version, with the same
//! crash safety as any update (data synced before the metadata commit). A crash between the two
//! leaves the replica without the chunk, which fsck reports as missing; a resync of the target
//! (restart it) restores it.
use bytes::Bytes;
use t3fs_common::proto::{self, BulkResponse};
use t3fs_common::{ChunkId, Error, StatusCode};

use super::StorageService;
use crate::chunk_store::Update;

impl StorageService {
    pub(super) async fn repair(&self, u: proto::UpdateChunk, payload: Bytes) -> Result<(BulkResponse, Bytes), Error> {
        let chunk = ChunkId::from_bytes(&u.chunk_id)?;
        let store = self.store(u.target_id)?;
        if u.update_type != proto::UpdateType::Replace as i32 || u.update_version == 0 || u.sync {
            return Err(Error::invalid("a repair is a REPLACE at the replica's version, and not a sync update"));
        }
        if crc32c::crc32c(&payload) != u.payload_crc32c {
            return Err(Error::new(StatusCode::ChecksumMismatch, "repair payload does not match its CRC32C"));
        }
        self.check_chain(&u, false)?;
        let _permit = store.update_permit().await;
        let guard = store.lock(chunk).await;
        self.check_chain(&u, false)?;
        let meta = store.query(chunk)?.ok_or_else(|| {
            Error::new(StatusCode::ChunkNotFound, format!("chunk {chunk} is not live on target {}", u.target_id))
        })?;
        if meta.version != u.update_version {
            return Err(Error::invalid(format!(
                "chunk {chunk} is at version {} on target {}, the repair is for version {}",
                meta.version, u.target_id, u.update_version
            )));
        }
        if meta.length as usize != payload.len() || meta.crc32c != u.payload_crc32c {
            return Err(Error::invalid(format!(
                "repair content ({} bytes, crc32c {:08x}) is not what target {} recorded ({} bytes, crc32c {:08x})",
                payload.len(),
                u.payload_crc32c,
                u.target_id,
                meta.length,
                meta.crc32c
            )));
        }
        match store.snapshot(&guard).await {
            Ok(Some((_, Some(d)))) if d.len() == meta.length as usize && crc32c::crc32c(&d) == meta.crc32c => {
                return Err(Error::invalid(format!(
                    "chunk {chunk} on target {} is healthy: nothing to repair",
                    u.target_id
                )));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%chunk, target_id = u.target_id, error = %e, "repairing a damaged replica"),
        }
        store.forget(&guard).await?;
        let update = Update::Replace { data: payload, payload_crc32c: u.payload_crc32c };
        let applied = store.apply_sync(&guard, meta.version, meta.chain_version, update).await?;
        self.metrics.repairs.inc();
        tracing::warn!(%chunk, target_id = u.target_id, version = meta.version, "replica repaired");
        drop(guard);
        Ok((BulkResponse { meta: Some(applied.meta.to_proto(chunk)), ..Default::default() }, Bytes::new()))
    }
}
