//! One query's running selection during a scan: every row whose
//! approximate score reaches the keep threshold, pruned by partial selection
//! (no heap, no full sort) whenever the buffer doubles.

use std::cmp::Ordering;

use super::bound::keep_threshold;

/// A row and its approximate (quantised) score.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub approx: f32,
    pub row: u32,
}

fn higher_first(a: &Candidate, b: &Candidate) -> Ordering {
    b.approx.total_cmp(&a.approx)
}

/// The rows a query keeps: all rows whose approximation `A` satisfies
/// `A ≥ A₍ₖ₎ − 2W` where `A₍ₖ₎` is the k-th best approximation seen so far.
/// The threshold only rises, so a row dropped is never needed again.
pub(crate) struct Selection {
    k: usize,
    twice_bound: f64,
    threshold: f32,
    capacity: usize,
    candidates: Vec<Candidate>,
}

impl Selection {
    /// An empty selection for the best `k` (k ≥ 1) under a bound of `twice_bound / 2`.
    pub fn new(k: usize, twice_bound: f64) -> Self {
        Selection {
            k,
            twice_bound,
            threshold: f32::NEG_INFINITY,
            // Saturating: k may be anything a caller passes.
            capacity: k.saturating_mul(2).max(64),
            candidates: Vec::new(),
        }
    }

    /// Rows with an approximation below this can be skipped.
    #[inline]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Raises the threshold to `threshold` when that is higher: another part
    /// of the same scan proved every row below it unnecessary.
    #[inline]
    pub fn raise(&mut self, threshold: f32) {
        if threshold > self.threshold {
            self.threshold = threshold;
        }
    }

    /// Keeps a row whose approximation reached [`Selection::threshold`];
    /// true when that raised the threshold (worth sharing).
    #[inline]
    pub fn push(&mut self, approx: f32, row: u32) -> bool {
        self.candidates.push(Candidate { approx, row });
        if self.candidates.len() >= self.capacity {
            let before = self.threshold;
            self.prune();
            return self.threshold > before;
        }
        false
    }

    /// Raises the threshold to the k-th best approximation kept minus 2W and
    /// drops what fell below it. Ties at the k-th value may keep the buffer
    /// large: the capacity then doubles so that pruning stays amortised O(1).
    fn prune(&mut self) {
        if self.candidates.len() > self.k {
            self.candidates.select_nth_unstable_by(self.k - 1, higher_first);
            let kth = self.candidates[self.k - 1].approx;
            self.threshold = self.threshold.max(keep_threshold(kth, self.twice_bound));
            let threshold = self.threshold;
            self.candidates.retain(|c| c.approx >= threshold);
        }
        self.capacity = self.capacity.max(2 * self.candidates.len());
    }

    /// Merges the selections of the parts of one scan and prunes once more:
    /// what is left is every row that may belong to the exact top-k.
    pub fn merge(parts: impl IntoIterator<Item = Selection>) -> Vec<Candidate> {
        let mut parts = parts.into_iter();
        let Some(mut all) = parts.next() else { return Vec::new() };
        for part in parts {
            all.threshold = all.threshold.max(part.threshold);
            all.candidates.extend(part.candidates);
        }
        all.prune();
        all.candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_row_within_twice_the_bound_of_the_kth() {
        let mut sel = Selection::new(3, 0.25);
        // 1000 rows with approximations 0.000, 0.001, … 0.999.
        for row in 0..1000u32 {
            let a = row as f32 / 1000.0;
            if a >= sel.threshold() {
                sel.push(a, row);
            }
        }
        let kept = Selection::merge([sel]);
        let mut rows: Vec<u32> = kept.iter().map(|c| c.row).collect();
        rows.sort_unstable();
        // k-th best is 0.997; everything ≥ 0.747 must be kept, nothing < 0.746 may be.
        assert!(rows.iter().all(|&r| r >= 746));
        assert!((747..1000).all(|r| rows.binary_search(&r).is_ok()));
    }

    #[test]
    fn a_huge_k_keeps_everything() {
        let mut sel = Selection::new(usize::MAX, 0.0);
        for row in 0..100u32 {
            sel.push(row as f32, row);
        }
        assert_eq!(Selection::merge([sel]).len(), 100);
    }

    #[test]
    fn ties_do_not_make_pruning_quadratic() {
        let mut sel = Selection::new(2, 0.0);
        for row in 0..100_000u32 {
            sel.push(1.0, row);
        }
        assert_eq!(Selection::merge([sel]).len(), 100_000);
    }
}
