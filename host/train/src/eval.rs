//! Evaluation with the engine: every case is encoded by
//! `edgerec_kernels::encode::encode_batch` and ranked by
//! `edgerec_kernels::score::top_k` with the kept window excluded, so what is
//! measured is what the server serves. The popularity baseline ranks the most
//! popular items of the training histories with the same exclusion.

use std::cmp::Ordering;

use edgerec_kernels::Model;
use edgerec_kernels::encode::encode_batch;
use edgerec_kernels::history::{Event, UserHistory, kept_items};
use edgerec_kernels::score::{Scored, better, score_all, top_k};

use crate::error::TrainError;
use crate::metrics::{CUTOFFS, Metrics, MetricsAccumulator};
use crate::split::{EvalCase, UserSequence};

/// Users encoded per engine call (bounds the memory of one batch).
const CHUNK: usize = 512;

/// The engine events of a case's history.
pub fn case_events(sequences: &[UserSequence], case: &EvalCase) -> Vec<Event> {
    let seq = &sequences[case.user_index];
    (0..case.history_len).map(|i| Event { item: seq.items[i], ts: seq.timestamps[i] }).collect()
}

/// 1-based rank of `target` among items not in `exclude`, given the engine's
/// top list for the largest cut-off; beyond it, counted over the full scores
/// with the engine's ordering (higher score, then smaller id).
fn rank_of(model: &Model, embedding: &[f32], top: &[Scored], target: u32, exclude: &[u32]) -> Option<usize> {
    if exclude.contains(&target) {
        return None;
    }
    if let Some(pos) = top.iter().position(|s| s.item == target) {
        return Some(pos + 1);
    }
    let mut excluded = exclude.to_vec();
    excluded.sort_unstable();
    let scores = score_all(model, embedding);
    let target_scored = Scored { item: target, score: scores[target as usize - 1] };
    let ahead = scores
        .iter()
        .enumerate()
        .map(|(i, &score)| Scored { item: i as u32 + 1, score })
        .filter(|s| excluded.binary_search(&s.item).is_err() && better(s, &target_scored) == Ordering::Less)
        .count();
    Some(ahead + 1)
}

/// Evaluates a model on cases with the engine (full catalog, kept window excluded).
pub fn evaluate_model(model: &Model, sequences: &[UserSequence], cases: &[EvalCase]) -> Result<Metrics, TrainError> {
    let mut acc = MetricsAccumulator::default();
    let max_k = *CUTOFFS.last().expect("cut-offs");
    for chunk in cases.chunks(CHUNK) {
        let events: Vec<Vec<Event>> = chunk.iter().map(|c| case_events(sequences, c)).collect();
        let users: Vec<UserHistory<'_>> =
            events.iter().zip(chunk).map(|(e, c)| UserHistory { events: e, query_time: c.target_ts }).collect();
        let embeddings = encode_batch(model, &users).map_err(|e| TrainError::Engine(e.to_string()))?;
        for ((case, events), embedding) in chunk.iter().zip(&events).zip(&embeddings) {
            let exclude = kept_items(model, events, case.target_ts).map_err(|e| TrainError::Engine(e.to_string()))?;
            let top = top_k(model, embedding, max_k, &exclude);
            acc.add(rank_of(model, embedding, &top, case.target, &exclude));
        }
    }
    Ok(acc.finish())
}

/// Item counts over the histories of `cases` plus users that have no case.
pub fn popularity(sequences: &[UserSequence], cases: &[EvalCase], num_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; num_items + 1];
    let mut history_len: Vec<usize> = sequences.iter().map(UserSequence::len).collect();
    for case in cases {
        history_len[case.user_index] = case.history_len;
    }
    for (seq, &len) in sequences.iter().zip(&history_len) {
        for &item in &seq.items[..len] {
            counts[item as usize] += 1;
        }
    }
    counts
}

/// The popularity baseline: items ranked by training count (ties by smaller
/// id), the same kept-window exclusion as the model (window length `max_seq_len`).
pub fn evaluate_popularity(
    sequences: &[UserSequence],
    cases: &[EvalCase],
    num_items: usize,
    max_seq_len: usize,
) -> Metrics {
    let counts = popularity(sequences, cases, num_items);
    let mut order: Vec<u32> = (1..=num_items as u32).collect();
    order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    let mut acc = MetricsAccumulator::default();
    for case in cases {
        let seq = &sequences[case.user_index];
        let mut window = seq.items[case.history_len.saturating_sub(max_seq_len)..case.history_len].to_vec();
        window.sort_unstable();
        if window.binary_search(&case.target).is_ok() {
            acc.add(None);
            continue;
        }
        let mut rank = 0;
        for &item in &order {
            if window.binary_search(&item).is_ok() {
                continue;
            }
            rank += 1;
            if item == case.target {
                break;
            }
        }
        acc.add(Some(rank));
    }
    acc.finish()
}
