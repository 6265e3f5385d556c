//! Comparison metrics shared by the CPU tests, the GPU tests and the benchmarks, plus the seeded
//! normal-ish random numbers the test data is drawn from.
//!
//! - [`calc_diff`]: DeepGEMM's / FlashMLA's `cos_diff`, `1 − 2Σxy/Σ(x²+y²) = ‖x−y‖²/(‖x‖²+‖y‖²)`,
//!   a scale-free whole-tensor error (1e-3 is roughly 4.5 % relative L2 error).
//! - [`rel_l2`]: `‖out − ref‖ / ‖ref‖`.
//! - [`check_allclose`]: element-wise `|o − r| ≤ abs + rel·|r|`, after requiring NaN and ±inf at
//!   exactly the same positions (FlashMLA marks empty rows with lse = +inf, and a kernel that
//!   reads NaN-filled unused cache slots shows up as NaN).
//!
//! All sums are in f64. The metrics return NaN rather than panic when the lengths differ, so
//! any `metric < tol` test fails.

use rand::Rng;

/// `1 − 2Σxy / Σ(x² + y²)` in f64; 0 when both are all zero; NaN when the lengths differ.
pub fn calc_diff(x: &[f32], y: &[f32]) -> f64 {
    if x.len() != y.len() {
        return f64::NAN;
    }
    let mut xy = 0.0f64;
    let mut sq = 0.0f64;
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        xy += a * b;
        sq += a * a + b * b;
    }
    if sq == 0.0 { 0.0 } else { 1.0 - 2.0 * xy / sq }
}

/// `‖out − reference‖ / ‖reference‖` in f64 (`‖out‖` when the reference is all zero); NaN when
/// the lengths differ.
pub fn rel_l2(out: &[f32], reference: &[f32]) -> f64 {
    if out.len() != reference.len() {
        return f64::NAN;
    }
    let mut diff = 0.0f64;
    let mut norm = 0.0f64;
    let mut out_norm = 0.0f64;
    for (&o, &r) in out.iter().zip(reference) {
        let (o, r) = (o as f64, r as f64);
        diff += (o - r) * (o - r);
        norm += r * r;
        out_norm += o * o;
    }
    if norm == 0.0 { out_norm.sqrt() } else { (diff / norm).sqrt() }
}

/// Element-wise closeness: NaN and ±inf must sit at the same positions (same sign for inf), and
/// every finite pair must satisfy `|o − r| ≤ abs + rel·|r|`. The error message names the check,
/// the number of bad elements, and the worst one.
pub fn check_allclose(
    name: &str,
    out: &[f32],
    reference: &[f32],
    abs: f64,
    rel: f64,
) -> std::result::Result<(), String> {
    if out.len() != reference.len() {
        return Err(format!("{name}: length {} != reference length {}", out.len(), reference.len()));
    }
    for (i, (&o, &r)) in out.iter().zip(reference).enumerate() {
        let special_mismatch = if r.is_nan() || o.is_nan() {
            r.is_nan() != o.is_nan()
        } else if r.is_infinite() || o.is_infinite() {
            r != o
        } else {
            false
        };
        if special_mismatch {
            return Err(format!("{name}: NaN/inf positions differ, first at index {i}: out {o} vs reference {r}"));
        }
    }
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64)> = None; // (index, excess over tolerance)
    for (i, (&o, &r)) in out.iter().zip(reference).enumerate() {
        if !r.is_finite() {
            continue; // equal specials, checked above
        }
        let (o64, r64) = (o as f64, r as f64);
        let excess = (o64 - r64).abs() - (abs + rel * r64.abs());
        if excess > 0.0 {
            bad += 1;
            if worst.is_none_or(|(_, w)| excess > w) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let (o, r) = (out[i], reference[i]);
            Err(format!(
                "{name}: {bad} of {} elements exceed abs {abs:e} + rel {rel:e}·|ref|; worst at index {i}: \
                 out {o} vs reference {r} (|diff| {:e})",
                out.len(),
                (o as f64 - r as f64).abs()
            ))
        }
    }
}

/// One standard-normal sample (Box–Muller), for seeded test data on the CPU and GPU tests.
pub fn randn<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    // u1 in (0, 1] so ln(u1) is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `len` standard-normal samples from a seeded generator.
pub fn randn_vec(seed: u64, len: usize) -> Vec<f32> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| randn(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calc_diff_values() {
        assert_eq!(calc_diff(&[], &[]), 0.0);
        assert_eq!(calc_diff(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(calc_diff(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // Opposite vectors: 1 − 2·(−5)/10 = 2.
        assert!((calc_diff(&[1.0, 2.0], &[-1.0, -2.0]) - 2.0).abs() < 1e-12);
        // Orthogonal: 1.
        assert!((calc_diff(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        // x vs 1.01x: ‖0.01x‖² / (‖x‖² (1 + 1.0201)) = 1e-4 / 2.0201.
        let x = [3.0f32, -4.0];
        let y = [3.03f32, -4.04];
        assert!((calc_diff(&x, &y) - 1e-4 / 2.0201).abs() < 1e-9);
        // One side zero: 1.
        assert_eq!(calc_diff(&[0.0], &[5.0]), 1.0);
        assert!(calc_diff(&[1.0], &[1.0, 2.0]).is_nan());
        assert!(calc_diff(&[f32::NAN], &[1.0]).is_nan());
    }

    #[test]
    fn rel_l2_values() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // ‖(0, 1)‖ / ‖(3, 4)‖ = 0.2.
        assert!((rel_l2(&[3.0, 5.0], &[3.0, 4.0]) - 0.2).abs() < 1e-12);
        // Zero reference: ‖out‖.
        assert!((rel_l2(&[3.0, 4.0], &[0.0, 0.0]) - 5.0).abs() < 1e-12);
        assert_eq!(rel_l2(&[], &[]), 0.0);
        assert!(rel_l2(&[1.0], &[]).is_nan());
    }

    #[test]
    fn allclose_accepts_within_tolerance() {
        let r = [1.0f32, -2.0, 100.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let o = [1.0005f32, -2.001, 100.09, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        // Element 2 needs 1e-3 + 1e-3·100 = 0.101 ≥ 0.09.
        check_allclose("ok", &o, &r, 1e-3, 1e-3).expect("within tolerance");
    }

    #[test]
    fn allclose_reports_the_worst_element() {
        let r = [1.0f32, 2.0, 3.0, 4.0];
        let o = [1.0f32, 2.5, 3.0, 5.0];
        let err = check_allclose("tensor_x", &o, &r, 0.1, 0.0).expect_err("two bad elements");
        assert!(err.contains("tensor_x"), "{err}");
        assert!(err.contains("2 of 4"), "{err}");
        assert!(err.contains("index 3"), "{err}");
        assert!(err.contains("out 5"), "{err}");
        // Relative tolerance: |5 − 4| ≤ 0 + 0.25·4 passes, |2.5 − 2| ≤ 0.5 passes.
        check_allclose("rel", &o, &r, 0.0, 0.25).expect("relative tolerance");
    }

    #[test]
    fn allclose_requires_matching_specials() {
        let err = check_allclose("n", &[1.0, 2.0, 3.0], &[1.0, f32::NAN, 3.0], 1.0, 1.0).expect_err("NaN");
        assert!(err.contains("index 1"), "{err}");
        let err = check_allclose("n", &[1.0, f32::NAN], &[1.0, 2.0], 1.0, 1.0).expect_err("NaN in out");
        assert!(err.contains("index 1"), "{err}");
        // An infinite value is not "close" to a huge finite one, nor to the opposite infinity.
        check_allclose("i", &[f32::INFINITY], &[f32::MAX], 1e38, 1.0).expect_err("inf vs finite");
        check_allclose("i", &[f32::INFINITY], &[f32::NEG_INFINITY], 1.0, 1.0).expect_err("inf sign");
        check_allclose("len", &[1.0], &[1.0, 2.0], 1.0, 1.0).expect_err("length");
    }

    #[test]
    fn randn_has_unit_moments() {
        let v = randn_vec(7, 20_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert_eq!(randn_vec(7, 4), randn_vec(7, 4));
        assert_ne!(randn_vec(7, 4), randn_vec(8, 4));
    }
}
