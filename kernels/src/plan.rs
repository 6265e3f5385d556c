//! Split-KV planner (FlashMLA's cost model) and the LSE-weighted combine of partial results.
//!
//! Decoding a batch of requests with very different lengths on a fixed grid of SM "parts"
//! balances by splitting long requests across parts. Each request costs `ceil(len/64) + 5`
//! (blocks plus a fixed per-split overhead); every part gets about `ceil(total/num_parts) + 5`.
//! Parts are filled greedily in order, each with a contiguous run of (request, block): a request
//! that fits whole is taken whole, otherwise the part takes what fits (`room − 5` blocks) and the
//! rest of the request continues in the next part. The last part takes whatever is left, so the
//! plan never has more than `num_parts` parts.
//!
//! Invariants (tested): every block of every request is covered exactly once; every request has
//! at least one item (a zero-length request gets one empty item, so it still produces output);
//! a request's items are in block order and its `k`-th item writes split slot
//! `split_start[req] + k`; within a part items are in (request, block) order. The GPU kernel
//! writes one partial per split slot and [`combine`] merges a request's slots.

use crate::error::{KernelError, Result, ensure};
use crate::mla_ref::{D_V, PAGE, Partial};

/// Per-split overhead in the cost model, in units of 64-token blocks.
pub const FIXED_OVERHEAD_BLOCKS: u32 = 5;

/// One contiguous piece of work: request `req`'s KV blocks `[block_begin, block_end)`, i.e.
/// tokens `[block_begin·64, min(block_end·64, seqlen))`, written to split slot `split`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub req: u32,
    pub block_begin: u32,
    pub block_end: u32,
    pub split: u32,
}

impl WorkItem {
    /// Token range of this item for a request of length `seqlen`.
    pub fn tokens(&self, seqlen: usize) -> std::ops::Range<usize> {
        let begin = (self.block_begin as usize * PAGE).min(seqlen);
        begin..(self.block_end as usize * PAGE).min(seqlen)
    }
}

/// The plan: items grouped by part, and each request's split slots.
#[derive(Clone, Debug)]
pub struct SplitPlan {
    pub num_parts: usize,
    /// `num_parts + 1` prefix offsets into `items`.
    pub part_start: Vec<u32>,
    pub items: Vec<WorkItem>,
    /// `batch + 1` prefix sums: request `r` owns split slots `split_start[r]..split_start[r+1]`.
    pub split_start: Vec<u32>,
}

impl SplitPlan {
    /// Items of part `p` (panics if `p ≥ num_parts`, like indexing).
    pub fn items_of_part(&self, p: usize) -> &[WorkItem] {
        &self.items[self.part_start[p] as usize..self.part_start[p + 1] as usize]
    }

    /// Number of split slots (items) of request `req`.
    pub fn num_splits(&self, req: usize) -> usize {
        (self.split_start[req + 1] - self.split_start[req]) as usize
    }

    /// Total split slots (= items).
    pub fn total_splits(&self) -> usize {
        self.split_start.last().copied().unwrap_or(0) as usize
    }

    /// Items as 4 i32 each, in field order, for upload to the GPU.
    pub fn item_words(&self) -> Vec<i32> {
        self.items.iter().flat_map(|it| [it.req, it.block_begin, it.block_end, it.split]).map(|w| w as i32).collect()
    }

    /// `part_start` as i32.
    pub fn part_words(&self) -> Vec<i32> {
        self.part_start.iter().map(|&w| w as i32).collect()
    }

    /// `split_start` as i32.
    pub fn split_words(&self) -> Vec<i32> {
        self.split_start.iter().map(|&w| w as i32).collect()
    }
}

/// `max(num_sms / h_kv / ceil(q_rows_per_kv_head / tile_rows), 1)` with integer division, as
/// FlashMLA sizes its grid. Zero divisors count as 1.
pub fn num_sm_parts(num_sms: usize, h_kv: usize, q_rows_per_kv_head: usize, tile_rows: usize) -> usize {
    let tiles = q_rows_per_kv_head.div_ceil(tile_rows.max(1)).max(1);
    (num_sms / h_kv.max(1) / tiles).max(1)
}

/// Plans the split-KV work for requests of lengths `seqlens` over `num_parts` parts.
pub fn plan_splits(seqlens: &[i32], num_parts: usize) -> Result<SplitPlan> {
    ensure(num_parts > 0, || "num_parts must be ≥ 1".into())?;
    if let Some(r) = seqlens.iter().position(|&l| l < 0) {
        return Err(KernelError::InvalidArgument(format!("seqlen {} of request {r} is negative", seqlens[r])));
    }
    // Every request contributes at least one item and at most one per part beyond its first,
    // so this bounds every count the plan stores as u32 / uploads as i32.
    ensure(seqlens.len().saturating_add(num_parts) < i32::MAX as usize, || {
        format!("batch {} with {num_parts} parts is too large", seqlens.len())
    })?;
    let overhead = FIXED_OVERHEAD_BLOCKS as u64;
    let blocks: Vec<u64> = seqlens.iter().map(|&l| (l as u64).div_ceil(PAGE as u64)).collect();
    let total: u64 = blocks.iter().map(|b| b + overhead).sum();
    let payload = total.div_ceil(num_parts as u64) + overhead;

    let mut items: Vec<WorkItem> = Vec::new();
    let mut part_start = Vec::with_capacity(num_parts + 1);
    let (mut req, mut next_block) = (0usize, 0u64); // first block not yet assigned
    let item =
        |req: usize, b: u64, e: u64| WorkItem { req: req as u32, block_begin: b as u32, block_end: e as u32, split: 0 };
    for p in 0..num_parts {
        part_start.push(items.len() as u32);
        if p + 1 == num_parts {
            while req < blocks.len() {
                items.push(item(req, next_block, blocks[req]));
                (req, next_block) = (req + 1, 0);
            }
            break;
        }
        let mut room = payload;
        while req < blocks.len() {
            let remaining = blocks[req] - next_block;
            if remaining + overhead <= room {
                items.push(item(req, next_block, blocks[req]));
                room -= remaining + overhead;
                (req, next_block) = (req + 1, 0);
            } else {
                // The request does not fit: take what does (if anything) and close the part.
                // remaining > room − overhead, so a split always leaves blocks for later.
                if room > overhead {
                    let take = room - overhead;
                    items.push(item(req, next_block, next_block + take));
                    next_block += take;
                }
                break;
            }
        }
    }
    part_start.push(items.len() as u32);

    // Split slots: items are in global (request, block) order, so numbering them in order
    // numbers each request's items consecutively from its split_start.
    let mut split_start = vec![0u32; seqlens.len() + 1];
    for it in &items {
        split_start[it.req as usize + 1] += 1;
    }
    for r in 0..seqlens.len() {
        split_start[r + 1] += split_start[r];
    }
    for (k, it) in items.iter_mut().enumerate() {
        it.split = k as u32;
    }
    Ok(SplitPlan { num_parts, part_start, items, split_start })
}

/// LSE-weighted merge of partial results of the same rows over disjoint key ranges:
/// `lse = ln Σ exp(lse_i)` (max-subtracted, f64) and `o = Σ exp(lse_i − lse)·o_i`. Parts with
/// lse −inf contribute nothing; a row where all are −inf gets o 0 and lse −inf.
pub fn combine(parts: &[Partial]) -> Result<Partial> {
    let first = parts.first().ok_or_else(|| KernelError::InvalidArgument("combine of no partials".into()))?;
    let rows = first.rows;
    for (i, p) in parts.iter().enumerate() {
        ensure(p.rows == rows && p.o.len() == rows * D_V && p.lse.len() == rows, || {
            format!("partial {i}: {} rows / {} o / {} lse, want {rows} rows of {D_V}", p.rows, p.o.len(), p.lse.len())
        })?;
        if let Some(r) = p.lse.iter().position(|l| l.is_nan() || *l == f32::INFINITY) {
            return Err(KernelError::InvalidArgument(format!("partial {i} row {r}: lse {}", p.lse[r])));
        }
    }
    let mut o = vec![0.0f32; rows * D_V];
    let mut lse = vec![f32::NEG_INFINITY; rows];
    let mut acc = vec![0.0f64; D_V];
    for row in 0..rows {
        let max = parts.iter().map(|p| p.lse[row] as f64).fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = parts.iter().map(|p| (p.lse[row] as f64 - max).exp()).sum();
        let total = max + sum.ln();
        acc.fill(0.0);
        for p in parts {
            let w = (p.lse[row] as f64 - total).exp();
            if w == 0.0 {
                continue;
            }
            for (a, &x) in acc.iter_mut().zip(&p.o[row * D_V..(row + 1) * D_V]) {
                *a += w * x as f64;
            }
        }
        lse[row] = total as f32;
        for (dst, &a) in o[row * D_V..(row + 1) * D_V].iter_mut().zip(&acc) {
            *dst = a as f32;
        }
    }
    Ok(Partial { rows, o, lse })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mla_ref::testutil::Case;
    use crate::mla_ref::{finalize, mla_decode_ref, mla_partial};
    use proptest::prelude::*;

    /// Checks every structural invariant of a plan; panics with a description otherwise.
    fn check_plan(seqlens: &[i32], num_parts: usize, plan: &SplitPlan) {
        let blocks: Vec<u32> = seqlens.iter().map(|&l| (l as u32).div_ceil(64)).collect();
        let ctx = format!("seqlens {seqlens:?} parts {num_parts}");
        assert_eq!(plan.num_parts, num_parts, "{ctx}");
        assert_eq!(plan.part_start.len(), num_parts + 1, "{ctx}");
        assert_eq!(plan.part_start[0], 0, "{ctx}");
        assert_eq!(*plan.part_start.last().expect("non-empty") as usize, plan.items.len(), "{ctx}");
        assert!(plan.part_start.windows(2).all(|w| w[0] <= w[1]), "{ctx}");
        assert_eq!(plan.split_start.len(), seqlens.len() + 1, "{ctx}");
        assert_eq!(plan.total_splits(), plan.items.len(), "{ctx}");

        // Items in global (request, block) order, each request covered exactly once, contiguously.
        let mut next = vec![0u32; seqlens.len()];
        let mut count = vec![0usize; seqlens.len()];
        let mut prev: Option<WorkItem> = None;
        for it in &plan.items {
            let r = it.req as usize;
            assert!(r < seqlens.len(), "{ctx}: {it:?}");
            if let Some(p) = prev {
                assert!(
                    p.req < it.req || (p.req == it.req && p.block_end == it.block_begin),
                    "{ctx}: {p:?} then {it:?}"
                );
                // Previous requests must be finished before a later one starts.
                if p.req < it.req {
                    assert_eq!(next[p.req as usize], blocks[p.req as usize], "{ctx}: {p:?}");
                }
            }
            assert_eq!(it.block_begin, next[r], "{ctx}: gap or overlap at {it:?}");
            assert!(it.block_end <= blocks[r], "{ctx}: {it:?}");
            assert!(it.block_end > it.block_begin || blocks[r] == 0, "{ctx}: empty item {it:?}");
            assert_eq!(it.split as usize, plan.split_start[r] as usize + count[r], "{ctx}: split of {it:?}");
            next[r] = it.block_end;
            count[r] += 1;
            prev = Some(*it);
        }
        for r in 0..seqlens.len() {
            assert_eq!(next[r], blocks[r], "{ctx}: request {r} not fully covered");
            assert!(count[r] >= 1, "{ctx}: request {r} has no item");
            assert_eq!(plan.num_splits(r), count[r], "{ctx}");
        }
        // Every part but the last respects the payload.
        let total: u32 = blocks.iter().map(|b| b + FIXED_OVERHEAD_BLOCKS).sum();
        let payload = total.div_ceil(num_parts as u32) + FIXED_OVERHEAD_BLOCKS;
        for p in 0..num_parts.saturating_sub(1) {
            let cost: u32 =
                plan.items_of_part(p).iter().map(|it| it.block_end - it.block_begin + FIXED_OVERHEAD_BLOCKS).sum();
            assert!(cost <= payload, "{ctx}: part {p} cost {cost} > payload {payload}");
            // Greedy fullness: if work remains, the part stopped only because the next piece
            // (the rest of the boundary request) did not fit whole and no block of it fit either.
            if let Some(next) = plan.items.get(plan.part_start[p + 1] as usize) {
                let room = payload - cost;
                let remaining = blocks[next.req as usize] - next.block_begin;
                assert!(
                    remaining + FIXED_OVERHEAD_BLOCKS > room && room <= FIXED_OVERHEAD_BLOCKS,
                    "{ctx}: part {p} stopped with room {room} before {next:?}"
                );
            }
        }
        // GPU words mirror the structs.
        let words = plan.item_words();
        assert_eq!(words.len(), 4 * plan.items.len());
        for (w, it) in words.chunks(4).zip(&plan.items) {
            assert_eq!(w, [it.req as i32, it.block_begin as i32, it.block_end as i32, it.split as i32]);
        }
        assert_eq!(plan.part_words().len(), num_parts + 1);
        assert_eq!(plan.split_words(), plan.split_start.iter().map(|&x| x as i32).collect::<Vec<_>>());
    }

    #[test]
    fn hand_worked_example() {
        // blocks [0, 10], costs [5, 15], total 20, payload 10 + 5 = 15. Part 0 takes request 0
        // whole (room 10), then 5 blocks of request 1; part 1 takes the remaining 5.
        let plan = plan_splits(&[0, 640], 2).expect("plan");
        let w = |req, block_begin, block_end, split| WorkItem { req, block_begin, block_end, split };
        assert_eq!(plan.items, vec![w(0, 0, 0, 0), w(1, 0, 5, 1), w(1, 5, 10, 2)]);
        assert_eq!(plan.part_start, vec![0, 2, 3]);
        assert_eq!(plan.split_start, vec![0, 1, 3]);
        assert_eq!(plan.items[1].tokens(640), 0..320);
        assert_eq!(plan.items[0].tokens(0), 0..0);
        check_plan(&[0, 640], 2, &plan);
    }

    #[test]
    fn short_tail_is_clamped_to_seqlen() {
        let plan = plan_splits(&[65], 1).expect("plan");
        assert_eq!(plan.items, vec![WorkItem { req: 0, block_begin: 0, block_end: 2, split: 0 }]);
        assert_eq!(plan.items[0].tokens(65), 0..65);
    }

    #[test]
    fn coverage_on_fixed_lengths() {
        let seqlens = [0, 1, 63, 64, 65, 4096, 100_000, 0, 7];
        for parts in [1, 2, 7, 66, 132] {
            check_plan(&seqlens, parts, &plan_splits(&seqlens, parts).expect("plan"));
        }
        // One long request over many parts splits many times.
        let plan = plan_splits(&[100_000], 132).expect("plan");
        check_plan(&[100_000], 132, &plan);
        assert!(plan.num_splits(0) > 100, "{}", plan.num_splits(0));
        // More parts than work: trailing parts are empty.
        let plan = plan_splits(&[1], 132).expect("plan");
        check_plan(&[1], 132, &plan);
        assert_eq!(plan.items.len(), 1);
        // Empty batch.
        check_plan(&[], 3, &plan_splits(&[], 3).expect("plan"));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(matches!(plan_splits(&[1], 0), Err(KernelError::InvalidArgument(_))));
        assert!(matches!(plan_splits(&[1, -1], 4), Err(KernelError::InvalidArgument(_))));
    }

    #[test]
    fn num_sm_parts_values() {
        assert_eq!(num_sm_parts(132, 1, 128, 64), 66);
        assert_eq!(num_sm_parts(132, 1, 64, 64), 132);
        assert_eq!(num_sm_parts(132, 2, 256, 64), 16);
        assert_eq!(num_sm_parts(132, 8, 1000, 64), 1);
        assert_eq!(num_sm_parts(0, 0, 0, 0), 1);
    }

    proptest! {
        #[test]
        fn plan_covers_everything(
            lens in proptest::collection::vec(
                prop_oneof![
                    Just(0i32), Just(1), Just(63), Just(64), Just(65), Just(4096), Just(100_000), 0i32..5000
                ],
                0..12,
            ),
            parts in prop_oneof![Just(1usize), Just(2), Just(7), Just(66), Just(132), 1usize..200],
        ) {
            let plan = plan_splits(&lens, parts).expect("plan");
            check_plan(&lens, parts, &plan);
        }
    }

    #[test]
    fn combine_weights_by_lse() {
        let d = D_V;
        let p = |lse: f32, v: f32| Partial { rows: 1, o: vec![v; d], lse: vec![lse] };
        // Equal lse: average, lse + ln 2.
        let c = combine(&[p(0.5, 1.0), p(0.5, 3.0)]).expect("combine");
        assert!((c.lse[0] - (0.5 + 2f32.ln())).abs() < 1e-6);
        assert!(c.o.iter().all(|&v| (v - 2.0).abs() < 1e-6));
        // −inf parts contribute nothing; all −inf gives o 0, lse −inf.
        let c = combine(&[p(f32::NEG_INFINITY, 100.0), p(1.0, 3.0)]).expect("combine");
        assert_eq!(c.lse[0], 1.0);
        assert!(c.o.iter().all(|&v| v == 3.0));
        let c = combine(&[p(f32::NEG_INFINITY, 100.0)]).expect("combine");
        assert_eq!(c.lse[0], f32::NEG_INFINITY);
        assert!(c.o.iter().all(|&v| v == 0.0));
        // Large lse values do not overflow (max subtraction).
        let c = combine(&[p(1000.0, 1.0), p(1000.0 + 3f32.ln(), 5.0)]).expect("combine");
        assert!(c.o.iter().all(|&v| (v - 4.0).abs() < 1e-4), "{}", c.o[0]);
        assert!(combine(&[]).is_err());
        assert!(combine(&[p(0.0, 1.0), Partial { rows: 2, o: vec![0.0; 2 * d], lse: vec![0.0; 2] }]).is_err());
        assert!(combine(&[p(f32::NAN, 1.0)]).is_err());
    }

    /// Plans `case` over `num_parts`, computes one partial per item, combines per request and
    /// checks the result against the unsplit reference. Returns the largest split count.
    fn split_equals_unsplit(case: &Case, num_parts: usize) -> usize {
        let inp = case.inputs();
        let plan = plan_splits(&case.seqlens, num_parts).expect("plan");
        check_plan(&case.seqlens, num_parts, &plan);
        let mut slots: Vec<Option<Partial>> = vec![None; plan.total_splits()];
        for p in 0..num_parts {
            for it in plan.items_of_part(p) {
                let toks = it.tokens(case.seqlens[it.req as usize] as usize);
                let part = mla_partial(&inp, it.req as usize, toks.start, toks.end).expect("partial");
                assert!(slots[it.split as usize].replace(part).is_none(), "split slot written twice");
            }
        }
        let mut per_request = Vec::new();
        for r in 0..case.shape.batch {
            let range = plan.split_start[r] as usize..plan.split_start[r + 1] as usize;
            let parts: Vec<Partial> = slots[range].iter().map(|s| s.clone().expect("every slot written")).collect();
            per_request.push(combine(&parts).expect("combine"));
        }
        let got = finalize(&case.shape, &per_request).expect("finalize");
        let want = mla_decode_ref(&inp).expect("reference");
        let ctx = format!("{:?} seqlens {:?} parts {num_parts}", case.shape, case.seqlens);
        crate::check::check_allclose(&format!("out {ctx}"), &got.out, &want.out, 1e-5, 0.0).expect("out");
        crate::check::check_allclose(&format!("lse {ctx}"), &got.lse, &want.lse, 1e-5, 0.0).expect("lse");
        (0..case.shape.batch).map(|r| plan.num_splits(r)).max().unwrap_or(0)
    }

    #[test]
    fn split_and_combine_equals_unsplit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        let choices = [0usize, 1, 63, 64, 65, 200];
        for seed in 0..5 {
            let batch = rng.random_range(1..=4);
            let lengths: Vec<usize> = (0..batch).map(|_| choices[rng.random_range(0..choices.len())]).collect();
            let h_kv = rng.random_range(1..=2);
            let h_q = if rng.random() { 16 } else { h_kv };
            let s_q = rng.random_range(1..=2);
            let case = Case::new(500 + seed, s_q, h_q, h_kv, &lengths, rng.random());
            for parts in [1, 2, 3, 8] {
                split_equals_unsplit(&case, parts);
            }
        }
    }

    #[test]
    fn many_splits_per_request() {
        // One 1000-token request (16 blocks) plus short ones over 8 parts: payload ≈ 8, so the
        // long request is cut into several 3-block pieces.
        let case = Case::new(77, 2, 2, 1, &[1000, 1, 0], true);
        let splits = split_equals_unsplit(&case, 8);
        assert!(splits >= 4, "only {splits} splits");
        let case = Case::new(78, 1, 16, 2, &[1000], false);
        assert!(split_equals_unsplit(&case, 8) >= 4);
    }
}
