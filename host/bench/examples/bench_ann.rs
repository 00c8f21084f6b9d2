//! Approximate retrieval (HNSW, `edgerec_kernels::AnnIndex`) beside the exact
//! quantised scan on the same queries:
//! `cargo run --release -p edgerec-bench --example bench_ann -- [ITEMS] [QUERIES] [M] [EF_CONSTRUCTION] [EF_SEARCH]`.
//!
//! Builds the graph over ITEMS (default 100,000) hash-random items of the
//! ML-1M shape's D (no cluster structure: the hardest case for a graph),
//! then for QUERIES (default 200) users' embeddings prints the build time,
//! the process's resident memory before and after, top-10 latency per query
//! (p50, p99) for the graph and for the exact scan, and recall@10 of the
//! graph against the exact answers.

use std::time::Instant;

use edgerec_bench::kernels::{random_history, threads, wide_catalog_model};
use edgerec_kernels::{AnnConfig, AnnIndex, Model, ModelConfig, QuantizedTable, encode};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let items: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let queries: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let defaults = AnnConfig::default();
    let config = AnnConfig {
        max_connections: args.next().map_or(Ok(defaults.max_connections), |a| a.parse())?,
        ef_construction: args.next().map_or(Ok(defaults.ef_construction), |a| a.parse())?,
        ef_search: args.next().map_or(Ok(defaults.ef_search), |a| a.parse())?,
    };
    let model = Model::random(ModelConfig::ml_1m(3953), 1)?;
    let wide = wide_catalog_model(&model, items)?;
    let users: Vec<Vec<f32>> = (0..queries)
        .map(|u| {
            let (events, q) = random_history(model.config.num_items, model.config.max_seq_len, 900 + u as u64);
            encode(&model, &events, q).expect("valid history")
        })
        .collect();
    println!("rayon threads: {}; {items} items × {}; {config:?}", threads(), wide.config.d_model);

    let exact = QuantizedTable::from_model(&wide);
    let before = rss_mib();
    let started = Instant::now();
    let index = AnnIndex::from_model(&wide, config);
    let build = started.elapsed().as_secs_f64();
    println!("graph build: {build:.1} s; resident memory {before:.0} → {:.0} MiB", rss_mib());

    let rows = &wide.weights.item_emb;
    let (mut ann_ms, mut exact_ms, mut found, mut total) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for user in &users {
        let started = Instant::now();
        let approx = index.top_k(rows, &[user.as_slice()], 10, &[], None)?;
        ann_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let truth = exact.top_k(rows, &[user.as_slice()], 10, &[], None)?;
        exact_ms.push(started.elapsed().as_secs_f64() * 1e3);
        found += truth[0].iter().filter(|s| approx[0].iter().any(|a| a.item == s.item)).count();
        total += truth[0].len();
    }
    ann_ms.sort_by(f64::total_cmp);
    exact_ms.sort_by(f64::total_cmp);
    println!(
        "top-10, one query at a time: graph p50 {:.3} ms p99 {:.3} ms; exact scan p50 {:.3} ms p99 {:.3} ms ({:.1}× at p50)",
        percentile(&ann_ms, 0.5),
        percentile(&ann_ms, 0.99),
        percentile(&exact_ms, 0.5),
        percentile(&exact_ms, 0.99),
        percentile(&exact_ms, 0.5) / percentile(&ann_ms, 0.5)
    );
    println!("recall@10 against the exact scan: {:.4} ({found} of {total})", found as f64 / total as f64);
    Ok(())
}
