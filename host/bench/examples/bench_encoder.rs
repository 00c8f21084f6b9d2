//! The encoder half of `edgerec bench kernels` without building the server:
//! `cargo run --release -p edgerec-bench --example bench_encoder -- [SECONDS] [USERS] [ml-1m|ml-20m|all]`.
//!
//! Prints the same table (and the same ratio to the one-thread sgemm roof
//! measured in this run) for the encoder figures only.

use std::time::Duration;

use edgerec_bench::kernels::{bench_encoder, sgemm_gflops, threads};
use edgerec_kernels::{Model, ModelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(Ok(1.5), |a| a.parse())?;
    let users: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let which = args.next().unwrap_or_else(|| "ml-1m".to_string());
    let budget = Duration::from_secs_f64(seconds);
    let roof = sgemm_gflops(512, 512, 512, budget);
    println!("sgemm roof (gemm crate, 1 thread, 512×512×512): {roof:.1} GFLOP/s; rayon threads: {}", threads());
    println!("| shape | figure | value | GFLOP/s | threads | ratio to roof |");
    println!("|---|---|---|---|---|---|");
    let mut shapes = Vec::new();
    if which == "ml-1m" || which == "all" {
        shapes.push(("ML-1M base", ModelConfig::ml_1m(3953)));
    }
    if which == "ml-20m" || which == "all" {
        shapes.push(("ML-20M base", ModelConfig::ml_20m(131_263)));
    }
    for (name, config) in shapes {
        let model = Model::random(config, 1)?;
        for row in bench_encoder(name, &model, users, budget) {
            println!("{}", row.table_line(roof));
        }
    }
    Ok(())
}
