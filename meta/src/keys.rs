//! The meta key schema in the KV store (3FS style: 4-byte ASCII prefixes).
//!
//! | key | value | notes |
//! |---|---|---|
//! | `INOD` + inode id (u64, 8 B little-endian) | prost `proto::Inode` | LE spreads sequential ids over shards (as 3FS) |
//! | `DENT` + parent id (u64, 8 B LE) + raw name bytes | prost `proto::DirEntry` | one directory = one contiguous key range; readdir is a range scan in byte order of names |
//! | `SING` + `inode-alloc` | u64 LE: the next unallocated inode id | the old single counter: `u64::MAX` once migrated ([`crate::alloc`]) |
//! | `SING` + `inode-alloc-meta` | shards (u32 LE) + base batch (u64 LE) | fixed parameters of the sharded id counters |
//! | `SING` + `inode-alloc-shard` + shard (u32 LE) | u64 LE: batches this shard has handed out | ids are handed out in batches of [`ID_BATCH`] |
//! | `XATR` + inode id (u64, 8 B LE) + raw xattr name | raw value bytes | one inode's xattrs = one contiguous range |
//! | `IDEM` + request id (UTF-8 bytes) | prost [`crate::idem::IdemRecord`] | result of a remove/rename, expires after a TTL |
//! | `GCQU` + unlink time (ns, u64 BE) + inode id (u64 LE) | empty | a file whose last link went, waiting for GC (its `INOD` stays, nlink 0) |
//! | `INOS` + inode id (u64 LE) + session id (u64 BE) | prost `proto::WriteSession` | the file is open for write by that client session |
//! | `LOCK` + inode id (u64 LE) | prost `proto::LockTable` | every file lock (fcntl, flock) held on the inode; absent when none ([`crate::lock_table`]) |
//!
//! Values are prost messages: fields are only ever added under new tags, so old servers skip fields
//! they do not know and new servers read old values with defaults (the encoding is versioned by its
//! field numbers; see docs/meta.md).
//!
//! Invariants: every `DENT` value's `inode` names an existing `INOD` key; a dentry's key name equals
//! its value's `name`. These encodings are an on-disk format: never change them (golden test below).
use prost::Message;
use t3fs_common::proto::{DirEntry, Inode};
use t3fs_common::{Error, InodeId};

pub const INODE_PREFIX: &[u8; 4] = b"INOD";
pub const DENTRY_PREFIX: &[u8; 4] = b"DENT";
pub const XATTR_PREFIX: &[u8; 4] = b"XATR";
pub const IDEM_PREFIX: &[u8; 4] = b"IDEM";
pub const GC_PREFIX: &[u8; 4] = b"GCQU";
pub const SESSION_PREFIX: &[u8; 4] = b"INOS";
pub const LOCK_PREFIX: &[u8; 4] = b"LOCK";
/// The inode id allocation counter.
pub const INODE_ALLOC_KEY: &[u8] = b"SINGinode-alloc";
/// The sharded allocation's fixed parameters ([`crate::alloc::AllocMeta`]).
pub const INODE_ALLOC_META_KEY: &[u8] = b"SINGinode-alloc-meta";
/// Prefix of the shard counters (`+ shard`, u32 LE).
pub const INODE_ALLOC_SHARD_PREFIX: &[u8] = b"SINGinode-alloc-shard";
/// The first id the allocator hands out; ids below are reserved for system inodes (root = 1).
pub const FIRST_ALLOC_ID: u64 = 0x1000;
/// Ids taken from the counter per KV transaction (3FS: 4096, so creates rarely touch the counter).
pub const ID_BATCH: u64 = 4096;

/// `INOD` + id (8 B LE).
pub fn inode_key(id: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(INODE_PREFIX);
    k.extend_from_slice(&id.0.to_le_bytes());
    k
}

/// The inode id in an inode key (0 if the key is malformed; for messages only).
pub fn inode_id_of(key: &[u8]) -> InodeId {
    key.get(4..12).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).map(InodeId).unwrap_or_default()
}

/// The range `[begin, end)` of every inode key.
pub fn inode_range() -> (Vec<u8>, Vec<u8>) {
    (INODE_PREFIX.to_vec(), t3fs_kv::prefix_end(INODE_PREFIX).expect("ASCII prefix has an end"))
}

/// `DENT` + parent (8 B LE): the prefix of every entry of directory `parent`.
pub fn dentry_prefix(parent: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + 32);
    k.extend_from_slice(DENTRY_PREFIX);
    k.extend_from_slice(&parent.0.to_le_bytes());
    k
}

/// `DENT` + parent (8 B LE) + name.
pub fn dentry_key(parent: InodeId, name: &[u8]) -> Vec<u8> {
    let mut k = dentry_prefix(parent);
    k.extend_from_slice(name);
    k
}

/// The range `[begin, end)` holding every entry of directory `parent`.
pub fn dentry_range(parent: InodeId) -> (Vec<u8>, Vec<u8>) {
    let begin = dentry_prefix(parent);
    let end = t3fs_kv::prefix_end(&begin).expect("DENT prefix is not all 0xff");
    (begin, end)
}

/// The name part of a dentry key of `parent` (`None` if the key is not one).
pub fn dentry_name(parent: InodeId, key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(dentry_prefix(parent).as_slice())
}

/// `XATR` + inode (8 B LE): the prefix of every xattr of `inode`.
pub fn xattr_prefix(inode: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + 32);
    k.extend_from_slice(XATTR_PREFIX);
    k.extend_from_slice(&inode.0.to_le_bytes());
    k
}

/// `XATR` + inode (8 B LE) + name.
pub fn xattr_key(inode: InodeId, name: &[u8]) -> Vec<u8> {
    let mut k = xattr_prefix(inode);
    k.extend_from_slice(name);
    k
}

/// The range `[begin, end)` holding every xattr of `inode`.
pub fn xattr_range(inode: InodeId) -> (Vec<u8>, Vec<u8>) {
    let begin = xattr_prefix(inode);
    let end = t3fs_kv::prefix_end(&begin).expect("XATR prefix is not all 0xff");
    (begin, end)
}

/// `IDEM` + request id.
pub fn idem_key(request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + request_id.len());
    k.extend_from_slice(IDEM_PREFIX);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// The range `[begin, end)` of every idempotency record.
pub fn idem_range() -> (Vec<u8>, Vec<u8>) {
    (IDEM_PREFIX.to_vec(), t3fs_kv::prefix_end(IDEM_PREFIX).expect("ASCII prefix has an end"))
}

/// `GCQU` + unlink time (8 B BE, so the queue is in unlink order) + inode id (8 B LE).
pub fn gc_key(unlinked_ns: u64, id: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    k.extend_from_slice(GC_PREFIX);
    k.extend_from_slice(&unlinked_ns.to_be_bytes());
    k.extend_from_slice(&id.0.to_le_bytes());
    k
}

/// The unlink time and inode of a GC queue key.
pub fn gc_key_parts(key: &[u8]) -> Option<(u64, InodeId)> {
    let rest = key.strip_prefix(GC_PREFIX.as_slice())?;
    let (t, id) = (rest.get(..8)?, rest.get(8..)?);
    let id: [u8; 8] = id.try_into().ok()?;
    Some((u64::from_be_bytes(t.try_into().ok()?), InodeId(u64::from_le_bytes(id))))
}

/// `GCQU` keys of files unlinked before `before_ns`: `[GCQU, GCQU + before_ns)`.
pub fn gc_due_range(before_ns: u64) -> (Vec<u8>, Vec<u8>) {
    let mut end = GC_PREFIX.to_vec();
    end.extend_from_slice(&before_ns.to_be_bytes());
    (GC_PREFIX.to_vec(), end)
}

/// `INOS` + inode id (8 B LE): the prefix of every write session of `id`.
pub fn session_prefix(id: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    k.extend_from_slice(SESSION_PREFIX);
    k.extend_from_slice(&id.0.to_le_bytes());
    k
}

/// `INOS` + inode id (8 B LE) + session id (8 B BE).
pub fn session_key(id: InodeId, session: u64) -> Vec<u8> {
    let mut k = session_prefix(id);
    k.extend_from_slice(&session.to_be_bytes());
    k
}

/// The range of the write sessions of `id`.
pub fn session_range(id: InodeId) -> (Vec<u8>, Vec<u8>) {
    let p = session_prefix(id);
    let end = t3fs_kv::prefix_end(&p).expect("a prefix with a non-0xff byte has an end");
    (p, end)
}

/// The range of every write session.
pub fn all_sessions_range() -> (Vec<u8>, Vec<u8>) {
    (SESSION_PREFIX.to_vec(), t3fs_kv::prefix_end(SESSION_PREFIX).expect("ASCII prefix has an end"))
}

/// The inode and session id of a session key.
pub fn session_key_parts(key: &[u8]) -> Option<(InodeId, u64)> {
    let rest = key.strip_prefix(SESSION_PREFIX.as_slice())?;
    let id: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let s: [u8; 8] = rest.get(8..)?.try_into().ok()?;
    Some((InodeId(u64::from_le_bytes(id)), u64::from_be_bytes(s)))
}

/// `LOCK` + inode id (8 B LE): the lock table of `id`.
pub fn lock_key(id: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(LOCK_PREFIX);
    k.extend_from_slice(&id.0.to_le_bytes());
    k
}

/// The range of every lock table.
pub fn all_locks_range() -> (Vec<u8>, Vec<u8>) {
    (LOCK_PREFIX.to_vec(), t3fs_kv::prefix_end(LOCK_PREFIX).expect("ASCII prefix has an end"))
}

/// `SINGinode-alloc-shard` + shard (4 B LE).
pub fn shard_counter_key(shard: u32) -> Vec<u8> {
    let mut k = INODE_ALLOC_SHARD_PREFIX.to_vec();
    k.extend_from_slice(&shard.to_le_bytes());
    k
}

/// shards (u32 LE) + base batch (u64 LE).
pub fn encode_alloc_meta(meta: &crate::alloc::AllocMeta) -> Vec<u8> {
    let mut v = meta.shards.to_le_bytes().to_vec();
    v.extend_from_slice(&meta.base.to_le_bytes());
    v
}

pub fn decode_alloc_meta(value: &[u8]) -> Result<crate::alloc::AllocMeta, Error> {
    let bad = || Error::internal(format!("corrupt inode-alloc-meta: {} bytes", value.len()));
    if value.len() != 12 {
        return Err(bad());
    }
    let shards = u32::from_le_bytes(value[..4].try_into().map_err(|_| bad())?);
    let base = u64::from_le_bytes(value[4..].try_into().map_err(|_| bad())?);
    if shards == 0 {
        return Err(Error::internal("corrupt inode-alloc-meta: 0 shards"));
    }
    Ok(crate::alloc::AllocMeta { shards, base })
}

pub fn encode_inode(inode: &Inode) -> Vec<u8> {
    inode.encode_to_vec()
}

pub fn decode_inode(id: InodeId, value: &[u8]) -> Result<Inode, Error> {
    Inode::decode(value).map_err(|e| Error::internal(format!("corrupt inode {id}: {e}")))
}

pub fn encode_dentry(entry: &DirEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

pub fn decode_dentry(parent: InodeId, value: &[u8]) -> Result<DirEntry, Error> {
    DirEntry::decode(value).map_err(|e| Error::internal(format!("corrupt dentry in directory {parent}: {e}")))
}

/// Decodes the allocation counter value.
pub fn decode_counter(value: &[u8]) -> Result<u64, Error> {
    let b: [u8; 8] =
        value.try_into().map_err(|_| Error::internal(format!("corrupt inode-alloc counter: {} bytes", value.len())))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_and_session_keys() {
        assert_eq!(gc_key(0x0102, InodeId(5)), b"GCQU\0\0\0\0\0\0\x01\x02\x05\0\0\0\0\0\0\0");
        assert_eq!(gc_key_parts(&gc_key(77, InodeId(9))), Some((77, InodeId(9))));
        assert_eq!(gc_key_parts(b"GCQU\0\0"), None);
        let (b, e) = gc_due_range(100);
        assert!(gc_key(99, InodeId(u64::MAX)) < e && gc_key(99, InodeId(1)) >= b);
        assert!(gc_key(100, InodeId(1)) >= e, "unlinked at the bound: not due yet");
        assert_eq!(session_key(InodeId(5), 0x0102), b"INOS\x05\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x02");
        assert_eq!(session_key_parts(&session_key(InodeId(7), 3)), Some((InodeId(7), 3)));
        let (b, e) = session_range(InodeId(7));
        let k = session_key(InodeId(7), u64::MAX);
        assert!(k >= b && k < e);
        assert!(session_key(InodeId(8), 0) >= e);
    }

    #[test]
    fn golden_encodings() {
        // On-disk format: these bytes must never change.
        assert_eq!(inode_key(InodeId(0x0102)), b"INOD\x02\x01\0\0\0\0\0\0".to_vec());
        assert_eq!(dentry_key(InodeId(1), b"ab"), b"DENT\x01\0\0\0\0\0\0\0ab".to_vec());
        assert_eq!(INODE_ALLOC_KEY, b"SINGinode-alloc");
        assert_eq!(xattr_key(InodeId(0x0102), b"user.a"), b"XATR\x02\x01\0\0\0\0\0\0user.a".to_vec());
        assert_eq!(idem_key("r-1"), b"IDEMr-1".to_vec());
        assert_eq!(lock_key(InodeId(0x0102)), b"LOCK\x02\x01\0\0\0\0\0\0".to_vec());
        let (b, e) = all_locks_range();
        assert!(b <= lock_key(InodeId(u64::MAX)) && lock_key(InodeId(u64::MAX)) < e);
        let (b, e) = xattr_range(InodeId(3));
        assert!(b <= xattr_key(InodeId(3), &[0xff; 255]) && xattr_key(InodeId(3), &[0xff; 255]) < e);
        assert!(xattr_key(InodeId(4), b"") >= e && xattr_key(InodeId(2), &[0xff; 9]) < b);
        assert_eq!(inode_id_of(&inode_key(InodeId(0x0102))), InodeId(0x0102));
        assert_eq!(inode_id_of(b"INOD"), InodeId(0));
        assert_eq!(decode_counter(&0x1000u64.to_le_bytes()).unwrap(), 0x1000);
        assert!(decode_counter(b"short").is_err());
        assert_eq!(shard_counter_key(0x0102), b"SINGinode-alloc-shard\x02\x01\0\0".to_vec());
        assert_eq!(INODE_ALLOC_META_KEY, b"SINGinode-alloc-meta");
        let meta = crate::alloc::AllocMeta { shards: 32, base: 0x0102 };
        assert_eq!(encode_alloc_meta(&meta), b"\x20\0\0\0\x02\x01\0\0\0\0\0\0".to_vec());
        assert_eq!(decode_alloc_meta(&encode_alloc_meta(&meta)).unwrap(), meta);
        assert!(decode_alloc_meta(b"short").is_err());
        assert!(decode_alloc_meta(&[0; 12]).is_err());
    }

    #[test]
    fn directory_is_one_contiguous_range() {
        let (b, e) = dentry_range(InodeId(7));
        for name in [&b"a"[..], b"zzz", &[0xff; 255]] {
            let k = dentry_key(InodeId(7), name);
            assert!(b <= k && k < e);
            assert_eq!(dentry_name(InodeId(7), &k), Some(name));
        }
        // Neighbouring directories fall outside.
        for other in [6u64, 8, 7 + 256, u64::MAX] {
            let k = dentry_key(InodeId(other), b"a");
            assert!(k < b || k >= e, "dir {other}");
        }
        let (ib, ie) = inode_range();
        assert!(ib <= inode_key(InodeId(u64::MAX)) && inode_key(InodeId(u64::MAX)) < ie);
    }

    #[test]
    fn values_round_trip_and_garbage_is_an_error() {
        let i = Inode { id: 5, nlink: 1, length: 9, ..Default::default() };
        assert_eq!(decode_inode(InodeId(5), &encode_inode(&i)).unwrap(), i);
        let d = DirEntry { name: b"x".to_vec().into(), inode: 5, inode_type: 1 };
        assert_eq!(decode_dentry(InodeId(1), &encode_dentry(&d)).unwrap(), d);
        assert!(decode_inode(InodeId(5), &[0xff, 0xff, 0xff]).is_err());
    }
}
