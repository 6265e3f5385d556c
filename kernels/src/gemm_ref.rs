//! Block-scaled FP8 GEMM reference, `D = A·Bᵀ` ("NT", DeepGEMM's `fp8_gemm_nt` with 1D2D scaling).
//!
//! A is `m × k` e4m3 with 1×128 scales (`[m][ceil(k/128)]`), B is `n × k` e4m3 with 128×128
//! scales (`[ceil(n/128)][ceil(k/128)]`), D is `m × n` row-major f32.
//!
//! The arithmetic mirrors the GPU kernel's two-level accumulation exactly: for each 128-wide K
//! block the decoded e4m3 products are summed in f32 in k order (the tensor-core part), then the
//! block sum is "promoted": `final += block · (sfa[i][kb] · sfb[j/128][kb])` in f32. A kernel
//! can differ from this only by the order of the f32 additions inside a block.
//!
//! [`gemm_f64`] is the plain f64 product used as the oracle: on the dequantized inputs it
//! measures the accumulation error, on the original inputs it measures quantization quality
//! (DeepGEMM's `calc_diff < 1e-3`).

use crate::error::{Result, ensure};
use crate::fp8::decode_slice;
use crate::quant::{Fp8Matrix, QBLOCK};

/// `D = A·Bᵀ` with 1×128-scaled `a` (`m × k`) and 128×128-scaled `b` (`n × k`); `m × n` f32.
pub fn gemm_fp8_ref(a: &Fp8Matrix, b: &Fp8Matrix) -> Result<Vec<f32>> {
    a.validate()?;
    b.validate()?;
    let (m, n, k) = (a.rows, b.rows, a.cols);
    ensure(b.cols == k, || format!("A is {m}×{k} but B is {n}×{} (both must be K-major with the same K)", b.cols))?;
    ensure(a.scale_rows == m, || format!("A needs 1×128 scales ({m} scale rows), has {}", a.scale_rows))?;
    ensure(b.scale_rows == n.div_ceil(QBLOCK), || {
        format!("B needs 128×128 scales ({} scale rows), has {}", n.div_ceil(QBLOCK), b.scale_rows)
    })?;
    let kb_count = k.div_ceil(QBLOCK);
    let av = decode_slice(&a.data);
    let bv = decode_slice(&b.data);
    let mut d = vec![0.0f32; m * n];
    for i in 0..m {
        let arow = &av[i * k..(i + 1) * k];
        let asc = &a.scales[i * kb_count..(i + 1) * kb_count];
        for j in 0..n {
            let brow = &bv[j * k..(j + 1) * k];
            let bsc = &b.scales[(j / QBLOCK) * kb_count..(j / QBLOCK + 1) * kb_count];
            let mut acc = 0.0f32;
            for kb in 0..kb_count {
                let (k0, k1) = (kb * QBLOCK, ((kb + 1) * QBLOCK).min(k));
                let mut block = 0.0f32;
                for (x, y) in arow[k0..k1].iter().zip(&brow[k0..k1]) {
                    block += x * y;
                }
                acc += block * (asc[kb] * bsc[kb]);
            }
            d[i * n + j] = acc;
        }
    }
    Ok(d)
}

/// `D = A·Bᵀ` in f64 for row-major `a` (`m × k`) and `b` (`n × k`). Panics if a slice is
/// shorter than its shape says (test oracle only).
pub fn gemm_f64(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    assert!(a.len() >= m * k && b.len() >= n * k, "gemm_f64: slices shorter than {m}×{k} / {n}×{k}");
    let mut d = vec![0.0f64; m * n];
    for i in 0..m {
        let arow = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let brow = &b[j * k..(j + 1) * k];
            d[i * n + j] = arow.iter().zip(brow).map(|(&x, &y)| x as f64 * y as f64).sum();
        }
    }
    d
}

/// Seeded normal-ish `rows × cols` test matrix (standard normal samples).
pub fn random_matrix(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    crate::check::randn_vec(seed, rows * cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::calc_diff;
    use crate::error::KernelError;
    use crate::quant::{quantize_1x128, quantize_128x128};

    fn rel_frobenius(x: &[f32], y: &[f64]) -> f64 {
        let num: f64 = x.iter().zip(y).map(|(&a, &b)| (a as f64 - b).powi(2)).sum();
        let den: f64 = y.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    }

    /// Checks one shape; returns (accumulation error, quantization calc_diff) for reporting.
    fn check_shape(m: usize, n: usize, k: usize, seed: u64) -> (f64, f64) {
        let a = random_matrix(seed, m, k);
        let b = random_matrix(seed + 1000, n, k);
        let qa = quantize_1x128(&a, m, k).expect("quantize A");
        let qb = quantize_128x128(&b, n, k).expect("quantize B");
        let d = gemm_fp8_ref(&qa, &qb).expect("gemm");
        assert_eq!(d.len(), m * n);

        let exact = gemm_f64(&qa.dequantize(), &qb.dequantize(), m, n, k);
        let acc_err = rel_frobenius(&d, &exact);
        assert!(acc_err < 1e-5, "m={m} n={n} k={k}: accumulation error {acc_err:e}");

        // For normal inputs e4m3 rounding gives calc_diff ≈ 6.8e-4 on average; the smallest shapes
        // (m=1, n=128: 128 outputs) fluctuate up to ≈ 9.5e-4 with these seeds.
        let original: Vec<f32> = gemm_f64(&a, &b, m, n, k).iter().map(|&v| v as f32).collect();
        let diff = calc_diff(&d, &original);
        assert!(diff < 1e-3, "m={m} n={n} k={k}: calc_diff vs unquantized {diff:e}");
        // Quantization must actually change something, or the test checks nothing.
        assert!(diff > 1e-6, "m={m} n={n} k={k}: suspiciously exact ({diff:e})");
        (acc_err, diff)
    }

    #[test]
    fn small_m_shapes() {
        let mut seed = 1;
        for m in [1, 7] {
            for n in [128, 256] {
                for k in [128, 512] {
                    check_shape(m, n, k, seed);
                    seed += 1;
                }
            }
        }
    }

    #[test]
    fn m128_shapes() {
        for (n, k, seed) in [(128, 128, 11), (128, 512, 12), (256, 128, 13), (256, 512, 14)] {
            check_shape(128, n, k, seed);
        }
    }

    #[test]
    fn m200_shapes() {
        for (n, k, seed) in [(128, 128, 21), (128, 512, 22), (256, 128, 23), (256, 512, 24)] {
            check_shape(200, n, k, seed);
        }
    }

    #[test]
    fn ragged_shape() {
        check_shape(7, 200, 320, 31);
        check_shape(130, 200, 320, 32);
    }

    #[test]
    fn promotion_uses_each_blocks_scales() {
        // A = 1×256 with block 0 all 1 and block 1 all 2; B = 1×256 all 1. Scales: A block 0 =
        // 1/448, block 1 = 2/448, B = 1/448. Codes are all 448 (0x7E), so
        // D = 128·448·448·(1/448·1/448) + 128·448·448·(2/448·1/448) = 128 + 256.
        let mut a = vec![1.0f32; 256];
        a[128..].fill(2.0);
        let qa = quantize_1x128(&a, 1, 256).expect("A");
        let qb = quantize_128x128(&[1.0f32; 256], 1, 256).expect("B");
        let d = gemm_fp8_ref(&qa, &qb).expect("gemm");
        assert!((d[0] - 384.0).abs() < 1e-3, "{}", d[0]);
    }

    #[test]
    fn rejects_wrong_layouts() {
        let x = random_matrix(1, 256, 128);
        let a_act = quantize_1x128(&x, 256, 128).expect("A");
        let b_wt = quantize_128x128(&x, 256, 128).expect("B");
        assert!(gemm_fp8_ref(&a_act, &b_wt).is_ok());
        let bad = |r: Result<Vec<f32>>| matches!(r, Err(KernelError::InvalidArgument(_)));
        // Swapped scale granularities.
        assert!(bad(gemm_fp8_ref(&b_wt, &a_act)));
        // K mismatch.
        let y = random_matrix(2, 256, 256);
        assert!(bad(gemm_fp8_ref(&a_act, &quantize_128x128(&y, 256, 256).expect("B"))));
        // Truncated data.
        let mut short = a_act.clone();
        short.data.pop();
        assert!(bad(gemm_fp8_ref(&short, &b_wt)));
    }
}
