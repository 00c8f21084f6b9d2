//! A device backend whose context is lost mid-call (a fault injected into the
//! `cuda-emu` emulator: `EmuOptions::lose_context_at_launch`, as a sticky
//! error on a GPU) serves that call and the next ones on the CPU, says so in
//! `degraded()`, and serves on a rebuilt device backend once one is built
//! (attempts spaced by the backoff, failed attempts reported).
//!
//! Tolerance: embeddings within `EMBED_TOL` = 2e-5 of the CPU engine's
//! (tests/emu_parity.rs's bound); answers served by the CPU equal it exactly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Gaps, config, history};
use edgerec_kernels::backend::{Backend, BackendState};
use edgerec_kernels::cuda::{CudaBackend, EmuOptions};
use edgerec_kernels::failover::{Backoff, Failover, OpenDevice};
use edgerec_kernels::{AppendRequest, BackendError, CpuBackend, Event, Model, UserHistory, encode};

const EMBED_TOL: f32 = 2e-5;

fn worst(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) })
}

fn emulated(model: &Model, lose_at: Option<u64>) -> Box<dyn Backend> {
    let options = EmuOptions { lose_context_at_launch: lose_at, ..EmuOptions::default() };
    let b = CudaBackend::emulated_with(Arc::new(model.clone()), &options).expect("cuda-emu builds");
    b.set_poison_outputs(true);
    Box::new(b)
}

/// Rebuilds on the emulator with no fault, after `failures` failed attempts.
fn reopen(failures: u32) -> (OpenDevice, Arc<AtomicU32>) {
    let tries = Arc::new(AtomicU32::new(0));
    let seen = tries.clone();
    let open: OpenDevice = Box::new(move |model| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            return Err(BackendError::Unavailable {
                backend: "cuda-emu",
                reason: "the test refuses this attempt".into(),
            });
        }
        let b = CudaBackend::emulated(model)?;
        b.set_poison_outputs(true);
        Ok(Box::new(b))
    });
    (open, tries)
}

fn wait_for_rebuild(f: &Failover) {
    let start = Instant::now();
    while f.rebuilds() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no rebuild within 60 s: {:?}", f.degraded());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn users(model: &Model, lengths: &[usize], seed: u64) -> Vec<(Vec<Event>, i64)> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| history(n, model.config.num_items, Gaps::Seconds, seed + i as u64))
        .collect()
}

/// Kernel launches one `new_state_batch` of `hist` takes on the emulator.
fn launches_of_new_states(model: &Model, hist: &[(Vec<Event>, i64)]) -> u64 {
    let b = CudaBackend::emulated(Arc::new(model.clone())).expect("cuda-emu builds");
    // As `emulated` sets it: the poisoning fills are launches too.
    b.set_poison_outputs(true);
    b.set_profiling(true);
    let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    assert!(Backend::new_state_batch(&b, &batch).iter().all(Result::is_ok));
    b.take_kernel_times().iter().map(|t| t.launches).sum()
}

#[test]
fn a_lost_context_serves_on_the_cpu_and_the_rebuilt_device_takes_over() {
    let cfg = config(70, 16, 2, 2, 8, 8, 20);
    let model = Model::random(cfg, 31).unwrap();
    let hist = users(&model, &[5, 20, 1, 33, 12], 700);
    // The first launch of the first call faults; the first two rebuilds fail.
    let (open, tries) = reopen(2);
    let backoff = Backoff { first: Duration::from_millis(20), max: Duration::from_millis(80) };
    let f = Failover::new(emulated(&model, Some(1)), open, backoff);
    assert_eq!(f.name(), "cuda-emu");
    assert!(f.degraded().is_none(), "healthy before the fault");

    let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let built = f.new_state_batch(&batch);
    let mut states = Vec::new();
    for (u, (r, (events, q))) in built.into_iter().zip(&hist).enumerate() {
        let (state, embedding) = r.unwrap_or_else(|e| panic!("user {u}: the CPU serves the lost call: {e}"));
        assert!(matches!(state, BackendState::Cpu(_)), "user {u}: built on the CPU");
        assert_eq!(embedding, encode(&model, events, *q).unwrap(), "user {u}: the CPU's answer");
        states.push(state);
    }
    let note = f.degraded().expect("degraded while the device is lost");
    assert!(note.contains("serving on the CPU") && note.contains("injected fault"), "{note}");

    wait_for_rebuild(&f);
    assert!(tries.load(Ordering::SeqCst) >= 3, "two refused attempts, then the one that built");
    assert!(f.degraded().is_none(), "healthy again: {:?}", f.degraded());

    // The rebuilt device takes the CPU states over (rebuilt from their events).
    let mut all = hist.clone();
    let news: Vec<Vec<Event>> =
        all.iter().enumerate().map(|(u, (_, q))| vec![Event { item: 1 + u as u32, ts: q + 7 }]).collect();
    for ((events, q), new) in all.iter_mut().zip(&news) {
        events.extend_from_slice(new);
        *q = new[0].ts + 1;
    }
    let mut requests: Vec<AppendRequest<'_>> = states
        .iter_mut()
        .zip(&news)
        .zip(&all)
        .map(|((state, new), (_, q))| AppendRequest { state, new_events: new, query_time: *q })
        .collect();
    let out = f.append_batch(&mut requests);
    drop(requests);
    for (u, (r, (events, q))) in out.iter().zip(&all).enumerate() {
        let got = r.as_ref().unwrap_or_else(|e| panic!("user {u}: {e}"));
        let diff = worst(got, &encode(&model, events, *q).unwrap());
        assert!(diff <= EMBED_TOL, "user {u} on the rebuilt device: {diff:e}");
        assert!(matches!(states[u], BackendState::Cuda(_)), "user {u}: now a device state");
    }
    let cpu = CpuBackend::new(Arc::new(model.clone()));
    let e = encode(&model, &all[0].0, all[0].1).unwrap();
    assert_eq!(f.top_k_batch(std::slice::from_ref(&e), 5, &[]).unwrap(), cpu.top_k_batch(&[e], 5, &[]).unwrap());
}

#[test]
fn a_context_lost_mid_append_rebuilds_those_users_on_the_cpu() {
    let cfg = config(60, 12, 2, 1, 6, 6, 16);
    let model = Model::random(cfg, 37).unwrap();
    let hist = users(&model, &[3, 9, 16, 2], 800);
    // Device states first; the launch after them faults (inside the append).
    let lose_at = launches_of_new_states(&model, &hist) + 1;
    let (open, _) = reopen(0);
    let backoff = Backoff { first: Duration::from_millis(10), max: Duration::from_millis(10) };
    let f = Failover::new(emulated(&model, Some(lose_at)), open, backoff);
    let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let mut states: Vec<BackendState> = f.new_state_batch(&batch).into_iter().map(|r| r.unwrap().0).collect();
    assert!(states.iter().all(|s| matches!(s, BackendState::Cuda(_))), "built on the device before the fault");
    assert!(f.degraded().is_none());

    for (u, state) in states.iter_mut().enumerate() {
        let (events, q) = &hist[u];
        let new = [Event { item: 2 + u as u32, ts: q + 3 }];
        let got = f.append(state, &new, q + 4).unwrap_or_else(|e| panic!("user {u}: {e}"));
        let mut all = events.clone();
        all.extend_from_slice(&new);
        let diff = worst(&got, &encode(&model, &all, q + 4).unwrap());
        assert!(diff <= EMBED_TOL, "user {u}: {diff:e}");
    }
    assert!(matches!(states[0], BackendState::Cpu(_)), "the faulted append was served on the CPU");
    wait_for_rebuild(&f);
    assert!(f.degraded().is_none());
}
