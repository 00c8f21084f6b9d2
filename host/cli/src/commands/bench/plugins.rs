//! `edgerec bench plugins [--js FILE]` (the measurements are
//! `edgerec_bench::plugins` and `edgerec_bench::plugins_js`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

/// `edgerec bench plugins`: the price of the sandbox (3-stage first-party
/// pipeline, wasmtime against the same rules as native Rust, same run).
#[derive(Args)]
pub struct BenchPluginsArgs {
    /// Candidates per call.
    #[arg(long, default_value_t = 500)]
    candidates: usize,
    /// Timed runs of each measurement (after 10% warm-up).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Instead: the cost of a JS plugin next to Rust — `boost` ported to TypeScript, built
    /// (`plugins/boost-ts/dist/boost-ts.wasm`, see its README) and run against the Rust `boost`.
    #[arg(long, value_name = "BOOST_TS_WASM")]
    js: Option<PathBuf>,
}

/// Runs `edgerec bench plugins` and prints its table.
pub fn bench_plugins(args: BenchPluginsArgs) -> Result<()> {
    if let Some(file) = &args.js {
        let max_upload_bytes = edgerec_server::config::ServerConfig::default().max_plugin_bytes;
        return edgerec_bench::plugins_js::bench_js(file, args.candidates, args.iterations, max_upload_bytes);
    }
    let options = edgerec_bench::BenchOptions { candidates: args.candidates, iterations: args.iterations };
    let report = edgerec_bench::run_plugin_bench(options).context("the plugin benchmark failed")?;
    print!("{report}");
    Ok(())
}
