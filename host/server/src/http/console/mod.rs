//! The operator console at `/console`: server-rendered HTML pages over the
//! same service functions the operator API's handlers call, on the same
//! listener. No script: plain forms, `<details>` for confirmations, charts
//! as SVG drawn on the server. Templates (askama, compiled into the binary)
//! are in `host/server/console/templates`, the stylesheet in
//! `host/server/console/assets`.
//!
//! Safety: a login with the operator token starts a session (an HttpOnly,
//! SameSite=Strict cookie scoped to `/console`, Secure behind TLS, expiring);
//! every state-changing form carries the login's CSRF token and must come
//! from this origin; every answer carries a content security policy that
//! allows the console's own stylesheet only. The console's routes are not in
//! `/openapi.json` (they are pages, not API), and open nothing the token
//! routes do not: each action needs the same operator proof
//! ([`crate::service::access::Operator`]) the API's extractors give.

mod actions;
mod charts;
mod pages;
mod session;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::service::app::AppState;

/// Room for a multipart form's other fields and boundaries beside its file.
const FORM_OVERHEAD_BYTES: usize = 64 << 10;

/// The console's routes, with their headers and body limits.
pub fn router(app: &Arc<AppState>) -> Router<Arc<AppState>> {
    let plugin_upload = Router::new()
        .route("/console/tenants/{tenant}/plugins", post(actions::upload_plugin))
        .layer(DefaultBodyLimit::max(app.config.max_plugin_bytes.saturating_add(FORM_OVERHEAD_BYTES)));
    let model_upload = Router::new()
        .route("/console/tenants/{tenant}/models", post(actions::upload_model))
        .layer(DefaultBodyLimit::max(app.config.max_model_bytes.saturating_add(FORM_OVERHEAD_BYTES)));
    Router::new()
        .route("/console", get(pages::index))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/assets/console.css", get(pages::stylesheet))
        .route("/console/tenants", get(pages::tenants_page))
        .route("/console/tenants/{tenant}", get(pages::tenant_page))
        .route("/console/tenants/{tenant}/try", post(actions::try_it))
        .route("/console/tenants/{tenant}/pipeline", post(actions::put_pipeline))
        .route("/console/tenants/{tenant}/pipeline/rollback", post(actions::rollback_pipeline))
        .route("/console/tenants/{tenant}/pipeline/versions/{version}/activate", post(actions::activate_pipeline))
        .route("/console/tenants/{tenant}/plugins/{name}/versions/{version}/delete", post(actions::delete_plugin))
        .route("/console/tenants/{tenant}/models/rollback", post(actions::rollback_model))
        .route("/console/tenants/{tenant}/models/{version}/activate", post(actions::activate_model))
        .route("/console/tenants/{tenant}/keys", post(actions::issue_key))
        .route("/console/tenants/{tenant}/keys/{id}/revoke", post(actions::revoke_key))
        .merge(plugin_upload)
        .merge(model_upload)
        .layer(middleware::from_fn_with_state(app.clone(), session::headers))
}
