//! `edgerec bench kernels|plugins|http`, one module per subcommand; the
//! measurements themselves live in the `edgerec-bench` crate (host/bench).

mod http;
mod kernels;
mod plugins;

use clap::Subcommand;

/// Benchmarks that print their ratios against a roof or baseline measured in the same run.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The plugin sandbox: a 3-stage first-party pipeline, wasmtime against the same rules as native Rust.
    Plugins(plugins::BenchPluginsArgs),
    /// The HSTU kernels: encode latency, users/s, incremental, top-k, against the sgemm roof.
    Kernels(kernels::BenchArgs),
    /// Load a running server at fixed request rates: throughput, p50/p99, time per stage.
    Http(http::BenchHttpArgs),
}

/// Runs `edgerec bench ...`.
pub fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Plugins(args) => plugins::bench_plugins(args),
        BenchCommand::Kernels(args) => kernels::bench(args),
        BenchCommand::Http(args) => http::bench_http(args),
    }
}
