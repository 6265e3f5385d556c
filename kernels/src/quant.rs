//! Fine-grained FP8 quantizers, DeepSeek-V3 / DeepGEMM style.
//!
//! - Activations: one scale per row per 128 columns ("1×128"), `scale_rows == rows`.
//! - Weights: one scale per 128×128 tile, `scale_rows == ceil(rows/128)`.
//!
//! For each block: `amax = max(max|x|, 1e-4)`, `scale = amax / 448`, and each element is stored
//! as `e4m3(x · (448 / amax))`; the dequantized value is `e4m3_to_f32(q) · scale`. The last block
//! of a row or column may be shorter than 128. The block's largest element lands on ±448.
//!
//! Layout: `data` is row-major `rows × cols` e4m3 codes; `scales` is row-major
//! `[scale_rows][scale_cols]` f32 with `scale_cols == ceil(cols/128)`. Which of the two layouts a
//! matrix has is read off `scale_rows` (the two only coincide for `rows ≤ 1`, where they are the
//! same thing).
//!
//! Error bound (per element, before the f32 product rounding): with `y = x/scale`,
//! `|dequant − x| ≤ max(2^-4·|x|, 2^-10·scale)`: half an e4m3 ulp is at most 2^-4 of the value
//! in the normal range and 2^-10 (half of the 2^-9 subnormal step) below it.

use crate::error::{Result, ensure};
use crate::fp8::{E4M3_MAX, e4m3_to_f32, f32_to_e4m3};

/// Quantization block edge (K block of the GEMM, both scale granularities).
pub const QBLOCK: usize = 128;

/// Smallest amax used for a block, so all-zero blocks get a finite, nonzero scale.
pub const AMAX_FLOOR: f32 = 1e-4;

/// An FP8 e4m3 matrix with its block scales.
#[derive(Clone, Debug)]
pub struct Fp8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Row-major `rows × cols` e4m3 codes.
    pub data: Vec<u8>,
    /// Row-major `[scale_rows][scale_cols]` scales.
    pub scales: Vec<f32>,
    pub scale_rows: usize,
    pub scale_cols: usize,
}

impl Fp8Matrix {
    /// Rows covered by one scale row: 1 for 1×128 scaling, 128 for 128×128 tiles.
    pub fn row_block(&self) -> usize {
        if self.scale_rows == self.rows { 1 } else { QBLOCK }
    }

    /// Scale of element `(r, c)`. Panics when `(r, c)` is outside the matrix, like indexing.
    pub fn scale_for(&self, r: usize, c: usize) -> f32 {
        assert!(r < self.rows && c < self.cols, "({r}, {c}) outside {}×{}", self.rows, self.cols);
        self.scales[(r / self.row_block()) * self.scale_cols + c / QBLOCK]
    }

    /// Dequantized row-major `rows × cols` values.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.push(e4m3_to_f32(self.data[r * self.cols + c]) * self.scale_for(r, c));
            }
        }
        out
    }

    /// Checks that the buffers match the shape and the scale layout is one of the two above,
    /// with finite positive scales.
    pub fn validate(&self) -> Result<()> {
        let n = self.rows.checked_mul(self.cols);
        ensure(n == Some(self.data.len()), || {
            format!("fp8 matrix {}×{} has {} data bytes", self.rows, self.cols, self.data.len())
        })?;
        ensure(self.scale_cols == self.cols.div_ceil(QBLOCK), || {
            format!("scale_cols {} for {} columns (want ceil(cols/128))", self.scale_cols, self.cols)
        })?;
        ensure(self.scale_rows == self.rows || self.scale_rows == self.rows.div_ceil(QBLOCK), || {
            format!("scale_rows {} fits neither 1×128 nor 128×128 scaling of {} rows", self.scale_rows, self.rows)
        })?;
        ensure(self.scales.len() == self.scale_rows * self.scale_cols, || {
            format!("{} scales for a {}×{} scale grid", self.scales.len(), self.scale_rows, self.scale_cols)
        })?;
        ensure(self.scales.iter().all(|s| s.is_finite() && *s > 0.0), || "scales must be finite and > 0".into())
    }
}

fn check_input(x: &[f32], rows: usize, cols: usize) -> Result<()> {
    ensure(rows.checked_mul(cols) == Some(x.len()), || format!("{} values for a {rows}×{cols} matrix", x.len()))?;
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(crate::KernelError::InvalidArgument(format!("non-finite input {} at index {i}", x[i]))),
        None => Ok(()),
    }
}

/// Quantizes the `row_block × 128` tile whose top-left corner is `(r0, c0)` and returns its scale.
fn quantize_tile(x: &[f32], cols: usize, rows: std::ops::Range<usize>, c0: usize, data: &mut [u8]) -> f32 {
    let c1 = (c0 + QBLOCK).min(cols);
    let mut amax = 0.0f32;
    for r in rows.clone() {
        for v in &x[r * cols + c0..r * cols + c1] {
            amax = amax.max(v.abs());
        }
    }
    let amax = amax.max(AMAX_FLOOR);
    let inv = E4M3_MAX / amax;
    for r in rows {
        for c in c0..c1 {
            data[r * cols + c] = f32_to_e4m3(x[r * cols + c] * inv);
        }
    }
    amax / E4M3_MAX
}

fn quantize_blocked(x: &[f32], rows: usize, cols: usize, row_block: usize) -> Result<Fp8Matrix> {
    check_input(x, rows, cols)?;
    let scale_rows = rows.div_ceil(row_block);
    let scale_cols = cols.div_ceil(QBLOCK);
    let mut data = vec![0u8; x.len()];
    let mut scales = Vec::with_capacity(scale_rows * scale_cols);
    for sr in 0..scale_rows {
        let r0 = sr * row_block;
        let r1 = (r0 + row_block).min(rows);
        for sc in 0..scale_cols {
            scales.push(quantize_tile(x, cols, r0..r1, sc * QBLOCK, &mut data));
        }
    }
    Ok(Fp8Matrix { rows, cols, data, scales, scale_rows, scale_cols })
}

/// 1×128 (per row, per 128 columns) quantization of a row-major `rows × cols` matrix.
pub fn quantize_1x128(x: &[f32], rows: usize, cols: usize) -> Result<Fp8Matrix> {
    quantize_blocked(x, rows, cols, 1)
}

/// 128×128-tile quantization of a row-major `rows × cols` matrix.
pub fn quantize_128x128(w: &[f32], rows: usize, cols: usize) -> Result<Fp8Matrix> {
    quantize_blocked(w, rows, cols, QBLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::randn_vec;
    use crate::error::KernelError;

    /// The per-element bound from the module note, plus 1e-6 relative slack for the f32 products
    /// `x · (448/amax)` and `q · scale`.
    fn assert_within_bound(m: &Fp8Matrix, x: &[f32]) {
        let d = m.dequantize();
        for r in 0..m.rows {
            for c in 0..m.cols {
                let i = r * m.cols + c;
                let s = m.scale_for(r, c) as f64;
                let (xv, dv) = (x[i] as f64, d[i] as f64);
                let bound = (xv.abs() / 16.0).max(s / 1024.0) + 1e-6 * (xv.abs() + s);
                assert!((dv - xv).abs() <= bound, "({r},{c}): x {xv} dequant {dv} scale {s} bound {bound}");
            }
        }
    }

    /// Each block's amax element encodes to ±448 (0x7E / 0xFE) and scale = amax/448.
    fn assert_amax_maps_to_max(m: &Fp8Matrix, x: &[f32]) {
        let rb = m.row_block();
        for sr in 0..m.scale_rows {
            for sc in 0..m.scale_cols {
                let mut best = (0usize, 0.0f32);
                for r in sr * rb..((sr + 1) * rb).min(m.rows) {
                    for c in sc * QBLOCK..((sc + 1) * QBLOCK).min(m.cols) {
                        let v = x[r * m.cols + c].abs();
                        if v > best.1 {
                            best = (r * m.cols + c, v);
                        }
                    }
                }
                let scale = m.scales[sr * m.scale_cols + sc];
                if best.1 == 0.0 {
                    assert_eq!(scale, AMAX_FLOOR / E4M3_MAX);
                    continue;
                }
                assert_eq!(scale, best.1.max(AMAX_FLOOR) / E4M3_MAX);
                if best.1 >= AMAX_FLOOR {
                    assert_eq!(m.data[best.0] & 0x7F, 0x7E, "block ({sr},{sc})");
                    assert_eq!(e4m3_to_f32(m.data[best.0]).abs(), 448.0);
                }
            }
        }
    }

    #[test]
    fn activation_quantization_ragged() {
        for (rows, cols, seed) in [(1, 128, 1), (7, 300, 2), (130, 129, 3), (3, 5, 4)] {
            let x: Vec<f32> = randn_vec(seed, rows * cols).iter().map(|v| v * 3.0).collect();
            let m = quantize_1x128(&x, rows, cols).expect("quantize");
            m.validate().expect("valid");
            assert_eq!((m.scale_rows, m.scale_cols), (rows, cols.div_ceil(128)));
            assert_eq!(m.row_block(), 1);
            assert_within_bound(&m, &x);
            assert_amax_maps_to_max(&m, &x);
        }
    }

    #[test]
    fn weight_quantization_ragged() {
        for (rows, cols, seed) in [(128, 128, 5), (200, 320, 6), (129, 1, 7), (1, 200, 8)] {
            let x = randn_vec(seed, rows * cols);
            let m = quantize_128x128(&x, rows, cols).expect("quantize");
            m.validate().expect("valid");
            assert_eq!((m.scale_rows, m.scale_cols), (rows.div_ceil(128), cols.div_ceil(128)));
            assert_within_bound(&m, &x);
            assert_amax_maps_to_max(&m, &x);
        }
        // Elements in different rows of one tile share the scale.
        let x = randn_vec(9, 200 * 320);
        let m = quantize_128x128(&x, 200, 320).expect("quantize");
        assert_eq!(m.scale_for(0, 0), m.scale_for(127, 127));
        assert_eq!(m.scale_for(128, 256), m.scales[m.scale_cols + 2]);
        assert_ne!(m.scale_for(127, 0), m.scale_for(128, 0));
    }

    #[test]
    fn zero_and_tiny_blocks() {
        let mut x = vec![0.0f32; 2 * 256];
        x[256 + 5] = 1e-6; // row 1, block 0: below the amax floor
        let m = quantize_1x128(&x, 2, 256).expect("quantize");
        assert!(m.scales.iter().all(|&s| s == AMAX_FLOOR / E4M3_MAX));
        assert!(m.dequantize().iter().enumerate().all(|(i, &v)| if i == 256 + 5 { v > 0.0 } else { v == 0.0 }));
        assert_within_bound(&m, &x);
        let m = quantize_1x128(&[], 0, 5).expect("empty");
        assert_eq!((m.scale_rows, m.scale_cols, m.scales.len()), (0, 1, 0));
    }

    #[test]
    fn exact_values_survive() {
        // Values on the e4m3 grid times a power of two come back exactly.
        let x = [448.0f32, -224.0, 1.0, 0.5, 0.0, -3.5];
        let m = quantize_1x128(&x, 1, 6).expect("quantize");
        assert_eq!(m.scales, vec![1.0]);
        assert_eq!(m.dequantize(), x.to_vec());
    }

    #[test]
    fn rejects_bad_input() {
        let bad = |r: Result<Fp8Matrix>| matches!(r, Err(KernelError::InvalidArgument(_)));
        assert!(bad(quantize_1x128(&[1.0, f32::NAN], 1, 2)));
        assert!(bad(quantize_128x128(&[1.0, f32::INFINITY], 2, 1)));
        assert!(bad(quantize_1x128(&[1.0; 5], 2, 3)));
        assert!(bad(quantize_128x128(&[1.0; 5], usize::MAX, 2)));
        let mut m = quantize_1x128(&[1.0; 6], 2, 3).expect("quantize");
        m.scales[0] = 0.0;
        assert!(m.validate().is_err());
        m.scales.pop();
        assert!(m.validate().is_err());
    }
}
