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
//! buffer. Both backends copy today (TCP from its frame buffer, RDMA from its per-connection
//! registered region); it is the hook for a backend that registers caller memory (the batch
//! reader's `BufferPool`) and lets the server RDMA-WRITE into it directly. Nothing calls it yet.
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
    /// enough); returns the response and the payload length. Backends with registered memory
    /// override this to avoid the copy.
    fn call_into<'a>(
        &'a self,
        addr: &'a str,
        req: &'a BulkRequest,
        payload: &'a [u8],
        out: &'a mut [u8],
    ) -> CallFuture<'a, (BulkResponse, usize)> {
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
    ) -> Result<(BulkResponse, usize), Error> {
        self.inner.call_into(addr, req, payload, out).await
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
}
