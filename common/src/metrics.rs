//! Prometheus metrics: one [`Registry`] per daemon, served as text on `GET /metrics`.
//!
//! Each daemon crate defines its metric names in one module (`<crate>/src/metrics.rs`) and
//! registers them into the registry passed to it; this module only owns the shared plumbing: the
//! registry type, latency buckets everyone uses, a timer helper, and the HTTP endpoint.
//!
//! Naming: `t3fs_<daemon>_<what>_<unit>` (e.g. `t3fs_meta_op_duration_seconds`), counters end in
//! `_total` (added by the encoder). Names are a public interface for dashboards: do not rename.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::status::{Error, StatusCode};

/// A registry shared by a daemon's components while they register, then read by the endpoint.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// A new, empty shared registry.
pub fn new_registry() -> SharedRegistry {
    Arc::new(Mutex::new(Registry::default()))
}

/// A status code as a label value: its name (`Ok`, `NotFound`, ...), the same in every daemon.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Code(pub StatusCode);

impl EncodeLabelValue for Code {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        write!(encoder, "{:?}", self.0)
    }
}

/// Latency buckets for RPCs and disk operations: 50 µs .. ~13 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &SharedRegistry) -> String {
    let mut out = String::new();
    let reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Serves `GET /metrics` on `listen` until `cancel` fires. Returns the bound address.
pub async fn serve(
    listen: &str,
    registry: SharedRegistry,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(&format!("binding metrics endpoint {listen}"), e))?;
    let addr = listener.local_addr().map_err(|e| Error::io("metrics endpoint address", e))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    render(&registry),
                )
            }
        }),
    );
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((addr, handle))
}

/// Fetches `GET /metrics` from `addr` over plain HTTP/1.1 and returns the response body.
pub async fn scrape(addr: SocketAddr) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s =
        tokio::net::TcpStream::connect(addr).await.map_err(|e| Error::io(&format!("connecting to {addr}"), e))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t3fs\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| Error::io("sending the metrics request", e))?;
    let mut rsp = String::new();
    s.read_to_string(&mut rsp).await.map_err(|e| Error::io("reading the metrics response", e))?;
    if !rsp.starts_with("HTTP/1.1 200") {
        return Err(Error::unavailable(format!("metrics endpoint {addr}: {}", rsp.lines().next().unwrap_or(""))));
    }
    Ok(rsp.split_once("\r\n\r\n").map_or(rsp.as_str(), |(_, body)| body).to_string())
}

/// The value of the sample line `series` (metric name with its labels, as rendered) in a scrape.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn endpoint_serves_registered_metrics() {
        let reg = new_registry();
        let ops: Counter = Counter::default();
        let lat = latency_histogram();
        {
            let mut r = reg.lock().unwrap();
            r.register("t3fs_test_ops", "Operations served", ops.clone());
            r.register("t3fs_test_op_duration_seconds", "Operation latency", lat.clone());
        }
        ops.inc();
        ops.inc();
        lat.observe(0.001);
        let cancel = CancellationToken::new();
        let (addr, handle) = serve("127.0.0.1:0", reg, cancel.clone()).await.unwrap();
        let body = scrape(addr).await.unwrap();
        assert_eq!(sample(&body, "t3fs_test_ops_total"), Some(2.0), "{body}");
        assert!(body.contains("t3fs_test_op_duration_seconds_count 1"), "{body}");
        cancel.cancel();
        handle.await.unwrap();
    }
}
