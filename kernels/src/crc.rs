//! CRC32C of a byte range computed in segments: what the GPU CRC kernel (`cuda/crc32c.cu`) does
//! on the device, one thread per segment, and how the host combines the segments' CRCs into the
//! CRC of the whole range. Used to check bytes a storage node wrote straight into GPU memory
//! (GPUDirect RDMA) against the CRC32C it sent ([`crate::gpu::direct`]).
//!
//! Invariant: `combine(&segment_crcs(data, seg), seg, data.len()) == crc32c(data)` for every
//! `data` and `seg > 0` (tested), so the GPU kernel only has to match [`segment_crcs`].

/// Bytes per segment (per GPU thread).
pub const SEGMENT: usize = 4096;

/// The CRC32C of each `seg`-byte segment of `data` (the last one may be shorter); none for empty
/// data. The CPU reference of the GPU kernel.
pub fn segment_crcs(data: &[u8], seg: usize) -> Vec<u32> {
    data.chunks(seg.max(1)).map(crc32c::crc32c).collect()
}

/// The CRC32C of a `len`-byte range (below 4 GiB) from the CRCs of its consecutive `seg`-byte
/// segments (precomputed GF(2) operators, a few µs for a whole KV page).
pub fn combine(segs: &[u32], seg: usize, len: usize) -> u32 {
    let mut crc = 0u32; // the CRC32C of no bytes
    let mut left = len;
    for &s in segs {
        let n = seg.min(left);
        crc = t3fs_common::crc::concat(crc, s, n as u32);
        left -= n;
    }
    crc
}

/// How many segments a `len`-byte range has.
pub fn segments(len: usize, seg: usize) -> usize {
    len.div_ceil(seg.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_segments_equal_the_whole_crc() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 63, 4095, 4096, 4097, 8192, 12_345, 40_000] {
            for seg in [1, 7, 512, SEGMENT, 65_536] {
                let d = &data[..len];
                let segs = segment_crcs(d, seg);
                assert_eq!(segs.len(), segments(len, seg));
                assert_eq!(combine(&segs, seg, len), crc32c::crc32c(d), "len {len}, seg {seg}");
            }
        }
        // A flipped byte anywhere changes the result.
        let mut d = data[..9000].to_vec();
        let good = combine(&segment_crcs(&d, SEGMENT), SEGMENT, d.len());
        d[8191] ^= 1;
        assert_ne!(combine(&segment_crcs(&d, SEGMENT), SEGMENT, d.len()), good);
    }
}
