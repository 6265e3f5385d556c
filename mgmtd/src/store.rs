//! Reading and writing mgmtd's records in the KV store (schema in [`crate::keys`]).
//!
//! mgmtd keeps the whole cluster state in memory and serves routing info from there; the KV store
//! is the durable copy. [`load`] reads everything once at start; [`persist`] writes a batch of
//! records atomically in one transaction (through the `t3fs_kv::run` retry loop), checking in the
//! same transaction that this mgmtd still holds the primary lease. A record that
//! does not decode, or whose key and value disagree, fails the load: mgmtd refuses to start on a
//! corrupt store rather than serve a partial cluster.
use prost::Message;
use t3fs_common::Error;
use t3fs_common::proto::{ChainInfo, ChainTable, NodeConfig, NodeInfo, TargetInfo};
use t3fs_kv::{KeyValue, KvEngine, RangeOpts};

use crate::keys;

/// Everything mgmtd persists.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The stored routing version (0 for an empty store).
    pub version: u64,
    pub nodes: Vec<NodeInfo>,
    pub targets: Vec<TargetInfo>,
    pub chains: Vec<ChainInfo>,
    pub tables: Vec<ChainTable>,
    /// Config per node type (`CONF`; not routing-visible).
    pub configs: Vec<NodeConfig>,
}

/// One record to write: key and encoded value.
pub type Write = (Vec<u8>, Vec<u8>);

/// Reads all mgmtd records in one transaction.
pub async fn load(db: &dyn KvEngine) -> Result<Loaded, Error> {
    let (ranges, version) = t3fs_kv::run(db, |txn| {
        Box::pin(async move {
            let mut ranges: Vec<Vec<KeyValue>> = Vec::with_capacity(5);
            for prefix in [keys::NODE, keys::TARGET, keys::CHAIN, keys::CHAIN_TABLE, keys::CONFIG] {
                let end = t3fs_kv::prefix_end(prefix).expect("ascii prefixes have an end");
                ranges.push(txn.get_range(prefix, &end, RangeOpts::default()).await?);
            }
            let version = txn.get(keys::ROUTING_VERSION, false).await?;
            Ok((ranges, version))
        })
    })
    .await?;
    let [nodes, targets, chains, tables, configs]: [Vec<KeyValue>; 5] =
        ranges.try_into().map_err(|_| Error::internal("mgmtd load: expected 5 ranges"))?;

    let version = match version {
        None => 0,
        Some(v) => keys::decode_version(&v)
            .ok_or_else(|| Error::internal(format!("corrupt routing version record ({} bytes)", v.len())))?,
    };
    let nodes = decode_all(nodes, |k| keys::parse_node(k).map(u64::from), |n: &NodeInfo| u64::from(n.node_id))?;
    let targets = decode_all(targets, keys::parse_target, |t: &TargetInfo| t.target_id)?;
    let chains = decode_all(chains, |k| keys::parse_chain(k).map(u64::from), |c: &ChainInfo| u64::from(c.chain_id))?;
    let tables = decode_all(
        tables,
        |k| keys::parse_chain_table(k).map(|(id, v)| (u64::from(id) << 32) | u64::from(v)),
        |t: &ChainTable| (u64::from(t.table_id) << 32) | u64::from(t.version),
    )?;
    let configs =
        decode_all(configs, |k| keys::parse_config(k).map(u64::from), |c: &NodeConfig| c.node_type as u32 as u64)?;
    Ok(Loaded { version, nodes, targets, chains, tables, configs })
}

/// Decodes every record of one kind, checking that the id in the key matches the id in the value.
fn decode_all<M: Message + Default>(
    kvs: Vec<KeyValue>,
    key_id: impl Fn(&[u8]) -> Option<u64>,
    value_id: impl Fn(&M) -> u64,
) -> Result<Vec<M>, Error> {
    kvs.into_iter()
        .map(|kv| {
            let corrupt = |why: String| Error::internal(format!("corrupt mgmtd record {}: {why}", hex(&kv.key)));
            let id = key_id(&kv.key).ok_or_else(|| corrupt("malformed key".into()))?;
            let msg = M::decode(kv.value.as_slice()).map_err(|e| corrupt(e.to_string()))?;
            if value_id(&msg) != id {
                return Err(corrupt(format!("value id {} does not match key id {id}", value_id(&msg))));
            }
            Ok(msg)
        })
        .collect()
}

fn hex(key: &[u8]) -> String {
    key.iter()
        .map(|b| if b.is_ascii_alphanumeric() { (*b as char).to_string() } else { format!("\\x{b:02x}") })
        .collect()
}

/// Writes `writes` atomically (one transaction, retried on conflicts), unconditionally (tests and
/// tools; the daemon writes through [`persist_as_primary`]).
#[cfg(test)]
pub async fn persist(db: &dyn KvEngine, writes: &[Write]) -> Result<(), Error> {
    t3fs_kv::run(db, |txn| {
        for (k, v) in writes {
            txn.set(k, v);
        }
        Box::pin(async { Ok(()) })
    })
    .await?;
    Ok(())
}

/// Writes `writes` atomically if mgmtd `node_id` still holds the primary lease in `term`
/// (checked inside the same transaction, so a takeover makes it fail with `NotPrimary`).
pub async fn persist_as_primary(db: &dyn KvEngine, writes: &[Write], node_id: u32, term: u64) -> Result<(), Error> {
    write_as_primary(db, writes, &[], node_id, term).await
}

/// [`persist_as_primary`] that also deletes the keys in `clears`.
pub async fn write_as_primary(
    db: &dyn KvEngine,
    writes: &[Write],
    clears: &[Vec<u8>],
    node_id: u32,
    term: u64,
) -> Result<(), Error> {
    t3fs_kv::run(db, |txn| {
        for (k, v) in writes {
            txn.set(k, v);
        }
        for k in clears {
            txn.clear(k);
        }
        // Nothing commits unless the check passes.
        Box::pin(async move { crate::lease::check_holder(txn, node_id, term).await })
    })
    .await?;
    Ok(())
}

pub fn node_write(n: &NodeInfo) -> Write {
    (keys::node(n.node_id), n.encode_to_vec())
}

pub fn target_write(t: &TargetInfo) -> Write {
    (keys::target(t.target_id), t.encode_to_vec())
}

pub fn chain_write(c: &ChainInfo) -> Write {
    (keys::chain(c.chain_id), c.encode_to_vec())
}

pub fn table_write(t: &ChainTable) -> Write {
    (keys::chain_table(t.table_id, t.version), t.encode_to_vec())
}

pub fn config_write(c: &NodeConfig) -> Write {
    (keys::config(c.node_type as u32), c.encode_to_vec())
}

pub fn version_write(v: u64) -> Write {
    (keys::ROUTING_VERSION.to_vec(), keys::encode_version(v))
}

#[cfg(test)]
mod tests {
    use t3fs_common::proto::{ChainTarget, NodeType, PublicTargetState};

    use super::*;

    #[tokio::test]
    async fn persist_then_load_round_trips() {
        let db = t3fs_kv::mem::MemKv::new();
        let empty = load(db.as_ref()).await.unwrap();
        assert_eq!(empty.version, 0);
        assert!(empty.nodes.is_empty() && empty.tables.is_empty());

        let node = NodeInfo { node_id: 10001, node_type: NodeType::Storage as i32, ..Default::default() };
        let target = TargetInfo { target_id: 7, node_id: 10001, chain_id: 100001, ..Default::default() };
        let chain = ChainInfo {
            chain_id: 100001,
            chain_version: 1,
            targets: vec![ChainTarget { target_id: 7, public_state: PublicTargetState::Serving as i32 }],
            preferred_order: vec![7],
        };
        let table = ChainTable { table_id: 1, version: 1, chains: vec![100001], desc: "d".into() };
        let config = NodeConfig { node_type: NodeType::Storage as i32, version: 2, toml: "log = \"debug\"".into() };
        let writes = vec![
            node_write(&node),
            target_write(&target),
            chain_write(&chain),
            table_write(&table),
            config_write(&config),
            version_write(9),
        ];
        persist(db.as_ref(), &writes).await.unwrap();

        let l = load(db.as_ref()).await.unwrap();
        assert_eq!(l.version, 9);
        assert_eq!(l.nodes, vec![node]);
        assert_eq!(l.targets, vec![target]);
        assert_eq!(l.chains, vec![chain]);
        assert_eq!(l.tables, vec![table]);
        assert_eq!(l.configs, vec![config]);
    }

    #[tokio::test]
    async fn corrupt_records_fail_the_load() {
        let db = t3fs_kv::mem::MemKv::new();
        // A node record stored under the wrong id.
        let node = NodeInfo { node_id: 2, ..Default::default() };
        persist(db.as_ref(), &[(keys::node(3), node.encode_to_vec())]).await.unwrap();
        let err = load(db.as_ref()).await.unwrap_err();
        assert!(err.message.contains("does not match"), "{err}");

        let db = t3fs_kv::mem::MemKv::new();
        persist(db.as_ref(), &[(keys::target(3), vec![0xff, 0xff, 0xff])]).await.unwrap();
        assert!(load(db.as_ref()).await.is_err());

        let db = t3fs_kv::mem::MemKv::new();
        let meta = NodeConfig { node_type: NodeType::Meta as i32, ..Default::default() };
        persist(db.as_ref(), &[(keys::config(NodeType::Storage as u32), meta.encode_to_vec())]).await.unwrap();
        assert!(load(db.as_ref()).await.unwrap_err().message.contains("does not match"));

        let db = t3fs_kv::mem::MemKv::new();
        persist(db.as_ref(), &[(keys::ROUTING_VERSION.to_vec(), vec![1, 2])]).await.unwrap();
        assert!(load(db.as_ref()).await.is_err());
    }
}
