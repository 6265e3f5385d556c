//! TOML config loading shared by every daemon. Each daemon crate owns its typed config struct
//! (with a doc comment per field); this module only reads, parses and reports errors clearly.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::status::{Error, StatusCode};

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
