//! ANN retrieval ([`AnnIndex`]) against the exact quantised scan
//! ([`QuantizedTable`]) in the same run, on the table `edgerec bench kernels`
//! scores (ITEMS hash-random items × D 50, as `bench::wide_catalog_model`
//! makes it) and its queries (users of a random ML-1M-shape model encoded
//! from random 200-event histories, each excluding its own items).
//!
//! `cargo run --release -p edgerec-kernels --example bench_ann -- ITEMS [key=value ...]`
//!
//! Keys: `queries=500` (single-query samples; batches cycle through them),
//! `batch=16`, `batches=40`, `m=16` (connectivity), `ef_add=128`,
//! `ef=64,128,256` (search widths measured, one row each), `storage=f32|f16|i8`,
//! `oversample=0`, `index=PATH` (load the graph from PATH when it exists,
//! else build it and save it there), `filtered=1` (also a 90 %-filtered run
//! at the last ef), `table=random|clustered` (clustered: items drawn around
//! 1,000 random centres, a structure real embeddings have and hash-random
//! ones lack).
//!
//! Prints, per ef: recall@10 against the exact answers, ANN and exact
//! latency p50/p99 for one query and for a batch, and their ratio; and the
//! build (or load) time and memory per item.
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use edgerec_kernels::history::random_history;
use edgerec_kernels::{AnnIndex, AnnOptions, AnnStorage, Model, ModelConfig, QuantizedTable, RowMask, Scored, encode};

/// The settings of one run (see the module doc).
struct Args {
    items: usize,
    queries: usize,
    batch: usize,
    batches: usize,
    efs: Vec<usize>,
    options: AnnOptions,
    index: Option<PathBuf>,
    filtered: bool,
    clustered: bool,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut argv = std::env::args().skip(1);
    let items: usize = argv.next().map_or(Ok(100_000), |a| a.parse())?;
    let mut args = Args {
        items,
        queries: 500,
        batch: 16,
        batches: 40,
        efs: vec![64, 128, 256],
        options: AnnOptions::default(),
        index: None,
        filtered: false,
        clustered: false,
    };
    for arg in argv {
        let (key, value) = arg.split_once('=').ok_or_else(|| format!("{arg:?}: expected key=value"))?;
        match key {
            "queries" => args.queries = value.parse()?,
            "batch" => args.batch = value.parse()?,
            "batches" => args.batches = value.parse()?,
            "m" => args.options.connectivity = value.parse()?,
            "ef_add" => args.options.expansion_add = value.parse()?,
            "ef" => args.efs = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "oversample" => args.options.oversample = value.parse()?,
            "storage" => {
                args.options.storage = match value {
                    "f32" => AnnStorage::F32,
                    "f16" => AnnStorage::F16,
                    "i8" => AnnStorage::I8,
                    _ => return Err(format!("storage={value}: expected f32, f16 or i8").into()),
                }
            }
            "index" => args.index = Some(PathBuf::from(value)),
            "filtered" => args.filtered = value == "1",
            "table" => args.clustered = value == "clustered",
            _ => return Err(format!("unknown key {key:?} (see the example's doc)").into()),
        }
    }
    Ok(args)
}

/// xorshift64 in [-0.5, 0.5): the generator of `bench::wide_catalog_model`.
fn hash_random(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// `base` with `items` items of its dimension (row 0 kept as generated, as
/// `wide_catalog_model` does).
fn wide_model(base: &Model, items: usize, clustered: bool) -> Result<Model, Box<dyn Error>> {
    let mut config = base.config.clone();
    config.num_items = items;
    let d = config.d_model;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let item_emb: Vec<f32> = if clustered {
        let centres: Vec<f32> = (0..1000 * d).map(|_| hash_random(&mut state)).collect();
        (0..items + 1)
            .flat_map(|_| {
                let c = (state % 1000) as usize;
                let centre = centres[c * d..(c + 1) * d].to_vec();
                centre.into_iter().map(|x| x + 0.35 * hash_random(&mut state)).collect::<Vec<_>>()
            })
            .collect()
    } else {
        (0..(items + 1) * d).map(|_| hash_random(&mut state)).collect()
    };
    let weights = edgerec_kernels::Weights { item_emb, ..base.weights.clone() };
    Ok(Model::new(config, weights)?)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// p50 and p99 of `samples` (seconds), in milliseconds.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize] * 1e3;
    (at(0.5), at(0.99))
}

fn recall(ann: &[Vec<Scored>], exact: &[Vec<Scored>]) -> f64 {
    let (mut hit, mut total) = (0usize, 0usize);
    for (a, e) in ann.iter().zip(exact) {
        total += e.len();
        hit += e.iter().filter(|x| a.iter().any(|y| y.item == x.item)).count();
    }
    hit as f64 / total.max(1) as f64
}

/// Latency samples of `f` over the queries one by one and over batches.
fn timed<T>(args: &Args, n: usize, mut f: impl FnMut(std::ops::Range<usize>) -> T) -> (Vec<T>, Vec<f64>, Vec<f64>) {
    let mut answers = Vec::with_capacity(n);
    let mut one = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        answers.push(f(i..i + 1));
        one.push(start.elapsed().as_secs_f64());
    }
    let mut batch = Vec::with_capacity(args.batches);
    for b in 0..args.batches {
        let first = (b * args.batch) % (n - args.batch + 1);
        let start = Instant::now();
        std::hint::black_box(f(first..first + args.batch));
        batch.push(start.elapsed().as_secs_f64());
    }
    (answers, one, batch)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse()?;
    let k = 10;
    let base = Model::random(ModelConfig::ml_1m(3953), 1)?;
    let wide = wide_model(&base, args.items, args.clustered)?;
    let d = wide.config.d_model;
    let rows = &wide.weights.item_emb;
    let n = args.queries.max(args.batch);
    let users: Vec<(Vec<f32>, Vec<u32>)> = (0..n)
        .map(|u| {
            let (events, q) = random_history(base.config.num_items, base.config.max_seq_len, 900 + u as u64);
            Ok((encode(&base, &events, q)?, events.iter().map(|e| e.item).collect()))
        })
        .collect::<Result<_, Box<dyn Error>>>()?;
    let queries: Vec<&[f32]> = users.iter().map(|(e, _)| e.as_slice()).collect();
    let excludes: Vec<&[u32]> = users.iter().map(|(_, x)| x.as_slice()).collect();
    println!(
        "{} items × D {d} ({}), {n} queries, top-{k}, batch {}, rayon threads {}",
        args.items,
        if args.clustered { "clustered" } else { "hash-random" },
        args.batch,
        rayon::current_num_threads()
    );

    let start = Instant::now();
    let table = QuantizedTable::from_model(&wide);
    println!("exact quantised table build: {:.2} s", start.elapsed().as_secs_f64());

    let rss_before = rss_mib();
    let start = Instant::now();
    let (mut index, how) = match &args.index {
        Some(path) if path.exists() => (AnnIndex::load(path, d, rows, args.options.clone())?, "load"),
        _ => (AnnIndex::from_model(&wide, args.options.clone())?, "build"),
    };
    let took = start.elapsed().as_secs_f64();
    println!(
        "ANN {how}: {took:.1} s (M {}, ef_add {}, {:?}); graph {:.1} MB = {:.0} B/item; RSS +{:.0} MiB",
        index.options().connectivity,
        index.options().expansion_add,
        index.options().storage,
        index.size_bytes() as f64 * 1e-6,
        index.size_bytes() as f64 / args.items as f64,
        rss_mib() - rss_before
    );
    if let (Some(path), "build") = (&args.index, how) {
        let start = Instant::now();
        index.save(path)?;
        println!("ANN save to {}: {:.1} s", path.display(), start.elapsed().as_secs_f64());
    }

    let (exact, exact_one, exact_batch) =
        timed(&args, n, |r| table.top_k(rows, &queries[r.clone()], k, &excludes[r], None).expect("valid call"));
    let exact: Vec<Vec<Scored>> = exact.into_iter().flatten().collect();
    let (e1, e99) = percentiles(&mut exact_one.clone());
    let (eb1, eb99) = percentiles(&mut exact_batch.clone());
    println!(
        "exact: one query p50 {e1:.3} ms p99 {e99:.3} ms; batch of {} p50 {eb1:.3} ms p99 {eb99:.3} ms",
        args.batch
    );
    println!(
        "| ef | recall@10 | ANN one p50 / p99 | ratio exact/ANN p50 | ANN batch p50 / p99 | ratio exact/ANN p50 |"
    );
    println!("|---|---|---|---|---|---|");
    for &ef in &args.efs {
        index.set_expansion_search(ef);
        let (ann, one, batch) = timed(&args, n, |r| {
            index.search_batch(rows, &queries[r.clone()], k, &excludes[r], None).expect("valid call")
        });
        let ann: Vec<Vec<Scored>> = ann.into_iter().flatten().collect();
        let (a1, a99) = percentiles(&mut one.clone());
        let (ab1, ab99) = percentiles(&mut batch.clone());
        println!(
            "| {ef} | {:.4} | {a1:.3} / {a99:.3} ms | {:.1}× | {ab1:.3} / {ab99:.3} ms | {:.1}× |",
            recall(&ann, &exact),
            e1 / a1,
            eb1 / ab1
        );
    }

    if args.filtered {
        // 90 % of the rows filtered out at random (every tenth allowed by hash).
        let mut allow = RowMask::with_capacity(args.items + 1);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for r in 0..=args.items {
            if hash_random(&mut state) < -0.4 {
                allow.insert(r);
            }
        }
        let (exact_f, ef_one, _) = timed(&args, n, |r| {
            table.top_k(rows, &queries[r.clone()], k, &excludes[r], Some(&allow)).expect("valid call")
        });
        let (ann_f, af_one, _) = timed(&args, n, |r| {
            index.search_batch(rows, &queries[r.clone()], k, &excludes[r], Some(&allow)).expect("valid call")
        });
        let exact_f: Vec<Vec<Scored>> = exact_f.into_iter().flatten().collect();
        let ann_f: Vec<Vec<Scored>> = ann_f.into_iter().flatten().collect();
        let short = ann_f.iter().filter(|a| a.len() < k).count();
        let outside = ann_f.iter().flatten().filter(|s| !allow.contains(s.item as usize)).count();
        let (x1, x99) = percentiles(&mut ef_one.clone());
        let (a1, a99) = percentiles(&mut af_one.clone());
        println!(
            "90 % filtered ({} allowed), ef {}: recall@10 {:.4}; ANN one p50 {a1:.3} p99 {a99:.3} ms; exact p50 {x1:.3} p99 {x99:.3} ms; answers short of k: {short}; outside the filter: {outside}",
            allow.count_ones(..),
            index.options().expansion_search,
            recall(&ann_f, &exact_f)
        );
    }
    Ok(())
}
