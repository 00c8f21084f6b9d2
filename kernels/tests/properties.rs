//! Property tests of the CPU engine: jagged batch == one by one, incremental
//! == full re-encode, top-k == the first k of a full sort, exclusion holds.

mod common;

use common::{Gaps, config, history, model};
use edgerec_kernels::score::{better, score_all};
use edgerec_kernels::{
    EncoderState, Event, InputError, Model, Scored, UserHistory, encode, encode_batch, kept_items, top_k,
};
use proptest::prelude::*;

/// Incremental vs full re-encode: max |a − b| / max |b| ≤ 1e-5.
const INCREMENTAL_TOLERANCE: f32 = 1e-5;

fn small_model(seed: u64) -> Model {
    model(config(60, 13, 2, 2, 5, 7, 16), seed)
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn gaps(choice: u8) -> Gaps {
    match choice % 3 {
        0 => Gaps::Equal,
        1 => Gaps::Seconds,
        _ => Gaps::Anything,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn jagged_batch_equals_one_by_one(
        seed in 0u64..1000,
        lens in proptest::collection::vec(1usize..40, 1..9),
        gap in 0u8..3,
    ) {
        let m = small_model(seed);
        let requests: Vec<(Vec<Event>, i64)> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| history(len, 60, gaps(gap), seed * 31 + i as u64))
            .collect();
        let users: Vec<UserHistory<'_>> = requests
            .iter()
            .map(|(events, query_time)| UserHistory { events, query_time: *query_time })
            .collect();
        let batch = encode_batch(&m, &users).unwrap();
        for ((events, q), got) in requests.iter().zip(&batch) {
            prop_assert_eq!(got, &encode(&m, events, *q).unwrap());
        }
    }

    #[test]
    fn incremental_equals_full_reencode(
        seed in 0u64..1000,
        first in 1usize..14,
        appends in proptest::collection::vec(0usize..4, 1..6),
        gap in 0u8..3,
    ) {
        let m = small_model(seed);
        let total = first + appends.iter().sum::<usize>();
        let (events, _) = history(total, 60, gaps(gap), seed + 1);
        let mut sorted = events;
        sorted.sort_by_key(|e| e.ts);
        let (mut state, mut emb) = EncoderState::new(&m, &sorted[..first], sorted[first - 1].ts).unwrap();
        prop_assert_eq!(&emb, &encode(&m, &sorted[..first], sorted[first - 1].ts).unwrap());
        let mut seen = first;
        for (step, &count) in appends.iter().enumerate() {
            let batch = &sorted[seen..seen + count];
            seen += count;
            let q = sorted[seen - 1].ts + 37 * step as i64;
            emb = state.append(&m, batch, q).unwrap();
            let full = encode(&m, &sorted[..seen], q).unwrap();
            let err = rel_err(&emb, &full);
            prop_assert!(err <= INCREMENTAL_TOLERANCE, "after {} events: error {:e}", seen, err);
            let l = m.config.max_seq_len;
            prop_assert_eq!(state.events(), &sorted[seen.saturating_sub(l)..seen]);
        }
    }

    #[test]
    fn top_k_is_the_first_k_of_a_full_sort(
        seed in 0u64..1000,
        k in 0usize..80,
        exclude in proptest::collection::vec(0u32..70, 0..20),
    ) {
        let m = small_model(seed);
        let (events, q) = history(9, 60, Gaps::Seconds, seed);
        let emb = encode(&m, &events, q).unwrap();
        let got = top_k(&m, &emb, k, &exclude);
        let scores = score_all(&m, &emb);
        let mut all: Vec<Scored> = scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Scored { item: i as u32 + 1, score })
            .filter(|s| !exclude.contains(&s.item))
            .collect();
        all.sort_by(better);
        all.truncate(k);
        prop_assert_eq!(got, all);
    }

    #[test]
    fn no_history_item_is_returned_when_excluded(seed in 0u64..1000, len in 1usize..40) {
        let m = small_model(seed);
        let (events, q) = history(len, 60, Gaps::Anything, seed + 5);
        let emb = encode(&m, &events, q).unwrap();
        let window = kept_items(&m, &events, q).unwrap();
        let got = top_k(&m, &emb, 60, &window);
        prop_assert!(got.iter().all(|s| !window.contains(&s.item)));
        let distinct: std::collections::BTreeSet<u32> = window.iter().copied().collect();
        prop_assert_eq!(got.len(), 60 - distinct.len());
    }
}

#[test]
fn scores_are_the_cosine_and_ties_go_to_the_smaller_id() {
    let mut m = small_model(3);
    let d = m.config.d_model;
    // Items 5 and 9 identical: same score, 5 must come first.
    let row5 = m.weights.item_emb[5 * d..6 * d].to_vec();
    m.weights.item_emb[9 * d..10 * d].copy_from_slice(&row5);
    let m = Model::new(m.config.clone(), m.weights.clone()).unwrap();
    let norm5: f32 = row5.iter().map(|v| v * v).sum::<f32>().sqrt();
    let emb: Vec<f32> = row5.iter().map(|v| v / norm5).collect();
    let got = top_k(&m, &emb, 2, &[]);
    assert_eq!(got.iter().map(|s| s.item).collect::<Vec<_>>(), vec![5, 9]);
    assert!((got[0].score - 1.0).abs() < 1e-5);
    // k beyond the catalog returns the whole catalog, ordered.
    let all = top_k(&m, &emb, 10_000, &[]);
    assert_eq!(all.len(), 60);
    assert!(all.windows(2).all(|w| better(&w[0], &w[1]).is_lt()));
}

#[test]
fn hostile_requests_are_errors_not_panics() {
    let m = small_model(1);
    assert_eq!(encode(&m, &[], 10), Err(InputError::NoEvents));
    let bad = [Event { item: 61, ts: 1 }];
    assert_eq!(encode(&m, &bad, 10), Err(InputError::UnknownItem { item: 61, num_items: 60 }));
    let zero = [Event { item: 0, ts: 1 }];
    assert!(matches!(encode(&m, &zero, 10), Err(InputError::UnknownItem { item: 0, .. })));
    let late = [Event { item: 3, ts: 100 }, Event { item: 4, ts: 50 }];
    assert_eq!(encode(&m, &late, 99), Err(InputError::QueryBeforeLastEvent { query_time: 99, last_ts: 100 }));
    let users = [UserHistory { events: &late, query_time: 100 }, UserHistory { events: &bad, query_time: 10 }];
    assert_eq!(encode_batch(&m, &users).unwrap_err().index, 1);

    // A failed append leaves the state as it was.
    let (mut state, _) = EncoderState::new(&m, &late, 100).unwrap();
    let before = state.clone();
    assert!(state.append(&m, &bad, 200).is_err());
    assert!(state.append(&m, &[Event { item: 2, ts: 300 }], 299).is_err());
    assert_eq!(state, before);
}

#[test]
fn out_of_order_and_sliding_appends_fall_back_to_full_encode() {
    let m = small_model(8);
    let l = m.config.max_seq_len;
    let (events, q) = history(l + 5, 60, Gaps::Anything, 77);
    let mut sorted = events;
    sorted.sort_by_key(|e| e.ts);
    // Older-than-newest append: same as encoding everything.
    let (mut state, _) = EncoderState::new(&m, &sorted[1..8], q).unwrap();
    let got = state.append(&m, &sorted[..1], q).unwrap();
    assert_eq!(got, encode(&m, &sorted[..8], q).unwrap());
    // Window slides: the last L are kept.
    let (mut state, _) = EncoderState::new(&m, &sorted[..l - 1], q).unwrap();
    let got = state.append(&m, &sorted[l - 1..], q).unwrap();
    assert_eq!(got, encode(&m, &sorted, q).unwrap());
    assert_eq!(state.events(), &sorted[5..]);
}

#[test]
fn state_size_follows_the_documented_formula() {
    let m = model(config(60, 20, 3, 2, 5, 7, 30), 2);
    let c = &m.config;
    let (events, q) = history(25, 60, Gaps::Seconds, 3);
    let mut sorted = events;
    sorted.sort_by_key(|e| e.ts);
    let (mut state, _) = EncoderState::new(&m, &sorted[..20], q).unwrap();
    let formula = |n: usize| 56 + 48 * c.num_layers + 16 * n + 4 * n * c.num_layers * c.num_heads * (c.d_qk + c.d_v);
    assert_eq!(state.size_bytes(), formula(20));
    state.append(&m, &sorted[20..], q).unwrap();
    assert_eq!(state.size_bytes(), formula(25));
}
