//! CUDA backend vs the CPU engine (the oracle), on random models and inputs.
//!
//! Every test that needs a device prints a SKIP line and passes where no
//! CUDA device loads (no driver, no NVRTC, no GPU); the first test checks
//! exactly that situation. Work buffers are poisoned with NaN before every
//! device call, so an element no kernel writes fails the comparison.
//!
//! Tolerance: embeddings are unit vectors; every component must match the
//! CPU within 1e-3 absolute (= 1e-3 relative to the vector's norm). Scores
//! are cosines in [-1, 1]; they must match within 1e-4.
//!
//! `cuda_timing_table` (ignored) is the device timing harness that
//! kernels/cuda/check.sh runs.
//!
//! With `EDGEREC_CHECK_EMU=1` (`kernels/cuda/check.sh --emu`) every test runs
//! on the `cuda-emu` backend instead, at reduced sizes ([`sized`]): the
//! check script end to end on a machine without a GPU.

mod timing;

use std::sync::Arc;

use edgerec_kernels::BackendError;
use edgerec_kernels::backend::Backend;
use edgerec_kernels::cuda::CudaBackend;
use edgerec_kernels::{BackendChoice, select_backend};
use edgerec_kernels::{Event, Model, ModelConfig, UserHistory, encode, encode_batch, top_k};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EMBED_TOL: f32 = 1e-3;
const SCORE_TOL: f32 = 1e-4;

/// Whether the tests run on the emulator (`EDGEREC_CHECK_EMU=1`).
pub fn emu_mode() -> bool {
    std::env::var("EDGEREC_CHECK_EMU").is_ok_and(|v| v == "1")
}

/// `device` on a GPU, `small` under the emulator (slow) or with
/// `EDGEREC_CHECK_SMALL=1` (the check script's compute-sanitizer runs).
pub fn sized<T>(device: T, small: T) -> T {
    if emu_mode() || std::env::var("EDGEREC_CHECK_SMALL").is_ok_and(|v| v == "1") { small } else { device }
}

/// The backend for `model` with poisoned buffers, or `None` (after a SKIP line).
pub fn device_or_skip(model: Model, test: &str) -> Option<CudaBackend> {
    let opened = if emu_mode() { CudaBackend::emulated(Arc::new(model)) } else { CudaBackend::new(Arc::new(model)) };
    match opened {
        Ok(b) => {
            b.set_poison_outputs(true);
            Some(b)
        }
        Err(e) => {
            eprintln!("SKIP {test}: no CUDA device loads here ({e})");
            None
        }
    }
}

/// Whether a device loads at all (cheap model), printing a SKIP line if not.
fn have_device(test: &str) -> bool {
    if emu_mode() {
        return true;
    }
    if let Some(reason) = CudaBackend::missing_libraries() {
        eprintln!("SKIP {test}: {reason}");
        return false;
    }
    device_or_skip(Model::random(config(8, 1, 1, 4, 4, 8, 10), 1).unwrap(), test).is_some()
}

/// A research-variant config with explicit head dims.
pub fn config(d: usize, layers: usize, heads: usize, dqk: usize, dv: usize, l: usize, items: usize) -> ModelConfig {
    let mut c = ModelConfig::research(items, d, layers, heads, dqk, l);
    c.d_v = dv;
    c
}

/// `len` events with gaps on every scale (equal stamps, seconds, years) and
/// a query time after the last one.
pub fn history(rng: &mut ChaCha8Rng, len: usize, items: usize) -> (Vec<Event>, i64) {
    let mut ts = 1_000_000_000i64;
    let events: Vec<Event> = (0..len)
        .map(|_| {
            ts += match rng.random_range(0..4) {
                0 => 0,
                1 => rng.random_range(1..100),
                2 => rng.random_range(100..1_000_000),
                _ => rng.random_range(1_000_000..100_000_000),
            };
            Event { item: rng.random_range(1..=items as u32), ts }
        })
        .collect();
    (events, ts + rng.random_range(0..100_000))
}

/// Asserts `gpu` within EMBED_TOL of `cpu`; returns the largest difference.
fn assert_close(gpu: &[f32], cpu: &[f32], what: &str) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(g, c)| (g - c).abs())
        .fold(0.0f32, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) });
    assert!(worst <= EMBED_TOL, "{what}: max |gpu - cpu| = {worst} > {EMBED_TOL}");
    worst
}

#[test]
fn without_a_device_cuda_is_unavailable_and_auto_serves_from_the_cpu() {
    let model = Arc::new(Model::random(config(16, 1, 2, 4, 4, 10, 50), 3).unwrap());
    let direct = CudaBackend::new(model.clone());
    let auto = select_backend(BackendChoice::Auto, model.clone()).expect("auto never fails");
    match direct {
        Ok(_) => {
            eprintln!("a CUDA device loads here: auto must pick it");
            assert_eq!(auto.name(), "cuda");
        }
        Err(BackendError::Unavailable { backend, reason }) => {
            assert_eq!(backend, "cuda");
            assert!(
                reason.contains("--backend cpu") || reason.contains("LD_LIBRARY_PATH"),
                "reason says what to do: {reason}"
            );
            assert_eq!(auto.name(), "cpu", "auto falls back to the CPU");
            let err = select_backend(BackendChoice::Cuda, model).err().expect("explicit cuda fails without a device");
            let text = err.to_string();
            assert!(text.starts_with("cuda backend unavailable:"), "{text}");
            if CudaBackend::missing_libraries().is_some() {
                eprintln!("as expected on a machine without CUDA: {text}");
            }
        }
        Err(other) => panic!("a missing device must read as Unavailable, got: {other}"),
    }
}

#[test]
fn encode_matches_cpu_for_every_head_dim_and_length() {
    if !have_device("encode_matches_cpu_for_every_head_dim_and_length") {
        return;
    }
    // (D, layers, heads, d_qk, d_v, L): the public shapes, odd dims, d_qk ≠ d_v.
    let shapes = [
        (50, 2, 1, 50, 50, 200),
        (50, 2, 2, 25, 25, 200),
        (64, 2, 4, 16, 16, 50),
        (256, 2, 4, 64, 64, 200),
        (20, 3, 4, 5, 5, 60),
        (48, 2, 3, 16, 32, 100),
        (40, 2, 2, 25, 50, 200),
        (33, 1, 1, 7, 3, 40),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (si, &(d, layers, heads, dqk, dv, l)) in shapes.iter().enumerate().take(sized(shapes.len(), 2)) {
        let cfg = config(d, layers, heads, dqk, dv, l, 500);
        let model = Model::random(cfg, si as u64).unwrap();
        let Some(gpu) = device_or_skip(model.clone(), "encode") else { return };
        for &batch in sized(&[1usize, 3, 37, 300][..], &[1, 3][..]) {
            // Lengths 1..=L+20 (beyond L: the window keeps the last L), tile edges included.
            let hist: Vec<(Vec<Event>, i64)> = (0..batch)
                .map(|u| {
                    let len = match u % 5 {
                        0 => [1, 31, 32, 33, l][rng.random_range(0..5)],
                        _ => rng.random_range(1..=l + 20),
                    };
                    history(&mut rng, len, 500)
                })
                .collect();
            let users: Vec<UserHistory<'_>> =
                hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
            let want = encode_batch(&model, &users).unwrap();
            let got = gpu.encode_batch(&users).unwrap();
            let mut worst = 0.0f32;
            for (u, (g, c)) in got.iter().zip(&want).enumerate() {
                worst = worst.max(assert_close(
                    g,
                    c,
                    &format!("shape {si} {:?} batch {batch} user {u} (n = {})", shapes[si], hist[u].0.len()),
                ));
            }
            println!(
                "parity encode (embed_rows, ln_gemm_silu, hstu_attention, gated_ln_gemm_resid, l2norm_rows) \
                 D {d} layers {layers} heads {heads} d_qk {dqk} d_v {dv} L {l}, {batch} users: max |{} - cpu| {worst:.1e}",
                gpu.name()
            );
        }
    }
}

#[test]
fn encode_matches_cpu_for_4096_users() {
    if !have_device("encode_matches_cpu_for_4096_users") {
        return;
    }
    let model = Model::random(ModelConfig::ml_1m(3953), 5).unwrap();
    let Some(gpu) = device_or_skip(model.clone(), "encode 4096") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let count = sized(4096, 8);
    let hist: Vec<(Vec<Event>, i64)> = (0..count)
        .map(|_| {
            let n = rng.random_range(1..=200);
            history(&mut rng, n, 3953)
        })
        .collect();
    let users: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let want = encode_batch(&model, &users).unwrap();
    let got = gpu.encode_batch(&users).unwrap();
    assert_eq!(got.len(), count);
    let worst = got
        .iter()
        .zip(&want)
        .enumerate()
        .map(|(u, (g, c))| assert_close(g, c, &format!("user {u}")))
        .fold(0.0, f32::max);
    println!("parity encode ML-1M, {count} users of 1..200 events: max |{} - cpu| {worst:.1e}", gpu.name());
}

#[test]
fn invalid_requests_are_errors_on_the_device_too() {
    if !have_device("invalid_requests_are_errors_on_the_device_too") {
        return;
    }
    let model = Model::random(config(16, 1, 1, 8, 8, 10, 20), 4).unwrap();
    let Some(gpu) = device_or_skip(model, "invalid") else { return };
    let ok = [Event { item: 1, ts: 5 }];
    let bad_item = [Event { item: 21, ts: 5 }];
    let users = [UserHistory { events: &ok, query_time: 9 }, UserHistory { events: &bad_item, query_time: 9 }];
    assert!(matches!(gpu.encode_batch(&users), Err(BackendError::Input(e)) if e.index == 1));
    assert!(gpu.encode_batch(&[UserHistory { events: &[], query_time: 9 }]).is_err());
    assert!(gpu.encode_batch(&[UserHistory { events: &ok, query_time: 4 }]).is_err());
    assert!(gpu.top_k_batch(&[vec![0.0; 15]], 5, &[]).is_err(), "wrong embedding width");
}

#[test]
fn incremental_encode_matches_cpu_full_encode() {
    if !have_device("incremental_encode_matches_cpu_full_encode") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (si, &(d, layers, heads, dqk, dv, l)) in
        [(50, 2, 1, 50, 50, 200), (40, 3, 2, 25, 50, 60), (20, 2, 4, 5, 5, 30)].iter().enumerate().skip(sized(0, 1))
    {
        let model = Model::random(config(d, layers, heads, dqk, dv, l, 300), 20 + si as u64).unwrap();
        let Some(gpu) = device_or_skip(model.clone(), "incremental") else { return };
        let n0 = rng.random_range(1..=l / 2);
        let (mut all, mut q) = history(&mut rng, n0, 300);
        let (mut state, first) = gpu.new_state(&all, q).unwrap();
        let mut worst = assert_close(&first, &encode(&model, &all, q).unwrap(), "new_state");
        for step in 0..sized(40, 8) {
            let last = all.last().unwrap().ts;
            let new: Vec<Event> = match step % 6 {
                // Nothing new: a later query time only changes the newest row's rab.
                0 => Vec::new(),
                // Older than the newest kept event: must fall back to a full encode.
                5 => vec![Event { item: rng.random_range(1..=300), ts: last - 10 }],
                _ => (0..rng.random_range(1..=12))
                    .map(|_| Event {
                        item: rng.random_range(1..=300),
                        ts: last + rng.random_range(0..q - last + 50_000),
                    })
                    .collect(),
            };
            all.extend_from_slice(&new);
            q = all.iter().map(|e| e.ts).max().unwrap() + rng.random_range(0..5000);
            let got = gpu.append(&mut state, &new, q).unwrap();
            let want = encode(&model, &all, q).unwrap();
            worst = worst.max(assert_close(
                &got,
                &want,
                &format!("shape {si} step {step} (n = {}, window {})", all.len(), state.events().len()),
            ));
        }
        println!(
            "parity incremental appends (scatter_kv + the encode kernels) D {d} layers {layers} heads {heads} \
             d_qk {dqk} d_v {dv} L {l}, through the sliding window: max |{} - cpu| {worst:.1e}",
            gpu.name()
        );
        assert!(gpu.append(&mut state, &[], 0).is_err(), "query before the last event");
    }
}

#[test]
fn backend_state_api_matches_cpu_on_the_device() {
    if !have_device("backend_state_api_matches_cpu_on_the_device") {
        return;
    }
    use edgerec_kernels::backend::{AppendRequest, BackendState};
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let model = Model::random(config(50, 2, 1, 50, 50, 200, 300), 31).unwrap();
    let Some(gpu) = device_or_skip(model.clone(), "state api") else { return };
    let backend: &dyn Backend = &gpu;
    let cpu = edgerec_kernels::CpuBackend::new(Arc::new(model.clone()));
    // 64 users, each appended to 5 times in one batched call per round; the
    // window slides for the longer ones.
    let mut hist: Vec<(Vec<Event>, i64)> =
        (0..sized(64, 6)).map(|u| history(&mut rng, 1 + (u * 7) % 190, 300)).collect();
    let mut states: Vec<BackendState> = hist.iter().map(|(e, q)| backend.new_state(e, *q).unwrap().0).collect();
    assert!(states.iter().all(|s| s.device_bytes() == 2 * 200 * 100 * 4));
    for round in 0..sized(5, 2) {
        let news: Vec<Vec<Event>> = hist
            .iter()
            .map(|(e, q)| {
                let last = e.iter().map(|x| x.ts).max().unwrap().max(*q);
                (0..rng.random_range(0..6))
                    .map(|j| Event { item: rng.random_range(1..=300), ts: last + 10 * j })
                    .collect()
            })
            .collect();
        for ((e, q), new) in hist.iter_mut().zip(&news) {
            e.extend_from_slice(new);
            *q = e.iter().map(|x| x.ts).max().unwrap() + 7;
        }
        let mut reqs: Vec<AppendRequest<'_>> = states
            .iter_mut()
            .zip(&news)
            .zip(&hist)
            .map(|((state, new), (_, q))| AppendRequest { state, new_events: new, query_time: *q })
            .collect();
        let out = backend.append_batch(&mut reqs);
        for (u, r) in out.into_iter().enumerate() {
            let (e, q) = &hist[u];
            assert_close(&r.unwrap(), &encode(&model, e, *q).unwrap(), &format!("round {round} user {u}"));
        }
    }
    // A CPU state handed to the device backend is rebuilt there.
    let (e, q) = &hist[0];
    let (mut s, _) = cpu.new_state(e, *q).unwrap();
    let got = backend.append(&mut s, &[], q + 1).unwrap();
    assert!(matches!(s, BackendState::Cuda(_)));
    assert_close(&got, &encode(&model, e, q + 1).unwrap(), "cpu state on the device");
}

/// `new_state_batch` (cache misses and slid windows in one batched forward)
/// on the device against the CPU encode, at the ML-1M shape: 512 users of
/// 1..=300 events (L = 200: the longer ones slide), then one append each.
#[test]
fn batched_new_states_match_cpu_on_the_device() {
    if !have_device("batched_new_states_match_cpu_on_the_device") {
        return;
    }
    use edgerec_kernels::backend::AppendRequest;
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let model = Model::random(config(50, 2, 1, 50, 50, 200, 3953), 33).unwrap();
    let Some(gpu) = device_or_skip(model.clone(), "batched new states") else { return };
    let backend: &dyn Backend = &gpu;
    let hist: Vec<(Vec<Event>, i64)> =
        (0..sized(512, 8)).map(|u| history(&mut rng, 1 + (u * 37) % 300, 3953)).collect();
    let users: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let mut states = Vec::new();
    let mut worst = 0.0f32;
    for (u, r) in backend.new_state_batch(&users).into_iter().enumerate() {
        let (state, got) = r.unwrap_or_else(|e| panic!("user {u}: {e}"));
        let (e, q) = &hist[u];
        worst = worst.max(assert_close(&got, &encode(&model, e, *q).unwrap(), &format!("new state {u}")));
        states.push(state);
    }
    let news: Vec<[Event; 1]> =
        hist.iter().map(|(_, q)| [Event { item: rng.random_range(1..=3953), ts: q + 5 }]).collect();
    let mut reqs: Vec<AppendRequest<'_>> = states
        .iter_mut()
        .zip(&news)
        .map(|(state, new)| AppendRequest { state, new_events: new, query_time: new[0].ts + 1 })
        .collect();
    for (u, r) in backend.append_batch(&mut reqs).into_iter().enumerate() {
        let mut all = hist[u].0.clone();
        all.push(news[u][0]);
        let want = encode(&model, &all, news[u][0].ts + 1).unwrap();
        worst = worst.max(assert_close(&r.unwrap(), &want, &format!("append to batched state {u}")));
    }
    println!(
        "parity new_state_batch ML-1M, {} users of 1..300 events (longer ones slid to 200), then an append each: max |{} - cpu| {worst:.1e}",
        hist.len(),
        gpu.name()
    );
}

/// Checks a device top-k against the CPU's: same length, valid distinct
/// non-excluded ids in order, each score the item's true cosine, and the
/// same ids wherever the CPU's scores are not within tolerance of a tie.
fn assert_same_top_k(
    model: &Model,
    emb: &[f32],
    got: &[edgerec_kernels::Scored],
    want: &[edgerec_kernels::Scored],
    exclude: &[u32],
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let all = edgerec_kernels::score::score_all(model, emb);
    let true_score = |id: u32| (id >= 1).then(|| all.get(id as usize - 1).copied()).flatten();
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(!exclude.contains(&g.item), "{what}: excluded item {} returned", g.item);
        let truth = true_score(g.item).unwrap_or_else(|| panic!("{what}: id {} outside the catalog", g.item));
        assert!((g.score - truth).abs() <= SCORE_TOL, "{what}: item {} score {} vs cosine {truth}", g.item, g.score);
        assert!((g.score - w.score).abs() <= SCORE_TOL, "{what}: rank {t} score {} vs cpu {}", g.score, w.score);
        let isolated = want.iter().all(|o| o.item == w.item || (o.score - w.score).abs() > 2.0 * SCORE_TOL);
        if isolated {
            assert_eq!(g.item, w.item, "{what}: rank {t}");
        }
    }
    for pair in got.windows(2) {
        assert!(
            pair[0].score > pair[1].score || (pair[0].score == pair[1].score && pair[0].item < pair[1].item),
            "{what}: order"
        );
    }
}

#[test]
fn top_k_matches_cpu_over_every_catalog_size() {
    if !have_device("top_k_matches_cpu_over_every_catalog_size") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for &items in sized(&[3953usize, 131_263, 1_000_000][..], &[3953][..]) {
        let mut model = Model::random(config(50, 1, 1, 50, 50, 200, items), items as u64).unwrap();
        // Exact duplicates of item rows: equal scores, so ties must go to the smaller id.
        for (dst, src) in [(7usize, 3usize), (items - 1, 5)] {
            let d = model.config.d_model;
            let row = model.weights.item_emb[src * d..(src + 1) * d].to_vec();
            model.weights.item_emb[dst * d..(dst + 1) * d].copy_from_slice(&row);
        }
        let model = Model::new(model.config.clone(), model.weights.clone()).unwrap();
        let Some(gpu) = device_or_skip(model.clone(), "top_k") else { return };
        let users = 5;
        let embeddings: Vec<Vec<f32>> = (0..users)
            .map(|u| {
                if u == 0 {
                    model.item_row(3).to_vec()
                } else {
                    (0..50).map(|_| rng.random_range(-1.0f32..1.0)).collect()
                }
            })
            .collect();
        let excl: Vec<Vec<u32>> =
            (0..users).map(|u| (0..u * 40).map(|_| rng.random_range(1..=items as u32)).collect()).collect();
        let excl_refs: Vec<&[u32]> = excl.iter().map(Vec::as_slice).collect();
        for k in [1usize, 10, 100, 512, 600] {
            let got = gpu.top_k_batch(&embeddings, k, &excl_refs).unwrap();
            for u in 0..users {
                let want = top_k(&model, &embeddings[u], k, &excl[u]);
                assert_same_top_k(
                    &model,
                    &embeddings[u],
                    &got[u],
                    &want,
                    &excl[u],
                    &format!("V {items} k {k} user {u}"),
                );
            }
            println!(
                "parity top-k (quant_query, quant_chunk_kth, quant_threshold, quant_select + host re-rank) V {items} k {k}, {users} users with exclusions: \
                 scores within {SCORE_TOL:e}, ids identical outside ties"
            );
            // User 0 is item 3's own row: items 3 and 7 tie at the top, 3 first.
            if k >= 2 {
                assert_eq!((got[0][0].item, got[0][1].item), (3, 7), "V {items} k {k}: tie order");
            }
        }
        let no_excl = gpu.top_k_batch(&embeddings[..1], 3, &[]).unwrap();
        assert_eq!(no_excl[0].len(), 3);
    }
}

#[test]
#[ignore = "device timing table; run by kernels/cuda/check.sh"]
fn cuda_timing_table() {
    timing::run();
}
