//! The router: routes, body limits, deadline, per-route metrics, the
//! OpenAPI document and the health endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{MaybeOperator, OperatorAccess};
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::{bounds, catalog, console, events, models, operator, recommend};
use crate::error_code::ErrorCode;
use crate::service::app::AppState;
use crate::service::pipeline::stage_maxima;

/// The document's frame: title, tags, the error schema and the bearer
/// scheme. Its paths come from the router itself (see [`api`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "edgerec", description = "Edge recommendations: HSTU retrieval plus per-tenant Wasm plugin pipelines."),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, each registered once together with its OpenAPI operation:
/// the document cannot list a route the router lacks, nor miss one it has.
pub fn api(app: &Arc<AppState>) -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let uploads = OpenApiRouter::new()
        .routes(routes!(operator::put_plugin))
        .layer(DefaultBodyLimit::max(app.config.max_plugin_bytes));
    let model_uploads = OpenApiRouter::new()
        .routes(routes!(models::put_model))
        .layer(DefaultBodyLimit::max(app.config.max_model_bytes));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(operator::create_tenant, operator::list_tenants))
        .routes(routes!(operator::get_tenant))
        .routes(routes!(operator::create_key, operator::list_keys))
        .routes(routes!(operator::revoke_key))
        .routes(routes!(operator::list_plugins))
        .routes(routes!(operator::delete_plugin_version))
        .merge(uploads)
        .merge(model_uploads)
        .routes(routes!(models::list_models))
        .routes(routes!(models::activate_model))
        .routes(routes!(models::rollback_model))
        .routes(routes!(operator::put_pipeline, operator::get_pipeline))
        .routes(routes!(operator::rollback))
        .routes(routes!(operator::activate_pipeline_version))
        .routes(routes!(recommend::recommend))
        .routes(routes!(events::post_events))
        .routes(routes!(catalog::upsert_items, catalog::list_items))
        .routes(routes!(catalog::get_item))
        .split_for_parts()
}

/// The document served at `/openapi.json`: the router's, with the bounds
/// that depend on this server's configuration (and clock) filled in.
pub fn with_config(openapi: &utoipa::openapi::OpenApi, app: &AppState) -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi).unwrap_or_default();
    bounds::document_parameters(&mut doc["paths"]);
    let schemas = &mut doc["components"]["schemas"];
    bounds::document(schemas);
    schemas["RecommendRequest"]["properties"]["k"]["maximum"] = app.config.max_k.into();
    let latest = crate::clock::now_unix().saturating_add(app.config.max_future_skew_s);
    schemas["Event"]["properties"]["ts"]["maximum"] = latest.into();
    // POST …/events needs each event's user_id (a recommend's events do not).
    let mut posted = schemas["Event"].clone();
    posted["properties"]["user_id"] = json!({"type": "string", "minLength": 1, "maxLength": bounds::MAX_ID_LEN});
    if let Some(required) = posted["required"].as_array_mut() {
        required.push("user_id".into());
    }
    schemas["PostedEvent"] = posted;
    schemas["EventsRequest"]["properties"]["events"]["items"] = json!({"$ref": "#/components/schemas/PostedEvent"});
    let maxima = stage_maxima(&app.config);
    let bounded = |min: u64, max: u64| json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max});
    schemas["StageSpec"]["properties"]["limits"] = json!({
        "type": ["object", "null"],
        "description": "Per-call limits; each one absent takes the server's default.",
        "additionalProperties": false,
        "properties": {
            "deadline_us": bounded(1, maxima.deadline_us),
            "fuel": bounded(1, maxima.fuel),
            "memory_bytes": bounded(1 << 20, maxima.memory_bytes),
            "max_reason_bytes": bounded(0, maxima.max_reason_bytes as u64),
            "max_log_lines": bounded(0, maxima.max_log_lines as u64),
            "max_log_bytes": bounded(0, maxima.max_log_bytes as u64),
        },
    });
    doc
}

/// All routes with their layers.
pub fn router(app: Arc<AppState>) -> Router {
    let (routes, openapi) = api(&app);
    let document = Arc::new(openapi);
    routes
        .route(
            "/openapi.json",
            get(move |State(app): State<Arc<AppState>>| {
                let document = document.clone();
                async move { Json(with_config(&document, &app)) }
            }),
        )
        // Pages, not API: outside the OpenAPI document (see `console`).
        .merge(console::router(&app))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(app.config.body_read_timeout_ms)))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn unknown_route() -> ApiError {
    ApiError::new(ErrorCode::UnknownRoute, "no such route; see /openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take this method; see /openapi.json")
}

/// The deadline and the request metrics, per route template and tenant.
async fn observe(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // Only existing tenants become label values: random names must not grow the series.
    let tenant = request
        .uri()
        .path()
        .strip_prefix("/v1/tenants/")
        .and_then(|rest| rest.split('/').next())
        .filter(|name| app.has_tenant(name))
        .unwrap_or("-")
        .to_string();
    let deadline = Duration::from_millis(app.config.request_timeout_ms);
    let response = match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("the request took longer than {} ms; retry, or raise request_timeout_ms", deadline.as_millis()),
        )
        .into_response(),
    };
    let status = response.status().as_u16().to_string();
    metrics::histogram!("edgerec_request_seconds", "route" => route.clone(), "tenant" => tenant.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("edgerec_requests_total", "route" => route, "tenant" => tenant, "status" => status).increment(1);
    response
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")), tag = "health")]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Answer of `/readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, or `degraded`: some tenants could not be loaded (the others
    /// serve), some serve on the CPU while their device backend is rebuilt,
    /// or the shared store is unreachable.
    pub status: &'static str,
    /// How many tenants could not be loaded.
    pub unavailable_tenant_count: usize,
    /// With the operator token only: each tenant that could not be loaded,
    /// and why (names and server paths are not for strangers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_tenants: Option<std::collections::BTreeMap<String, String>>,
    /// How many tenants serve on the CPU because their device backend lost
    /// its context (it is being rebuilt; answers are the CPU's meanwhile).
    pub degraded_backend_count: usize,
    /// With the operator token only: each such tenant, what failed and how
    /// the rebuild goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_backends: Option<std::collections::BTreeMap<String, String>>,
    /// The store.
    pub store: StoreReadiness,
}

/// The store as `/readyz` reports it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StoreReadiness {
    /// `redb` (embedded) or `redis` (shared).
    pub kind: &'static str,
    /// False while the shared store cannot be reached (answers are degraded).
    pub reachable: bool,
    /// Event batches acknowledged while the store was unreachable, waiting to be forwarded.
    pub queued_event_batches: usize,
}

/// Readiness: tenants loaded and not shutting down. `status` is `degraded`
/// while some tenants could not be loaded (the others serve) or the shared
/// store is unreachable; anyone learns how many tenants, the operator token
/// (optional here) also which and why.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, body = Readiness, description = "ready (or degraded: some tenants unavailable, or the store unreachable)"), (status = 503, body = ErrorBody)),
    security((), ("bearer" = [])), tag = "health")]
async fn readyz(
    State(app): State<Arc<AppState>>,
    MaybeOperator(operator): MaybeOperator,
) -> Result<Json<Readiness>, ApiError> {
    if !app.is_ready() {
        return Err(ApiError::new(ErrorCode::NotReady, "starting or shutting down; retry shortly"));
    }
    let unavailable: std::collections::BTreeMap<String, String> =
        app.tenant_names().into_iter().filter_map(|(name, reason)| reason.map(|r| (name, r))).collect();
    let degraded_backends = app.degraded_backends();
    let store_reachable = app.store_reachable.load(Ordering::Acquire);
    let status =
        if unavailable.is_empty() && degraded_backends.is_empty() && store_reachable { "ready" } else { "degraded" };
    Ok(Json(Readiness {
        status,
        unavailable_tenant_count: unavailable.len(),
        unavailable_tenants: operator.as_ref().map(|_| unavailable),
        degraded_backend_count: degraded_backends.len(),
        degraded_backends: operator.map(|_| degraded_backends),
        store: StoreReadiness {
            kind: app.store.kind(),
            reachable: store_reachable,
            queued_event_batches: app.outbox.as_ref().map_or(0, |o| o.depth()),
        },
    }))
}

/// Prometheus text (operator token: the labels name tenants).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "health")]
async fn metrics_text(State(app): State<Arc<AppState>>, _operator: OperatorAccess) -> Result<Response, ApiError> {
    let text = app.metrics.render();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
