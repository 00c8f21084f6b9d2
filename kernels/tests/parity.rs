//! The fast f32 forward against the plain f64 reference forward.
//!
//! Tolerance: max_i |fast_i − ref_i| / max_i |ref_i| ≤ 1e-4 (the error
//! relative to the embedding's largest component; components are not
//! compared one by one because a near-zero component has no meaningful
//! relative error).

mod common;
mod reference;

use common::{Gaps, config, history, model};
use edgerec_kernels::{EncoderState, Event, ModelConfig, encode};

const TOLERANCE: f64 = 1e-4;

/// Error relative to the reference embedding's largest component.
fn rel_err(fast: &[f32], exact: &[f64]) -> f64 {
    reference::rel_err(fast, exact)
}

fn check(cfg: ModelConfig, seed: u64, len: usize, gaps: Gaps) -> f64 {
    let m = model(cfg.clone(), seed);
    let (events, query_time) = history(len, cfg.num_items, gaps, seed ^ 0x5eed);
    let fast = encode(&m, &events, query_time).expect("valid request");
    let exact = reference::encode(&m, &events, query_time);
    let err = rel_err(&fast, &exact);
    assert!(err <= TOLERANCE, "config {cfg:?} len {len} gaps {gaps:?}: relative error {err:e} > {TOLERANCE:e}");
    let norm: f32 = fast.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "embedding not unit length: {norm}");
    err
}

#[test]
fn odd_shapes_match_the_reference() {
    // D not a multiple of 8, head dims 5 and 25, H > 1, d_qk ≠ d_v, 1..3 layers.
    let shapes = [
        config(37, 13, 1, 2, 5, 7, 12),
        config(50, 50, 2, 2, 25, 25, 20),
        config(29, 30, 3, 3, 25, 5, 16),
        config(41, 21, 2, 1, 5, 5, 9),
        config(64, 50, 2, 1, 50, 50, 24),
    ];
    let mut worst = 0.0f64;
    for (s, cfg) in shapes.into_iter().enumerate() {
        for (len, gaps) in
            [(1, Gaps::Anything), (2, Gaps::Equal), (7, Gaps::Seconds), (cfg.max_seq_len, Gaps::Anything)]
        {
            worst = worst.max(check(cfg.clone(), 100 + s as u64, len, gaps));
        }
    }
    eprintln!("worst relative error over the odd shapes: {worst:e}");
}

#[test]
fn histories_longer_than_l_keep_the_last_l() {
    let cfg = config(40, 18, 2, 2, 5, 4, 10);
    for len in [11, 25, 60] {
        check(cfg.clone(), 7, len, Gaps::Anything);
    }
    // And the dropped events really do not matter.
    let m = model(cfg.clone(), 7);
    let (events, q) = history(30, cfg.num_items, Gaps::Seconds, 9);
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e.ts);
    let tail = &sorted[sorted.len() - cfg.max_seq_len..];
    assert_eq!(encode(&m, &events, q).unwrap(), encode(&m, tail, q).unwrap());
}

#[test]
fn equal_timestamps_and_huge_gaps() {
    let cfg = config(25, 16, 2, 2, 8, 8, 12);
    for (seed, gaps) in [(1, Gaps::Equal), (2, Gaps::Anything), (3, Gaps::Seconds)] {
        check(cfg.clone(), seed, 12, gaps);
    }
    // Gaps of decades, and a query far in the future: the top bucket.
    let m = model(cfg.clone(), 4);
    let events: Vec<Event> = (0..6).map(|i| Event { item: 1 + i as u32, ts: i * 400_000_000 }).collect();
    let q = 10_000_000_000;
    let err = rel_err(&encode(&m, &events, q).unwrap(), &reference::encode(&m, &events, q));
    assert!(err <= TOLERANCE, "{err:e}");
}

#[test]
fn production_shapes_match_the_reference() {
    // The ML-1M base shape at full length, and a narrowed ML-20M (4 heads of
    // 64, fewer items so the f64 reference stays quick).
    check(ModelConfig::ml_1m(300), 11, 200, Gaps::Anything);
    let mut ml20 = ModelConfig::ml_20m(500);
    ml20.num_layers = 2;
    check(ml20, 12, 120, Gaps::Anything);
}

#[test]
fn incremental_matches_the_reference_too() {
    let cfg = config(30, 13, 2, 2, 5, 7, 15);
    let m = model(cfg.clone(), 21);
    let (events, _) = history(12, cfg.num_items, Gaps::Anything, 22);
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e.ts);
    let (mut state, _) = EncoderState::new(&m, &sorted[..5], sorted[4].ts).unwrap();
    let q = sorted[11].ts + 50;
    let fast = state.append(&m, &sorted[5..], q).unwrap();
    let err = rel_err(&fast, &reference::encode(&m, &sorted, q));
    assert!(err <= TOLERANCE, "{err:e}");
}

#[test]
fn bucket_matches_the_float32_reference_formula() {
    let cfg = ModelConfig::ml_1m(10);
    for delta in [-5_000_000_000i64, -86_400, -1, 0, 1, 2, 3, 20, 1_000, 86_400, 31_536_000, i64::MAX / 2] {
        assert_eq!(
            edgerec_kernels::history::time_bucket(&cfg, delta),
            reference::bucket(delta, 128, 0.301),
            "delta {delta}"
        );
    }
    assert_eq!(edgerec_kernels::history::time_bucket(&cfg, 0), 0);
    assert_eq!(edgerec_kernels::history::time_bucket(&cfg, 1 << 62), 128);
}
