//! Typed ids. Plain newtypes so a chain id can never be passed where a target id is meant.
//!
//! `ChunkId` has a fixed 16-byte big-endian encoding (so keys sort by inode, then chunk index):
//! `[tenant 1B = 0][reserved 1B = 0][inode 8B][track 2B][chunk index 4B]`. It is part of the
//! on-disk and wire formats: never change it.
use std::fmt;

use crate::status::{Error, StatusCode};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $inner:ty) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
                 serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(/// A process in the cluster (mgmtd, meta, storage, client).
    NodeId, u32);
id_type!(/// A storage target: one replica slot on one disk of one storage node.
    TargetId, u64);
id_type!(/// A replication chain of targets.
    ChainId, u32);
id_type!(/// A chain table (an ordered list of chains files are striped over).
    ChainTableId, u32);
id_type!(/// An inode (file, directory or symlink).
    InodeId, u64);

impl InodeId {
    /// The root directory.
    pub const ROOT: InodeId = InodeId(1);
}

/// One chunk of one file.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId {
    pub inode: InodeId,
    pub track: u16,
    pub index: u32,
}

impl ChunkId {
    pub const ENCODED_LEN: usize = 16;

    pub fn new(inode: InodeId, index: u32) -> Self {
        Self { inode, track: 0, index }
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[2..10].copy_from_slice(&self.inode.0.to_be_bytes());
        b[10..12].copy_from_slice(&self.track.to_be_bytes());
        b[12..16].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, Error> {
        let arr: &[u8; 16] = b.try_into().map_err(|_| {
            Error::new(StatusCode::InvalidArgument, format!("chunk id must be 16 bytes, got {}", b.len()))
        })?;
        if arr[0] != 0 || arr[1] != 0 {
            return Err(Error::new(StatusCode::InvalidArgument, "chunk id: unknown tenant/reserved byte"));
        }
        let inode = u64::from_be_bytes(arr[2..10].try_into().expect("8-byte slice"));
        let track = u16::from_be_bytes(arr[10..12].try_into().expect("2-byte slice"));
        let index = u32::from_be_bytes(arr[12..16].try_into().expect("4-byte slice"));
        Ok(Self { inode: InodeId(inode), track, index })
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:04x}-{:08x}", self.inode.0, self.track, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_round_trip_and_order() {
        let a = ChunkId::new(InodeId(5), 1);
        let b = ChunkId::new(InodeId(5), 256);
        let c = ChunkId::new(InodeId(6), 0);
        assert_eq!(ChunkId::from_bytes(&a.to_bytes()).unwrap(), a);
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        // Golden: the encoding is an on-disk format.
        assert_eq!(hex::encode(b.to_bytes()), "00000000000000000005000000000100");
    }

    #[test]
    fn chunk_id_rejects_bad_input() {
        assert!(ChunkId::from_bytes(&[0u8; 15]).is_err());
        let mut b = [0u8; 16];
        b[0] = 1;
        assert!(ChunkId::from_bytes(&b).is_err());
    }
}
