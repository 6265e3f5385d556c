//! mgmtd's key schema in the KV store (3FS style: a 4-byte prefix, then big-endian ids so keys of
//! one kind sort by id). mgmtd shares the KV store with meta, whose prefixes (`INOD`, `DENT`, ...)
//! never collide with these.
//!
//! | Key | Value |
//! |---|---|
//! | `NODE` + node id (u32 BE) | `proto::NodeInfo`, prost-encoded |
//! | `TGIF` + target id (u64 BE) | `proto::TargetInfo`, prost-encoded |
//! | `CHIF` + chain id (u32 BE) | `proto::ChainInfo`, prost-encoded |
//! | `CHIT` + table id (u32 BE) + table version (u32 BE) | `proto::ChainTable`, prost-encoded |
//! | `SING` + `RoutingInfoVersion` | routing info version, u64 BE |
//! | `SING` + `MgmtdLease` | the primary lease, `lease::Lease` prost-encoded |
//! | `USER` + uid (u32 BE) | `proto::UserInfo` (token as SHA-256 only), prost-encoded |
//! | `SING` + `UserTableVersion` | user table version, u64 BE |
//! | `CSES` + client id (UTF-8 bytes) | `proto::ClientSession`, prost-encoded |
//! | `CONF` + node type (u32 BE, the `proto::NodeType` value) | `proto::NodeConfig`, prost-encoded |
//! | `MGMT` + node id (u32 BE) | one mgmtd (primary or standby) announcing itself: `proto::NodeInfo` (type MGMTD, gRPC address, hostname, `last_heartbeat_ms` = its last announcement, Unix ms), prost-encoded |
//!
//! This is an on-disk format: never change an encoding, only add prefixes.

/// Node records.
pub const NODE: &[u8; 4] = b"NODE";
/// Target records.
pub const TARGET: &[u8; 4] = b"TGIF";
/// Chain records.
pub const CHAIN: &[u8; 4] = b"CHIF";
/// Chain table records.
pub const CHAIN_TABLE: &[u8; 4] = b"CHIT";
/// Config records (one per node type).
pub const CONFIG: &[u8; 4] = b"CONF";
/// mgmtd self-announcements (standbys included).
pub const MGMTD: &[u8; 4] = b"MGMT";
/// The routing info version singleton.
pub const ROUTING_VERSION: &[u8] = b"SINGRoutingInfoVersion";
/// The primary mgmtd's lease singleton.
pub const LEASE: &[u8] = b"SINGMgmtdLease";
/// User records.
pub const USER: &[u8; 4] = b"USER";
/// The user table version singleton.
pub const USER_TABLE_VERSION: &[u8] = b"SINGUserTableVersion";
/// Client session records.
pub const SESSION: &[u8; 4] = b"CSES";

fn with_prefix(prefix: &[u8; 4], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

pub fn node(id: u32) -> Vec<u8> {
    with_prefix(NODE, &id.to_be_bytes())
}

pub fn mgmtd(id: u32) -> Vec<u8> {
    with_prefix(MGMTD, &id.to_be_bytes())
}

pub fn target(id: u64) -> Vec<u8> {
    with_prefix(TARGET, &id.to_be_bytes())
}

pub fn chain(id: u32) -> Vec<u8> {
    with_prefix(CHAIN, &id.to_be_bytes())
}

pub fn chain_table(id: u32, version: u32) -> Vec<u8> {
    let mut rest = [0u8; 8];
    rest[..4].copy_from_slice(&id.to_be_bytes());
    rest[4..].copy_from_slice(&version.to_be_bytes());
    with_prefix(CHAIN_TABLE, &rest)
}

pub fn user(uid: u32) -> Vec<u8> {
    with_prefix(USER, &uid.to_be_bytes())
}

pub fn session(client_id: &str) -> Vec<u8> {
    with_prefix(SESSION, client_id.as_bytes())
}

pub fn parse_user(key: &[u8]) -> Option<u32> {
    suffix::<4>(USER, key).map(u32::from_be_bytes)
}

pub fn parse_session(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(SESSION.as_slice())?;
    String::from_utf8(rest.to_vec()).ok().filter(|s| !s.is_empty())
}

pub fn config(node_type: u32) -> Vec<u8> {
    with_prefix(CONFIG, &node_type.to_be_bytes())
}

/// The id part of a key of the given kind, or `None` if the key is not of that kind or has the
/// wrong length.
fn suffix<const N: usize>(prefix: &[u8; 4], key: &[u8]) -> Option<[u8; N]> {
    let rest = key.strip_prefix(prefix.as_slice())?;
    rest.try_into().ok()
}

pub fn parse_node(key: &[u8]) -> Option<u32> {
    suffix::<4>(NODE, key).map(u32::from_be_bytes)
}

pub fn parse_mgmtd(key: &[u8]) -> Option<u32> {
    suffix::<4>(MGMTD, key).map(u32::from_be_bytes)
}

pub fn parse_target(key: &[u8]) -> Option<u64> {
    suffix::<8>(TARGET, key).map(u64::from_be_bytes)
}

pub fn parse_chain(key: &[u8]) -> Option<u32> {
    suffix::<4>(CHAIN, key).map(u32::from_be_bytes)
}

pub fn parse_chain_table(key: &[u8]) -> Option<(u32, u32)> {
    let b = suffix::<8>(CHAIN_TABLE, key)?;
    let id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let version = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    Some((id, version))
}

pub fn parse_config(key: &[u8]) -> Option<u32> {
    suffix::<4>(CONFIG, key).map(u32::from_be_bytes)
}

/// Encodes the routing version value.
pub fn encode_version(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// Decodes the routing version value; `None` if it is not 8 bytes.
pub fn decode_version(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_encodings() {
        // On-disk format: these bytes must never change.
        assert_eq!(node(0x0102_0304), b"NODE\x01\x02\x03\x04");
        assert_eq!(target(5), b"TGIF\0\0\0\0\0\0\0\x05");
        assert_eq!(chain(100_001), b"CHIF\x00\x01\x86\xa1");
        assert_eq!(chain_table(1, 2), b"CHIT\0\0\0\x01\0\0\0\x02");
        assert_eq!(ROUTING_VERSION, b"SINGRoutingInfoVersion");
        assert_eq!(LEASE, b"SINGMgmtdLease");
        assert_eq!(config(3), b"CONF\0\0\0\x03");
        assert_eq!(mgmtd(2), b"MGMT\0\0\0\x02");
        assert_eq!(encode_version(258), vec![0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(user(1000), b"USER\0\0\x03\xe8");
        assert_eq!(session("c-1"), b"CSESc-1");
        assert_eq!(USER_TABLE_VERSION, b"SINGUserTableVersion");
        assert_eq!(parse_user(&user(7)), Some(7));
        assert_eq!(parse_session(&session("c-1")).as_deref(), Some("c-1"));
        assert_eq!(parse_session(b"CSES"), None);
    }

    #[test]
    fn round_trips_and_rejects_foreign_keys() {
        assert_eq!(parse_node(&node(7)), Some(7));
        assert_eq!(parse_target(&target(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_chain(&chain(42)), Some(42));
        assert_eq!(parse_mgmtd(&mgmtd(9)), Some(9));
        assert_eq!(parse_mgmtd(&node(9)), None);
        assert_eq!(parse_chain_table(&chain_table(3, 9)), Some((3, 9)));
        assert_eq!(parse_config(&config(2)), Some(2));
        assert_eq!(parse_config(&node(2)), None);
        assert_eq!(decode_version(&encode_version(77)), Some(77));
        assert_eq!(parse_node(&chain(7)), None);
        assert_eq!(parse_node(b"NODE\0\0\x07"), None);
        assert_eq!(parse_target(&node(7)), None);
        assert_eq!(parse_chain_table(b"CHIT\0\0\0\x01"), None);
        assert_eq!(decode_version(b"short"), None);
    }

    #[test]
    fn ids_sort_numerically() {
        assert!(node(2) < node(256));
        assert!(target(255) < target(256));
        assert!(chain_table(1, 9) < chain_table(2, 1));
    }
}
