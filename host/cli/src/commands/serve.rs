//! `edgerec serve`.

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
    pub backend: Option<crate::engine_args::BackendArg>,
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
