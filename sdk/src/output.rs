//! A stage's answer, and [`Ranking`], the helper most plugins build it with.

use std::collections::HashMap;
use std::hash::Hash;

use crate::Candidates;
use crate::bindings::edgerec::plugin::types as wit;

/// A stage's answer: the kept candidates best first (input indices), optional
/// new scores and optional reason codes, both aligned with the order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    order: Vec<u32>,
    scores: Option<Vec<f32>>,
    reasons: Option<Vec<String>>,
}

impl Output {
    /// Keeps these candidates in this order, scores unchanged.
    pub fn from_order(order: Vec<u32>) -> Self {
        Output { order, scores: None, reasons: None }
    }

    /// Keeps every candidate as it came.
    pub fn unchanged(candidates: &Candidates) -> Self {
        Output::from_order((0..candidates.len() as u32).collect())
    }

    /// Sets new scores, one per entry of the order.
    pub fn with_scores(mut self, scores: Vec<f32>) -> Self {
        self.scores = Some(scores);
        self
    }

    /// Sets reason codes, one per entry of the order ("" for none).
    pub fn with_reasons(mut self, reasons: Vec<String>) -> Self {
        self.reasons = Some(reasons);
        self
    }

    /// The kept candidates' input indices, best first.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// New scores, if the stage re-scored.
    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }

    /// Reason codes, if any.
    pub fn reasons(&self) -> Option<&[String]> {
        self.reasons.as_deref()
    }

    pub(crate) fn into_wit(self) -> wit::Output {
        wit::Output { order: self.order, scores: self.scores, reasons: self.reasons }
    }
}

/// One candidate in a [`Ranking`].
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Index into the stage's input.
    pub index: u32,
    /// Current score.
    pub score: f32,
    /// Reason code for the explain mode ("" for none).
    pub reason: String,
}

/// A working list of candidates that a plugin filters, re-scores and re-orders,
/// then turns into an [`Output`]. Starts as the input, in input order.
#[derive(Clone, Debug)]
pub struct Ranking {
    entries: Vec<Entry>,
    rescored: bool,
}

impl Ranking {
    /// Every candidate, in input order, with its current score.
    pub fn new(candidates: &Candidates) -> Self {
        let entries = candidates
            .scores()
            .iter()
            .enumerate()
            .map(|(i, &score)| Entry { index: i as u32, score, reason: String::new() })
            .collect();
        Ranking { entries, rescored: false }
    }

    /// The entries, best first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the entries for which `keep` is true, in order.
    pub fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        self.entries.retain(keep);
    }

    /// Lets `f` change scores and reasons; the output then carries the new scores.
    pub fn rescore(&mut self, f: impl FnMut(&mut Entry)) {
        self.entries.iter_mut().for_each(f);
        self.rescored = true;
    }

    /// Stable sort by score, best first (ties keep their current order; NaN last).
    pub fn sort_by_score(&mut self) {
        self.entries.sort_by(|a, b| match (a.score.is_nan(), b.score.is_nan()) {
            (false, false) => b.score.total_cmp(&a.score),
            (nan_a, nan_b) => nan_a.cmp(&nan_b),
        });
    }

    /// Moves the entries for which `sink` is true after all the others, keeping
    /// the relative order within both groups.
    pub fn bury(&mut self, mut sink: impl FnMut(&Entry) -> bool) {
        let (kept, sunk): (Vec<Entry>, Vec<Entry>) = self.entries.drain(..).partition(|e| !sink(e));
        self.entries = kept;
        self.entries.extend(sunk);
    }

    /// Stable sort by a key of your own (ascending).
    pub fn sort_by_key<K: Ord>(&mut self, key: impl FnMut(&Entry) -> K) {
        self.entries.sort_by_key(key);
    }

    /// Keeps the first `n` entries.
    pub fn keep_first(&mut self, n: usize) {
        self.entries.truncate(n);
    }

    /// Moves the entry at position `from` to position `to` (clamped to the end),
    /// shifting the others.
    pub fn move_to(&mut self, from: usize, to: usize) {
        if from >= self.entries.len() {
            return;
        }
        let entry = self.entries.remove(from);
        let to = to.min(self.entries.len());
        self.entries.insert(to, entry);
    }

    /// Within the first `top` positions, allows at most `max_per_group` entries per
    /// group (`group(index)`; `None` = ungrouped, never capped). The entries over
    /// the cap move just after the top window, keeping their relative order, and
    /// their places are filled by the next entries that fit.
    pub fn cap_per_group<K: Eq + Hash>(&mut self, top: usize, max_per_group: usize, group: impl Fn(u32) -> Option<K>) {
        let mut counts: HashMap<K, usize> = HashMap::new();
        let mut head = Vec::with_capacity(top.min(self.entries.len()));
        let mut overflow = Vec::new();
        let mut rest = Vec::new();
        for entry in self.entries.drain(..) {
            if head.len() >= top {
                rest.push(entry);
                continue;
            }
            match group(entry.index) {
                Some(key) => {
                    let count = counts.entry(key).or_insert(0);
                    if *count < max_per_group {
                        *count += 1;
                        head.push(entry);
                    } else {
                        overflow.push(entry);
                    }
                }
                None => head.push(entry),
            }
        }
        head.extend(overflow);
        head.extend(rest);
        self.entries = head;
    }

    /// The output: the order, the scores if [`rescore`](Self::rescore) was used,
    /// the reasons if any entry has one.
    pub fn into_output(self) -> Output {
        let order = self.entries.iter().map(|e| e.index).collect();
        let scores = self.rescored.then(|| self.entries.iter().map(|e| e.score).collect());
        let any_reason = self.entries.iter().any(|e| !e.reason.is_empty());
        let reasons = any_reason.then(|| self.entries.into_iter().map(|e| e.reason).collect());
        Output { order, scores, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(scores: &[f32]) -> Candidates {
        Candidates::new((0..scores.len() as u64).collect(), scores.to_vec())
    }

    #[test]
    fn sort_is_stable_and_puts_nan_last() {
        let mut r = Ranking::new(&cands(&[0.5, f32::NAN, 0.9, 0.5, 0.1]));
        r.sort_by_score();
        let order: Vec<u32> = r.entries().iter().map(|e| e.index).collect();
        assert_eq!(order, vec![2, 0, 3, 4, 1]);
    }

    #[test]
    fn cap_per_group_moves_overflow_after_the_window() {
        // groups: a a a b b c ; cap 1 per group within top 3.
        let groups = ["a", "a", "a", "b", "b", "c"];
        let mut r = Ranking::new(&cands(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]));
        r.cap_per_group(3, 1, |i| Some(groups[i as usize]));
        let order: Vec<u32> = r.entries().iter().map(|e| e.index).collect();
        assert_eq!(order, vec![0, 3, 5, 1, 2, 4]);
    }

    #[test]
    fn output_carries_scores_only_when_rescored() {
        let c = cands(&[1.0, 2.0]);
        let mut r = Ranking::new(&c);
        r.sort_by_score();
        let out = r.into_output();
        assert_eq!(out.order(), &[1, 0]);
        assert_eq!(out.scores(), None);
        assert_eq!(out.reasons(), None);
    }

    #[test]
    fn select_gathers_every_column_and_missing_rows() {
        let c = Candidates::new(vec![7, 8, 9], vec![0.1, 0.2, 0.3])
            .with_f64("p", vec![Some(1.0), None, Some(3.0)])
            .with_string("cat", vec![Some("x"), Some("y"), None])
            .with_string_list("tags", vec![Some(vec!["a", "b"]), None, Some(vec![])]);
        let s = c.select(&[2, 1]);
        assert_eq!(s.ids(), &[9, 8]);
        assert_eq!(s.f64("p").unwrap().get(0), Some(3.0));
        assert_eq!(s.f64("p").unwrap().get(1), None);
        assert_eq!(s.string("cat").unwrap().get(0), None);
        assert_eq!(s.string("cat").unwrap().get(1), Some("y"));
        assert_eq!(s.string_list("tags").unwrap().get(0), Some(vec![]));
        assert_eq!(s.string_list("tags").unwrap().get(1), None);
        assert!(c.string_list("tags").unwrap().contains(0, "b"));
    }
}
