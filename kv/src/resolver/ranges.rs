//! Half-open key ranges `[begin, end)`: normalising lists of them, intersecting two normalised
//! lists, and a set of disjoint ranges (a transaction's buffered `clear_range`s).
//!
//! Invariant of a *normalised* list: sorted by `begin`, every range non-empty, no two ranges
//! overlapping or touching.

/// A half-open key range `[begin, end)`.
pub(crate) type Range = (Vec<u8>, Vec<u8>);

/// Sorts `ranges`, drops empty ones and coalesces overlapping or touching ones.
pub(crate) fn normalize(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.retain(|(b, e)| b < e);
    ranges.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (b, e) in ranges {
        match out.last_mut() {
            Some(last) if b <= last.1 => {
                if e > last.1 {
                    last.1 = e;
                }
            }
            _ => out.push((b, e)),
        }
    }
    out
}

/// Whether two normalised lists share at least one key.
pub(crate) fn intersects(a: &[Range], b: &[Range]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].1 <= b[j].0 {
            i += 1;
        } else if b[j].1 <= a[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

/// A set of keys given as disjoint ranges, kept normalised.
#[derive(Clone, Debug, Default)]
pub(crate) struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Adds `[begin, end)`; does nothing for an empty range.
    pub(crate) fn insert(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        // Ranges entirely before `begin` (their end < begin) stay; so do those after `end`.
        let lo = self.ranges.partition_point(|(_, e)| e.as_slice() < begin);
        let hi = self.ranges.partition_point(|(b, _)| b.as_slice() <= end);
        let mut nb = begin.to_vec();
        let mut ne = end.to_vec();
        if lo < hi {
            if self.ranges[lo].0 < nb {
                nb = self.ranges[lo].0.clone();
            }
            if self.ranges[hi - 1].1 > ne {
                ne = self.ranges[hi - 1].1.clone();
            }
        }
        self.ranges.splice(lo..hi, std::iter::once((nb, ne)));
    }

    /// Whether `key` lies in one of the ranges.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        let idx = self.ranges.partition_point(|(b, _)| b.as_slice() <= key);
        idx > 0 && key < self.ranges[idx - 1].1.as_slice()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    pub(crate) fn into_ranges(self) -> Vec<Range> {
        self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &str, e: &str) -> Range {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn normalize_merges_and_drops_empty() {
        let got = normalize(vec![r("d", "f"), r("a", "b"), r("b", "c"), r("x", "x"), r("e", "g"), r("z", "y")]);
        assert_eq!(got, vec![r("a", "c"), r("d", "g")]);
    }

    #[test]
    fn intersects_half_open() {
        assert!(!intersects(&[r("a", "b")], &[r("b", "c")]));
        assert!(intersects(&[r("a", "b1")], &[r("b", "c")]));
        assert!(intersects(&[r("a", "b"), r("m", "n")], &[r("c", "d"), r("m0", "m1")]));
        assert!(!intersects(&[r("a", "b"), r("m", "n")], &[r("c", "d"), r("n", "o")]));
        assert!(!intersects(&[], &[r("a", "z")]));
    }

    #[test]
    fn range_set_insert_and_contains() {
        let mut s = RangeSet::default();
        assert!(s.is_empty());
        s.insert(b"c", b"e");
        s.insert(b"a", b"b");
        s.insert(b"x", b"x");
        assert_eq!(s.ranges(), &[r("a", "b"), r("c", "e")]);
        assert!(s.contains(b"a") && s.contains(b"a\xff") && !s.contains(b"b"));
        assert!(s.contains(b"d") && !s.contains(b"e") && !s.contains(b"0"));
        // Bridges and absorbs both neighbours, including a touching one.
        s.insert(b"a5", b"c");
        assert_eq!(s.ranges(), &[r("a", "e")]);
        s.insert(b"e", b"f");
        assert_eq!(s.clone().into_ranges(), vec![r("a", "f")]);
        s.insert(b"b", b"c");
        assert_eq!(s.ranges(), &[r("a", "f")]);
        s.insert(b"0", b"z");
        assert_eq!(s.ranges(), &[r("0", "z")]);
    }
}
