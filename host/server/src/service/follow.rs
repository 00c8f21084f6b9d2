//! Following the shared store's change stream: what any host changed (a
//! tenant created, keys rotated, a plugin uploaded or deleted, a pipeline
//! activated or rolled back, catalog items upserted) is applied here, tenant
//! by tenant, with the same atomic swap a local change uses. When the stream
//! cannot be read (Redis away) the host keeps serving what it holds, reports
//! itself degraded, and on reconnect resynchronises every tenant from the
//! full state (catalogs re-read whole) before it follows again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::app::AppState;
use super::{items, tenants};

/// How long one read of the stream waits for a change.
const WAIT: Duration = Duration::from_secs(2);
/// Pause between attempts while the store is unreachable.
const RETRY: Duration = Duration::from_millis(250);

/// Starts following from `cursor` (read before the tenants were loaded) on a
/// thread of its own: every call it makes blocks.
pub fn start(app: Arc<AppState>, cursor: Option<String>) {
    let spawned = std::thread::Builder::new().name("edgerec-follow".into()).spawn(move || run(&app, cursor));
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start following the change stream: changes made on other hosts will not reach this one");
    }
}

fn run(app: &AppState, mut cursor: Option<String>) {
    let mut away = false;
    loop {
        if away {
            match resync(app) {
                Ok(newest) => {
                    cursor = newest;
                    away = false;
                    app.store_reachable.store(true, Ordering::Release);
                    tracing::info!("the shared store is back: every tenant resynchronised");
                }
                Err(error) => {
                    tracing::debug!(%error, "the shared store is still unreachable");
                    std::thread::sleep(RETRY);
                }
            }
            continue;
        }
        match app.store.follow(cursor.as_deref(), WAIT) {
            Ok(changes) => {
                for change in changes {
                    match change.kind.as_str() {
                        "catalog" => refresh_items(app, &change.tenant, &change.items),
                        _ => apply(app, &change.tenant),
                    }
                    let lag_ms = crate::clock::now_unix_ms().saturating_sub(change.at_ms);
                    metrics::histogram!("edgerec_change_lag_seconds").record(lag_ms as f64 / 1000.0);
                    cursor = Some(change.id);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the shared store is unreachable: serving from this host's caches until it returns");
                app.store_reachable.store(false, Ordering::Release);
                away = true;
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Every stored tenant brought in line; returns the stream position read
/// before, from which following misses nothing.
fn resync(app: &AppState) -> Result<Option<String>, crate::store::StoreError> {
    let cursor = app.store.change_cursor()?;
    for record in app.store.tenants()? {
        apply(app, &record.name);
        reload_catalog(app, &record.name);
    }
    Ok(cursor)
}

fn refresh_items(app: &AppState, tenant: &str, ids: &[String]) {
    if let Err(error) = items::refresh(app, tenant, ids) {
        tracing::error!(tenant, error = %error.report(), "cannot apply catalog items upserted on another host; the catalog keeps its version");
    }
}

/// The upserts this host missed while away: the whole catalog read again.
fn reload_catalog(app: &AppState, tenant: &str) {
    if let Err(error) = tenants::reload_catalog(app, tenant) {
        tracing::error!(tenant, error = %error.report(), "cannot re-read the catalog after the shared store returned; the catalog keeps its version");
    }
}

fn apply(app: &AppState, tenant: &str) {
    if let Err(error) = tenants::sync(app, tenant) {
        tracing::error!(tenant, error = %error.report(), "cannot apply a change made on another host; the tenant keeps what it serves");
    }
}
