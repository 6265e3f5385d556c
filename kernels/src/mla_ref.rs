//! MLA decode reference (FlashMLA `flash_mla_with_kvcache` semantics, dense paged cache).
//!
//! Absorbed-MQA form: every query head attends to one latent KV head of width 576, and V is the
//! first 512 columns of K (there is no separate V tensor).
//!
//! Layouts (all row-major, f32 here; bf16 on the GPU):
//! - q `[batch][s_q][h_q][576]`, kcache `[num_blocks][64][h_kv][576]`,
//!   block_table `[batch][max_blocks_per_seq]` i32, seqlens `[batch]` i32;
//! - out `[batch][s_q][h_q][512]`, lse `[batch][h_q][s_q]` (transposed, as FlashMLA).
//!
//! Token `t` of request `r` lives in page `block_table[r][t/64]`, slot `t%64`. Query head `h`
//! reads KV head `h / (h_q/h_kv)`. With `causal && s_q > 1`, query row `s` sees keys
//! `t ≤ seqlen − s_q + s`; otherwise it sees `[0, seqlen)`. A row that sees no key gets out 0 and
//! lse +inf in the final output (−inf in a [`Partial`], which is what the combine expects).
//!
//! Invariants the tests enforce: only the first `ceil(seqlen/64)` block-table entries of a
//! request and only its first `seqlen` token slots are ever read (tests put 2147480000 in
//! unused entries and NaN in unused slots). Scores, the softmax and `o` are computed in f64.
//!
//! [`mla_partial`] is the split-KV building block (one request, one token range, normalized by
//! its own softmax sum, with its own lse); `plan::combine` merges partials by lse weighting.
//! [`mla_decode_naive_f64`] is a deliberately separate, dense two-pass implementation used to
//! check [`mla_decode_ref`].

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::error::{KernelError, Result, ensure};

/// K head dimension (512 latent + 64 RoPE).
pub const D_K: usize = 576;
/// V head dimension (the first 512 columns of K).
pub const D_V: usize = 512;
/// Tokens per KV-cache page.
pub const PAGE: usize = 64;
/// What [`random_case`] stores in unused block-table entries (FlashMLA's tests do the same).
pub const UNUSED_BLOCK: i32 = 2_147_480_000;

/// Problem shape of one MLA decode call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaShape {
    pub batch: usize,
    pub s_q: usize,
    pub h_q: usize,
    pub h_kv: usize,
    pub num_blocks: usize,
    pub max_blocks_per_seq: usize,
}

impl MlaShape {
    /// All dimensions ≥ 1 (num_blocks may be 0), `h_q % h_kv == 0`, and no size overflows.
    pub fn validate(&self) -> Result<()> {
        let s = self;
        ensure(s.batch >= 1 && s.s_q >= 1 && s.h_q >= 1 && s.h_kv >= 1 && s.max_blocks_per_seq >= 1, || {
            format!("MLA shape {s:?}: batch, s_q, h_q, h_kv and max_blocks_per_seq must be ≥ 1")
        })?;
        ensure(s.h_q.is_multiple_of(s.h_kv), || format!("h_q {} is not a multiple of h_kv {}", s.h_q, s.h_kv))?;
        let prod = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let fits = prod(&[s.batch, s.s_q, s.h_q, D_K]).is_some()
            && prod(&[s.num_blocks, PAGE, s.h_kv, D_K]).is_some()
            && prod(&[s.batch, s.max_blocks_per_seq, PAGE]).is_some();
        ensure(fits, || format!("MLA shape {s:?} overflows usize"))
    }

    /// Query rows of one request, ordered `[s_q][h_q]`.
    pub fn rows_per_request(&self) -> usize {
        self.s_q * self.h_q
    }

    /// Query heads per KV head.
    pub fn heads_per_kv(&self) -> usize {
        self.h_q / self.h_kv.max(1)
    }

    pub fn q_len(&self) -> usize {
        self.batch.saturating_mul(self.s_q).saturating_mul(self.h_q).saturating_mul(D_K)
    }

    pub fn kcache_len(&self) -> usize {
        self.num_blocks.saturating_mul(PAGE).saturating_mul(self.h_kv).saturating_mul(D_K)
    }

    pub fn block_table_len(&self) -> usize {
        self.batch.saturating_mul(self.max_blocks_per_seq)
    }

    pub fn out_len(&self) -> usize {
        self.batch.saturating_mul(self.s_q).saturating_mul(self.h_q).saturating_mul(D_V)
    }

    pub fn lse_len(&self) -> usize {
        self.batch.saturating_mul(self.h_q).saturating_mul(self.s_q)
    }
}

/// Borrowed inputs of one MLA decode call.
#[derive(Clone, Copy, Debug)]
pub struct MlaInputs<'a> {
    pub shape: MlaShape,
    /// `[batch][s_q][h_q][576]`.
    pub q: &'a [f32],
    /// `[num_blocks][64][h_kv][576]`.
    pub kcache: &'a [f32],
    /// `[batch][max_blocks_per_seq]`.
    pub block_table: &'a [i32],
    /// `[batch]`.
    pub seqlens: &'a [i32],
    pub softmax_scale: f32,
    pub causal: bool,
}

impl MlaInputs<'_> {
    /// Slice lengths, `0 ≤ seqlen ≤ max_blocks_per_seq·64`, and every used block-table entry
    /// (the first `ceil(seqlen/64)` of a request) in `[0, num_blocks)`.
    pub fn validate(&self) -> Result<()> {
        let s = &self.shape;
        s.validate()?;
        let lens = [
            ("q", self.q.len(), s.q_len()),
            ("kcache", self.kcache.len(), s.kcache_len()),
            ("block_table", self.block_table.len(), s.block_table_len()),
            ("seqlens", self.seqlens.len(), s.batch),
        ];
        for (name, got, want) in lens {
            ensure(got == want, || format!("{name} has {got} elements, shape {s:?} needs {want}"))?;
        }
        ensure(self.softmax_scale.is_finite(), || format!("softmax_scale {} is not finite", self.softmax_scale))?;
        for (r, &len) in self.seqlens.iter().enumerate() {
            ensure(len >= 0 && len as usize <= s.max_blocks_per_seq * PAGE, || {
                format!("seqlen {len} of request {r} outside [0, {}]", s.max_blocks_per_seq * PAGE)
            })?;
            let used = (len as usize).div_ceil(PAGE);
            let row = &self.block_table[r * s.max_blocks_per_seq..][..used];
            if let Some(j) = row.iter().position(|&p| p < 0 || p as usize >= s.num_blocks) {
                return Err(KernelError::InvalidArgument(format!(
                    "block_table[{r}][{j}] = {} outside [0, {})",
                    row[j], s.num_blocks
                )));
            }
        }
        Ok(())
    }

    /// Sequence length of request `r` (validated inputs only).
    fn seqlen(&self, r: usize) -> usize {
        self.seqlens[r] as usize
    }

    /// Exclusive end of the keys query row `s` may see in a request of length `len`.
    fn visible_end(&self, s: usize, len: usize) -> usize {
        if self.causal && self.shape.s_q > 1 { (len + s + 1).saturating_sub(self.shape.s_q).min(len) } else { len }
    }

    /// Offset of token `t` of request `r`, KV head 0, in `kcache`.
    fn token_offset(&self, r: usize, t: usize) -> usize {
        let page = self.block_table[r * self.shape.max_blocks_per_seq + t / PAGE] as usize;
        (page * PAGE + t % PAGE) * self.shape.h_kv * D_K
    }
}

/// Attention of one request over one token range: rows ordered `[s_q][h_q]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub rows: usize,
    /// `[rows][512]`, normalized by this range's own softmax sum.
    pub o: Vec<f32>,
    /// `[rows]`, natural-log sum of exp(score) over the range; −inf when the row saw no key in
    /// it (then its `o` row is 0).
    pub lse: Vec<f32>,
}

/// Final output of an MLA decode call.
#[derive(Clone, Debug, PartialEq)]
pub struct MlaOutput {
    /// `[batch][s_q][h_q][512]`.
    pub out: Vec<f32>,
    /// `[batch][h_q][s_q]`; +inf for rows that saw no key.
    pub lse: Vec<f32>,
}

/// Attention of request `req` over keys `[token_begin, token_end)` only; causal masking still
/// uses absolute positions.
pub fn mla_partial(inp: &MlaInputs, req: usize, token_begin: usize, token_end: usize) -> Result<Partial> {
    inp.validate()?;
    let sh = &inp.shape;
    ensure(req < sh.batch, || format!("request {req} out of range (batch {})", sh.batch))?;
    let len = inp.seqlen(req);
    ensure(token_begin <= token_end && token_end <= len, || {
        format!("token range [{token_begin}, {token_end}) outside request {req} of length {len}")
    })?;
    let rows = sh.rows_per_request();
    let group = sh.heads_per_kv();
    let scale = inp.softmax_scale as f64;
    let mut o = vec![0.0f32; rows * D_V];
    let mut lse = vec![f32::NEG_INFINITY; rows];
    let offsets: Vec<usize> = (token_begin..token_end).map(|t| inp.token_offset(req, t)).collect();
    let mut scores = vec![0.0f64; offsets.len()];
    let mut acc = vec![0.0f64; D_V];
    for s in 0..sh.s_q {
        let end = token_end.min(inp.visible_end(s, len));
        if end <= token_begin {
            continue; // no visible key in this range: o 0, lse −inf
        }
        let keys = &offsets[..end - token_begin];
        for h in 0..sh.h_q {
            let row = s * sh.h_q + h;
            let head_off = (h / group) * D_K;
            let q = &inp.q[((req * sh.s_q + s) * sh.h_q + h) * D_K..][..D_K];
            let mut max = f64::NEG_INFINITY;
            for (score, &off) in scores.iter_mut().zip(keys) {
                let k = &inp.kcache[off + head_off..][..D_K];
                let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                *score = scale * dot;
                max = max.max(*score);
            }
            acc.fill(0.0);
            let mut sum = 0.0f64;
            for (&score, &off) in scores.iter().zip(keys) {
                let w = (score - max).exp();
                sum += w;
                let v = &inp.kcache[off + head_off..][..D_V];
                for (a, &x) in acc.iter_mut().zip(v) {
                    *a += w * x as f64;
                }
            }
            lse[row] = (max + sum.ln()) as f32;
            for (dst, &a) in o[row * D_V..(row + 1) * D_V].iter_mut().zip(&acc) {
                *dst = (a / sum) as f32;
            }
        }
    }
    Ok(Partial { rows, o, lse })
}

/// Lays out one finished [`Partial`] per request as the final output: `o` rows copied, lse
/// transposed to `[h_q][s_q]`, and rows with lse −inf get out 0 and lse +inf.
pub fn finalize(shape: &MlaShape, per_request: &[Partial]) -> Result<MlaOutput> {
    shape.validate()?;
    ensure(per_request.len() == shape.batch, || format!("{} partials for batch {}", per_request.len(), shape.batch))?;
    let rows = shape.rows_per_request();
    let mut out = vec![0.0f32; shape.out_len()];
    let mut lse = vec![0.0f32; shape.lse_len()];
    for (r, p) in per_request.iter().enumerate() {
        ensure(p.rows == rows && p.o.len() == rows * D_V && p.lse.len() == rows, || {
            format!(
                "partial of request {r} has {} rows / {} o / {} lse, want {rows} rows",
                p.rows,
                p.o.len(),
                p.lse.len()
            )
        })?;
        for s in 0..shape.s_q {
            for h in 0..shape.h_q {
                let row = s * shape.h_q + h;
                let l = p.lse[row];
                let dst = &mut out[(r * rows + row) * D_V..][..D_V];
                if l == f32::NEG_INFINITY {
                    lse[(r * shape.h_q + h) * shape.s_q + s] = f32::INFINITY;
                    dst.fill(0.0);
                } else {
                    lse[(r * shape.h_q + h) * shape.s_q + s] = l;
                    dst.copy_from_slice(&p.o[row * D_V..][..D_V]);
                }
            }
        }
    }
    Ok(MlaOutput { out, lse })
}

/// The reference: per request, [`mla_partial`] over `[0, seqlen)`, then [`finalize`].
pub fn mla_decode_ref(inp: &MlaInputs) -> Result<MlaOutput> {
    inp.validate()?;
    let parts = (0..inp.shape.batch).map(|r| mla_partial(inp, r, 0, inp.seqlen(r))).collect::<Result<Vec<_>>>()?;
    finalize(&inp.shape, &parts)
}

/// Independent naive implementation in f64: gather each request's K densely, two-pass softmax
/// with max subtraction. Same layouts as [`MlaOutput`] (out `[b][s_q][h_q][512]`, lse
/// `[b][h_q][s_q]`, +inf for rows with no visible key).
pub fn mla_decode_naive_f64(inp: &MlaInputs) -> Result<(Vec<f64>, Vec<f64>)> {
    inp.validate()?;
    let sh = inp.shape;
    let mut out = vec![0.0f64; sh.out_len()];
    let mut lse = vec![0.0f64; sh.lse_len()];
    for b in 0..sh.batch {
        let len = inp.seqlens[b] as usize;
        // Dense K of this request: [len][h_kv][576] in f64.
        let mut k = Vec::with_capacity(len * sh.h_kv * D_K);
        for t in 0..len {
            let page = inp.block_table[b * sh.max_blocks_per_seq + t / PAGE] as usize;
            let slot = page * PAGE + t % PAGE;
            k.extend(inp.kcache[slot * sh.h_kv * D_K..(slot + 1) * sh.h_kv * D_K].iter().map(|&x| x as f64));
        }
        for s in 0..sh.s_q {
            // Keys 0..=len−s_q+s under causal masking (none if that is negative).
            let visible =
                if inp.causal && sh.s_q > 1 { (len as i64 - (sh.s_q - 1 - s) as i64).max(0) as usize } else { len };
            for h in 0..sh.h_q {
                let g = h * sh.h_kv / sh.h_q;
                let q0 = ((b * sh.s_q + s) * sh.h_q + h) * D_K;
                let q = &inp.q[q0..q0 + D_K];
                let out_row = &mut out[((b * sh.s_q + s) * sh.h_q + h) * D_V..][..D_V];
                let lse_at = (b * sh.h_q + h) * sh.s_q + s;
                if visible == 0 {
                    lse[lse_at] = f64::INFINITY;
                    continue;
                }
                let key = |t: usize| &k[(t * sh.h_kv + g) * D_K..(t * sh.h_kv + g + 1) * D_K];
                let logits: Vec<f64> = (0..visible)
                    .map(|t| {
                        let kt = key(t);
                        inp.softmax_scale as f64 * (0..D_K).map(|d| q[d] as f64 * kt[d]).sum::<f64>()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = logits.iter().map(|&x| (x - m).exp()).collect();
                let z: f64 = p.iter().sum();
                lse[lse_at] = m + z.ln();
                for (d, o) in out_row.iter_mut().enumerate() {
                    *o = (0..visible).map(|t| p[t] / z * key(t)[d]).sum();
                }
            }
        }
    }
    Ok((out, lse))
}

fn bf16_sample<R: rand::Rng + ?Sized>(rng: &mut R) -> f32 {
    half::bf16::from_f32((crate::check::randn(rng) / 10.0).clamp(-1.0, 1.0)).to_f32()
}

/// Seeded random MLA case in FlashMLA's test style: q and K values are `randn/10` clamped to
/// [−1, 1] and rounded to bf16 (returned as exact f32), pages are assigned to the requests' used
/// blocks in a random permutation of `0..num_blocks`, unused token slots hold NaN and unused
/// block-table entries hold [`UNUSED_BLOCK`]. Returns `(q, kcache, block_table, seqlens)`.
///
/// `causal` does not change the data (masking is a property of the call, not the cache); it
/// is taken so case descriptions read the same at every call site.
///
/// # Panics
/// Test-data helper: panics when `shape` is invalid, `lengths.len() != batch`, a length exceeds
/// `max_blocks_per_seq·64`, or the used blocks do not fit in `num_blocks`.
pub fn random_case(
    seed: u64,
    shape: MlaShape,
    lengths: &[usize],
    causal: bool,
) -> (Vec<f32>, Vec<f32>, Vec<i32>, Vec<i32>) {
    let _ = causal;
    if let Err(e) = shape.validate() {
        panic!("random_case: {e}");
    }
    assert_eq!(lengths.len(), shape.batch, "random_case: one length per request");
    assert!(
        lengths.iter().all(|&l| l <= shape.max_blocks_per_seq * PAGE),
        "random_case: a length exceeds max_blocks_per_seq·64 = {}",
        shape.max_blocks_per_seq * PAGE
    );
    let used_blocks: usize = lengths.iter().map(|l| l.div_ceil(PAGE)).sum();
    assert!(used_blocks <= shape.num_blocks, "random_case: {used_blocks} used blocks > num_blocks");

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let q: Vec<f32> = (0..shape.q_len()).map(|_| bf16_sample(&mut rng)).collect();
    let mut pages: Vec<usize> = (0..shape.num_blocks).collect();
    pages.shuffle(&mut rng);
    let mut next_page = pages.into_iter();
    let mut block_table = vec![UNUSED_BLOCK; shape.block_table_len()];
    let mut kcache = vec![f32::NAN; shape.kcache_len()];
    let token = shape.h_kv * D_K;
    for (r, &len) in lengths.iter().enumerate() {
        for j in 0..len.div_ceil(PAGE) {
            let page = next_page.next().expect("checked: used blocks ≤ num_blocks");
            block_table[r * shape.max_blocks_per_seq + j] = page as i32;
            let slots = (len - j * PAGE).min(PAGE);
            for v in &mut kcache[page * PAGE * token..][..slots * token] {
                *v = bf16_sample(&mut rng);
            }
        }
    }
    let seqlens = lengths.iter().map(|&l| l as i32).collect();
    (q, kcache, block_table, seqlens)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// An owned random case (see [`random_case`]) that hands out [`MlaInputs`].
    pub(crate) struct Case {
        pub shape: MlaShape,
        pub q: Vec<f32>,
        pub kcache: Vec<f32>,
        pub block_table: Vec<i32>,
        pub seqlens: Vec<i32>,
        pub causal: bool,
    }

    impl Case {
        /// A case with 3 spare (never used, NaN) pages and one spare block-table column.
        pub fn new(seed: u64, s_q: usize, h_q: usize, h_kv: usize, lengths: &[usize], causal: bool) -> Case {
            let max_blocks = lengths.iter().map(|l| l.div_ceil(PAGE)).max().unwrap_or(0) + 1;
            let used: usize = lengths.iter().map(|l| l.div_ceil(PAGE)).sum();
            let shape =
                MlaShape { batch: lengths.len(), s_q, h_q, h_kv, num_blocks: used + 3, max_blocks_per_seq: max_blocks };
            let (q, kcache, block_table, seqlens) = random_case(seed, shape, lengths, causal);
            Case { shape, q, kcache, block_table, seqlens, causal }
        }

        pub fn inputs(&self) -> MlaInputs<'_> {
            MlaInputs {
                shape: self.shape,
                q: &self.q,
                kcache: &self.kcache,
                block_table: &self.block_table,
                seqlens: &self.seqlens,
                softmax_scale: 1.0 / (D_K as f32).sqrt(),
                causal: self.causal,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::Case;
    use super::*;

    /// Compares the reference with the naive f64 implementation at abs 1e-6, +inf lse included.
    fn check_against_naive(case: &Case) {
        let inp = case.inputs();
        let got = mla_decode_ref(&inp).expect("reference");
        let (out, lse) = mla_decode_naive_f64(&inp).expect("naive");
        assert_eq!(got.out.len(), out.len());
        assert_eq!(got.lse.len(), lse.len());
        for (i, (&a, &b)) in got.out.iter().zip(&out).enumerate() {
            assert!(a.is_finite() && (a as f64 - b).abs() <= 1e-6, "{:?}: out[{i}] {a} vs {b}", case.shape);
        }
        for (i, (&a, &b)) in got.lse.iter().zip(&lse).enumerate() {
            if b.is_infinite() {
                assert_eq!(a as f64, b, "{:?}: lse[{i}]", case.shape);
            } else {
                assert!((a as f64 - b).abs() <= 1e-6, "{:?}: lse[{i}] {a} vs {b}", case.shape);
            }
        }
    }

    #[test]
    fn matches_naive_on_edge_lengths() {
        let lengths = [0usize, 1, 63, 64, 65, 130];
        check_against_naive(&Case::new(1, 1, 1, 1, &lengths, false));
        check_against_naive(&Case::new(2, 1, 4, 2, &lengths, false));
    }

    #[test]
    fn matches_naive_causal_mtp() {
        // s_q = 2 causal: row 0 sees one key fewer; a length-1 request leaves row 0 empty.
        check_against_naive(&Case::new(3, 2, 4, 1, &[1, 64, 65, 0], true));
        check_against_naive(&Case::new(4, 2, 4, 2, &[2, 63, 130], true));
        // Non-causal s_q = 2 sees everything.
        check_against_naive(&Case::new(5, 2, 2, 2, &[1, 65], false));
    }

    #[test]
    fn matches_naive_random_cases() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        let choices = [0usize, 1, 63, 64, 65, 130];
        for seed in 0..6 {
            let batch = rng.random_range(1..=3);
            let lengths: Vec<usize> = (0..batch).map(|_| choices[rng.random_range(0..choices.len())]).collect();
            let h_kv = rng.random_range(1..=2);
            let h_q = h_kv * rng.random_range(1..=3);
            let s_q = rng.random_range(1..=2);
            check_against_naive(&Case::new(100 + seed, s_q, h_q, h_kv, &lengths, rng.random()));
        }
    }

    #[test]
    fn single_key_is_that_value_row() {
        let case = Case::new(7, 1, 2, 1, &[1], false);
        let inp = case.inputs();
        let got = mla_decode_ref(&inp).expect("reference");
        let page = case.block_table[0] as usize;
        let k = &case.kcache[page * PAGE * D_K..][..D_K];
        for h in 0..2 {
            assert_eq!(&got.out[h * D_V..(h + 1) * D_V], &k[..D_V]);
            let q = &case.q[h * D_K..(h + 1) * D_K];
            let score: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / 24.0;
            assert!((got.lse[h] as f64 - score).abs() < 1e-6, "lse {} vs score {score}", got.lse[h]);
        }
    }

    #[test]
    fn causal_empty_rows_are_zero_with_inf_lse() {
        // seqlen 1, s_q 3: rows 0 and 1 see nothing (t ≤ 1 − 3 + s), row 2 sees token 0.
        let case = Case::new(8, 3, 1, 1, &[1], true);
        let got = mla_decode_ref(&case.inputs()).expect("reference");
        assert_eq!(got.lse[..2], [f32::INFINITY, f32::INFINITY]);
        assert!(got.lse[2].is_finite());
        assert!(got.out[..2 * D_V].iter().all(|&v| v == 0.0));
        assert!(got.out[2 * D_V..].iter().any(|&v| v != 0.0));
        // The same case without causal masking: all three rows see token 0.
        let mut open = case;
        open.causal = false;
        let got = mla_decode_ref(&open.inputs()).expect("reference");
        assert!(got.lse.iter().all(|l| l.is_finite()));
    }

    #[test]
    fn partial_lse_adds_up() {
        // exp(lse) of disjoint ranges sums to exp(lse) of their union.
        let case = Case::new(9, 1, 2, 1, &[130], false);
        let inp = case.inputs();
        let whole = mla_partial(&inp, 0, 0, 130).expect("whole");
        let a = mla_partial(&inp, 0, 0, 64).expect("a");
        let b = mla_partial(&inp, 0, 64, 130).expect("b");
        for r in 0..2 {
            let sum = (a.lse[r] as f64).exp() + (b.lse[r] as f64).exp();
            assert!((sum.ln() - whole.lse[r] as f64).abs() < 1e-6);
        }
        let empty = mla_partial(&inp, 0, 5, 5).expect("empty range");
        assert!(empty.lse.iter().all(|&l| l == f32::NEG_INFINITY));
        assert!(empty.o.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn random_case_layout() {
        let shape = MlaShape { batch: 2, s_q: 1, h_q: 2, h_kv: 2, num_blocks: 5, max_blocks_per_seq: 3 };
        let (q, kcache, bt, seqlens) = random_case(11, shape, &[65, 0], false);
        assert_eq!((q.len(), kcache.len(), bt.len()), (shape.q_len(), shape.kcache_len(), 6));
        assert_eq!(seqlens, vec![65, 0]);
        assert!(bt[2..].iter().all(|&e| e == UNUSED_BLOCK));
        let (p0, p1) = (bt[0] as usize, bt[1] as usize);
        assert!(p0 < 5 && p1 < 5 && p0 != p1);
        let token = 2 * D_K;
        assert!(kcache[p0 * PAGE * token..(p0 + 1) * PAGE * token].iter().all(|v| v.is_finite()));
        // Page p1 holds one token; the other 63 slots are NaN, as are the 3 unused pages.
        assert!(kcache[p1 * PAGE * token..][..token].iter().all(|v| v.is_finite()));
        assert!(kcache[p1 * PAGE * token + token..(p1 + 1) * PAGE * token].iter().all(|v| v.is_nan()));
        assert_eq!(kcache.iter().filter(|v| v.is_nan()).count(), (5 * PAGE - 65) * token);
        // bf16-representable and within [−1, 1].
        for &v in q.iter().chain(kcache.iter().filter(|v| v.is_finite())) {
            assert!(v.abs() <= 1.0 && half::bf16::from_f32(v).to_f32() == v);
        }
        // Deterministic per seed.
        assert_eq!(random_case(11, shape, &[65, 0], false).2, bt);
    }

    #[test]
    fn rejects_bad_inputs() {
        let case = Case::new(12, 1, 2, 1, &[65, 3], false);
        let bad = |inp: &MlaInputs| matches!(mla_decode_ref(inp), Err(KernelError::InvalidArgument(_)));
        let base = case.inputs();
        assert!(mla_decode_ref(&base).is_ok());

        let mut bt = case.block_table.clone();
        bt[1] = case.shape.num_blocks as i32; // second used block of request 0
        assert!(bad(&MlaInputs { block_table: &bt, ..base }));
        bt[1] = -1;
        assert!(bad(&MlaInputs { block_table: &bt, ..base }));

        let long = [(case.shape.max_blocks_per_seq * PAGE + 1) as i32, 3];
        assert!(bad(&MlaInputs { seqlens: &long, ..base }));
        assert!(bad(&MlaInputs { seqlens: &[-1, 3], ..base }));
        assert!(bad(&MlaInputs { q: &case.q[1..], ..base }));
        assert!(bad(&MlaInputs { softmax_scale: f32::NAN, ..base }));
        assert!(bad(&MlaInputs { shape: MlaShape { h_kv: 3, ..case.shape }, ..base }));
        assert!(bad(&MlaInputs { shape: MlaShape { batch: usize::MAX, ..case.shape }, ..base }));

        assert!(mla_partial(&base, 2, 0, 0).is_err());
        assert!(mla_partial(&base, 1, 0, 4).is_err());
        assert!(mla_partial(&base, 1, 2, 1).is_err());
        assert!(finalize(&case.shape, &[]).is_err());
    }
}
