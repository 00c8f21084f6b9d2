//! The kernel benchmark behind `edgerec bench kernels`: encode latency,
//! users/s, incremental latency and top-k, each beside its GFLOP/s and the
//! one-thread sgemm GFLOP/s of the same `gemm` crate measured in the same run.
//!
//! FLOP count (multiply and add counted separately; LayerNorm, SiLU, rab,
//! residual and bias adds are elementwise and not counted). For query rows
//! `start..n` of a user, per layer, with W = 2·H·(d_qk+d_v), A = H·d_v and
//! P = Σ_{i=start}^{n−1} (i+1) causal pairs:
//! `2·r·D·W` (u|v|q|k) + `2·H·(d_qk+d_v)·P` (q·k and A·V) + `2·r·A·D` (W_o),
//! r = n − start. Top-k over V items: `2·V·D` (the cosines).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use edgerec_kernels::history::random_history;
use edgerec_kernels::{
    EncoderState, Event, Model, ModelConfig, ModelError, QuantizedTable, RowMask, UserHistory, Weights, encode,
    encode_batch, top_k,
};

/// Threads of the pool that batch encode and scoring run on.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// FLOPs of the forward over query rows `start..n` of an n-event window.
pub fn forward_flops(config: &ModelConfig, start: usize, n: usize) -> f64 {
    let (d, h) = (config.d_model as f64, config.num_heads as f64);
    let (w, a) = (config.uvqk_width() as f64, config.attn_width() as f64);
    let r = (n - start) as f64;
    let pairs: f64 = (start..n).map(|i| (i + 1) as f64).sum();
    let per_layer = 2.0 * r * d * w + 2.0 * h * (config.d_qk + config.d_v) as f64 * pairs + 2.0 * r * a * d;
    per_layer * config.num_layers as f64
}

/// FLOPs of scoring `items` items of dimension `d`.
pub fn top_k_flops(items: usize, d: usize) -> f64 {
    2.0 * items as f64 * d as f64
}

/// Median seconds of `f` over repeated runs within `budget` (at least 3 runs).
pub fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 10_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// One-thread sgemm GFLOP/s of `gemm` on an m×k by k×n product.
pub fn sgemm_gflops(m: usize, k: usize, n: usize, budget: Duration) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let lhs: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let rhs: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut dst = vec![0.0f32; m * n];
    let secs = median_secs(budget, || {
        // SAFETY: dst is m×n, lhs m×k, rhs k×n, all row-major and contiguous
        // (row strides n, k, n; column strides 1), distinct buffers.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    });
    2.0 * (m * k * n) as f64 / secs / 1e9
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which shape.
    pub shape: String,
    /// What was measured.
    pub what: String,
    /// The figure, already formatted with its unit.
    pub value: String,
    /// GFLOP/s achieved.
    pub gflops: f64,
    /// Threads used.
    pub threads: usize,
}

impl Row {
    /// The row as a line of the `| shape | figure | value | GFLOP/s | threads
    /// | ratio to roof |` table, the ratio against `roof` GFLOP/s per thread.
    pub fn table_line(&self, roof: f64) -> String {
        format!(
            "| {} | {} | {} | {:.2} | {} | {:.2} |",
            self.shape,
            self.what,
            self.value,
            self.gflops,
            self.threads,
            self.gflops / (roof * self.threads as f64)
        )
    }
}

/// A model of `config` whose item table is filled by a cheap hash instead of
/// the seeded generator: for catalogs of a million items, where drawing every
/// weight would dominate the benchmark's run time.
pub fn wide_catalog_model(base: &Model, num_items: usize) -> Result<Model, ModelError> {
    let mut config = base.config.clone();
    config.num_items = num_items;
    let d = config.d_model;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let item_emb = (0..(num_items + 1) * d)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let weights = Weights { item_emb, ..base.weights.clone() };
    Model::new(config, weights)
}

/// Measures one model shape. `users` is the batch size of the throughput
/// figure; `budget` the time spent per figure.
pub fn bench_shape(name: &str, model: &Model, users: usize, budget: Duration) -> Result<Vec<Row>, ModelError> {
    let mut rows = bench_encoder(name, model, users, budget);
    rows.extend(bench_scoring(name, model, budget)?);
    Ok(rows)
}

/// The encoder figures of [`bench_shape`]: one user, a batch of `users`, and
/// a +1-event incremental encode, all at the model's full length L.
pub fn bench_encoder(name: &str, model: &Model, users: usize, budget: Duration) -> Vec<Row> {
    let c = &model.config;
    let l = c.max_seq_len;
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let mut push = |what: &str, value: String, gflops: f64, threads: usize| {
        rows.push(Row { shape: name.to_string(), what: what.to_string(), value, gflops, threads })
    };

    let (events, q) = random_history(c.num_items, l, 7);
    let full = forward_flops(c, 0, l);
    let secs = median_secs(budget, || {
        std::hint::black_box(encode(model, &events, q).expect("valid history"));
    });
    push(&format!("full encode, 1 user × {l} events"), format!("{:.3} ms", secs * 1e3), full / secs / 1e9, 1);

    let histories: Vec<(Vec<Event>, i64)> =
        (0..users).map(|u| random_history(c.num_items, l, 100 + u as u64)).collect();
    let batch: Vec<UserHistory<'_>> =
        histories.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
    let secs = median_secs(budget, || {
        std::hint::black_box(encode_batch(model, &batch).expect("valid batch"));
    });
    let per_s = users as f64 / secs;
    push(
        &format!("batch encode, {users} users × {l} events"),
        format!("{per_s:.0} users/s"),
        per_s * full / 1e9,
        threads,
    );
    // The same users, one forward each (parallel across users): what the
    // stacked batch is measured against.
    let secs = median_secs(budget, || {
        std::hint::black_box(one_by_one(model, &batch));
    });
    let per_s = users as f64 / secs;
    push(
        &format!("batch encode, {users} users × {l} events, one forward per user"),
        format!("{per_s:.0} users/s"),
        per_s * full / 1e9,
        threads,
    );
    // Short histories, where stacking fills the tiles and shares the calls.
    let short_len = (l / 10).max(1);
    let short_users = 4 * users;
    let short: Vec<(Vec<Event>, i64)> =
        (0..short_users).map(|u| random_history(c.num_items, short_len, 5000 + u as u64)).collect();
    let short_batch: Vec<UserHistory<'_>> =
        short.iter().map(|(events, q)| UserHistory { events, query_time: *q }).collect();
    let short_flops = forward_flops(c, 0, short_len);
    for (how, stacked) in [("", true), (", one forward per user", false)] {
        let secs = median_secs(budget, || {
            if stacked {
                std::hint::black_box(encode_batch(model, &short_batch).expect("valid batch"));
            } else {
                std::hint::black_box(one_by_one(model, &short_batch));
            }
        });
        let per_s = short_users as f64 / secs;
        push(
            &format!("batch encode, {short_users} users × {short_len} events{how}"),
            format!("{per_s:.0} users/s"),
            per_s * short_flops / 1e9,
            threads,
        );
    }

    // New states (cache misses and slid windows, which a server rebuilds):
    // one batched forward (`EncoderState::new_batch`, what the server's
    // `new_state_batch` runs on the CPU) against the server's loop before it,
    // one state after another.
    for (what, batch, n, flops) in [(users, &batch, l, full), (short_users, &short_batch, short_len, short_flops)] {
        for (how, batched) in [("batched", true), ("one after another", false)] {
            let secs = median_secs(budget, || {
                if batched {
                    std::hint::black_box(EncoderState::new_batch(model, batch));
                } else {
                    // Kept until the batch ends, as a server caches them.
                    let built: Vec<_> = batch
                        .iter()
                        .map(|u| EncoderState::new(model, u.events, u.query_time).expect("valid history"))
                        .collect();
                    std::hint::black_box(built);
                }
            });
            let per_s = what as f64 / secs;
            push(
                &format!("new states, {what} users × {n} events, {how}"),
                format!("{per_s:.0} users/s"),
                per_s * flops / 1e9,
                if batched { threads } else { 1 },
            );
        }
    }

    let (state, _) = EncoderState::new(model, &events[..l - 1], events[l - 2].ts).expect("valid history");
    let inc = forward_flops(c, l - 2, l);
    // Each run appends to a fresh copy of the 199-event state; the copies are
    // made outside the timed region.
    let mut pool: Vec<EncoderState> = Vec::new();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 2000) {
        if pool.is_empty() {
            pool = vec![state.clone(); 64];
        }
        let mut s = pool.pop().expect("refilled above");
        let t = Instant::now();
        std::hint::black_box(s.append(model, &events[l - 1..], q).expect("valid append"));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    push(
        &format!("incremental, +1 event at n={l} ({} B state)", state.size_bytes()),
        format!("{:.1} µs", secs * 1e6),
        inc / secs / 1e9,
        1,
    );

    rows
}

/// Each user encoded by its own call, in parallel across users.
fn one_by_one(model: &Model, users: &[UserHistory<'_>]) -> Vec<Vec<f32>> {
    users.par_iter().map(|u| encode(model, u.events, u.query_time).expect("valid history")).collect()
}

/// The scoring figures of [`bench_shape`]: top-10 over V and over a million items.
pub fn bench_scoring(name: &str, model: &Model, budget: Duration) -> Result<Vec<Row>, ModelError> {
    let c = &model.config;
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let mut push = |what: &str, value: String, gflops: f64, threads: usize| {
        rows.push(Row { shape: name.to_string(), what: what.to_string(), value, gflops, threads })
    };
    let (events, q) = random_history(c.num_items, c.max_seq_len, 7);
    let emb = encode(model, &events, q).expect("valid history");
    let exclude: Vec<u32> = events.iter().map(|e| e.item).collect();
    let secs = median_secs(budget, || {
        std::hint::black_box(top_k(model, &emb, 10, &exclude));
    });
    push(
        &format!("top-10 over V = {}", c.num_items),
        format!("{:.3} ms", secs * 1e3),
        top_k_flops(c.num_items, c.d_model) / secs / 1e9,
        threads,
    );

    let wide = wide_catalog_model(model, 1_000_000)?;
    let secs = median_secs(budget, || {
        std::hint::black_box(top_k(&wide, &emb, 10, &exclude));
    });
    push(
        "top-10 over 1,000,000 items",
        format!("{:.3} ms", secs * 1e3),
        top_k_flops(1_000_000, c.d_model) / secs / 1e9,
        threads,
    );
    rows.extend(bench_retrieval(name, model, &wide, 16, budget));
    Ok(rows)
}

/// Seconds of CPU time (user + system, all threads) this process has used.
fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage writes one rusage struct into the zeroed one given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// [`median_secs`] of `f`, and the process's CPU seconds per call over the
/// same runs: on a shared machine the CPU time is the steadier figure of
/// compute-bound work (the wall time waits for the cores others hold).
pub fn median_and_cpu_secs(budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    let mut calls = 0usize;
    let cpu = process_cpu_secs();
    let wall = median_secs(budget, || {
        f();
        calls += 1;
    });
    (wall, (process_cpu_secs() - cpu) / calls as f64)
}

/// GB/s of `threads()` threads reading `buf` once (a wrapping sum of its
/// words): the read floor that a scan of `bytes` cannot beat is `bytes / this`.
pub fn read_gbps(buf: &[f32], budget: Duration) -> f64 {
    let words: &[u32] = bytemuck::cast_slice(buf);
    let secs = median_secs(budget, || {
        let sum = words
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u32, |a, &w| a.wrapping_add(w)))
            .reduce(|| 0, u32::wrapping_add);
        std::hint::black_box(sum);
    });
    std::mem::size_of_val(words) as f64 / secs / 1e9
}

/// The exact-retrieval figures: top-10 over `wide`'s catalog for one query
/// and for a batch of `batch` queries in one pass, each beside the f32 scan
/// measured in this run and the read floor of the bytes each reads; whether
/// the answers are identical to the f32 scan's; a filtered scan (90 % of the
/// rows masked); and the table's build time and size.
pub fn bench_retrieval(name: &str, model: &Model, wide: &Model, batch: usize, budget: Duration) -> Vec<Row> {
    let c = &wide.config;
    let (v, d) = (c.num_items, c.d_model);
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let mut push = |what: String, value: String, gflops: f64| {
        rows.push(Row { shape: name.to_string(), what, value, gflops, threads })
    };
    let users: Vec<(Vec<f32>, Vec<u32>)> = (0..batch.max(1))
        .map(|u| {
            let (events, q) = random_history(model.config.num_items, model.config.max_seq_len, 900 + u as u64);
            (encode(model, &events, q).expect("valid history"), events.iter().map(|e| e.item).collect())
        })
        .collect();
    let queries: Vec<&[f32]> = users.iter().map(|(e, _)| e.as_slice()).collect();
    let excludes: Vec<&[u32]> = users.iter().map(|(_, x)| x.as_slice()).collect();

    let start = Instant::now();
    let table = QuantizedTable::from_model(wide);
    let build = start.elapsed().as_secs_f64();
    let gbps = read_gbps(&wide.weights.item_emb, budget);
    let f32_bytes = (v * d + v) * 4;
    let q_bytes = table.scan_bytes();
    let floor = |bytes: usize| bytes as f64 / gbps / 1e9;
    push(
        format!("read floor, {threads} threads ({:.0} MB f32 table)", wide.weights.item_emb.len() as f64 * 4e-6),
        format!("{gbps:.1} GB/s"),
        0.0,
    );
    push(
        format!("quantised table build, {v} × {d}"),
        format!(
            "{:.0} ms, {:.1} MB ({:.1} B/item; f32 {:.1} MB)",
            build * 1e3,
            table.size_bytes() as f64 * 1e-6,
            table.size_bytes() as f64 / v as f64,
            f32_bytes as f64 * 1e-6
        ),
        0.0,
    );

    let items = &wide.weights.item_emb;
    let f32_one = median_secs(budget, || {
        std::hint::black_box(top_k(wide, queries[0], 10, excludes[0]));
    });
    let (q_one, q_one_cpu) = median_and_cpu_secs(budget, || {
        std::hint::black_box(table.top_k(items, &queries[..1], 10, &excludes[..1], None).expect("valid call"));
    });
    let same_one = table.top_k(items, &queries[..1], 10, &excludes[..1], None).expect("valid call")[0]
        == top_k(wide, queries[0], 10, excludes[0]);
    push(
        format!("top-10 over {v} items, 1 query, quantised exact"),
        format!(
            "{:.3} ms, CPU {:.3} ms (f32 scan {:.3} ms: {:.2}×; read floor {:.3} ms quantised / {:.3} ms f32; identical to f32: {})",
            q_one * 1e3,
            q_one_cpu * 1e3,
            f32_one * 1e3,
            f32_one / q_one,
            floor(q_bytes) * 1e3,
            floor(f32_bytes) * 1e3,
            if same_one { "yes" } else { "NO" }
        ),
        top_k_flops(v, d) / q_one / 1e9,
    );

    let n = queries.len();
    let (q_batch, q_batch_cpu) = median_and_cpu_secs(budget, || {
        std::hint::black_box(table.top_k(items, &queries, 10, &excludes, None).expect("valid call"));
    });
    // The f32 scan of every query (one pass per query, in parallel across
    // queries as CpuBackend::top_k_batch does); timed once, it takes a while.
    let start = Instant::now();
    let f32_all: Vec<_> = queries.par_iter().zip(&excludes).map(|(q, x)| top_k(wide, q, 10, x)).collect();
    let f32_batch = start.elapsed().as_secs_f64();
    let same_batch = table.top_k(items, &queries, 10, &excludes, None).expect("valid call") == f32_all;
    push(
        format!("top-10 over {v} items, {n} queries in one pass, quantised exact"),
        format!(
            "{:.3} ms = {:.2}× one query; CPU {:.3} ms = {:.2}× one query's (f32 scans {:.1} ms: {:.1}×; identical to f32: {})",
            q_batch * 1e3,
            q_batch / q_one,
            q_batch_cpu * 1e3,
            q_batch_cpu / q_one_cpu,
            f32_batch * 1e3,
            f32_batch / q_batch,
            if same_batch { "yes" } else { "NO" }
        ),
        n as f64 * top_k_flops(v, d) / q_batch / 1e9,
    );

    // 90 % of the rows masked out (a seeded 10 % kept).
    let mut allow = RowMask::with_capacity(v + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for item in 1..=v {
        if rng.random_bool(0.1) {
            allow.insert(item);
        }
    }
    let q_masked = median_secs(budget, || {
        std::hint::black_box(table.top_k(items, &queries[..1], 10, &excludes[..1], Some(&allow)).expect("valid call"));
    });
    push(
        format!("top-10 over {v} items, 1 query, 90 % masked, quantised exact"),
        format!("{:.3} ms", q_masked * 1e3),
        top_k_flops(v, d) / q_masked / 1e9,
    );
    rows
}
