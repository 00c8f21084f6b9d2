//! `edgerec bench http` (the load client is `edgerec_bench::http`).

use anyhow::Context;
use clap::Args;

/// Arguments of `edgerec bench http`.
#[derive(Args)]
pub struct BenchHttpArgs {
    /// Base URL of a running `edgerec serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Tenant to load.
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// The tenant's API key (printed by `edgerec serve` at start).
    #[arg(long, env = "EDGEREC_DEMO_API_KEY")]
    pub api_key: String,
    /// The operator token (to read /metrics for the stage breakdown).
    #[arg(long, env = "EDGEREC_OPERATOR_TOKEN")]
    pub operator_token: String,
    /// Request rates per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400")]
    pub rates: Vec<u32>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Events in each request's history.
    #[arg(long, default_value_t = 50)]
    pub history: usize,
    /// Send a user id with each request (exercises the encoder cache).
    #[arg(long)]
    pub with_user: bool,
}

/// Runs the load generator.
pub fn bench_http(args: BenchHttpArgs) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(edgerec_bench::http::run(edgerec_bench::http::BenchSettings {
        url: args.url.trim_end_matches('/').to_string(),
        tenant: args.tenant,
        api_key: args.api_key,
        operator_token: args.operator_token,
        rates: args.rates,
        seconds: args.seconds,
        history: args.history,
        with_user: args.with_user,
    }))
}
