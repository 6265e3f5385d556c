//! The frozen chunk -> chain mapping.
//!
//! A file's layout is (chain table id + version, chunk size, stripe, base index, seed). Chunk `i`
//! lives on chain `table.chains[list[i % stripe] % table.len()]` where
//! `list = shuffle([base, base+1, .., base+stripe-1], seed)`.
//!
//! The shuffle is Fisher-Yates driven by SplitMix64 and is **frozen forever**: changing a single
//! output would make every existing file unreadable (3FS was bitten by `std::shuffle` changing
//! between compilers). The golden tests below pin it.
use crate::ids::ChainId;
use crate::proto;
use crate::status::{Error, StatusCode};

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-defined 64-bit generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The frozen shuffle: `[base, base+stripe)` permuted by Fisher-Yates with SplitMix64(seed).
pub fn shuffled_stripe(base: u32, stripe: u32, seed: u64) -> Vec<u32> {
    let mut list: Vec<u32> = (0..stripe).map(|i| base.wrapping_add(i)).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..list.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        list.swap(i, j);
    }
    list
}

/// Smallest and largest chunk sizes a layout may use.
pub const MIN_CHUNK_SIZE: u32 = 4096;
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;

/// Checks a layout for the invariants every reader relies on.
pub fn validate(layout: &proto::Layout) -> Result<(), Error> {
    let cs = layout.chunk_size;
    if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
        return Err(Error::new(
            StatusCode::InvalidArgument,
            format!("chunk size {cs} must be a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"),
        ));
    }
    if layout.stripe == 0 {
        return Err(Error::invalid("layout stripe must be > 0"));
    }
    Ok(())
}

/// The chain of chunk `chunk_index` of a file with `layout`, given the table's chain list.
pub fn chain_of(layout: &proto::Layout, table_chains: &[u32], chunk_index: u32) -> Result<ChainId, Error> {
    if table_chains.is_empty() {
        return Err(Error::new(StatusCode::RoutingNotReady, "chain table has no chains"));
    }
    if layout.stripe == 0 {
        return Err(Error::invalid("layout stripe must be > 0"));
    }
    let list = shuffled_stripe(layout.base_index, layout.stripe, layout.seed);
    let idx = list[(chunk_index % layout.stripe) as usize];
    Ok(ChainId(table_chains[(idx as usize) % table_chains.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_golden() {
        // Reference values of SplitMix64 seeded with 0 (published test vector).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn shuffle_golden() {
        // Frozen outputs (cross-checked with an independent Python implementation): if this test fails, the change breaks every existing file. Do not "fix" it.
        assert_eq!(shuffled_stripe(0, 8, 0), GOLDEN_0_8_0.to_vec());
        assert_eq!(shuffled_stripe(5, 6, 42), GOLDEN_5_6_42.to_vec());
        assert_eq!(shuffled_stripe(1, 1, 7), vec![1]);
    }

    const GOLDEN_0_8_0: [u32; 8] = [2, 5, 0, 3, 4, 6, 1, 7];
    const GOLDEN_5_6_42: [u32; 6] = [9, 8, 5, 7, 10, 6];

    #[test]
    fn shuffle_is_a_permutation() {
        for seed in 0..200u64 {
            let mut l = shuffled_stripe(10, 37, seed);
            l.sort();
            assert_eq!(l, (10..47).collect::<Vec<_>>());
        }
    }

    #[test]
    fn chain_mapping_spreads_over_the_stripe() {
        let layout =
            proto::Layout { table_id: 1, table_version: 1, chunk_size: 1 << 20, stripe: 4, base_index: 2, seed: 9 };
        let chains = [10, 11, 12, 13, 14, 15];
        let mut seen: Vec<u32> = (0..4).map(|i| chain_of(&layout, &chains, i).unwrap().0).collect();
        // chunk i and i+stripe share a chain
        assert_eq!(chain_of(&layout, &chains, 1).unwrap(), chain_of(&layout, &chains, 5).unwrap());
        seen.sort();
        assert_eq!(seen, vec![12, 13, 14, 15]);
        assert!(chain_of(&layout, &[], 0).is_err());
    }

    #[test]
    fn layout_validation() {
        let mut l =
            proto::Layout { table_id: 1, table_version: 1, chunk_size: 1 << 20, stripe: 1, base_index: 0, seed: 0 };
        assert!(validate(&l).is_ok());
        l.chunk_size = 3000;
        assert!(validate(&l).is_err());
        l.chunk_size = 1 << 20;
        l.stripe = 0;
        assert!(validate(&l).is_err());
    }
}
