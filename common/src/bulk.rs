//! The bulk data plane over TCP: chunk data never rides gRPC (DESIGN.md, research/deps.md §3).
//!
//! Frame (all integers little-endian):
//! `[magic u16 = 0x3354 "T3"][version u8 = 1][flags u8 = 0][header_len u32][payload_len u32]`
//! followed by `header_len` bytes of a prost message (`BulkRequest`/`BulkResponse`) and
//! `payload_len` raw bytes. One request, then one response, per connection at a time; clients
//! keep a pool of idle connections per address. Data integrity is end to end: headers carry the
//! payload's CRC32C, checked by the receiver.
//!
//! Invariants: lengths are checked against [`MAX_HEADER`] / [`MAX_PAYLOAD`] before allocating, so
//! a peer cannot make us allocate unbounded memory; any framing error closes the connection.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proto::{BulkRequest, BulkResponse};
use crate::status::{Error, StatusCode};

pub const MAGIC: u16 = 0x3354;
pub const VERSION: u8 = 1;
pub const FRAME_PREFIX: usize = 12;
pub const MAX_HEADER: usize = 1 << 20;
pub const MAX_PAYLOAD: usize = (64 << 20) + 4096;

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    header: &impl Message,
    payload: &[u8],
) -> std::io::Result<()> {
    let hdr = header.encode_to_vec();
    if hdr.len() > MAX_HEADER || payload.len() > MAX_PAYLOAD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "bulk frame too large"));
    }
    let mut prefix = [0u8; FRAME_PREFIX];
    prefix[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    prefix[2] = VERSION;
    prefix[4..8].copy_from_slice(&(hdr.len() as u32).to_le_bytes());
    prefix[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&prefix).await?;
    w.write_all(&hdr).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<(Bytes, Bytes)>> {
    let mut prefix = [0u8; FRAME_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let magic = u16::from_le_bytes([prefix[0], prefix[1]]);
    if magic != MAGIC || prefix[2] != VERSION {
        return Err(bad(format!("bad bulk frame magic {magic:#x} / version {}", prefix[2])));
    }
    let hlen = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes")) as usize;
    let plen = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
    if hlen > MAX_HEADER || plen > MAX_PAYLOAD {
        return Err(bad(format!("bulk frame too large: header {hlen}, payload {plen}")));
    }
    let mut hdr = BytesMut::zeroed(hlen);
    r.read_exact(&mut hdr).await?;
    let mut payload = BytesMut::zeroed(plen);
    r.read_exact(&mut payload).await?;
    Ok(Some((hdr.freeze(), payload.freeze())))
}

/// Server side of the bulk plane: one call per request frame.
pub trait BulkHandler: Send + Sync + 'static {
    fn handle(&self, req: BulkRequest, payload: Bytes) -> impl Future<Output = (BulkResponse, Bytes)> + Send;
}

/// Builds an error response.
pub fn error_response(e: &Error) -> BulkResponse {
    BulkResponse { code: e.code as u32, message: e.message.clone(), ..Default::default() }
}

/// Accepts connections until `cancel` fires; each connection is served by its own task.
pub async fn serve<H: BulkHandler>(listener: TcpListener, handler: Arc<H>, cancel: CancellationToken) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "bulk accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let handler = handler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = serve_conn(sock, handler) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "bulk connection closed");
                },
            }
        });
    }
}

async fn serve_conn<H: BulkHandler>(mut sock: TcpStream, handler: Arc<H>) -> std::io::Result<()> {
    while let Some((hdr, payload)) = read_frame(&mut sock).await? {
        let (rsp, data) = match BulkRequest::decode(hdr) {
            Ok(req) => handler.handle(req, payload).await,
            Err(e) => (error_response(&Error::invalid(format!("bad bulk request header: {e}"))), Bytes::new()),
        };
        write_frame(&mut sock, &rsp, &data).await?;
    }
    Ok(())
}

/// A pooled bulk-plane client. Cheap to clone; connections are reused per address.
#[derive(Clone)]
pub struct BulkClient {
    idle: Arc<Mutex<HashMap<String, Vec<TcpStream>>>>,
    timeout: Duration,
}

impl Default for BulkClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

/// Idle connections kept per address.
const MAX_IDLE_PER_ADDR: usize = 16;

impl BulkClient {
    pub fn new(timeout: Duration) -> Self {
        Self { idle: Arc::default(), timeout }
    }

    /// Sends one request and waits for its response. A non-OK response code becomes `Err`.
    pub async fn call(&self, addr: &str, req: &BulkRequest, payload: &[u8]) -> Result<(BulkResponse, Bytes), Error> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(addr).and_then(|v| v.pop());
        let mut sock = match pooled {
            Some(s) => s,
            None => {
                let s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
                    .await
                    .map_err(|_| Error::new(StatusCode::Unavailable, format!("bulk connect to {addr}: timed out")))?
                    .map_err(|e| Error::unavailable(format!("bulk connect to {addr}: {e}")))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        let exchange = async {
            write_frame(&mut sock, req, payload).await?;
            read_frame(&mut sock).await
        };
        let frame = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::new(StatusCode::Timeout, format!("bulk call to {addr} timed out")))?
            .map_err(|e| Error::unavailable(format!("bulk call to {addr}: {e}")))?;
        let (hdr, data) = frame.ok_or_else(|| Error::unavailable(format!("bulk peer {addr} closed the connection")))?;
        let rsp =
            BulkResponse::decode(hdr).map_err(|e| Error::internal(format!("bad bulk response from {addr}: {e}")))?;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let v = idle.entry(addr.to_string()).or_default();
            if v.len() < MAX_IDLE_PER_ADDR {
                v.push(sock);
            }
        }
        if rsp.code != StatusCode::Ok as u32 {
            return Err(Error::new(StatusCode::from_u32(rsp.code), rsp.message));
        }
        Ok((rsp, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ReadChunk, bulk_request};

    struct Echo;
    impl BulkHandler for Echo {
        async fn handle(&self, req: BulkRequest, payload: Bytes) -> (BulkResponse, Bytes) {
            if req.request_id == "fail" {
                return (error_response(&Error::not_found("nope")), Bytes::new());
            }
            (BulkResponse { payload_crc32c: crc32c::crc32c(&payload), ..Default::default() }, payload)
        }
    }

    #[tokio::test]
    async fn round_trip_and_errors() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(l, Arc::new(Echo), cancel.clone()));
        let c = BulkClient::default();
        let req = BulkRequest {
            request_id: "r".into(),
            op: Some(bulk_request::Op::Read(ReadChunk::default())),
            ..Default::default()
        };
        let data = vec![7u8; 1 << 20];
        for _ in 0..3 {
            let (rsp, back) = c.call(&addr, &req, &data).await.unwrap();
            assert_eq!(back.as_ref(), &data[..]);
            assert_eq!(rsp.payload_crc32c, crc32c::crc32c(&data));
        }
        let bad = BulkRequest { request_id: "fail".into(), ..Default::default() };
        assert_eq!(c.call(&addr, &bad, &[]).await.unwrap_err().code, StatusCode::NotFound);
        cancel.cancel();
    }

    #[tokio::test]
    async fn rejects_garbage_and_oversized_frames() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut p = [0u8; FRAME_PREFIX];
            p[0..2].copy_from_slice(&MAGIC.to_le_bytes());
            p[2] = VERSION;
            p[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            let _ = a.write_all(&p).await;
        });
        assert!(read_frame(&mut b).await.is_err());
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        });
        assert!(read_frame(&mut b).await.is_err());
    }
}
