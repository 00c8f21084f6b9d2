//! `edgerec serve` as a library: the HTTP API (axum on tokio) over tenants,
//! the event and catalog store, the per-user encoder cache and the plugin
//! pipelines. The binary (`edgerec serve`) calls [`serve`]; tests build the
//! same state with [`open`] and drive [`routes::router`] in-process.
//!
//! # Map
//!
//! Three layers that point one way, each importing only those below it
//! (`.ci/module-cycles.py` checks that no import circle forms, in CI):
//!
//! - [`http`]: routes and the OpenAPI document, extractors (credentials,
//!   bodies), the error answer ([`http::error::ApiError`], JSON with a stable
//!   code), the request bounds and checks, the handlers, connection deadlines.
//!   Handlers extract, check, call the service and convert its answer.
//! - [`service`]: what the server does, whoever asks: tenants (registry,
//!   loading, model and pipeline swaps), recommend, ingest, catalog items,
//!   plugins and model bundles, quotas, blocking jobs, the outbox, following
//!   other hosts, the demo tenant. Its own [`service::Error`]; no HTTP types.
//! - [`store`]: the embedded (redb) and shared (Redis) stores behind one trait.
//! - Leaves, which import nothing of the crate but the configuration:
//!   [`config`], [`clock`], [`ids`], [`timing`], [`integral`], [`json_size`],
//!   [`error_code`], [`metrics_ring`], `telemetry`.
//!
//! This file wires them: [`open`] builds the state, [`serve`] accepts.
//!
//! # One recommend, file by file
//!
//! 1. `lib.rs` ([`serve`]) accepts the connection; `http/connection.rs`
//!    watches its first-request and idle deadlines.
//! 2. `http/routes.rs`: body limit and read timeout, then `observe` (the
//!    request deadline and metrics) around the matched route.
//! 3. `http/auth.rs` (`TenantAccess`): the bearer key, resolved by
//!    `service/app.rs` (`AppState::caller`, hashes from `ids.rs`), and the
//!    tenant named in the path (`AppState::lookup_tenant`).
//! 4. `http/extract.rs` (`ApiJson`) parses the body into
//!    `http/recommend.rs`'s `RecommendRequest`.
//! 5. `http/recommend.rs` (`recommend`): `service/recommend.rs` `admit`
//!    (the tenant's quota in `service/quota.rs`, then the server's
//!    admission), the checks (`http/checks.rs`, `http/events.rs`, against
//!    `http/bounds.rs`), then `service::recommend::recommend`.
//! 6. `service/recommend.rs` pins the active pipeline and hands retrieval
//!    to the tenant's `service/scheduler.rs`, which batches it with the
//!    tenant's other recommends into one `service/jobs.rs` job on the
//!    blocking pool running `service/encode.rs`: the history (stored events
//!    from `store/`, items the model lacks checked through
//!    `service/catalog.rs`), the encode through the per-user cache and the
//!    tenant's backend (`edgerec_kernels`), and the top candidates.
//! 7. Back in `service/recommend.rs`: a plugin slot (the tenant's share,
//!    then the server's), then `service/pipeline.rs` in a job: the
//!    candidates' attributes from `service/catalog.rs`, as typed columns,
//!    through the tenant's stages in `edgerec_runtime` (the plugins), with
//!    a summary of each stage.
//! 8. `service/recommend.rs` maps the survivors to external ids and keeps
//!    `k`; `http/recommend.rs` turns the answer into `RecommendResponse`
//!    (a `service::Error` becomes `http/error.rs`'s `ApiError` on the way).
//! 9. `observe` (`http/routes.rs`) records the request's metrics, and the
//!    response goes back through `http/connection.rs`.

pub mod clock;
pub mod config;
pub mod error_code;
pub mod http;
pub mod ids;
pub mod integral;
pub mod json_size;
pub mod metrics_ring;
pub mod service;
pub mod store;
mod telemetry;
pub mod timing;

/// The router and the OpenAPI document (see [`http::routes`]).
pub use http::routes;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use config::ServerConfig;
use service::app::AppState;
use service::{demo, follow, outbox, pipeline, tenants};
use store::Store;

/// What [`open`] made: the state, and the secrets it generated on this start
/// (shown once by the caller, never stored in the clear).
pub struct Opened {
    /// The state the router serves.
    pub app: Arc<AppState>,
    /// The operator token, when it was generated now (none given by the
    /// environment and none stored).
    pub new_operator_token: Option<String>,
}

/// Makes `dir` (and its parents) exist, readable by this user only.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))
}

/// Opens the store in the data directory (mode 0700, files 0600), resolves
/// the operator token, loads every tenant and, when configured, creates the
/// demo tenant. Everything `serve` does before it listens, except that
/// uploads are compiled in this process (`serve` compiles them in bounded
/// child processes of its binary: [`open_with_compiler`]).
pub fn open(config: ServerConfig, metrics: PrometheusHandle) -> anyhow::Result<Opened> {
    open_with_compiler(config, metrics, None)
}

/// [`open`], compiling uploaded plugins with `compiler` (`None`: in process).
pub fn open_with_compiler(
    config: ServerConfig,
    metrics: PrometheusHandle,
    compiler: Option<edgerec_runtime::CompileProcess>,
) -> anyhow::Result<Opened> {
    private_dir(&config.data_dir)?;
    let store = store::open(&config.store, &config.data_dir, config.user_ttl())?;
    if store.kind() == "redb" {
        let store_file = config.data_dir.join("store.redb");
        std::fs::set_permissions(&store_file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private (mode 0600)", store_file.display()))?;
    }
    // Read before the tenants load: following from here misses no change
    // another host makes while this one loads.
    let cursor = store.change_cursor()?;
    let (operator_hash, new_operator_token) = operator_token(store.as_ref())?;
    let plugins = pipeline::PluginHost::new(&config, &config.data_dir, compiler)?;
    let outbox = if store.is_shared() { Some(Arc::new(outbox::Outbox::open(&config.data_dir)?)) } else { None };
    let app = Arc::new(AppState::new(config, store, operator_hash, plugins, outbox, metrics));
    tenants::load_all(&app)?;
    if app.config.demo_tenant {
        demo::ensure(&app)?;
    }
    if app.store.is_shared() {
        follow::start(app.clone(), cursor);
        if let Some(outbox) = &app.outbox {
            outbox::start_forwarder(outbox.clone(), app.store.clone());
        }
    }
    Ok(Opened { app, new_operator_token })
}

/// The operator token's hash: from `EDGEREC_OPERATOR_TOKEN` (kept in memory
/// only), else the stored hash, else a new token (returned to be shown once).
fn operator_token(store: &dyn Store) -> anyhow::Result<(String, Option<String>)> {
    if let Ok(token) = std::env::var("EDGEREC_OPERATOR_TOKEN")
        && !token.is_empty()
    {
        return Ok((ids::secret_hash(&token), None));
    }
    if let Some(hash) = store.meta("operator_token_sha256")? {
        return Ok((hash, None));
    }
    // Versions before hashing stored the token itself: hash it, forget it.
    if let Some(plain) = store.meta("operator_token")? {
        let hash = ids::secret_hash(&plain);
        store.set_meta("operator_token_sha256", &hash)?;
        store.remove_meta("operator_token")?;
        return Ok((hash, None));
    }
    let token = ids::new_secret("eo");
    let hash = ids::secret_hash(&token);
    // Hosts of one shared store starting together: one token wins, and only
    // the host whose token it is shows it.
    let stored = store.init_meta("operator_token_sha256", &hash)?;
    Ok(if stored == hash { (hash, Some(token)) } else { (stored, None) })
}

/// Starts the server and runs until SIGTERM or Ctrl-C; then stops accepting,
/// finishes the requests in flight, flushes the exporter and closes the store.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&config)?;
    // This binary compiles uploads in children of itself (`edgerec
    // __compile-plugin`), bounded in time and memory.
    let compiler = edgerec_runtime::CompileProcess::current_exe().context("cannot find this server's executable")?;
    let Opened { app, new_operator_token } = open_with_compiler(config, telemetry.metrics.clone(), Some(compiler))?;
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pass --listen)", app.config.listen))?;
    let address = listener.local_addr()?;
    println!("edgerec listening on http://{address}");
    if let Some(token) = new_operator_token {
        println!("operator token (generated now, shown once, store it): {token}");
    }
    app.ready.store(true, Ordering::Release);
    let router = routes::router(app.clone());

    // hyper's own connection builder rather than `axum::serve`: it bounds
    // how long a client may take to send its headers (slowloris); the accept
    // loop below bounds the connections held open at once, and each
    // connection's watchdog (`http::connection::run`) closes those that deliver no
    // request in time or sit idle, so that their places return.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(app.config.header_read_timeout_ms));
    let deadlines = http::connection::Deadlines {
        first_request: Duration::from_millis(app.config.first_request_timeout_ms),
        idle: Duration::from_millis(app.config.idle_timeout_ms),
    };
    let connections = Arc::new(Semaphore::new(app.config.max_connections));
    // Turns true at shutdown: every connection finishes its requests and closes.
    let (stopping, _) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` answers `None` once all are gone.
    let (open_connections, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.context("connection limiter closed")?,
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (service, activity) = http::connection::Tracked::new(router.clone());
        let service = TowerToHyperService::new(service);
        let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let (stopping, open) = (stopping.subscribe(), open_connections.clone());
        tokio::spawn(async move {
            http::connection::run(served, activity, deadlines, stopping).await;
            drop((permit, open));
        });
    }
    app.ready.store(false, Ordering::Release);
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    stopping.send_replace(true);
    drop(open_connections);
    let grace = Duration::from_millis(app.config.request_timeout_ms.saturating_mul(2));
    if tokio::time::timeout(grace, all_closed.recv()).await.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
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
