//! The retrieval rows of `edgerec bench kernels` without building the host:
//! `cargo run --release -p edgerec-bench --example bench_retrieval -- [SECONDS] [BATCH] [ITEMS] [ml-1m|ml-20m]`.
//!
//! Top-10 over ITEMS (default 1,000,000) hash-random items of the shape's D
//! for one query and for BATCH (default 16) queries in one pass, beside the
//! f32 scan and the read floor measured in the same run.

use std::time::Duration;

use edgerec_bench::kernels::{bench_retrieval, threads, wide_catalog_model};
use edgerec_kernels::{Model, ModelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(Ok(1.5), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let items: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let (name, config) = match args.next().as_deref() {
        None | Some("ml-1m") => ("ML-1M base", ModelConfig::ml_1m(3953)),
        Some("ml-20m") => ("ML-20M base", ModelConfig::ml_20m(131_263)),
        Some(other) => return Err(format!("unknown shape {other:?}: expected ml-1m or ml-20m").into()),
    };
    let budget = Duration::from_secs_f64(seconds);
    let model = Model::random(config, 1)?;
    let wide = wide_catalog_model(&model, items)?;
    println!("rayon threads: {}", threads());
    println!("| shape | figure | value | GFLOP/s | threads |");
    println!("|---|---|---|---|---|");
    for row in bench_retrieval(name, &model, &wide, batch, budget) {
        println!("| {} | {} | {} | {:.2} | {} |", row.shape, row.what, row.value, row.gflops, row.threads);
    }
    Ok(())
}
