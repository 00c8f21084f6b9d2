//! `edgerec serve`: the HTTP API (axum on tokio) over tenants, the event and
//! catalog store, the per-user encoder cache and the plugin pipelines.

pub mod bench;
pub mod config;
mod demo;
mod error;
mod extract;
mod operator;
mod pipeline;
mod recommend;
mod routes;
mod state;
mod store;
mod storefront;
mod telemetry;
mod tenants;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::sync::Semaphore;

use config::ServerConfig;
use state::AppState;
use store::Store;

/// Starts the server and runs until SIGTERM or Ctrl-C; then stops accepting,
/// finishes the requests in flight, flushes the exporter and closes the store.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let store = Arc::new(
        Store::open(&config.data_dir)
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?,
    );
    let operator_token = match std::env::var("EDGEREC_OPERATOR_TOKEN") {
        Ok(token) if !token.is_empty() => token,
        _ => match store.meta("operator_token")? {
            Some(token) => token,
            None => {
                let token = tenants::new_secret("eo");
                store.set_meta("operator_token", &token)?;
                token
            }
        },
    };
    let app = Arc::new(AppState {
        cache: AppState::user_cache(config.cache_bytes),
        admission: Arc::new(Semaphore::new(config.max_in_flight)),
        encode_slots: Arc::new(Semaphore::new(config.encode_permits())),
        plugin_slots: Arc::new(Semaphore::new(config.plugin_permits())),
        plugins: pipeline::PluginHost::new(&config.data_dir, config.max_plugin_bytes)?,
        metrics: telemetry.metrics.clone(),
        ready: AtomicBool::new(false),
        tenants: Default::default(),
        operator_token,
        store,
        config,
    });
    tenants::load_all(&app)?;
    if app.config.demo_tenant {
        demo::ensure(&app)?;
    }
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pass --listen)", app.config.listen))?;
    let address = listener.local_addr()?;
    println!("edgerec listening on http://{address}");
    println!("operator token: {}", app.operator_token);
    if let Ok(demo) = app.tenant("demo") {
        println!("demo tenant API key: {}", demo.record.api_key);
    }
    app.ready.store(true, Ordering::Release);
    let router = routes::router(app.clone());
    let shutdown_app = app.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            shutdown_app.ready.store(false, Ordering::Release);
            tracing::info!("shutting down: no new connections, finishing requests in flight");
        })
        .await
        .context("the HTTP server failed")?;
    telemetry.shutdown();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
