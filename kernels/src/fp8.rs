//! FP8 e4m3 codec (the `e4m3fn` variant that Hopper tensor cores and DeepGEMM use).
//!
//! Format: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits. There is no infinity; the
//! two codes `S.1111.111` (0x7F, 0xFF) are NaN, so the largest finite magnitude is
//! `1.75 · 2^8 = 448` (0x7E). Exponent field 0 holds subnormals, `mant/8 · 2^-6`, the smallest
//! being `2^-9` (0x01).
//!
//! Decoding goes through a 256-entry table built at compile time. Encoding rounds to nearest,
//! ties to even mantissa, and saturates like CUDA's `__NV_SATFINITE`: every finite value at or
//! above 448 in magnitude, and ±infinity, become ±448. NaN always encodes as the canonical
//! 0x7F (the sign of a NaN is not kept). `-0.0` and negative values that round to zero encode
//! as 0x80, so the sign of zero survives.
//!
//! Invariant the GPU kernels rely on: `f32_to_e4m3(e4m3_to_f32(c)) == c` for every non-NaN code
//! `c`, and the encoder returns the nearest finite code (checked against a brute-force search).

/// Largest finite e4m3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// The canonical NaN code the encoder produces.
pub const E4M3_NAN: u8 = 0x7F;

/// Value of one code, built from bits so it can run at compile time.
const fn decode_bits(b: u8) -> f32 {
    let negative = b & 0x80 != 0;
    let exp = ((b >> 3) & 0x0F) as u32;
    let mant = (b & 0x07) as u32;
    if exp == 0x0F && mant == 0x07 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        // Subnormal: mant · 2^-9, exact in f32.
        mant as f32 * (1.0 / 512.0)
    } else {
        // Normal: 2^(exp-7) · (1 + mant/8); rebias the exponent for f32 and widen the mantissa.
        f32::from_bits(((exp + 127 - 7) << 23) | (mant << 20))
    };
    if negative { -magnitude } else { magnitude }
}

const fn build_table() -> [f32; 256] {
    let mut table = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_bits(i as u8);
        i += 1;
    }
    table
}

/// Decoded value of every code.
static DECODE: [f32; 256] = build_table();

/// Decodes one e4m3 code (0x7F and 0xFF are NaN).
#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    DECODE[b as usize]
}

/// Encodes `x` as e4m3: round to nearest, ties to even mantissa, saturating to ±448; NaN → 0x7F.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return E4M3_NAN;
    }
    let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    if a >= E4M3_MAX {
        // Includes infinity: saturate to the largest finite code.
        return sign | 0x7E;
    }
    let magnitude = if a < 1.0 / 64.0 {
        // Subnormal range: the grid step is 2^-9 and the code is the step count. Scaling by a
        // power of two is exact, so the only rounding is the ties-to-even below. A count of 8
        // is 2^-6, whose code (exponent 1, mantissa 0) is also 8.
        (a * 512.0).round_ties_even() as u8
    } else {
        // Normal range: a = 2^e · f with f in [1, 2); the grid step is 2^(e-3), so a / step lies
        // in [8, 16). Rounding may give 16, which carries into the next binade correctly.
        let e = ((a.to_bits() >> 23) & 0xFF) as i32 - 127;
        let steps = (a * f32::from_bits(((3 - e + 127) as u32) << 23)).round_ties_even() as i32;
        (((e + 7) << 3) + (steps - 8)) as u8
    };
    sign | magnitude
}

/// Encodes a slice (convenience for tests and the GPU upload path).
pub fn encode_slice(x: &[f32]) -> Vec<u8> {
    x.iter().map(|&v| f32_to_e4m3(v)).collect()
}

/// Decodes a slice.
pub fn decode_slice(b: &[u8]) -> Vec<f32> {
    b.iter().map(|&c| e4m3_to_f32(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest finite code by exhaustive search over the 127 non-negative finite codes, ties to
    /// the even mantissa; saturation falls out because only finite codes compete.
    fn brute_force(x: f32) -> u8 {
        if x.is_nan() {
            return E4M3_NAN;
        }
        let a = x.abs() as f64;
        let mut best = 0u8;
        let mut best_err = f64::INFINITY;
        for c in 0u8..=0x7E {
            let err = (e4m3_to_f32(c) as f64 - a).abs();
            if err < best_err || (err == best_err && c & 1 == 0) {
                best = c;
                best_err = err;
            }
        }
        if x.is_sign_negative() { best | 0x80 } else { best }
    }

    #[test]
    fn known_values() {
        let cases: [(f32, u8); 12] = [
            (1.0, 0x38),
            (-2.0, 0xC0),
            (448.0, 0x7E),
            (-448.0, 0xFE),
            (0.5, 0x30),
            (2f32.powi(-9), 0x01),
            (2f32.powi(-6), 0x08),
            (0.875 * 2f32.powi(-6), 0x07),
            (1.125, 0x39),
            (240.0, 0x77),
            (0.0, 0x00),
            (-0.0, 0x80),
        ];
        for (v, code) in cases {
            assert_eq!(f32_to_e4m3(v), code, "encode {v}");
            assert_eq!(e4m3_to_f32(code), v, "decode {code:#x}");
        }
        assert!(e4m3_to_f32(0x7F).is_nan());
        assert!(e4m3_to_f32(0xFF).is_nan());
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn every_code_round_trips() {
        // NaN codes decode to NaN and re-encode to the canonical 0x7F (sign not kept).
        for c in 0..=255u8 {
            let v = e4m3_to_f32(c);
            let back = f32_to_e4m3(v);
            if c & 0x7F == 0x7F {
                assert!(v.is_nan());
                assert_eq!(back, E4M3_NAN);
            } else {
                assert!(v.is_finite() && v.abs() <= E4M3_MAX);
                assert_eq!(back, c, "code {c:#x} decodes to {v}");
            }
        }
    }

    #[test]
    fn decode_is_monotonic() {
        let mut prev = -1.0f32;
        for c in 1..=0x7Eu8 {
            let v = e4m3_to_f32(c);
            assert!(v > prev, "code {c:#x}");
            prev = v;
            assert_eq!(e4m3_to_f32(c | 0x80), -v);
        }
    }

    #[test]
    fn ties_round_to_even() {
        // Midpoint of 1.0 (mantissa 0) and 1.125 (mantissa 1) goes to 1.0.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        // Midpoint of 1.125 and 1.25 goes to 1.25 (mantissa 2).
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
        // One ulp either side of a tie goes to the nearer code.
        assert_eq!(f32_to_e4m3(f32::from_bits(1.0625f32.to_bits() + 1)), 0x39);
        assert_eq!(f32_to_e4m3(f32::from_bits(1.1875f32.to_bits() - 1)), 0x39);
        // Binade carry: the midpoint of 1.875 and 2.0 goes to 2.0 (even mantissa 0).
        assert_eq!(f32_to_e4m3(1.9375), 0x40);
        // Subnormals: between 2^-9 (m=1) and 2^-8 (m=2) → 2^-8; between 0 and 2^-9 → 0.
        assert_eq!(f32_to_e4m3(1.5 * 2f32.powi(-9)), 0x02);
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00);
        assert_eq!(f32_to_e4m3(-(2f32.powi(-10))), 0x80);
        assert_eq!(f32_to_e4m3(f32::from_bits(2f32.powi(-10).to_bits() + 1)), 0x01);
        // Subnormal/normal boundary: between 7·2^-9 and 2^-6 → 2^-6 (code 8, even).
        assert_eq!(f32_to_e4m3(7.5 * 2f32.powi(-9)), 0x08);
        // Between 2^-6 and 1.125·2^-6 → 2^-6.
        assert_eq!(f32_to_e4m3(1.0625 * 2f32.powi(-6)), 0x08);
        // Between 416 (mantissa 5) and 448 (mantissa 6) → 448; between 384 and 416 → 384.
        assert_eq!(f32_to_e4m3(432.0), 0x7E);
        assert_eq!(f32_to_e4m3(400.0), 0x7C);
    }

    #[test]
    fn saturates_and_handles_specials() {
        assert_eq!(f32_to_e4m3(1e6), 0x7E);
        assert_eq!(f32_to_e4m3(-1e6), 0xFE);
        assert_eq!(f32_to_e4m3(464.0), 0x7E);
        assert_eq!(f32_to_e4m3(449.0), 0x7E);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
        assert_eq!(f32_to_e4m3(-f32::NAN), 0x7F);
        assert_eq!(f32_to_e4m3(1e-30), 0x00);
        assert_eq!(f32_to_e4m3(-1e-30), 0x80);
        assert_eq!(f32_to_e4m3(f32::from_bits(1)), 0x00);
    }

    #[test]
    fn encoder_is_nearest_on_a_dense_sweep() {
        let mut checked = 0usize;
        let mut check = |x: f32| {
            assert_eq!(f32_to_e4m3(x), brute_force(x), "x = {x:e} (bits {:#x})", x.to_bits());
            assert_eq!(f32_to_e4m3(-x), brute_force(-x), "x = {:e}", -x);
            checked += 1;
        };
        // Every f32 from 0 up to past the saturation point, in strides of a prime number of ulps.
        let top = 600.0f32.to_bits();
        let mut bits = 0u32;
        while bits < top {
            check(f32::from_bits(bits));
            bits += 7919;
        }
        // Every midpoint between adjacent codes and its f32 neighbours, where rounding is hardest.
        for c in 0..0x7Eu8 {
            let lo = e4m3_to_f32(c) as f64;
            let hi = e4m3_to_f32(c + 1) as f64;
            let mid = ((lo + hi) / 2.0) as f32; // exact: both have at most 4 significant bits
            for d in -2i32..=2 {
                check(f32::from_bits((mid.to_bits() as i32 + d) as u32));
            }
        }
        assert!(checked > 100_000);
    }
}
