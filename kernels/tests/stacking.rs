//! Batches whose users are stacked into shared products: bit-identical to
//! encoding the users one by one, for users short enough to share a group
//! and long enough to fill one alone, in one batch.

mod common;

use common::{Gaps, config, history, model};
use edgerec_kernels::{ModelConfig, UserHistory, encode, encode_batch};

fn check_batch(cfg: ModelConfig, seed: u64, lens: &[usize]) {
    let m = model(cfg.clone(), seed);
    let requests: Vec<_> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| history(len, cfg.num_items, Gaps::Anything, seed * 97 + i as u64))
        .collect();
    let users: Vec<UserHistory<'_>> =
        requests.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
    let batch = encode_batch(&m, &users).expect("valid batch");
    assert_eq!(batch.len(), lens.len());
    for (u, ((events, q), got)) in requests.iter().zip(&batch).enumerate() {
        let alone = encode(&m, events, *q).expect("valid request");
        assert_eq!(got, &alone, "user {u} (len {}) differs from its encode alone", lens[u]);
    }
}

#[test]
fn mixed_lengths_at_the_ml_1m_shape_are_bit_identical() {
    // 1..200 events: several short users share a group, long ones fill it,
    // and a group boundary falls inside the batch more than once.
    let lens = [1, 2, 7, 31, 200, 199, 3, 64, 120, 200, 5, 6, 150, 1, 90, 200, 17, 33];
    check_batch(ModelConfig::ml_1m(400), 3, &lens);
}

#[test]
fn many_heads_odd_dims_and_windows_longer_than_l() {
    // H = 3, d_qk ≠ d_v, D not a multiple of 8; histories past L are cut to L.
    let cfg = config(90, 29, 2, 3, 13, 7, 70);
    let lens = [80, 1, 70, 69, 2, 150, 33, 71, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
    check_batch(cfg, 4, &lens);
}

#[test]
fn wide_layers_split_into_column_panels_too() {
    // D 256 and u|v|q|k 1,024 wide: the products run in column panels.
    let mut cfg = ModelConfig::ml_20m(300);
    cfg.num_layers = 1;
    check_batch(cfg, 5, &[3, 50, 120, 9, 1, 77]);
}
