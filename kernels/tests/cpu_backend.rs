//! The CPU backend's top-k (the quantised table, a batch in one pass) answers
//! exactly as the f32 scan `score::top_k` does for each user alone: items,
//! scores and tie order, with and without exclusions.

mod common;

use std::sync::Arc;

use common::config;
use edgerec_kernels::{Backend, CpuBackend, Model, top_k};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn a_batch_of_top_k_equals_the_f32_scan_of_each_user() {
    let model = Model::random(config(5_000, 32, 1, 1, 8, 8, 16), 11).expect("valid random model");
    let backend = CpuBackend::new(Arc::new(model.clone()));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let queries: Vec<Vec<f32>> = (0..9).map(|_| (0..32).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let exclude: Vec<Vec<u32>> = (0..9).map(|u| (0..u * 7).map(|_| rng.random_range(1..=5_000u32)).collect()).collect();
    let excluded: Vec<&[u32]> = exclude.iter().map(Vec::as_slice).collect();
    for k in [1, 10, 100] {
        let batch = backend.top_k_batch(&queries, k, &excluded).expect("valid call");
        let alone: Vec<_> = queries.iter().zip(&exclude).map(|(q, x)| top_k(&model, q, k, x)).collect();
        assert_eq!(batch, alone, "k = {k}");
        let unexcluded = backend.top_k_batch(&queries, k, &[]).expect("valid call");
        assert_eq!(unexcluded[3], top_k(&model, &queries[3], k, &[]), "k = {k}, no exclusions");
    }
    assert!(backend.top_k_batch(&[vec![0.0; 31]], 10, &[]).is_err(), "a query of the wrong dimension is refused");
}
