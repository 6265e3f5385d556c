//! Batch reads: many `(target, chunk, offset, len)` reads on this node in one bulk request (3FS's
//! `batchRead`). Each read runs exactly as a single read would ([`StorageService::read`]: fencing,
//! routing state, CRC-verified chunk data) and gets its own status; one failing read does not fail
//! the batch. The response payload is every successful read's bytes concatenated in request order,
//! and `BulkResponse.results[i]` gives read `i`'s status, length and CRC32C.
//!
//! Bounds: the frame decoder already refused batches over `bulk::MAX_BATCH_READS` reads or
//! `bulk::MAX_PAYLOAD` bytes in total ([`t3fs_common::bulk::frame::check_request`]); it is checked
//! again here for callers that skip the decoder. Up to [`PARALLEL_READS`] reads run at a time.
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use t3fs_common::bulk::frame::check_request;
use t3fs_common::proto::{self, BulkRequest, BulkResponse, ReadResult, bulk_request};
use t3fs_common::{Error, StatusCode, TargetId};
use tracing::Instrument;

use super::StorageService;
use crate::metrics::Outcome;

/// Reads of one batch in flight at a time.
pub const PARALLEL_READS: usize = 16;

impl StorageService {
    pub(super) async fn batch_read(
        &self,
        request_id: &str,
        b: proto::BatchReadChunks,
    ) -> Result<(BulkResponse, Bytes), Error> {
        let req = BulkRequest { op: Some(bulk_request::Op::BatchRead(b)), ..Default::default() };
        check_request(&req, 0)?;
        let Some(bulk_request::Op::BatchRead(b)) = req.op else {
            return Err(Error::internal("batch read lost its op"));
        };
        let total = b.reads.iter().map(|r| r.length as usize).sum::<usize>();
        let reads = futures::stream::iter(b.reads)
            .map(|r| {
                let span = tracing::debug_span!("batch_item", req = %request_id, target_id = r.target_id,
                    chunk = %hex::encode(&r.chunk_id));
                async move {
                    let started = Instant::now();
                    let target = r.target_id;
                    let res = self.read(r).await;
                    let outcome = Outcome {
                        op: "read",
                        target,
                        code: res.as_ref().map_or_else(|e| e.code, |_| StatusCode::Ok),
                        bytes: res.as_ref().map_or(0, |(_, d)| d.len() as u64),
                    };
                    self.metrics.observe(started, outcome, self.targets.contains_key(&TargetId(target)));
                    res
                }
                .instrument(span)
            })
            .buffered(PARALLEL_READS);
        let mut reads = std::pin::pin!(reads);
        let mut payload = BytesMut::with_capacity(total);
        let mut results = Vec::new();
        while let Some(res) = reads.next().await {
            results.push(match res {
                Ok((rsp, data)) => {
                    payload.extend_from_slice(&data);
                    ReadResult {
                        code: 0,
                        message: String::new(),
                        length: data.len() as u32,
                        meta: rsp.meta,
                        crc32c: rsp.payload_crc32c,
                    }
                }
                Err(e) => ReadResult { code: e.code as u32, message: e.message, ..Default::default() },
            });
        }
        Ok((BulkResponse { results, ..Default::default() }, payload.freeze()))
    }
}
