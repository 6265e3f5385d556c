//! Tracing setup for binaries. Libraries only emit spans/events; the binary chooses the sink.
//!
//! The filter sits behind a `tracing_subscriber::reload` layer, so a running daemon can change its
//! log filter without a restart ([`set_filter`], driven by pushed configs, see
//! [`crate::hot_config`]). The filter is process-wide: when several daemons share one process
//! (`t3fs local` in-process, tests) the last one applied wins.
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::status::Error;

/// The reload handle and the filter `init` started with (what `set_filter(None)` restores).
static RELOAD: OnceLock<(reload::Handle<EnvFilter, Registry>, String)> = OnceLock::new();

/// Installs a fmt subscriber filtered by `RUST_LOG` (default: `default_filter`). Safe to call twice
/// (the second call changes nothing).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let startup = filter.to_string();
    let (layer, handle) = reload::Layer::new(filter);
    let installed =
        tracing_subscriber::registry().with(layer).with(tracing_subscriber::fmt::layer().with_target(true)).try_init();
    if installed.is_ok() {
        let _ = RELOAD.set((handle, startup));
    }
}

fn parse_filter(filter: &str) -> Result<EnvFilter, Error> {
    if filter.trim().is_empty() {
        return Err(Error::invalid("log filter is empty"));
    }
    EnvFilter::builder().parse(filter).map_err(|e| Error::invalid(format!("log filter {filter:?}: {e}")))
}

/// Checks that `filter` is a valid `RUST_LOG`-style directive list (e.g. `info,t3fs_storage=debug`).
pub fn check_filter(filter: &str) -> Result<(), Error> {
    parse_filter(filter).map(drop)
}

/// Replaces the process's log filter with `filter`, or restores the one [`init`] installed when
/// `None`. Returns `Ok(false)` when [`init`] did not install the subscriber (a library user or a
/// test: nothing to change).
pub fn set_filter(filter: Option<&str>) -> Result<bool, Error> {
    let Some((handle, startup)) = RELOAD.get() else {
        return Ok(false);
    };
    let next = parse_filter(filter.unwrap_or(startup))?;
    handle.reload(next).map_err(|e| Error::internal(format!("reloading the log filter: {e}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        check_filter("info").unwrap();
        check_filter("warn,t3fs_storage=debug,t3fs_mgmtd::service=trace").unwrap();
        for bad in ["", "  ", "info,t3fs=loud", "=x"] {
            assert!(check_filter(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_installed_filter_reloads() {
        // The only test in this crate that installs the global subscriber.
        init("info");
        assert!(set_filter(Some("debug")).unwrap(), "init installed the reload handle");
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        assert!(set_filter(Some("warn")).unwrap());
        assert!(!tracing::enabled!(tracing::Level::INFO));
        assert!(set_filter(Some("info,x=loud")).is_err());
        assert!(!tracing::enabled!(tracing::Level::INFO), "a refused filter changes nothing");
        assert!(set_filter(None).unwrap());
    }
}
