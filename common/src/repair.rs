//! The two halves of repairing a damaged chunk replica from a good one, shared by
//! `t3fs admin fsck --repair` (cli) and the storage server's background scrub.
//!
//! A good copy is read whole from another replica and kept only if it is exactly the content the
//! damaged replica's own record names (version, length, CRC32C); it then goes to the damaged
//! target as a *repair* update (`REPLACE` at that version, `repair = true`), which the storage node
//! applies only if its copy at that version really is damaged (storage `service/repair.rs`).
use bytes::Bytes;

use crate::bulk::BulkClient;
use crate::proto::{self, bulk_request};
use crate::{ChunkId, Error, StatusCode, TargetId};

/// Reads `chunk` whole from target `src` (bulk address `addr`) and checks that it is the content
/// `want` records; returns it, or why it is not.
pub async fn read_good_copy(
    bulk: &BulkClient,
    addr: &str,
    token: &str,
    src: TargetId,
    chunk: ChunkId,
    want: &proto::ChunkMeta,
) -> Result<Bytes, Error> {
    let read = proto::BulkRequest {
        request_id: crate::new_request_id(),
        token: token.to_string(),
        op: Some(bulk_request::Op::Read(proto::ReadChunk {
            target_id: src.0,
            chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
            offset: 0,
            length: want.length,
            relaxed: false,
        })),
    };
    let (rsp, data) = bulk.call(addr, &read, &[]).await?;
    let version = rsp.meta.as_ref().map_or(0, |m| m.version);
    let crc = crc32c::crc32c(&data);
    if version != want.version || data.len() != want.length as usize || crc != want.crc32c {
        return Err(Error::new(
            StatusCode::ChecksumMismatch,
            format!(
                "target {src} has version {version}, {} bytes, crc32c {crc:08x}; the repair needs version {}, {} bytes, crc32c {:08x}",
                data.len(),
                want.version,
                want.length,
                want.crc32c
            ),
        ));
    }
    Ok(data)
}

/// The repair update that puts the good copy of `chunk` (CRC32C `crc`) on `target` of `chain` at
/// `version`.
pub fn repair_update(
    chain: &proto::ChainInfo,
    target: TargetId,
    chunk: ChunkId,
    version: u64,
    crc: u32,
) -> proto::UpdateChunk {
    proto::UpdateChunk {
        chain_id: chain.chain_id,
        chain_version: chain.chain_version,
        target_id: target.0,
        chunk_id: Bytes::copy_from_slice(&chunk.to_bytes()),
        update_type: proto::UpdateType::Replace as i32,
        payload_crc32c: crc,
        update_version: version,
        repair: true,
        ..Default::default()
    }
}
