//! The TCP bulk backend and the bulk server loop.
//!
//! Frames ([`super::frame`]) on plain TCP connections. On a connection, one request then its
//! response: no multiplexing, so head-of-line blocking is per connection only. Many requests are in
//! flight to one peer by using several connections at once: each peer has a pool of up to
//! [`TcpConfig::max_conns_per_peer`] connections (a semaphore bounds how many calls hold one at a
//! time; a call over the limit waits for a free one), and idle connections are kept for reuse up to
//! the same bound. Limits: per peer, `max_conns_per_peer` calls in flight (default 64), each with up
//! to [`super::MAX_PAYLOAD`] of payload; a call (connect, send, receive) times out after
//! [`TcpConfig::timeout`]. A connection that failed is dropped, never reused. Data integrity is end to
//! end: headers carry the payload's CRC32C, checked by the receiver.
//!
//! The server side ([`serve`]) runs one task per accepted connection; requests on different
//! connections are handled concurrently.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::frame::{check_request, read_frame, read_frame_flags, read_frame_into, write_frame};
use super::transport::{CallFuture, Registration, Transport, TransportKind, check_response};
use crate::proto::{BulkRequest, BulkResponse};
use crate::status::{Error, StatusCode};

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
    #[cfg(feature = "rdma")]
    let mut rdma = None;
    while let Some((flags, hdr, payload)) = read_frame_flags(&mut sock).await? {
        if flags != 0 {
            #[cfg(feature = "rdma")]
            let (rsp, data) = super::rdma::server_frame(&mut rdma, flags, hdr, handler.as_ref()).await;
            #[cfg(not(feature = "rdma"))]
            let (rsp, data) = {
                let _ = hdr;
                (error_response(&Error::new(StatusCode::Unsupported, "this node is built without RDMA")), Bytes::new())
            };
            write_frame(&mut sock, &rsp, &data).await?;
            continue;
        }
        let checked = BulkRequest::decode(hdr)
            .map_err(|e| Error::invalid(format!("bad bulk request header: {e}")))
            .and_then(|req| check_request(&req, payload.len()).map(|()| req));
        let (rsp, data) = match checked {
            Ok(req) => handler.handle(req, payload).await,
            Err(e) => (error_response(&e), Bytes::new()),
        };
        write_frame(&mut sock, &rsp, &data).await?;
    }
    Ok(())
}

/// Limits of the TCP backend.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Whole-call timeout (send + receive).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Connections (= calls in flight) per peer; idle ones kept up to the same number.
    pub max_conns_per_peer: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), connect_timeout: Duration::from_secs(3), max_conns_per_peer: 64 }
    }
}

/// One peer's pool.
struct Peer {
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<TcpStream>>,
}

/// The TCP backend: a bounded connection pool per peer address.
pub struct TcpTransport {
    cfg: TcpConfig,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
}

impl TcpTransport {
    pub fn new(mut cfg: TcpConfig) -> Self {
        cfg.max_conns_per_peer = cfg.max_conns_per_peer.max(1);
        Self { cfg, peers: Mutex::default() }
    }

    fn peer(&self, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Peer { slots: Arc::new(Semaphore::new(self.cfg.max_conns_per_peer)), idle: Mutex::default() })
            })
            .clone()
    }

    /// Open connections to `addr` that are idle now (tests, metrics).
    pub fn idle_conns(&self, addr: &str) -> usize {
        self.peer(addr).idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A connection to `addr` (pooled or new) and the pool slot it holds.
    async fn checkout(&self, addr: &str) -> Result<(Arc<Peer>, OwnedSemaphorePermit, TcpStream), Error> {
        let peer = self.peer(addr);
        let slot = peer.slots.clone().acquire_owned().await.map_err(|_| Error::internal("bulk peer pool closed"))?;
        let pooled = peer.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let sock = match pooled {
            Some(s) => s,
            None => {
                let s = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| Error::new(StatusCode::Unavailable, format!("bulk connect to {addr}: timed out")))?
                    .map_err(|e| Error::unavailable(format!("bulk connect to {addr}: {e}")))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        Ok((peer, slot, sock))
    }

    /// Returns a connection that finished a call cleanly to the idle pool.
    fn checkin(&self, peer: &Peer, sock: TcpStream) {
        let mut idle = peer.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.cfg.max_conns_per_peer {
            idle.push(sock);
        }
    }

    async fn call_tcp(&self, addr: &str, req: &BulkRequest, payload: &[u8]) -> Result<(BulkResponse, Bytes), Error> {
        let (peer, _slot, mut sock) = self.checkout(addr).await?;
        let exchange = async {
            write_frame(&mut sock, req, payload).await?;
            read_frame(&mut sock).await
        };
        let frame = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| Error::new(StatusCode::Timeout, format!("bulk call to {addr} timed out")))?
            .map_err(|e| Error::unavailable(format!("bulk call to {addr}: {e}")))?;
        let (hdr, data) = frame.ok_or_else(|| Error::unavailable(format!("bulk peer {addr} closed the connection")))?;
        let rsp =
            BulkResponse::decode(hdr).map_err(|e| Error::internal(format!("bad bulk response from {addr}: {e}")))?;
        self.checkin(&peer, sock);
        check_response(rsp, data)
    }

    /// As `call_tcp`, reading the response payload from the socket straight into `out`.
    async fn call_tcp_into(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(BulkResponse, usize), Error> {
        let (peer, _slot, mut sock) = self.checkout(addr).await?;
        let exchange = async {
            write_frame(&mut sock, req, payload).await?;
            read_frame_into(&mut sock, out).await
        };
        let frame = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| Error::new(StatusCode::Timeout, format!("bulk call to {addr} timed out")))?
            .map_err(|e| Error::unavailable(format!("bulk call to {addr}: {e}")))?;
        let (hdr, n) = frame.ok_or_else(|| Error::unavailable(format!("bulk peer {addr} closed the connection")))?;
        let rsp =
            BulkResponse::decode(hdr).map_err(|e| Error::internal(format!("bad bulk response from {addr}: {e}")))?;
        self.checkin(&peer, sock);
        let (rsp, _) = check_response(rsp, Bytes::new())?;
        Ok((rsp, n))
    }
}

impl Transport for TcpTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn call<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
    ) -> CallFuture<'a, (BulkResponse, Bytes)> {
        Box::pin(self.call_tcp(addr, req, payload))
    }

    /// Zero-copy on receive: the payload goes from the socket into `out` (no registration needed).
    fn call_into<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        out: &'a mut [u8],
        _reg: Option<&'a Registration>,
    ) -> CallFuture<'a, (BulkResponse, usize)> {
        Box::pin(self.call_tcp_into(addr, req, payload, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::BulkClient;
    use crate::bulk::frame::{FRAME_PREFIX, MAGIC, VERSION};
    use crate::proto::{ReadChunk, UpdateChunk, bulk_request};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

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
            op: Some(bulk_request::Op::Update(UpdateChunk::default())),
            ..Default::default()
        };
        let data = vec![7u8; 1 << 20];
        for _ in 0..3 {
            let (rsp, back) = c.call(&addr, &req, &data).await.unwrap();
            assert_eq!(back.as_ref(), &data[..]);
            assert_eq!(rsp.payload_crc32c, crc32c::crc32c(&data));
        }
        // The server's structural checks run before the handler: a read carries no payload.
        let read = BulkRequest { op: Some(bulk_request::Op::Read(ReadChunk::default())), ..Default::default() };
        assert_eq!(c.call(&addr, &read, b"x").await.unwrap_err().code, StatusCode::InvalidArgument);
        let bad = BulkRequest { request_id: "fail".into(), ..Default::default() };
        assert_eq!(c.call(&addr, &bad, &[]).await.unwrap_err().code, StatusCode::NotFound);
        // call_into: the payload lands in the caller's buffer; bytes past it are untouched; a
        // buffer too small is an error; an error response is an error.
        let mut out = vec![0xEEu8; data.len() + 8];
        let (rsp, n) = c.call_into(&addr, &req, &data, &mut out, None).await.unwrap();
        assert_eq!((n, rsp.payload_crc32c), (data.len(), crc32c::crc32c(&data)));
        assert_eq!(&out[..n], &data[..]);
        assert!(out[n..].iter().all(|&b| b == 0xEE));
        assert!(c.call_into(&addr, &req, &data, &mut out[..100], None).await.is_err());
        assert_eq!(c.call_into(&addr, &bad, &[], &mut out, None).await.unwrap_err().code, StatusCode::NotFound);
        let (_, back) = c.call(&addr, &req, b"after").await.unwrap();
        assert_eq!(back.as_ref(), b"after");
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

    /// Counts calls in flight on the server and remembers the peak.
    #[derive(Default)]
    struct Slow {
        now: AtomicUsize,
        peak: AtomicUsize,
    }
    impl BulkHandler for Slow {
        async fn handle(&self, _req: BulkRequest, payload: Bytes) -> (BulkResponse, Bytes) {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            (BulkResponse::default(), payload)
        }
    }

    #[tokio::test]
    async fn many_calls_in_flight_per_peer_within_the_pool_bound() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cancel = CancellationToken::new();
        let h = Arc::new(Slow::default());
        tokio::spawn(serve(l, h.clone(), cancel.clone()));
        let t = Arc::new(TcpTransport::new(TcpConfig { max_conns_per_peer: 8, ..TcpConfig::default() }));
        let mut calls = Vec::new();
        for i in 0..40u32 {
            let (t, addr) = (t.clone(), addr.clone());
            calls.push(tokio::spawn(async move {
                let payload = i.to_le_bytes();
                let (_, back) = t.call(&addr, &BulkRequest::default(), &payload).await.unwrap();
                assert_eq!(back.as_ref(), &payload);
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
        let peak = h.peak.load(Ordering::SeqCst);
        assert!(peak > 1, "calls to one peer ran one at a time");
        assert!(peak <= 8, "{peak} calls in flight, over the pool bound of 8");
        assert!(t.idle_conns(&addr) <= 8);
        cancel.cancel();
    }

    /// A node without RDMA (this build, or no device) answers RDMA set-up with a clear error and
    /// keeps serving plain frames on the same connection.
    #[tokio::test]
    async fn rdma_setup_is_refused_cleanly_without_rdma() {
        use crate::bulk::frame::{FLAG_RDMA_CONNECT, read_frame, write_frame_flags};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(l, Arc::new(Echo), cancel.clone()));
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let ep = crate::proto::RdmaEndpoint { lid: 1, qpn: 2, psn: 3, gid: Bytes::new() };
        write_frame_flags(&mut s, FLAG_RDMA_CONNECT, &ep, &[]).await.unwrap();
        let (hdr, _) = read_frame(&mut s).await.unwrap().unwrap();
        let rsp = BulkResponse::decode(hdr).unwrap();
        if cfg!(feature = "rdma") && rsp.code == 0 {
            return; // a host with an RDMA device accepted it
        }
        assert_ne!(rsp.code, 0, "RDMA set-up accepted without RDMA");
        assert!(rsp.rdma_endpoint.is_none());
        let req = BulkRequest { op: Some(bulk_request::Op::Update(UpdateChunk::default())), ..Default::default() };
        write_frame(&mut s, &req, b"still here").await.unwrap();
        let (_, back) = read_frame(&mut s).await.unwrap().unwrap();
        assert_eq!(back.as_ref(), b"still here");
        cancel.cancel();
    }
}
