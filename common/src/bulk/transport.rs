//! The [`Transport`] trait and the run-time choice of bulk backend.
//!
//! Every bulk call is one request header + payload out, one response header + payload back. A
//! backend moves the bytes: TCP sends whole frames ([`super::tcp`]); RDMA sends the header over a
//! control connection and lets the storage node RDMA-READ the payload from, and RDMA-WRITE results
//! into, client memory registered with the NIC (`super::rdma`, feature `rdma`).
//!
//! [`BulkClient`] is what callers hold: a cheap clone of one shared backend. The choice
//! ([`BulkClient::choose`]): RDMA when the crate is built with feature `rdma`, the config enables
//! it and the host has an RDMA device; TCP otherwise, with a log line saying why.
//!
//! Registered buffers: [`Transport::call_into`] reads a response payload straight into a caller
//! buffer, and [`Transport::register`] registers caller memory (the batch reader's `BufferPool`
//! registers each of its buffers once, for the pool's life) and returns a [`Registration`] that is
//! released on drop. TCP: registration is a no-op handle, and `call_into` reads the frame payload
//! from the socket directly into the caller's buffer (no frame buffer, no copy). RDMA: registration
//! is an `ibv_reg_mr` on the device's protection domain, and `call_into` with a registered
//! destination asks the storage node to RDMA-WRITE the result straight into it (an unregistered
//! destination gets the copy out of the connection's own region). The RDMA path is untested on
//! hardware (see `super::rdma`).
//!
//! Device memory (GPUDirect RDMA): [`Transport::register_dmabuf`] registers GPU memory exported
//! as a DMA-BUF, and [`Transport::call_into_region`] asks for a response to land at an offset of
//! such a region. Over RDMA the storage node writes it there; a backend that cannot (TCP, or RDMA
//! without a registration of its own) returns the payload inline ([`Placed::Inline`]) and the
//! caller copies it (host to device), so the same caller code runs on every transport.
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tcp::{TcpConfig, TcpTransport};
use crate::proto::{BulkRequest, BulkResponse};
use crate::status::{Error, StatusCode};

/// A boxed call future (the trait is used as `dyn Transport`).
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Which backend moves the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Rdma,
}

/// A bulk-plane backend.
pub trait Transport: Send + Sync + 'static {
    fn kind(&self) -> TransportKind;

    /// Sends one request with `payload` to `addr` (a storage node's bulk address) and waits for its
    /// response. A non-OK response code becomes `Err`.
    fn call<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
    ) -> CallFuture<'a, (BulkResponse, Bytes)>;

    /// [`Transport::call`], with the response payload placed into `out` (which must be large
    /// enough); returns the response and the payload length. `reg`, when given, is a registration
    /// (from this transport) covering `out`: a backend with registered memory lets the peer write
    /// there directly. The default copies from [`Transport::call`]'s payload.
    fn call_into<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        out: &'a mut [u8],
        reg: Option<&'a Registration>,
    ) -> CallFuture<'a, (BulkResponse, usize)> {
        let _ = reg;
        Box::pin(async move {
            let (rsp, data) = self.call(addr, req, payload).await?;
            let cap = out.len();
            let dst = out.get_mut(..data.len()).ok_or_else(|| {
                Error::internal(format!("bulk response of {} bytes does not fit a {cap}-byte buffer", data.len()))
            })?;
            dst.copy_from_slice(&data);
            Ok((rsp, data.len()))
        })
    }

    /// Registers `len` bytes at `ptr` for transfers by this transport, until the returned
    /// [`Registration`] is dropped. The default (TCP) is a no-op handle.
    ///
    /// # Safety
    /// `ptr..ptr + len` is one live allocation (or part of one) that stays allocated and does not
    /// move until the returned `Registration` is dropped: a registered region may be written by
    /// the NIC at any time a call names it.
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> Result<Registration, Error> {
        Ok(Registration::noop(self.kind(), ptr, len))
    }

    /// Registers memory that is not host-addressable (GPU memory) through a DMA-BUF file
    /// descriptor: `len` bytes at `fd_offset` of the buffer behind `fd`, addressed by the peer as
    /// `iova..iova + len` (the device address). Only RDMA can (`ibv_reg_dmabuf_mr`); the default
    /// says the transport cannot write into device memory, and callers fall back to staging.
    ///
    /// # Safety
    /// The memory behind `fd` stays allocated until the returned `Registration` is dropped (the
    /// NIC may write it whenever a call names it).
    unsafe fn register_dmabuf(
        &self,
        fd: std::os::fd::RawFd,
        fd_offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<Registration, Error> {
        let _ = (fd, fd_offset, len, iova);
        Err(Error::new(
            StatusCode::Unsupported,
            format!("the {:?} bulk transport cannot register device memory", self.kind()),
        ))
    }

    /// A call whose response payload is meant for `reg`'s memory at `offset` (at most `len`
    /// bytes), which the host may not be able to address (device memory). A backend that can write
    /// there (RDMA with a registration of its own) has the peer write it and answers
    /// [`Placed::Written`]; otherwise the payload comes back as [`Placed::Inline`] and the caller
    /// moves it (a host-to-device copy). The default: always inline.
    fn call_into_region<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        reg: &'a Registration,
        offset: usize,
        len: usize,
    ) -> CallFuture<'a, (BulkResponse, Placed)> {
        let _ = (reg, offset, len);
        Box::pin(async move {
            let (rsp, data) = self.call(addr, req, payload).await?;
            Ok((rsp, Placed::Inline(data)))
        })
    }
}

/// Where [`Transport::call_into_region`] put a response payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The peer wrote this many bytes into the region, at the offset asked for.
    Written(usize),
    /// The payload came back to the host; the caller puts it into the region.
    Inline(Bytes),
}

/// Memory registered with a transport ([`Transport::register`]); released when dropped.
pub struct Registration {
    kind: TransportKind,
    addr: usize,
    len: usize,
    /// Remote key the peer uses to address this memory (RDMA); `None` for a no-op registration.
    rkey: Option<u32>,
    /// The backend's registration object (RDMA: the memory region), dropped with the handle.
    _keep: Option<Box<dyn Any + Send + Sync>>,
    /// Device memory ([`Transport::register_dmabuf`]): `addr` is a device address, never a host
    /// pointer, so no host slice is ever [covered](Registration::covers) by it.
    device: bool,
}

impl Registration {
    /// A registration that registers nothing (TCP).
    pub fn noop(kind: TransportKind, ptr: *mut u8, len: usize) -> Registration {
        Registration { kind, addr: ptr as usize, len, rkey: None, _keep: None, device: false }
    }

    /// A registration of `len` bytes at `ptr` with remote key `rkey`; `keep` (the backend's
    /// registration object) is dropped, releasing the registration, when the handle is.
    pub fn new(
        kind: TransportKind,
        ptr: *mut u8,
        len: usize,
        rkey: Option<u32>,
        keep: Box<dyn Any + Send + Sync>,
    ) -> Registration {
        Registration { kind, addr: ptr as usize, len, rkey, _keep: Some(keep), device: false }
    }

    /// A registration of device memory (`iova..iova + len`, a device address) with remote key
    /// `rkey`; `keep` is dropped, releasing it, when the handle is.
    pub fn device(
        kind: TransportKind,
        iova: u64,
        len: usize,
        rkey: u32,
        keep: Box<dyn Any + Send + Sync>,
    ) -> Registration {
        Registration { kind, addr: iova as usize, len, rkey: Some(rkey), _keep: Some(keep), device: true }
    }

    /// Whether this registers device memory (not host-addressable).
    pub fn is_device(&self) -> bool {
        self.device
    }

    /// The registered memory's address (a device address when [`Registration::is_device`]).
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `offset..offset + len` lies inside the registered memory.
    pub fn contains(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// True when nothing was registered (the TCP backend).
    pub fn is_noop(&self) -> bool {
        self.rkey.is_none() && self._keep.is_none()
    }

    pub fn rkey(&self) -> Option<u32> {
        self.rkey
    }

    /// Whether `buf` lies wholly inside the registered memory.
    pub fn covers(&self, buf: &[u8]) -> bool {
        let a = buf.as_ptr() as usize;
        !self.device && a >= self.addr && a.checked_add(buf.len()).is_some_and(|end| end <= self.addr + self.len)
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("len", &self.len)
            .field("rkey", &self.rkey)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// What the configuration asks of the bulk plane.
#[derive(Clone, Debug, Default)]
pub struct TransportPrefs {
    /// Use RDMA when built with it and a device is present.
    pub rdma: bool,
    pub tcp: TcpConfig,
}

/// The bulk-plane client callers hold: a shared backend. Cheap to clone.
#[derive(Clone)]
pub struct BulkClient {
    inner: Arc<dyn Transport>,
}

impl Default for BulkClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl BulkClient {
    /// A TCP client with default limits and `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        Self::from_transport(Arc::new(TcpTransport::new(TcpConfig { timeout, ..TcpConfig::default() })))
    }

    pub fn from_transport(inner: Arc<dyn Transport>) -> Self {
        Self { inner }
    }

    /// Picks the backend at run time (module note).
    pub fn choose(prefs: &TransportPrefs) -> Self {
        if prefs.rdma {
            #[cfg(feature = "rdma")]
            match super::rdma::RdmaTransport::open(prefs) {
                Ok(t) => return Self::from_transport(Arc::new(t)),
                Err(e) => tracing::warn!(error = %e, "RDMA bulk transport unavailable; using TCP"),
            }
            #[cfg(not(feature = "rdma"))]
            tracing::warn!("RDMA bulk transport requested but this build lacks feature `rdma`; using TCP");
        }
        Self::from_transport(Arc::new(TcpTransport::new(prefs.tcp.clone())))
    }

    pub fn kind(&self) -> TransportKind {
        self.inner.kind()
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner
    }

    /// See [`Transport::call`].
    pub async fn call(&self, addr: &str, req: &BulkRequest, payload: &[u8]) -> Result<(BulkResponse, Bytes), Error> {
        self.inner.call(addr, req, payload).await
    }

    /// See [`Transport::call_into`].
    pub async fn call_into(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        out: &mut [u8],
        reg: Option<&Registration>,
    ) -> Result<(BulkResponse, usize), Error> {
        self.inner.call_into(addr, req, payload, out, reg).await
    }

    /// See [`Transport::register`].
    ///
    /// # Safety
    /// As for [`Transport::register`].
    pub unsafe fn register(&self, ptr: *mut u8, len: usize) -> Result<Registration, Error> {
        // SAFETY: the caller upholds `Transport::register`'s contract.
        unsafe { self.inner.register(ptr, len) }
    }

    /// See [`Transport::register_dmabuf`].
    ///
    /// # Safety
    /// As for [`Transport::register_dmabuf`].
    pub unsafe fn register_dmabuf(
        &self,
        fd: std::os::fd::RawFd,
        fd_offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<Registration, Error> {
        // SAFETY: the caller upholds `Transport::register_dmabuf`'s contract.
        unsafe { self.inner.register_dmabuf(fd, fd_offset, len, iova) }
    }

    /// See [`Transport::call_into_region`]; `offset..offset + len` must lie inside `reg`.
    pub async fn call_into_region(
        &self,
        addr: &str,
        req: &BulkRequest,
        payload: &[u8],
        reg: &Registration,
        offset: usize,
        len: usize,
    ) -> Result<(BulkResponse, Placed), Error> {
        if !reg.contains(offset, len) {
            return Err(Error::invalid(format!(
                "{len} bytes at offset {offset} of a {}-byte registered region",
                reg.len()
            )));
        }
        let (rsp, placed) = self.inner.call_into_region(addr, req, payload, reg, offset, len).await?;
        let n = match &placed {
            Placed::Written(n) => *n,
            Placed::Inline(b) => b.len(),
        };
        if n > len {
            return Err(Error::internal(format!("bulk response of {n} bytes for a {len}-byte region slot")));
        }
        Ok((rsp, placed))
    }
}

/// Turns a non-OK response into its error.
pub(crate) fn check_response(rsp: BulkResponse, data: Bytes) -> Result<(BulkResponse, Bytes), Error> {
    if rsp.code != StatusCode::Ok as u32 {
        return Err(Error::new(StatusCode::from_u32(rsp.code), rsp.message));
    }
    Ok((rsp, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdma_falls_back_to_tcp_without_a_device_or_the_feature() {
        // The build machines have no RDMA device: asking for RDMA still yields a working TCP client.
        let c = BulkClient::choose(&TransportPrefs { rdma: true, ..Default::default() });
        if cfg!(feature = "rdma") && c.kind() == TransportKind::Rdma {
            return; // a host with a device
        }
        assert_eq!(c.kind(), TransportKind::Tcp);
        assert_eq!(BulkClient::choose(&TransportPrefs::default()).kind(), TransportKind::Tcp);
    }

    #[test]
    fn tcp_registration_is_a_noop_that_covers_its_range() {
        let mut buf = vec![0u8; 64];
        let c = BulkClient::default();
        // SAFETY: `buf` outlives the registration (dropped first, below) and is not moved.
        let reg = unsafe { c.register(buf.as_mut_ptr(), buf.len()) }.unwrap();
        assert!(reg.is_noop());
        assert_eq!((reg.kind(), reg.rkey()), (TransportKind::Tcp, None));
        assert!(reg.covers(&buf) && reg.covers(&buf[10..20]));
        assert!(!reg.covers(&[0u8; 4]));
        drop(reg);
    }

    /// A transport that answers every call with `n` bytes, written in place (as RDMA into a
    /// registered region) or inline.
    struct Fake {
        n: usize,
        written: bool,
    }

    impl Transport for Fake {
        fn kind(&self) -> TransportKind {
            TransportKind::Rdma
        }
        fn call<'a>(&'a self, _: &'a str, _: &'a BulkRequest, _: &'a [u8]) -> CallFuture<'a, (BulkResponse, Bytes)> {
            Box::pin(async move { Ok((BulkResponse::default(), Bytes::from(vec![7u8; self.n]))) })
        }
        fn call_into_region<'a>(
            &'a self,
            addr: &'a str,
            req: &'a BulkRequest,
            payload: &'a [u8],
            _: &'a Registration,
            _: usize,
            _: usize,
        ) -> CallFuture<'a, (BulkResponse, Placed)> {
            Box::pin(async move {
                if self.written {
                    return Ok((BulkResponse::default(), Placed::Written(self.n)));
                }
                let (rsp, data) = self.call(addr, req, payload).await?;
                Ok((rsp, Placed::Inline(data)))
            })
        }
    }

    #[tokio::test]
    async fn region_calls_stay_inside_the_region_and_the_slot() {
        let dev = Registration::device(TransportKind::Rdma, 1 << 40, 4096, 9, Box::new(()));
        assert!(dev.is_device() && !dev.is_noop());
        assert!(!dev.covers(&[0u8; 8]), "device memory never covers a host slice");
        assert!(dev.contains(0, 4096) && dev.contains(4000, 96) && !dev.contains(4000, 97));
        assert!(!dev.contains(usize::MAX, 2));
        let req = BulkRequest::default();
        for written in [false, true] {
            let c = BulkClient::from_transport(Arc::new(Fake { n: 100, written }));
            let (_, placed) = c.call_into_region("x", &req, &[], &dev, 96, 4000).await.unwrap();
            assert_eq!(
                placed,
                if written { Placed::Written(100) } else { Placed::Inline(Bytes::from(vec![7u8; 100])) }
            );
            let e = c.call_into_region("x", &req, &[], &dev, 97, 4000).await.unwrap_err();
            assert_eq!(e.code, StatusCode::InvalidArgument, "a slot past the region is refused");
            let e = c.call_into_region("x", &req, &[], &dev, 0, 99).await.unwrap_err();
            assert_eq!(e.code, StatusCode::Internal, "a peer that answers more than the slot holds is an error");
        }
        // TCP cannot register device memory; it returns region payloads inline.
        let tcp = BulkClient::default();
        // SAFETY: no memory is named (the call fails before registering anything).
        let e = unsafe { tcp.register_dmabuf(-1, 0, 4096, 1 << 40) }.unwrap_err();
        assert_eq!(e.code, StatusCode::Unsupported);
    }
}
