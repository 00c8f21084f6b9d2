//! `edgerec serve` and `edgerec bench http`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use edgerec_server as server;
use edgerec_server::config::ServerConfig;

/// Arguments of `edgerec serve`.
#[derive(Args)]
#[command(after_long_help = server::config::keys_help())]
pub struct ServeArgs {
    /// TOML configuration file (keys below); absent = the embedded defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The store (overrides `store`): `redis://HOST:PORT` or
    /// `redis+cluster://H1:P1,H2:P2,…` to share state with other hosts.
    #[arg(long)]
    pub store: Option<String>,
    /// Engine that encodes and scores (overrides `backend`; a tenant may name its own).
    #[arg(long, value_enum)]
    pub backend: Option<super::engine::BackendArg>,
}

/// Runs the server until SIGTERM / Ctrl-C.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(store) = args.store {
        config.store = store;
    }
    if let Some(backend) = args.backend {
        config.backend = backend.into();
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(server::serve(config))
}

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
    runtime.block_on(server::bench::run(server::bench::BenchSettings {
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
