//! The CUDA kernels, run on the CPU by the emulator (`cuda-emu`) through the
//! same Rust orchestration as on a GPU, against the CPU engine and the f64
//! reference — and the proof that the emulator sees what it claims to: copies
//! of the kernels with a barrier removed or an index shifted fail the same
//! comparison.
//!
//! Tolerances (unit-length f32 embeddings, all work buffers NaN-poisoned
//! before every launch so an element no kernel writes fails the check):
//! - against the CPU engine: every component within `EMBED_TOL` = 2e-5;
//! - against the f64 reference: max |emu − ref| / max |ref| ≤ 1e-4, the
//!   bound the CPU engine itself meets (tests/parity.rs);
//! - top-k: equal to the CPU's (items, score bits, tie order): the device
//!   picks candidates from the quantised table, the host re-ranks exactly.

mod common;
mod reference;

use std::sync::Arc;
use std::time::Instant;

use common::{Gaps, config, history};
use edgerec_kernels::backend::{Backend, BackendState};
use edgerec_kernels::cuda::{CudaBackend, EmuOptions};
use edgerec_kernels::{BackendChoice, open_backend};
use edgerec_kernels::{CpuBackend, Event, Model, ModelConfig, UserHistory, encode, encode_batch, top_k};

const EMBED_TOL: f32 = 2e-5;
const REF_TOL: f64 = 1e-4;

fn emu(model: &Model) -> CudaBackend {
    emu_with(model, &EmuOptions::default()).expect("cuda-emu builds with the system C++ compiler")
}

fn emu_with(model: &Model, options: &EmuOptions) -> Result<CudaBackend, String> {
    let b = CudaBackend::emulated_with(Arc::new(model.clone()), options).map_err(|e| e.to_string())?;
    b.set_poison_outputs(true);
    Ok(b)
}

/// Largest |a − b| (NaN counts as infinite).
fn worst(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) })
}

/// Encodes `users` on `backend` and compares with the CPU engine and the
/// f64 reference; the worst errors, or what failed.
fn compare_encode(backend: &dyn Backend, model: &Model, users: &[(Vec<Event>, i64)]) -> Result<(f32, f64), String> {
    let batch: Vec<UserHistory<'_>> = users.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let got = backend.encode_batch(&batch).map_err(|e| format!("encode failed: {e}"))?;
    let cpu = encode_batch(model, &batch).map_err(|e| e.to_string())?;
    let (mut w_cpu, mut w_ref) = (0.0f32, 0.0f64);
    for (u, ((g, c), (events, q))) in got.iter().zip(&cpu).zip(users).enumerate() {
        let e = worst(g, c);
        if e > EMBED_TOL {
            return Err(format!("user {u} (n = {}): max |emu − cpu| = {e} > {EMBED_TOL}", events.len()));
        }
        let r = reference::rel_err(g, &reference::encode(model, events, *q));
        if r.is_nan() || r > REF_TOL {
            return Err(format!(
                "user {u} (n = {}): error relative to the f64 reference {r:e} > {REF_TOL:e}",
                events.len()
            ));
        }
        w_cpu = w_cpu.max(e);
        w_ref = w_ref.max(r);
    }
    Ok((w_cpu, w_ref))
}

fn users(cfg: &ModelConfig, lengths: &[usize], seed: u64) -> Vec<(Vec<Event>, i64)> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| history(n, cfg.num_items, [Gaps::Anything, Gaps::Seconds, Gaps::Equal][i % 3], seed + i as u64))
        .collect()
}

#[test]
fn encode_matches_cpu_and_reference_for_every_head_dim_and_length() {
    let start = Instant::now();
    // (items, D, layers, heads, d_qk, d_v, L, lengths): head dims 5, 25, 50,
    // 64; d_qk ≠ d_v both ways; 1, 2, 31, 32, 33 events (attention tile
    // edges), L events, histories longer than L.
    type Shape = (usize, usize, usize, usize, usize, usize, usize, &'static [usize]);
    let shapes: [Shape; 6] = [
        (60, 10, 2, 2, 5, 5, 40, &[1, 2, 31, 32, 33, 40, 47]),
        (60, 25, 1, 1, 25, 25, 40, &[1, 33, 45]),
        (60, 50, 2, 1, 50, 50, 200, &[200, 1, 205]),
        (60, 64, 1, 1, 64, 64, 40, &[2, 32, 40]),
        (60, 24, 2, 3, 8, 16, 40, &[1, 31, 33, 50]),
        (60, 20, 1, 2, 12, 6, 40, &[32, 3]),
    ];
    let mut report = Vec::new();
    for (i, &(items, d, layers, heads, dqk, dv, l, lengths)) in shapes.iter().enumerate() {
        let cfg = config(items, d, layers, heads, dqk, dv, l);
        let model = Model::random(cfg.clone(), 40 + i as u64).unwrap();
        let b = emu(&model);
        let (e_cpu, e_ref) = compare_encode(&b, &model, &users(&cfg, lengths, 100 * i as u64))
            .unwrap_or_else(|e| panic!("shape {i} (d_qk {dqk}, d_v {dv}): {e}"));
        report.push(format!("dqk {dqk} dv {dv}: {e_cpu:.1e} vs cpu, {e_ref:.1e} vs f64"));
    }
    eprintln!("cuda-emu encode parity: {} ({:.1} s)", report.join("; "), start.elapsed().as_secs_f64());
}

#[test]
fn batches_of_mixed_lengths_match_one_by_one_and_the_cpu() {
    let cfg = config(80, 16, 2, 2, 8, 8, 40);
    let model = Model::random(cfg.clone(), 7).unwrap();
    let b = emu(&model);
    for (bi, size) in [1usize, 2, 5, 16].into_iter().enumerate() {
        let lengths: Vec<usize> = (0..size).map(|u| [1, 40, 33, 7, 55, 2, 32, 31][(u + bi) % 8]).collect();
        let hist = users(&cfg, &lengths, 1000 + bi as u64);
        compare_encode(&b, &model, &hist).unwrap_or_else(|e| panic!("batch of {size}: {e}"));
        // The batch equals its users encoded one at a time on the same backend.
        let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
        let together = b.encode_batch(&batch).unwrap();
        for (u, one) in batch.iter().enumerate() {
            let alone = b.encode_batch(std::slice::from_ref(one)).unwrap();
            assert_eq!(together[u], alone[0], "batch of {size}, user {u}: a batch changes no user's result");
        }
    }
}

#[test]
fn incremental_appends_match_a_full_encode_including_the_sliding_window() {
    let cfg = config(90, 16, 2, 2, 8, 12, 24);
    let model = Model::random(cfg.clone(), 9).unwrap();
    let b = emu(&model);
    let backend: &dyn Backend = &b;
    let (mut all, mut q) = history(5, 90, Gaps::Anything, 77);
    let (mut state, first) = backend.new_state(&all, q).unwrap();
    assert!(worst(&first, &encode(&model, &all, q).unwrap()) <= EMBED_TOL);
    let per_user = cfg.num_layers * cfg.max_seq_len * cfg.num_heads * (cfg.d_qk + cfg.d_v) * 4;
    assert_eq!(state.device_bytes(), per_user, "the device cache holds L rows of every layer");
    assert!(state.host_bytes() > 0);
    let mut slid = false;
    for step in 0..16u64 {
        let last = all.iter().map(|e| e.ts).max().unwrap();
        let new: Vec<Event> = match step % 5 {
            0 => Vec::new(),                                                      // a later query time only
            4 => vec![Event { item: 1 + (step as u32 * 7) % 90, ts: last - 10 }], // out of order: full recompute
            _ => (0..1 + step % 4)
                .map(|j| Event { item: 1 + ((step * 13 + j) % 90) as u32, ts: last + 5 + 100 * j as i64 })
                .collect(),
        };
        all.extend_from_slice(&new);
        q = all.iter().map(|e| e.ts).max().unwrap() + 30 * step as i64;
        let got = backend.append(&mut state, &new, q).unwrap();
        let want = encode(&model, &all, q).unwrap();
        let e = worst(&got, &want);
        assert!(e <= EMBED_TOL, "step {step} (history {}, window {}): {e}", all.len(), state.events().len());
        let r = reference::rel_err(&got, &reference::encode(&model, &all, q));
        assert!(r <= REF_TOL, "step {step}: {r:e} vs the f64 reference");
        slid |= all.len() > cfg.max_seq_len;
        assert_eq!(state.events().len(), all.len().min(cfg.max_seq_len));
    }
    assert!(slid, "the test must reach the sliding window");
    assert!(backend.append(&mut state, &[], 0).is_err(), "query before the last event");
    assert!(backend.append(&mut state, &[Event { item: 91, ts: q }], q).is_err(), "unknown item");

    // A CPU state handed to the emulated backend is rebuilt, not misread; and back.
    let cpu = CpuBackend::new(Arc::new(model.clone()));
    let (mut s, _) = cpu.new_state(&all, q).unwrap();
    let more = [Event { item: 3, ts: q + 1 }];
    all.extend_from_slice(&more);
    let got = backend.append(&mut s, &more, q + 2).unwrap();
    assert!(matches!(s, BackendState::Cuda(_)));
    assert!(worst(&got, &encode(&model, &all, q + 2).unwrap()) <= EMBED_TOL);
    let got = cpu.append(&mut s, &[], q + 3).unwrap();
    assert!(matches!(s, BackendState::Cpu(_)));
    assert!(worst(&got, &encode(&model, &all, q + 3).unwrap()) <= EMBED_TOL);
    // A state built for another model (other head dims) is rebuilt for this one.
    let other = Model::random(config(90, 16, 1, 1, 4, 4, 24), 10).unwrap();
    let (mut foreign, _) = Backend::new_state(&emu(&other), &all, q + 3).unwrap();
    let got = backend.append(&mut foreign, &[], q + 4).unwrap();
    assert!(worst(&got, &encode(&model, &all, q + 4).unwrap()) <= EMBED_TOL);
}

#[test]
fn batched_appends_match_full_encodes() {
    // One group of users per round, mixing incremental appends, empty ones,
    // out-of-order events (full recompute), a sliding window, a CPU state
    // (rebuilt on the device) and a bad request (fails only itself).
    let cfg = config(50, 12, 2, 2, 6, 4, 16);
    let model = Model::random(cfg, 12).unwrap();
    let b = emu(&model);
    let cpu = CpuBackend::new(Arc::new(model.clone()));
    let mut hist: Vec<(Vec<Event>, i64)> =
        (0..6u64).map(|u| history(1 + 3 * u as usize, 50, Gaps::Seconds, 300 + u)).collect();
    let mut states: Vec<BackendState> = hist
        .iter()
        .enumerate()
        .map(
            |(u, (e, q))| {
                if u == 5 { cpu.new_state(e, *q).unwrap().0 } else { Backend::new_state(&b, e, *q).unwrap().0 }
            },
        )
        .collect();
    for round in 0..4usize {
        let news: Vec<Vec<Event>> = hist
            .iter()
            .enumerate()
            .map(|(u, (e, q))| {
                let last = e.iter().map(|x| x.ts).max().unwrap().max(*q);
                match (u + round) % 4 {
                    0 => Vec::new(),
                    1 => vec![Event { item: 1 + u as u32, ts: last - 50 }],
                    _ => (0..1 + (u + round) % 5)
                        .map(|j| Event { item: 1 + (7 * u + j) as u32 % 50, ts: last + 3 * j as i64 })
                        .collect(),
                }
            })
            .collect();
        for ((e, q), new) in hist.iter_mut().zip(&news) {
            e.extend_from_slice(new);
            *q = e.iter().map(|x| x.ts).max().unwrap() + round as i64;
        }
        let bad = round % 6;
        let mut reqs: Vec<edgerec_kernels::AppendRequest<'_>> = states
            .iter_mut()
            .zip(&news)
            .zip(&hist)
            .map(|((state, new), (_, q))| edgerec_kernels::AppendRequest { state, new_events: new, query_time: *q })
            .collect();
        reqs[bad].query_time = 0;
        let out = Backend::append_batch(&b, &mut reqs);
        for (u, r) in out.iter().enumerate() {
            if u == bad {
                assert!(r.is_err(), "round {round}: a query time before the last event is refused");
                continue;
            }
            let (e, q) = &hist[u];
            let e_cpu = worst(r.as_ref().unwrap(), &encode(&model, e, *q).unwrap());
            assert!(e_cpu <= EMBED_TOL, "round {round} user {u} (history {}): {e_cpu}", e.len());
        }
        // The refused user's state is unchanged: append the same events again, validly.
        let (e, q) = &hist[bad];
        let got = Backend::append(&b, &mut states[bad], &news[bad], *q).unwrap();
        assert!(worst(&got, &encode(&model, e, *q).unwrap()) <= EMBED_TOL, "round {round}: retry of user {bad}");
    }
    assert!(hist.iter().any(|(e, _)| e.len() > 16), "some window must slide");
    assert!(states.iter().all(|s| matches!(s, BackendState::Cuda(_))));
}

/// Checks an emulated top-k against the CPU's; Err says what differs.
fn compare_top_k(
    model: &Model,
    got: &[edgerec_kernels::Scored],
    want: &[edgerec_kernels::Scored],
    exclude: &[u32],
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} items, the CPU gives {}", got.len(), want.len()));
    }
    // The device only picks candidates; the host re-ranks them with the CPU
    // retrieval's code: items, scores and tie order are the CPU's exactly.
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        if exclude.contains(&g.item) {
            return Err(format!("excluded item {} returned", g.item));
        }
        if g.score.to_bits() != w.score.to_bits() || g.item != w.item {
            return Err(format!(
                "rank {t}: item {} score {} vs cpu item {} score {}",
                g.item, g.score, w.item, w.score
            ));
        }
    }
    let _ = model;
    Ok(())
}

fn top_k_model(items: usize, seed: u64) -> Model {
    let mut m = Model::random(config(items, 16, 1, 1, 4, 4, 8), seed).unwrap();
    let d = 16;
    // Exact duplicate rows (ties: the smaller id first), a zero row and a NaN row.
    for (dst, src) in [(7usize, 3usize), (items - 1, 5), (items / 2, 3)] {
        let row = m.weights.item_emb[src * d..(src + 1) * d].to_vec();
        m.weights.item_emb[dst * d..(dst + 1) * d].copy_from_slice(&row);
    }
    m.weights.item_emb[11 * d..12 * d].fill(0.0);
    m.weights.item_emb[13 * d] = f32::NAN;
    Model::new(m.config.clone(), m.weights.clone()).unwrap()
}

#[test]
fn top_k_matches_cpu_with_ties_exclusions_nan_and_k_beyond_the_catalog() {
    for (items, ks) in [(300usize, &[1usize, 10, 299, 310][..]), (5000, &[1, 64, 512, 600][..])] {
        let model = top_k_model(items, items as u64);
        let b = emu(&model);
        let embeddings: Vec<Vec<f32>> = (0..4)
            .map(|u| {
                if u == 0 {
                    model.item_row(3).to_vec()
                } else {
                    (0..16).map(|j| ((u * 31 + j * 7) % 17) as f32 / 8.0 - 1.0).collect()
                }
            })
            .collect();
        let excl: Vec<Vec<u32>> = (0..4u32)
            .map(|u| (0..u * 25).map(|j| 1 + (j * 97 + u) % items as u32).chain([0, items as u32 + 5]).collect())
            .collect();
        let refs: Vec<&[u32]> = excl.iter().map(Vec::as_slice).collect();
        for &k in ks {
            let got = b.top_k_batch(&embeddings, k, &refs).unwrap();
            for u in 0..4 {
                let want = top_k(&model, &embeddings[u], k, &excl[u]);
                compare_top_k(&model, &got[u], &want, &excl[u])
                    .unwrap_or_else(|e| panic!("V {items} k {k} user {u}: {e}"));
            }
            if k >= 3 {
                let ids: Vec<u32> = got[0].iter().map(|s| s.item).collect();
                assert_eq!(ids[0], 13, "V {items} k {k}: the NaN item first, as f32::total_cmp orders it");
                assert_eq!(&ids[1..4], &[3, 7, items as u32 / 2][..], "V {items} k {k}: equal rows by smaller id");
            }
        }
        assert!(b.top_k_batch(&embeddings, 5, &[]).unwrap().iter().all(|l| l.len() == 5));
        assert!(b.top_k_batch(&[vec![0.0; 15]], 5, &[]).is_err(), "wrong embedding width");
    }
}

#[test]
fn cuda_emu_is_a_backend_choice_never_auto() {
    let model = Arc::new(Model::random(config(20, 8, 1, 1, 4, 4, 8), 3).unwrap());
    assert_eq!("cuda-emu".parse::<BackendChoice>().unwrap(), BackendChoice::CudaEmu);
    assert_eq!(BackendChoice::CudaEmu.to_string(), "cuda-emu");
    let sel = open_backend(BackendChoice::CudaEmu, model.clone()).unwrap();
    assert_eq!(sel.backend.name(), "cuda-emu");
    let auto = open_backend(BackendChoice::Auto, model.clone()).unwrap();
    assert_ne!(auto.backend.name(), "cuda-emu");
    if auto.backend.name() == "cpu" {
        let why = auto.cuda_refused.expect("auto on the CPU says why CUDA was refused");
        assert!(why.to_string().starts_with("cuda backend unavailable"), "{why}");
    }
    let e = [Event { item: 1, ts: 5 }];
    let bad = [Event { item: 21, ts: 5 }];
    let users = [UserHistory { events: &e, query_time: 9 }, UserHistory { events: &bad, query_time: 9 }];
    assert!(
        matches!(sel.backend.encode_batch(&users), Err(edgerec_kernels::BackendError::Input(err)) if err.index == 1)
    );
    assert!(sel.backend.encode_batch(&[UserHistory { events: &[], query_time: 9 }]).is_err());
}

// ---- seeded bugs: a broken copy of a kernel must fail the same checks ----

/// Replaces `from` (which must occur exactly once) in a copy of `file`.
fn seeded(file: &str, from: &str, to: &str) -> EmuOptions {
    let path = format!("{}/src/cuda/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{file}: the seeded edit must match exactly once: {from:?}");
    EmuOptions { source_overrides: vec![(file.to_string(), text.replace(from, to))], ..Default::default() }
}

/// Whether the encode parity check catches the seeded bug (an emulator
/// error or a wrong result); the message says how.
fn encode_catches(options: &EmuOptions) -> String {
    let cfg = config(60, 16, 1, 2, 8, 8, 40);
    let model = Model::random(cfg.clone(), 5).unwrap();
    let b = match emu_with(&model, options) {
        Ok(b) => b,
        Err(e) => return format!("build: {e}"),
    };
    match compare_encode(&b, &model, &users(&cfg, &[40, 33, 1, 17], 900)) {
        Ok(errs) => panic!("the seeded bug went unnoticed: parity held ({errs:?})"),
        Err(e) => e,
    }
}

#[test]
fn seeded_missing_barrier_in_attention_is_caught() {
    // The barrier between loading a key/value tile and reading it.
    let how =
        encode_catches(&seeded("hstu_attention.cu", "        __syncthreads();\n\n#pragma unroll", "\n#pragma unroll"));
    eprintln!("caught: {how}");
}

#[test]
fn seeded_missing_barrier_in_gemm_is_caught() {
    // The barrier after the row statistics: LN reads another warp's mean.
    let how = encode_catches(&seeded(
        "hstu_gemm.cu",
        "row_stats(A, lda, M, K, m0, s_mean, s_rstd);\n    __syncthreads();",
        "row_stats(A, lda, M, K, m0, s_mean, s_rstd);",
    ));
    eprintln!("caught: {how}");
}

#[test]
fn seeded_shifted_index_in_attention_is_caught() {
    let how = encode_catches(&seeded("hstu_attention.cu", "pos_w[big_n - 1 + j - i]", "pos_w[big_n - 2 + j - i]"));
    eprintln!("caught: {how}");
}

#[test]
fn seeded_barrier_in_divergent_code_is_reported() {
    let how = encode_catches(&seeded(
        "hstu_gemm.cu",
        "row_stats(A, lda, M, K, m0, s_mean, s_rstd);\n    __syncthreads();",
        "row_stats(A, lda, M, K, m0, s_mean, s_rstd);\n    if (threadIdx.x < 128) __syncthreads();",
    ));
    // The threads that skip the barrier either wait at the next one (the
    // barrier check) or first read another warp's row statistics (the race
    // detector), whichever the schedule reaches first.
    assert!(how.contains("different barriers") || how.contains("shared-memory race"), "{how}");
}

#[test]
fn seeded_shuffle_with_an_exited_lane_is_reported() {
    let how = encode_catches(&seeded(
        "hstu_rows.cu",
        "if (warp >= users) return;",
        "if (warp >= users || lane == 5) return;",
    ));
    assert!(how.contains("has exited"), "{how}");
}

#[test]
fn seeded_missing_barrier_in_top_k_rank_is_caught() {
    // The barrier between writing each warp's sorted pairs and ranking
    // every row against them.
    let options = seeded(
        "score_topk.cu",
        "        s_row[threadIdx.x] = r;\n        __syncthreads();",
        "        s_row[threadIdx.x] = r;",
    );
    let model = top_k_model(300, 300);
    let b = emu_with(&model, &options).unwrap();
    let embeddings: Vec<Vec<f32>> =
        (0..3).map(|u| (0..16).map(|j| ((u * 5 + j * 3) % 11) as f32 / 6.0 - 1.0).collect()).collect();
    let caught = match b.top_k_batch(&embeddings, 50, &[]) {
        Err(e) => {
            assert!(e.to_string().contains("shared-memory race"), "{e}");
            true
        }
        Ok(got) => {
            (0..3).any(|u| compare_top_k(&model, &got[u], &top_k(&model, &embeddings[u], 50, &[]), &[]).is_err())
        }
    };
    assert!(caught, "ranking without a barrier went unnoticed");
}

#[test]
fn seeded_threshold_above_the_kth_is_caught() {
    // A threshold that drops rows which may reach the top k: the host re-ranks
    // only the device's candidates, so the answer must differ from the CPU's.
    let options = seeded(
        "score_topk.cu",
        "thr[u] = qt_next_down(m - twice_bound[u]);",
        "thr[u] = m + 0.25f * (m > 0.0f ? m : -m);",
    );
    let model = top_k_model(300, 300);
    let b = emu_with(&model, &options).unwrap();
    let embeddings: Vec<Vec<f32>> =
        (0..3).map(|u| (0..16).map(|j| ((u * 5 + j * 3) % 11) as f32 / 6.0 - 1.0).collect()).collect();
    let got = b.top_k_batch(&embeddings, 10, &[]).unwrap();
    let caught = (0..3).any(|u| compare_top_k(&model, &got[u], &top_k(&model, &embeddings[u], 10, &[]), &[]).is_err());
    assert!(caught, "a threshold above the k-th approximation went unnoticed");
}

/// Device states live in one key/value pool per backend: 20 states outgrow
/// its first 16 slots (the pool doubles, copying the slots in use), every
/// state still appends like the CPU afterwards (its cached rows moved
/// intact), and dropped states' slots are reused (no growth for 20 more).
#[test]
fn device_states_share_a_pool_that_grows_and_reuses_freed_slots() {
    let cfg = config(60, 16, 2, 2, 8, 8, 40);
    let model = Model::random(cfg.clone(), 41).unwrap();
    let b = emu(&model);
    b.set_poison_outputs(true);
    let lens: Vec<usize> = (0..20).map(|i| 1 + (i * 7) % 35).collect();
    let hist = users(&cfg, &lens, 4100);
    let mut states = Vec::new();
    for (events, q) in &hist {
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.ts);
        let (state, _) = b.new_state(&sorted, *q).unwrap();
        states.push((state, sorted));
    }
    assert_eq!(b.kv_pool_capacity(), 32, "20 states in a pool of 16 slots doubles it once");
    for (u, (state, sorted)) in states.iter_mut().enumerate() {
        let next = Event { item: 1 + u as u32, ts: sorted.last().map_or(0, |e| e.ts) + 5 };
        let got = b.append(state, &[next], next.ts + 1).unwrap();
        sorted.push(next);
        let want = encode(&model, sorted, next.ts + 1).unwrap();
        let diff = worst(&got, &want);
        assert!(diff <= EMBED_TOL, "user {u} after the pool grew: {diff:e}");
    }
    drop(states);
    let again: Vec<_> = hist.iter().map(|(events, q)| b.new_state(events, *q).unwrap()).collect();
    assert_eq!(again.len(), 20);
    assert_eq!(b.kv_pool_capacity(), 32, "freed slots are reused");
}
