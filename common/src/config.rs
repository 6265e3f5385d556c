//! TOML config loading shared by every daemon. Each daemon crate owns its typed config struct
//! (with a doc comment per field); this module only reads, parses and reports errors clearly.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::status::{Error, StatusCode};

/// This machine's host name (`unknown` when the kernel does not say), for registration and sessions.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Checks an `advertise` option (the address a daemon registers instead of its bound one): one
/// `host:port`, no list, no whitespace. `what` names the option in the error.
pub fn check_advertise(what: &str, addr: Option<&str>) -> Result<(), Error> {
    match addr {
        None => Ok(()),
        Some(a)
            if !a.is_empty()
                && !a.contains(',')
                && !a.contains(char::is_whitespace)
                && a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)) =>
        {
            Ok(())
        }
        Some(a) => Err(Error::invalid(format!("{what} must be one host:port with a non-zero port (got {a:?})"))),
    }
}

/// Reads and parses a TOML config file; unknown fields are the struct's business (`deny_unknown_fields`).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(StatusCode::InvalidArgument, format!("reading config {}: {e}", path.display())))?;
    parse(&text).map_err(|e| Error::new(e.code, format!("config {}: {}", path.display(), e.message)))
}

/// Parses TOML text into a config struct.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| Error::new(StatusCode::InvalidArgument, e.to_string()))
}

/// Serialises a config struct as TOML (used by `t3fs local up` to write configs).
pub fn to_toml<T: serde::Serialize>(cfg: &T) -> Result<String, Error> {
    toml::to_string_pretty(cfg).map_err(|e| Error::internal(format!("serialising config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::check_advertise;

    #[test]
    fn advertise_is_one_host_port() {
        assert!(check_advertise("x", None).is_ok());
        assert!(check_advertise("x", Some("meta-1.example:8001")).is_ok());
        assert!(check_advertise("x", Some("[fd00::1]:8001")).is_ok());
        for bad in ["", "a:1,b:2", "host", "host:0", "host:x", ":80", "a b:1"] {
            assert!(check_advertise("x", Some(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
