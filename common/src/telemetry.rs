//! Tracing setup for binaries. Libraries only emit spans/events; the binary chooses the sink.
use tracing_subscriber::EnvFilter;

/// Installs a fmt subscriber filtered by `RUST_LOG` (default: `info`). Safe to call twice.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).try_init();
}
