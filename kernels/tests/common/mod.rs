//! Random models and histories shared by the kernel tests.

#![allow(dead_code)]

use edgerec_kernels::{Event, Model, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A research-variant config of arbitrary dimensions (N = L + 3, alpha 1).
pub fn config(
    num_items: usize,
    d_model: usize,
    num_layers: usize,
    num_heads: usize,
    d_qk: usize,
    d_v: usize,
    max_seq_len: usize,
) -> ModelConfig {
    let mut c = ModelConfig::research(num_items, d_model, num_layers, num_heads, d_qk, max_seq_len);
    c.d_qk = d_qk;
    c.d_v = d_v;
    c.attn_normalizer = max_seq_len + 3;
    c
}

/// A seeded random model of `config`.
pub fn model(config: ModelConfig, seed: u64) -> Model {
    Model::random(config, seed).expect("valid random model")
}

/// How far apart consecutive events are.
#[derive(Clone, Copy, Debug)]
pub enum Gaps {
    /// All events at the same second.
    Equal,
    /// 0 s to a few minutes.
    Seconds,
    /// 0 s to years, log-uniform.
    Anything,
}

/// `len` random events in 1..=num_items with the given gaps, shuffled (the
/// engine must sort them), starting near 2020.
pub fn history(len: usize, num_items: usize, gaps: Gaps, seed: u64) -> (Vec<Event>, i64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ts = 1_577_836_800i64;
    let mut events = Vec::with_capacity(len);
    for _ in 0..len {
        ts += match gaps {
            Gaps::Equal => 0,
            Gaps::Seconds => rng.random_range(0..300),
            Gaps::Anything => {
                if rng.random_bool(0.2) {
                    0
                } else {
                    (10f64.powf(rng.random_range(0.0..8.5))) as i64
                }
            }
        };
        events.push(Event { item: rng.random_range(1..=num_items as u32), ts });
    }
    let query_time = ts + rng.random_range(0..100_000);
    // Fisher–Yates by hand so the order is reproducible from the seed.
    for i in (1..events.len()).rev() {
        let j = rng.random_range(0..=i);
        events.swap(i, j);
    }
    (events, query_time)
}
