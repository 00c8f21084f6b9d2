//! Catalog scoring: cosine of a user embedding against every item, top-k by
//! partial selection, ties by the smaller id, excluded ids skipped.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::microkernel::dot;
use crate::model::Model;

/// One recommended item and its cosine score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Model item id, 1..=V.
    pub item: u32,
    /// `u · E[item] / max(‖E[item]‖, 1e-6)` (u is already unit length).
    pub score: f32,
}

/// Floor of an item's norm in the cosine, as in the reference.
pub(crate) const NORM_FLOOR: f32 = 1e-6;
/// Items scored per parallel task: large enough that a task outweighs its
/// scheduling, small enough that a 1M catalog spreads over every core.
const ITEMS_PER_TASK: usize = 16 * 1024;

/// Best first: higher score, then smaller id. `total_cmp` gives NaN a fixed
/// place instead of breaking the sort's contract.
pub fn better(a: &Scored, b: &Scored) -> Ordering {
    b.score.total_cmp(&a.score).then(a.item.cmp(&b.item))
}

/// Cosine scores of items 1..=V (index `c - 1` holds item c).
///
/// # Panics
/// If `user_embedding.len()` is not the model's D (a caller bug, not user input).
pub fn score_all(model: &Model, user_embedding: &[f32]) -> Vec<f32> {
    let d = model.config.d_model;
    assert_eq!(user_embedding.len(), d, "user embedding has {} values, the model's D is {d}", user_embedding.len());
    let items = &model.weights.item_emb[d..];
    let norms = &model.item_norms[1..];
    let mut scores = vec![0.0f32; model.config.num_items];
    scores
        .par_chunks_mut(ITEMS_PER_TASK)
        .zip(items.par_chunks(ITEMS_PER_TASK * d))
        .zip(norms.par_chunks(ITEMS_PER_TASK))
        .for_each(|((out, rows), norms)| score_chunk(user_embedding, rows, norms, out));
    scores
}

/// Cosines of one chunk of item rows; compiled with and without AVX2 and
/// picked at run time (the default x86-64 target only has SSE2).
fn score_chunk(user: &[f32], rows: &[f32], norms: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { score_chunk_avx2(user, rows, norms, out) };
    }
    score_chunk_body(user, rows, norms, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_chunk_avx2(user: &[f32], rows: &[f32], norms: &[f32], out: &mut [f32]) {
    score_chunk_body(user, rows, norms, out)
}

#[inline(always)]
fn score_chunk_body(user: &[f32], rows: &[f32], norms: &[f32], out: &mut [f32]) {
    for ((s, row), &norm) in out.iter_mut().zip(rows.chunks_exact(user.len())).zip(norms) {
        *s = cosine(user, row, norm);
    }
}

/// The f32 cosine every exact path computes: `dot(user, row) / max(norm, 1e-6)`
/// with `norm` from [`item_norm`](crate::model::item_norm). One function, so that the quantised
/// retrieval's re-rank (`crate::retrieval`) gives bit-identical scores.
#[inline(always)]
pub(crate) fn cosine(user: &[f32], row: &[f32], norm: f32) -> f32 {
    dot(user, row) / norm.max(NORM_FLOOR)
}

/// Cosine top-k over items 1..=V, best first, ties by smaller id, `exclude`
/// ids skipped (ids outside 1..=V in `exclude` are ignored). Returns fewer
/// than `k` items when the catalog minus the exclusions is smaller.
///
/// # Panics
/// If `user_embedding.len()` is not the model's D (a caller bug, not user input).
pub fn top_k(model: &Model, user_embedding: &[f32], k: usize, exclude: &[u32]) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    let scores = score_all(model, user_embedding);
    select_top_k(&scores, k, exclude)
}

/// Top-k of precomputed scores (index `c - 1` is item c), by partial
/// selection: O(V) to select, then O(k log k) to order the k.
pub fn select_top_k(scores: &[f32], k: usize, exclude: &[u32]) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    let mut excluded: Vec<u32> = exclude.to_vec();
    excluded.sort_unstable();
    let mut next_excluded = excluded.iter().peekable();
    let mut candidates: Vec<Scored> = Vec::with_capacity(scores.len().saturating_sub(excluded.len()));
    for (index, &score) in scores.iter().enumerate() {
        let item = index as u32 + 1;
        // Walk the sorted exclusions alongside the ascending ids.
        while next_excluded.next_if(|&&e| e < item).is_some() {}
        if next_excluded.peek().is_some_and(|&&e| e == item) {
            continue;
        }
        candidates.push(Scored { item, score });
    }
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, better);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(better);
    candidates
}
