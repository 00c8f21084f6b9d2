//! `Backend::new_state_batch` (cache misses and slid windows, which a server
//! rebuilds, in one batched forward) against building the same states one by
//! one with `Backend::new_state`, on the CPU and on `cuda-emu`, over random
//! models and histories (mixed lengths, some longer than the window, so
//! they slide; one bad history per batch).
//!
//! Tolerances (unit-length f32 embeddings):
//! - CPU: batched == one by one, bit for bit (each output row of a stacked
//!   product is accumulated in the same order whatever its neighbours), and
//!   the kept states equal;
//! - cuda-emu: every component within `EMBED_TOL` = 2e-5 of the one-by-one
//!   build and of the CPU engine (the bound of tests/emu_parity.rs), work
//!   buffers NaN-poisoned before every launch;
//! - both: appending the same events to a batched state and to a one-by-one
//!   state gives the same embedding (within the same tolerance), so the
//!   keys and values a batched build keeps are the right ones.

mod common;

use std::sync::Arc;

use common::{Gaps, config, history};
use edgerec_kernels::backend::{Backend, BackendState};
use edgerec_kernels::cuda::CudaBackend;
use edgerec_kernels::{BackendError, CpuBackend, Event, InputError, Model, UserHistory, encode};

const EMBED_TOL: f32 = 2e-5;

/// Largest |a − b| (NaN counts as infinite).
fn worst(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) })
}

/// Random histories of the given lengths; user `bad` has a query time
/// before its last event (refused).
fn histories(num_items: usize, lengths: &[usize], seed: u64, bad: usize) -> Vec<(Vec<Event>, i64)> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let gaps = [Gaps::Anything, Gaps::Seconds, Gaps::Equal][i % 3];
            let (events, q) = history(n, num_items, gaps, seed + i as u64);
            if i == bad { (events, 0) } else { (events, q) }
        })
        .collect()
}

/// Builds `hist` batched and one by one on `backend`, checks the batch
/// against the singles (`tol`: 0 means bit for bit) and the CPU engine,
/// then appends one event to both sets of states and compares again.
/// Returns the worst batched-vs-single difference seen.
fn check(backend: &dyn Backend, model: &Model, hist: &[(Vec<Event>, i64)], bad: usize, tol: f32) -> f32 {
    let users: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let batched = backend.new_state_batch(&users);
    assert_eq!(batched.len(), hist.len(), "one result per user");
    let mut seen = 0.0f32;
    let mut pairs: Vec<(BackendState, BackendState, usize)> = Vec::new();
    for (u, (result, (events, q))) in batched.into_iter().zip(hist).enumerate() {
        let single = backend.new_state(events, *q);
        if u == bad {
            assert!(
                matches!(result, Err(BackendError::Input(ref e)) if matches!(e.source, InputError::QueryBeforeLastEvent { .. })),
                "user {u}: a query time before the last event fails only that user"
            );
            assert!(single.is_err(), "user {u}: refused one by one too");
            continue;
        }
        let (state, embedding) = result.unwrap_or_else(|e| panic!("user {u} (n = {}): {e}", events.len()));
        let (single_state, single_embedding) = single.unwrap();
        let diff = worst(&embedding, &single_embedding);
        assert!(diff <= tol, "user {u} (n = {}): batched vs one by one {diff:e} > {tol:e}", events.len());
        let cpu = encode(model, events, *q).unwrap();
        let diff_cpu = worst(&embedding, &cpu);
        assert!(diff_cpu <= EMBED_TOL, "user {u} (n = {}): batched vs CPU encode {diff_cpu:e}", events.len());
        assert_eq!(state.events(), single_state.events(), "user {u}: the kept window");
        assert_eq!(state.query_time(), *q);
        if let (BackendState::Cpu(a), BackendState::Cpu(b)) = (&state, &single_state) {
            assert_eq!(a, b, "user {u}: the CPU states (kept keys and values) equal");
        }
        seen = seen.max(diff);
        pairs.push((state, single_state, u));
    }
    assert_eq!(pairs.len(), hist.len() - 1, "every good user got a state");
    for (mut state, mut single_state, u) in pairs {
        let (events, q) = &hist[u];
        let next = Event { item: 1 + (u as u32 * 7) % (model.config.num_items as u32), ts: q + 11 };
        let a = backend.append(&mut state, &[next], next.ts + 2).unwrap();
        let b = backend.append(&mut single_state, &[next], next.ts + 2).unwrap();
        let diff = worst(&a, &b);
        assert!(diff <= tol, "user {u}: an append to the batched state vs to the single one {diff:e} > {tol:e}");
        let mut all = events.clone();
        all.push(next);
        let diff_cpu = worst(&a, &encode(model, &all, next.ts + 2).unwrap());
        assert!(diff_cpu <= EMBED_TOL, "user {u}: append to a batched state vs CPU encode {diff_cpu:e}");
        seen = seen.max(diff);
    }
    seen
}

#[test]
fn cpu_batched_states_equal_one_by_one_across_groups_and_slides() {
    // 2 layers, 2 heads, L = 64; 14 users of up to 90 events (longer
    // windows slide to 64): ~520 rows, more than one stacked group.
    let cfg = config(80, 16, 2, 2, 8, 6, 64);
    for seed in [3u64, 17] {
        let model = Model::random(cfg.clone(), seed).unwrap();
        let cpu = CpuBackend::new(Arc::new(model.clone()));
        let lengths: Vec<usize> = (0..14).map(|i| 1 + (i * 37 + seed as usize) % 90).collect();
        assert!(lengths.iter().any(|&n| n > 64), "some window slides");
        let bad = (seed as usize) % lengths.len();
        let hist = histories(cfg.num_items, &lengths, 500 + seed, bad);
        let seen = check(&cpu, &model, &hist, bad, 0.0);
        assert_eq!(seen, 0.0);
    }
}

#[test]
fn cpu_batched_states_of_an_empty_batch_and_a_single_user() {
    let cfg = config(40, 12, 1, 1, 6, 6, 16);
    let model = Model::random(cfg.clone(), 5).unwrap();
    let cpu = CpuBackend::new(Arc::new(model.clone()));
    assert!(cpu.new_state_batch(&[]).is_empty());
    let (events, q) = history(20, cfg.num_items, Gaps::Seconds, 9);
    let one = cpu.new_state_batch(&[UserHistory { events: &events, query_time: q }]);
    let (_, embedding) = one.into_iter().next().unwrap().unwrap();
    assert_eq!(embedding, encode(&model, &events, q).unwrap());
    let empty: Vec<Event> = Vec::new();
    let refused = cpu.new_state_batch(&[UserHistory { events: &empty, query_time: q }]);
    assert!(matches!(&refused[0], Err(BackendError::Input(e)) if e.source == InputError::NoEvents));
}

#[test]
fn emulated_batched_states_match_one_by_one_and_the_cpu() {
    // Head dims that are not multiples of the tiles; windows that slide.
    let cfg = config(60, 12, 2, 2, 6, 4, 24);
    let model = Model::random(cfg.clone(), 23).unwrap();
    let b = CudaBackend::emulated(Arc::new(model.clone())).expect("cuda-emu builds with the system C++ compiler");
    b.set_poison_outputs(true);
    let lengths = [1usize, 24, 7, 40, 3, 25, 13];
    let hist = histories(cfg.num_items, &lengths, 900, 2);
    let seen = check(&b, &model, &hist, 2, EMBED_TOL);
    assert!(seen.is_finite());
    // 6 good states in one pool: slots were taken once each.
    assert_eq!(b.kv_pool_capacity(), 16);
}
