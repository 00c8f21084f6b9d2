//! The portable kernels (the path taken where AVX2/FMA is absent), forced on
//! a machine that has them: the same reference tolerances as `parity.rs`,
//! and a batch still bit-identical to one by one. This file is its own test
//! binary, so the switch does not affect the other tests.

mod common;
mod reference;

use common::{Gaps, config, history, model};
use edgerec_kernels::{EncoderState, ModelConfig, UserHistory, encode, encode_batch, set_portable, simd_in_use};

const TOLERANCE: f64 = 1e-4;

#[test]
fn portable_path_matches_the_reference_batch_and_incremental() {
    set_portable(true);
    assert!(!simd_in_use());
    let shapes = [config(37, 13, 1, 2, 5, 7, 12), config(29, 30, 3, 3, 25, 5, 16), ModelConfig::ml_1m(300)];
    for (s, cfg) in shapes.into_iter().enumerate() {
        let m = model(cfg.clone(), 40 + s as u64);
        let mut requests = Vec::new();
        for (len, gaps) in [(1, Gaps::Equal), (9, Gaps::Seconds), (cfg.max_seq_len, Gaps::Anything)] {
            let (events, q) = history(len, cfg.num_items, gaps, 7 * s as u64 + len as u64);
            let fast = encode(&m, &events, q).expect("valid request");
            let err = reference::rel_err(&fast, &reference::encode(&m, &events, q));
            assert!(err <= TOLERANCE, "shape {s} len {len}: {err:e}");
            requests.push((events, q));
        }
        let users: Vec<UserHistory<'_>> =
            requests.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
        let batch = encode_batch(&m, &users).expect("valid batch");
        for ((events, q), got) in requests.iter().zip(&batch) {
            assert_eq!(got, &encode(&m, events, *q).expect("valid request"));
        }
        // +2 events on a state, against the reference.
        let (events, _) = history(cfg.max_seq_len.min(12), cfg.num_items, Gaps::Anything, 99);
        let mut sorted = events;
        sorted.sort_by_key(|e| e.ts);
        let n = sorted.len();
        let (mut state, _) = EncoderState::new(&m, &sorted[..n - 2], sorted[n - 3].ts).expect("valid");
        let q = sorted[n - 1].ts + 5;
        let got = state.append(&m, &sorted[n - 2..], q).expect("valid append");
        let err = reference::rel_err(&got, &reference::encode(&m, &sorted, q));
        assert!(err <= TOLERANCE, "shape {s} incremental: {err:e}");
    }
    set_portable(false);
}
