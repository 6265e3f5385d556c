//! The bulk-plane frame codec, shared by every transport (TCP carries whole frames; RDMA carries the
//! same header over its control channel and moves the payload by RDMA READ/WRITE).
//!
//! Frame (all integers little-endian):
//! `[magic u16 = 0x3354 "T3"][version u8 = 1][flags u8][header_len u32][payload_len u32]`
//! followed by `header_len` bytes of a prost message (`BulkRequest`/`BulkResponse`) and
//! `payload_len` raw bytes. The payload is never copied into protobuf. Flags: 0 for plain TCP
//! frames; [`FLAG_RDMA_CONNECT`] / [`FLAG_RDMA_CALL`] for the RDMA control frames (the header is
//! then an `RdmaEndpoint` / `RdmaCall`).
//!
//! Invariants: lengths are checked against [`MAX_HEADER`] / [`MAX_PAYLOAD`] before allocating, so a
//! peer cannot make us allocate unbounded memory; any framing error closes the connection.
//! [`decode_request`] is the whole server-side decode path for one in-memory frame: the fuzz target
//! (`fuzz/`) and the property tests below feed it arbitrary bytes.
use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proto::{BulkRequest, RdmaCall, RdmaEndpoint};
use crate::status::Error;

pub const MAGIC: u16 = 0x3354;
pub const VERSION: u8 = 1;
pub const FRAME_PREFIX: usize = 12;
pub const MAX_HEADER: usize = 1 << 20;
pub const MAX_PAYLOAD: usize = (64 << 20) + 4096;
/// Frame flag: the header is an `RdmaEndpoint` (RDMA queue pair set-up; see `bulk::rdma`).
pub const FLAG_RDMA_CONNECT: u8 = 1;
/// Frame flag: the header is an `RdmaCall` and the payloads move by RDMA.
pub const FLAG_RDMA_CALL: u8 = 2;

/// The fixed prefix of a frame, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub flags: u8,
    pub header_len: usize,
    pub payload_len: usize,
}

/// Encodes a frame prefix. Fails when a length is over its limit.
pub fn encode_prefix(header_len: usize, payload_len: usize) -> std::io::Result<[u8; FRAME_PREFIX]> {
    encode_prefix_flags(0, header_len, payload_len)
}

/// [`encode_prefix`] with frame flags.
pub fn encode_prefix_flags(flags: u8, header_len: usize, payload_len: usize) -> std::io::Result<[u8; FRAME_PREFIX]> {
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "bulk frame too large"));
    }
    let mut prefix = [0u8; FRAME_PREFIX];
    prefix[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    prefix[2] = VERSION;
    prefix[3] = flags;
    prefix[4..8].copy_from_slice(&(header_len as u32).to_le_bytes());
    prefix[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    Ok(prefix)
}

/// Parses and checks a frame prefix: magic, version, and both lengths within their limits.
pub fn parse_prefix(prefix: &[u8; FRAME_PREFIX]) -> std::io::Result<Prefix> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let magic = u16::from_le_bytes([prefix[0], prefix[1]]);
    if magic != MAGIC || prefix[2] != VERSION {
        return Err(bad(format!("bad bulk frame magic {magic:#x} / version {}", prefix[2])));
    }
    let header_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    let payload_len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(bad(format!("bulk frame too large: header {header_len}, payload {payload_len}")));
    }
    if prefix[3] > FLAG_RDMA_CALL {
        return Err(bad(format!("unknown bulk frame flags {:#x}", prefix[3])));
    }
    Ok(Prefix { flags: prefix[3], header_len, payload_len })
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    header: &impl Message,
    payload: &[u8],
) -> std::io::Result<()> {
    write_frame_flags(w, 0, header, payload).await
}

/// Writes one frame with `flags`.
pub async fn write_frame_flags<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    flags: u8,
    header: &impl Message,
    payload: &[u8],
) -> std::io::Result<()> {
    write_raw_frame(w, flags, &header.encode_to_vec(), payload).await
}

/// Writes one frame whose header is already encoded.
pub async fn write_raw_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    flags: u8,
    hdr: &[u8],
    payload: &[u8],
) -> std::io::Result<()> {
    let prefix = encode_prefix_flags(flags, hdr.len(), payload.len())?;
    w.write_all(&prefix).await?;
    w.write_all(hdr).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts. Flags are ignored
/// (responses carry none).
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<(Bytes, Bytes)>> {
    Ok(read_frame_flags(r).await?.map(|(_, h, p)| (h, p)))
}

/// Reads one frame with its flags; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame_flags<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Bytes, Bytes)>> {
    let mut prefix = [0u8; FRAME_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let p = parse_prefix(&prefix)?;
    let mut hdr = BytesMut::zeroed(p.header_len);
    r.read_exact(&mut hdr).await?;
    let mut payload = BytesMut::zeroed(p.payload_len);
    r.read_exact(&mut payload).await?;
    Ok(Some((p.flags, hdr.freeze(), payload.freeze())))
}

/// Reads one frame whose payload goes straight into `out[..n]` (no frame buffer): returns the header
/// and `n`; `Ok(None)` on a clean end of stream. A payload larger than `out` is an error and leaves
/// the stream mid-frame (the caller drops the connection).
pub async fn read_frame_into<R: AsyncReadExt + Unpin>(
    r: &mut R,
    out: &mut [u8],
) -> std::io::Result<Option<(Bytes, usize)>> {
    let mut prefix = [0u8; FRAME_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let p = parse_prefix(&prefix)?;
    let mut hdr = BytesMut::zeroed(p.header_len);
    r.read_exact(&mut hdr).await?;
    let cap = out.len();
    let dst = out.get_mut(..p.payload_len).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {}-byte payload does not fit a {cap}-byte buffer", p.payload_len),
        )
    })?;
    r.read_exact(dst).await?;
    Ok(Some((hdr.freeze(), p.payload_len)))
}

/// Encodes one whole frame into a buffer (tests, fuzz seeds).
pub fn encode_frame(header: &impl Message, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let hdr = header.encode_to_vec();
    let mut out = Vec::with_capacity(FRAME_PREFIX + hdr.len() + payload.len());
    out.extend_from_slice(&encode_prefix(hdr.len(), payload.len())?);
    out.extend_from_slice(&hdr);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes one in-memory request frame exactly as the server does: prefix, header, payload, then the
/// request's own checks ([`check_request`]). Returns the request and its payload, or the error the
/// server would answer (or close the connection) with. Never allocates more than the frame's
/// length plus the decoded header.
pub fn decode_request(frame: &[u8]) -> Result<(BulkRequest, &[u8]), Error> {
    let (prefix, rest) = frame
        .split_first_chunk::<FRAME_PREFIX>()
        .ok_or_else(|| Error::invalid(format!("bulk frame of {} bytes is shorter than its prefix", frame.len())))?;
    let p = parse_prefix(prefix).map_err(|e| Error::invalid(e.to_string()))?;
    if rest.len() != p.header_len + p.payload_len {
        return Err(Error::invalid(format!(
            "bulk frame body is {} bytes, prefix says {} + {}",
            rest.len(),
            p.header_len,
            p.payload_len
        )));
    }
    let (hdr, payload) = rest.split_at(p.header_len);
    let req = match p.flags {
        0 => BulkRequest::decode(hdr).map_err(|e| Error::invalid(format!("bad bulk request header: {e}")))?,
        FLAG_RDMA_CALL => {
            let call = RdmaCall::decode(hdr).map_err(|e| Error::invalid(format!("bad rdma call: {e}")))?;
            call.request.ok_or_else(|| Error::invalid("rdma call without a request"))?
        }
        _ => {
            RdmaEndpoint::decode(hdr).map_err(|e| Error::invalid(format!("bad rdma endpoint: {e}")))?;
            return Err(Error::invalid("an rdma connect frame is not a request"));
        }
    };
    check_request(&req, payload.len())?;
    Ok((req, payload))
}

/// Structural checks every request passes before a handler sees it (bounds that do not need the
/// chunk store): batch sizes and per-read lengths, so a batch cannot ask for unbounded memory.
pub fn check_request(req: &BulkRequest, payload_len: usize) -> Result<(), Error> {
    use crate::proto::bulk_request::Op;
    match &req.op {
        Some(Op::BatchRead(b)) => {
            if b.reads.len() > super::MAX_BATCH_READS {
                return Err(Error::invalid(format!(
                    "batch of {} reads is over the limit of {}",
                    b.reads.len(),
                    super::MAX_BATCH_READS
                )));
            }
            let total = b.reads.iter().map(|r| u64::from(r.length)).sum::<u64>();
            if total > MAX_PAYLOAD as u64 {
                return Err(Error::invalid(format!("batch asks for {total} bytes, over the limit of {MAX_PAYLOAD}")));
            }
            if payload_len != 0 {
                return Err(Error::invalid("a batch read carries no payload"));
            }
        }
        Some(Op::Read(_)) if payload_len != 0 => return Err(Error::invalid("a read carries no payload")),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BatchReadChunks, ReadChunk, UpdateChunk, bulk_request};
    use proptest::prelude::*;

    fn sample_frames() -> Vec<Vec<u8>> {
        let read = BulkRequest {
            request_id: "r".into(),
            token: "t".into(),
            op: Some(bulk_request::Op::Read(ReadChunk {
                target_id: 1,
                chunk_id: vec![1; 16].into(),
                offset: 3,
                length: 9,
                relaxed: false,
            })),
        };
        let upd = BulkRequest {
            op: Some(bulk_request::Op::Update(UpdateChunk { chain_id: 2, offset: 7, seq: 9, ..Default::default() })),
            ..Default::default()
        };
        let batch = BulkRequest {
            op: Some(bulk_request::Op::BatchRead(BatchReadChunks {
                reads: (0..5).map(|i| ReadChunk { target_id: i, length: 4096, ..Default::default() }).collect(),
            })),
            ..Default::default()
        };
        vec![
            encode_frame(&read, &[]).expect("small frame"),
            encode_frame(&upd, b"payload bytes").expect("small frame"),
            encode_frame(&batch, &[]).expect("small frame"),
        ]
    }

    #[test]
    fn round_trips_and_rejects_bad_prefixes() {
        for f in sample_frames() {
            decode_request(&f).expect("valid frame decodes");
            assert!(decode_request(&f[..f.len() - 1]).is_err(), "truncated frame");
            let mut bad = f.clone();
            bad[0] ^= 0xff;
            assert!(decode_request(&bad).is_err(), "bad magic");
        }
        let mut huge = encode_prefix(0, 0).expect("empty").to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_request(&huge).is_err());
        let too_many = BulkRequest {
            op: Some(bulk_request::Op::BatchRead(BatchReadChunks {
                reads: vec![ReadChunk::default(); super::super::MAX_BATCH_READS + 1],
            })),
            ..Default::default()
        };
        assert!(decode_request(&encode_frame(&too_many, &[]).expect("fits")).is_err());
        let too_big = BulkRequest {
            op: Some(bulk_request::Op::BatchRead(BatchReadChunks {
                reads: vec![ReadChunk { length: u32::MAX, ..Default::default() }; 2],
            })),
            ..Default::default()
        };
        assert!(decode_request(&encode_frame(&too_big, &[]).expect("fits")).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&data);
        }

        /// Valid frames with random byte flips, truncations and extensions never panic, and whatever
        /// decodes is within the frame's bounds.
        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..3,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
            extra in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut f = sample_frames().swap_remove(which);
            for (at, x) in flips {
                let i = at % f.len();
                f[i] ^= x;
            }
            if cut % 3 == 0 {
                f.truncate(cut % (f.len() + 1));
            } else if cut % 3 == 1 {
                f.extend_from_slice(&extra);
            }
            if let Ok((req, payload)) = decode_request(&f) {
                prop_assert!(payload.len() <= f.len());
                prop_assert!(req.encoded_len() <= f.len());
            }
        }
    }
}
