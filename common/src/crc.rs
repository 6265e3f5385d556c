//! CRC32C algebra shared by storage (block CRCs combined into a chunk's CRC) and the GPU loaders
//! (segment CRCs computed on the device, combined on the host): [`shift`] advances a CRC over zero
//! bytes with precomputed GF(2) operators, so `crc(A || B) = shift(crc(A), |B|) ^ crc(B)` costs a
//! few matrix-vector products instead of `crc32c_combine`'s operator rebuild on every call.
use std::sync::OnceLock;

/// `crc(A || B)` from `crc(A)`, `crc(B)` and `|B|` (what `crc32c::crc32c_combine` computes).
pub fn concat(crc_a: u32, crc_b: u32, len_b: u32) -> u32 {
    shift(crc_a, len_b) ^ crc_b
}

/// A CRC32C value advanced over `len` zero bytes: `crc32c_combine(v, 0, len)`, so that
/// `crc(A || B) = shift(crc(A), |B|) ^ crc(B)`. The map is linear over GF(2); it is applied as the product
/// of precomputed operators for the powers of two in `len` (one for a power-of-two block), because
/// `crc32c_combine` rebuilds its operator on every call (~50 µs for 64 KiB, slower than a CRC pass over
/// a whole 1 MiB chunk).
pub fn shift(v: u32, len: u32) -> u32 {
    static POW2: OnceLock<[Gf2Matrix; 32]> = OnceLock::new();
    let ops = POW2.get_or_init(|| {
        let mut ops = [Gf2Matrix([0; 32]); 32];
        ops[0] = Gf2Matrix(std::array::from_fn(|bit| crc32c::crc32c_combine(1 << bit, 0, 1)));
        for k in 1..32 {
            ops[k] = ops[k - 1].squared();
        }
        ops
    });
    (0..32).filter(|k| len >> k & 1 == 1).fold(v, |v, k| ops[k].apply(v))
}

/// A 32×32 matrix over GF(2), as the images of the 32 unit vectors (bits).
#[derive(Clone, Copy)]
struct Gf2Matrix([u32; 32]);

impl Gf2Matrix {
    fn apply(&self, v: u32) -> u32 {
        (0..32).filter(|bit| v >> bit & 1 == 1).fold(0, |acc, bit| acc ^ self.0[bit])
    }

    fn squared(&self) -> Self {
        Self(std::array::from_fn(|bit| self.apply(self.0[bit])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_and_concat_agree_with_crc32c_combine() {
        for (i, len) in [0u32, 1, 2, 3, 1000, 4096, 65535, 65536, 65537, 1 << 20, (1 << 26) + 12345, u32::MAX]
            .into_iter()
            .enumerate()
        {
            let (a, b) = (0x9E37_79B9u32.wrapping_mul(i as u32 + 1), 0x7F4A_7C15u32.rotate_left(i as u32));
            // (`crc32c_combine` returns `crc1` for an empty B, whatever `crc2` says: the CRC of nothing is 0.)
            let b = if len == 0 { 0 } else { b };
            assert_eq!(concat(a, b, len), crc32c::crc32c_combine(a, b, len as usize), "len {len}");
        }
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (x, y) = data.split_at(3_333);
        assert_eq!(concat(crc32c::crc32c(x), crc32c::crc32c(y), y.len() as u32), crc32c::crc32c(&data));
    }
}
