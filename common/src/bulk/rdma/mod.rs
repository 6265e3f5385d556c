//! The RDMA bulk backend (feature `rdma`), after 3FS: RC queue pairs set up over the bulk TCP
//! connection, which stays the control channel; payloads move by one-sided RDMA driven by the
//! storage node: it RDMA-READs a request payload from the client's registered buffer and
//! RDMA-WRITEs a read result into another one, then answers over TCP.
//!
//! Protocol on one bulk TCP connection (frame flags in [`super::frame`]):
//! 1. client → `FLAG_RDMA_CONNECT` frame, header = its `RdmaEndpoint`; server creates a QP, connects
//!    it, answers a `BulkResponse` with `rdma_endpoint`; the client connects its QP. A server without
//!    RDMA answers with an error and the client falls back to TCP for that peer.
//! 2. each call: client copies the payload into its registered send region and sends a
//!    `FLAG_RDMA_CALL` frame whose header is an `RdmaCall` (the `BulkRequest`, plus the send and
//!    receive regions' address/rkey/length) and no payload; the server RDMA-READs the payload into
//!    its own registered staging region, runs the handler, RDMA-WRITEs the response payload into the
//!    client's receive region when it fits (else sends it in the frame) and answers with
//!    `rdma_written`. RC completion at the server (after the peer's ack) precedes the TCP answer, so
//!    the bytes are in client memory when the client reads the header.
//!
//! Buffers: each connection has one send and one receive region of [`REGION_BYTES`] registered once;
//! larger payloads go over TCP on the same connection. Caller memory can be registered too
//! ([`Transport::register`]: one `ibv_reg_mr` on the device's protection domain, shared by every
//! connection, for the life of the returned handle; the batch reader's `BufferPool` registers
//! each buffer once): `call_into` with a registered destination names that memory (address and
//! rkey) as the response region, so the storage node RDMA-WRITEs the result straight into it and
//! the client copies nothing. An unregistered destination gets the copy out of the receive region.
//! GPU memory is registered the same way through a DMA-BUF ([`Transport::register_dmabuf`]:
//! `ibv_reg_dmabuf_mr`), and `call_into_region` names an offset of it as the response region.
//! Concurrency and pooling are as in TCP: up to `max_conns_per_peer` connections per peer, one
//! call at a time each.
//!
//! UNTESTED ON HARDWARE: the build machines have no InfiniBand/RoCE device. This compiles (CI runs
//! clippy with `--features rdma`) and the protocol is exercised only up to the device probe; the
//! first run on real NICs should be treated as bring-up. Known gaps: no RoCE GID index selection
//! (index 0), MTU fixed at 1024, busy-polling completions, request payloads are copied into the
//! send region, and the server still stages a write through its own region (one copy there).
mod verbs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::frame::{FLAG_RDMA_CALL, FLAG_RDMA_CONNECT, read_frame, write_frame_flags};
use super::tcp::{BulkHandler, TcpConfig, error_response};
use super::transport::{CallFuture, Placed, Registration, Transport, TransportKind, TransportPrefs, check_response};
use crate::proto::{BulkRequest, BulkResponse, RdmaBuf, RdmaCall, RdmaEndpoint};
use crate::status::{Error, StatusCode};
use verbs::{Device, ExtMr, Mr, Op, Qp};

/// Size of each registered region (per connection, each direction).
pub const REGION_BYTES: usize = 8 << 20;

/// Whether this host has a usable RDMA device.
pub fn device_present() -> bool {
    Device::global().is_some()
}

/// One client connection: control socket, QP and regions. Field order matters: the QP is dropped
/// (destroyed, flushing any work request) before the regions it may still reference.
struct ClientConn {
    sock: TcpStream,
    /// Passive on the client (the server drives the transfers); kept alive with the connection.
    _qp: Qp,
    send: Mr,
    recv: Mr,
}

struct Peer {
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<ClientConn>>,
}

/// The RDMA backend (client side).
pub struct RdmaTransport {
    dev: Arc<Device>,
    cfg: TcpConfig,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
}

impl RdmaTransport {
    /// Opens the host's RDMA device; fails when there is none.
    pub fn open(prefs: &TransportPrefs) -> Result<RdmaTransport, Error> {
        let dev = Device::global().ok_or_else(|| Error::new(StatusCode::Unavailable, "no RDMA device"))?;
        let mut cfg = prefs.tcp.clone();
        cfg.max_conns_per_peer = cfg.max_conns_per_peer.max(1);
        Ok(RdmaTransport { dev, cfg, peers: Mutex::default() })
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

    async fn connect(&self, addr: &str) -> Result<ClientConn, Error> {
        let mut sock = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::new(StatusCode::Unavailable, format!("bulk connect to {addr}: timed out")))?
            .map_err(|e| Error::unavailable(format!("bulk connect to {addr}: {e}")))?;
        let _ = sock.set_nodelay(true);
        let mut qp = Qp::new(&self.dev)?;
        let (send, recv) = (Mr::new(&self.dev, REGION_BYTES)?, Mr::new(&self.dev, REGION_BYTES)?);
        write_frame_flags(&mut sock, FLAG_RDMA_CONNECT, &qp.endpoint(), &[])
            .await
            .map_err(|e| Error::unavailable(format!("rdma connect to {addr}: {e}")))?;
        let (hdr, _) = read_frame(&mut sock)
            .await
            .map_err(|e| Error::unavailable(format!("rdma connect to {addr}: {e}")))?
            .ok_or_else(|| Error::unavailable(format!("rdma connect to {addr}: connection closed")))?;
        let rsp = BulkResponse::decode(hdr).map_err(|e| Error::internal(format!("bad rdma answer: {e}")))?;
        let (rsp, _) = check_response(rsp, Bytes::new())?;
        let remote = rsp.rdma_endpoint.ok_or_else(|| Error::internal("rdma answer without an endpoint"))?;
        qp.connect(&remote)?;
        Ok(ClientConn { sock, _qp: qp, send, recv })
    }

    async fn call_rdma(&self, addr: &str, req: &BulkRequest, payload: &[u8]) -> Result<(BulkResponse, Bytes), Error> {
        self.call_rdma_to(addr, req, payload, None).await
    }

    /// A call whose response lands in `dest` (a registered caller buffer: its address, rkey and
    /// length) when given and it fits, else in the connection's receive region. Returns the
    /// response, its inline payload (empty when the server wrote by RDMA) and the bytes written by
    /// RDMA into the response region.
    async fn call_rdma_raw(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        dest: Option<RdmaBuf>,
    ) -> Result<(BulkResponse, Bytes, usize, Option<Bytes>), Error> {
        let peer = self.peer(addr);
        let _slot = peer.slots.acquire().await.map_err(|_| Error::internal("rdma peer pool closed"))?;
        let pooled = peer.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(addr).await?,
        };
        let exchange = async {
            let (flags, header, inline): (u8, Vec<u8>, &[u8]) = if payload.len() <= conn.send.len() {
                conn.send.bytes_mut()[..payload.len()].copy_from_slice(payload);
                let call = RdmaCall {
                    request: Some(req.clone()),
                    payload: Some(RdmaBuf {
                        addr: conn.send.addr(),
                        rkey: conn.send.rkey(),
                        len: payload.len() as u32,
                    }),
                    response: Some(dest.unwrap_or(RdmaBuf {
                        addr: conn.recv.addr(),
                        rkey: conn.recv.rkey(),
                        len: conn.recv.len() as u32,
                    })),
                };
                (FLAG_RDMA_CALL, call.encode_to_vec(), &[])
            } else {
                (0, req.encode_to_vec(), payload)
            };
            super::frame::write_raw_frame(&mut conn.sock, flags, &header, inline).await?;
            read_frame(&mut conn.sock).await
        };
        let frame = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| Error::new(StatusCode::Timeout, format!("rdma call to {addr} timed out")))?
            .map_err(|e| Error::unavailable(format!("rdma call to {addr}: {e}")))?;
        let (hdr, data) = frame.ok_or_else(|| Error::unavailable(format!("bulk peer {addr} closed the connection")))?;
        let rsp =
            BulkResponse::decode(hdr).map_err(|e| Error::internal(format!("bad bulk response from {addr}: {e}")))?;
        let written = rsp.rdma_written as usize;
        let limit = dest.as_ref().map_or(conn.recv.len(), |d| d.len as usize);
        if written > limit {
            return Err(Error::internal(format!("rdma peer {addr} claims {written} bytes written")));
        }
        // Bytes the server wrote into the connection's own region (no caller destination).
        let from_region =
            (dest.is_none() && written > 0).then(|| Bytes::copy_from_slice(&conn.recv.bytes()[..written]));
        {
            let mut idle = peer.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.cfg.max_conns_per_peer {
                idle.push(conn);
            }
        }
        Ok((rsp, data, written, from_region))
    }

    async fn call_rdma_to(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        dest: Option<RdmaBuf>,
    ) -> Result<(BulkResponse, Bytes), Error> {
        let (rsp, data, _, from_region) = self.call_rdma_raw(addr, req, payload, dest).await?;
        check_response(rsp, from_region.unwrap_or(data))
    }

    /// `call_into`: with a registration covering `out`, the server RDMA-WRITEs into `out` itself
    /// (a region call at `out`'s offset in the registration); otherwise the payload is copied into
    /// `out` from wherever it arrived.
    async fn call_rdma_into(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        out: &mut [u8],
        reg: Option<&Registration>,
    ) -> Result<(BulkResponse, usize), Error> {
        let (rsp, placed) = match reg {
            Some(r) if r.covers(out) => {
                let offset = out.as_ptr() as usize - r.addr() as usize;
                self.call_rdma_region(addr, req, payload, r, offset, out.len()).await?
            }
            _ => {
                let (rsp, data) = self.call_rdma_to(addr, req, payload, None).await?;
                (rsp, Placed::Inline(data))
            }
        };
        let data = match placed {
            Placed::Written(n) => return Ok((rsp, n)), // already in `out`, written by the NIC
            Placed::Inline(data) => data,
        };
        let cap = out.len();
        let dst = out.get_mut(..data.len()).ok_or_else(|| {
            Error::internal(format!("bulk response of {} bytes does not fit a {cap}-byte buffer", data.len()))
        })?;
        dst.copy_from_slice(&data);
        Ok((rsp, data.len()))
    }

    /// `call_into_region`: with one of this transport's registrations, the server RDMA-WRITEs
    /// the payload at `reg.addr() + offset`; a payload the server sent in the frame instead (it
    /// did not fit its staging region) comes back inline.
    async fn call_rdma_region(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        reg: &Registration,
        offset: usize,
        len: usize,
    ) -> Result<(BulkResponse, Placed), Error> {
        let dest = match (reg.kind(), reg.rkey(), u32::try_from(len)) {
            (TransportKind::Rdma, Some(rkey), Ok(len32)) if reg.contains(offset, len) => {
                Some(RdmaBuf { addr: reg.addr() + offset as u64, rkey, len: len32 })
            }
            _ => None,
        };
        let direct = dest.is_some();
        let (rsp, data, written, from_region) = self.call_rdma_raw(addr, req, payload, dest).await?;
        let (rsp, data) = check_response(rsp, from_region.unwrap_or(data))?;
        if direct && written > 0 {
            return Ok((rsp, Placed::Written(written)));
        }
        Ok((rsp, Placed::Inline(data)))
    }
}

impl Transport for RdmaTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Rdma
    }

    fn call<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
    ) -> CallFuture<'a, (BulkResponse, Bytes)> {
        Box::pin(self.call_rdma(addr, req, payload))
    }

    fn call_into<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        out: &'a mut [u8],
        reg: Option<&'a Registration>,
    ) -> CallFuture<'a, (BulkResponse, usize)> {
        Box::pin(self.call_rdma_into(addr, req, payload, out, reg))
    }

    /// One `ibv_reg_mr` on the device's protection domain (shared by every connection).
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> Result<Registration, Error> {
        // SAFETY: the caller upholds `Transport::register`'s contract, which is `ExtMr::new`'s.
        let mr = unsafe { ExtMr::new(&self.dev, ptr, len) }?;
        Ok(Registration::new(TransportKind::Rdma, ptr, len, Some(mr.rkey()), Box::new(mr)))
    }

    /// One `ibv_reg_dmabuf_mr` on the device's protection domain (GPUDirect RDMA).
    unsafe fn register_dmabuf(
        &self,
        fd: std::os::fd::RawFd,
        fd_offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<Registration, Error> {
        // SAFETY: the caller upholds `Transport::register_dmabuf`'s contract, which is
        // `ExtMr::from_dmabuf`'s.
        let mr = unsafe { ExtMr::from_dmabuf(&self.dev, fd, fd_offset, len, iova) }?;
        Ok(Registration::device(TransportKind::Rdma, iova, len, mr.rkey(), Box::new(mr)))
    }

    fn call_into_region<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        reg: &'a Registration,
        offset: usize,
        len: usize,
    ) -> CallFuture<'a, (BulkResponse, Placed)> {
        Box::pin(self.call_rdma_region(addr, req, payload, reg, offset, len))
    }
}

/// Server side of one connection's RDMA: QP and staging region. QP first (see [`ClientConn`]).
pub(crate) struct ServerConn {
    qp: Qp,
    staging: Mr,
}

/// Per-transfer timeout on the server.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one RDMA-flagged frame on a connection (`conn`: its RDMA state, set up by the connect frame).
pub(crate) async fn server_frame<H: BulkHandler>(
    conn: &mut Option<ServerConn>,
    flags: u8,
    hdr: Bytes,
    handler: &H,
) -> (BulkResponse, Bytes) {
    match server_frame_inner(conn, flags, hdr, handler).await {
        Ok(x) => x,
        Err(e) => (error_response(&e), Bytes::new()),
    }
}

async fn server_frame_inner<H: BulkHandler>(
    conn: &mut Option<ServerConn>,
    flags: u8,
    hdr: Bytes,
    handler: &H,
) -> Result<(BulkResponse, Bytes), Error> {
    if flags == FLAG_RDMA_CONNECT {
        let remote = RdmaEndpoint::decode(hdr).map_err(|e| Error::invalid(format!("bad rdma endpoint: {e}")))?;
        let dev =
            Device::global().ok_or_else(|| Error::new(StatusCode::Unsupported, "this node has no RDMA device"))?;
        let mut qp = Qp::new(&dev)?;
        qp.connect(&remote)?;
        let endpoint = qp.endpoint();
        *conn = Some(ServerConn { qp, staging: Mr::new(&dev, REGION_BYTES)? });
        return Ok((BulkResponse { rdma_endpoint: Some(endpoint), ..Default::default() }, Bytes::new()));
    }
    let c = conn.as_mut().ok_or_else(|| Error::invalid("rdma call before rdma connect"))?;
    let call = RdmaCall::decode(hdr).map_err(|e| Error::invalid(format!("bad rdma call: {e}")))?;
    let req = call.request.ok_or_else(|| Error::invalid("rdma call without a request"))?;
    super::frame::check_request(&req, 0)?;
    let payload = match call.payload {
        Some(b) if b.len > 0 => {
            let n = b.len as usize;
            if n > c.staging.len() {
                return Err(Error::invalid(format!("rdma payload of {n} bytes is over {}", c.staging.len())));
            }
            c.qp.transfer(Op::Read, &mut c.staging, n, b.addr, b.rkey, TRANSFER_TIMEOUT).await?;
            Bytes::copy_from_slice(&c.staging.bytes()[..n])
        }
        _ => Bytes::new(),
    };
    let (mut rsp, data) = handler.handle(req, payload).await;
    match call.response {
        Some(b) if !data.is_empty() && data.len() <= b.len as usize && data.len() <= c.staging.len() => {
            c.staging.bytes_mut()[..data.len()].copy_from_slice(&data);
            c.qp.transfer(Op::Write, &mut c.staging, data.len(), b.addr, b.rkey, TRANSFER_TIMEOUT).await?;
            rsp.rdma_written = data.len() as u32;
            Ok((rsp, Bytes::new()))
        }
        _ => Ok((rsp, data)),
    }
}
