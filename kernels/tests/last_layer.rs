//! The last layer computes only the rows that are read (each user's newest
//! row) while keeping every row's keys and values: its embeddings must equal
//! those of the full computation, bit for bit, on the CPU and on `cuda-emu`.
//!
//! The full computation is obtained from the engine itself: a copy of the
//! model with one more layer whose output projection is zero (W_o = 0,
//! b_o = 0) adds exactly +0 to the residual stream, so its embedding is the
//! original model's last layer computed for every row. Appends after the
//! first encode attend to the last layer's kept keys and values, so equal
//! embeddings after appends check that those were kept for every row.

mod common;

use std::sync::Arc;

use common::{Gaps, config, history, model};
use edgerec_kernels::backend::Backend;
use edgerec_kernels::cuda::CudaBackend;
use edgerec_kernels::{
    AppendRequest, CpuBackend, EncoderState, Event, LayerWeights, Model, ModelConfig, UserHistory, encode, encode_batch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `m` followed by a layer with random uvqk and biases and a zero output
/// projection: the same embeddings, with `m`'s last layer computed in full.
fn with_silent_layer(m: &Model, seed: u64) -> Model {
    let c = &m.config;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut random = |n: usize| (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect::<Vec<_>>();
    let silent = LayerWeights {
        uvqk: random(c.d_model * c.uvqk_width()),
        o_w: vec![0.0; c.attn_width() * c.d_model],
        o_b: vec![0.0; c.d_model],
        pos_w: random(2 * c.attn_normalizer - 1),
        ts_w: random(c.num_time_buckets + 1),
    };
    let mut config = c.clone();
    config.num_layers += 1;
    let mut weights = m.weights.clone();
    weights.layers.push(silent);
    Model::new(config, weights).expect("one more layer of the same shapes")
}

/// Shapes: ML-1M (1 head), several heads with d_qk ≠ d_v and D not a
/// multiple of 8, and one layer only (the first layer is the last).
fn shapes() -> Vec<(&'static str, ModelConfig)> {
    vec![
        ("ML-1M", ModelConfig::ml_1m(300)),
        ("3 heads, D 29, dqk 13, dv 7", config(90, 29, 2, 3, 13, 7, 70)),
        ("1 layer, 2 heads", config(60, 16, 1, 2, 8, 12, 40)),
    ]
}

/// Every component of `got` within `tol` of `full` (embeddings are unit
/// vectors); returns the largest difference.
fn assert_close(got: &[f32], full: &[f32], tol: f32, what: &str) -> f32 {
    assert_eq!(got.len(), full.len(), "{what}");
    let mut worst = 0.0f32;
    for (i, (a, b)) in got.iter().zip(full).enumerate() {
        let diff = (a - b).abs();
        assert!(diff <= tol, "{what}: component {i} is {a:e}, the full computation gives {b:e}");
        worst = worst.max(diff);
    }
    worst
}

/// CPU tolerance: the newest row's attention scores go through the
/// few-rows path (dot products against the keys in place) where the full
/// layer used the transposed-key tile: the same sums in another order, a
/// few f32 roundings apart (the incremental append's situation too).
const CPU_TOL: f32 = 1e-6;
/// On the device the attention computes each query row alone whatever the
/// rows beside it, and the products accumulate every element in the same
/// order: equal (== , so +0 and -0 are one value).
const EMU_TOL: f32 = 0.0;

#[test]
fn encode_and_batches_equal_the_full_last_layer_on_the_cpu() {
    let mut worst = 0.0f32;
    for (name, cfg) in shapes() {
        let m = model(cfg.clone(), 11);
        let full = with_silent_layer(&m, 12);
        let l = cfg.max_seq_len;
        let lens = [1, 2, 9, 31, l / 2, l, l + 5];
        let requests: Vec<_> =
            lens.iter().enumerate().map(|(i, &n)| history(n, cfg.num_items, Gaps::Anything, 40 + i as u64)).collect();
        for ((events, q), n) in requests.iter().zip(lens) {
            let got = encode(&m, events, *q).expect("valid request");
            let want = encode(&full, events, *q).expect("valid request");
            worst = worst.max(assert_close(&got, &want, CPU_TOL, &format!("{name}: encode of {n} events")));
        }
        let users: Vec<UserHistory<'_>> =
            requests.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
        let got = encode_batch(&m, &users).expect("valid batch");
        let want = encode_batch(&full, &users).expect("valid batch");
        for (u, (g, w)) in got.iter().zip(&want).enumerate() {
            worst = worst.max(assert_close(g, w, CPU_TOL, &format!("{name}: batch user {u}")));
        }
    }
    println!("largest difference to the full computation: {worst:e}");
}

/// A history split into a first encode and appends of 1, 3 and 1 events.
fn split(cfg: &ModelConfig, seed: u64, n: usize) -> (Vec<Event>, Vec<Vec<Event>>, i64) {
    let (mut events, q) = history(n + 5, cfg.num_items, Gaps::Seconds, seed);
    events.sort_by_key(|e| e.ts);
    let tail = events.split_off(n);
    let parts = vec![tail[..1].to_vec(), tail[1..4].to_vec(), tail[4..].to_vec()];
    (events, parts, q)
}

#[test]
fn incremental_appends_equal_the_full_last_layer_on_the_cpu() {
    let mut worst = 0.0f32;
    for (name, cfg) in shapes() {
        let m = model(cfg.clone(), 21);
        let full = with_silent_layer(&m, 22);
        for n in [1, 7, cfg.max_seq_len / 2] {
            let (first, appends, q) = split(&cfg, 50 + n as u64, n);
            let t0 = first.last().map_or(0, |e| e.ts);
            let (mut s, got) = EncoderState::new(&m, &first, t0).expect("valid");
            let (mut s_full, want) = EncoderState::new(&full, &first, t0).expect("valid");
            worst = worst.max(assert_close(&got, &want, CPU_TOL, &format!("{name}: state of {n} events")));
            for (a, part) in appends.iter().enumerate() {
                let t = part.last().map_or(q, |e| e.ts);
                let got = s.append(&m, part, t).expect("valid append");
                let want = s_full.append(&full, part, t).expect("valid append");
                worst = worst.max(assert_close(&got, &want, CPU_TOL, &format!("{name}: {n} events, append {a}")));
            }
        }
    }
    println!("largest difference to the full computation: {worst:e}");
}

/// The same through the `cuda-emu` backend: stateless batch, new states,
/// single and batched appends (the device keeps every row's keys/values).
#[test]
fn the_cuda_kernels_compute_the_same_as_the_full_last_layer_on_the_emulator() {
    let mut worst = 0.0f32;
    for (name, cfg) in shapes() {
        let m = model(cfg.clone(), 31);
        let full = with_silent_layer(&m, 32);
        let b = CudaBackend::emulated(Arc::new(m)).expect("the emulator builds with the system C++ compiler");
        let b_full = CudaBackend::emulated(Arc::new(full)).expect("the emulator builds");
        b.set_poison_outputs(true);
        b_full.set_poison_outputs(true);
        let lens = [1, 2, 33, cfg.max_seq_len];
        let requests: Vec<_> =
            lens.iter().enumerate().map(|(i, &n)| history(n, cfg.num_items, Gaps::Anything, 60 + i as u64)).collect();
        let users: Vec<UserHistory<'_>> =
            requests.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
        let got = b.encode_batch(&users).expect("valid batch");
        let want = b_full.encode_batch(&users).expect("valid batch");
        for (u, (g, w)) in got.iter().zip(&want).enumerate() {
            worst = worst.max(assert_close(g, w, EMU_TOL, &format!("{name}: cuda-emu batch user {u}")));
        }

        let splits: Vec<_> = [1, 9, cfg.max_seq_len / 2].iter().map(|&n| split(&cfg, 70 + n as u64, n)).collect();
        let mut states = Vec::new();
        for (first, _, _) in &splits {
            let t0 = first.last().map_or(0, |e| e.ts);
            let (s, got) = Backend::new_state(&b, first, t0).expect("valid");
            let (s_full, want) = Backend::new_state(&b_full, first, t0).expect("valid");
            worst = worst.max(assert_close(
                &got,
                &want,
                EMU_TOL,
                &format!("{name}: cuda-emu state of {} events", first.len()),
            ));
            states.push((s, s_full));
        }
        // First append one by one, then the rest batched.
        for ((s, s_full), (_, parts, _)) in states.iter_mut().zip(&splits) {
            let t = parts[0].last().map_or(0, |e| e.ts);
            let got = Backend::append(&b, s, &parts[0], t).expect("valid append");
            let want = Backend::append(&b_full, s_full, &parts[0], t).expect("valid append");
            worst = worst.max(assert_close(&got, &want, EMU_TOL, &format!("{name}: cuda-emu append")));
        }
        for a in 1..3 {
            let (mut reqs, mut reqs_full) = (Vec::new(), Vec::new());
            for ((s, s_full), (_, parts, _)) in states.iter_mut().zip(&splits) {
                let t = parts[a].last().map_or(0, |e| e.ts);
                reqs.push(AppendRequest { state: s, new_events: &parts[a], query_time: t });
                reqs_full.push(AppendRequest { state: s_full, new_events: &parts[a], query_time: t });
            }
            let got = b.append_batch(&mut reqs);
            let want = b_full.append_batch(&mut reqs_full);
            for (u, (g, w)) in got.into_iter().zip(want).enumerate() {
                let (g, w) = (g.expect("valid append"), w.expect("valid append"));
                worst =
                    worst.max(assert_close(&g, &w, EMU_TOL, &format!("{name}: cuda-emu batched append {a}, user {u}")));
            }
        }
        // And the device agrees with the CPU engine as before.
        let cpu = CpuBackend::new(b.model().clone());
        let on_cpu = cpu.encode_batch(&users).expect("valid batch");
        for (g, w) in got.iter().zip(&on_cpu) {
            for (x, y) in g.iter().zip(w) {
                assert!((x - y).abs() <= 2e-5, "{name}: cuda-emu {x} vs cpu {y}");
            }
        }
    }
    println!("largest difference to the full computation: {worst:e}");
}
