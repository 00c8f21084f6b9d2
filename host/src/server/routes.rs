//! The router: routes, body limits, deadline, per-route metrics, the
//! OpenAPI document and the health endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use utoipa::OpenApi;

use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::state::AppState;
use super::{operator, storefront};

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "edgerec", description = "Edge recommendations: HSTU retrieval plus per-tenant Wasm plugin pipelines."),
    paths(
        healthz, readyz, metrics_text,
        storefront::recommend, storefront::post_events, storefront::upsert_items,
        storefront::get_item, storefront::list_items,
        operator::create_tenant, operator::list_tenants, operator::get_tenant,
        operator::put_plugin, operator::list_plugins,
        operator::put_pipeline, operator::get_pipeline, operator::rollback,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
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

/// All routes with their layers.
pub fn router(app: Arc<AppState>) -> Router {
    let plugin_limit = DefaultBodyLimit::max(app.config.max_plugin_bytes);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/v1/tenants", post(operator::create_tenant).get(operator::list_tenants))
        .route("/v1/tenants/{tenant}", get(operator::get_tenant))
        .route("/v1/tenants/{tenant}/plugins", get(operator::list_plugins))
        .route("/v1/tenants/{tenant}/plugins/{name}", put(operator::put_plugin).layer(plugin_limit))
        .route("/v1/tenants/{tenant}/pipeline", put(operator::put_pipeline).get(operator::get_pipeline))
        .route("/v1/tenants/{tenant}/pipeline/rollback", post(operator::rollback))
        .route("/v1/tenants/{tenant}/recommend", post(storefront::recommend))
        .route("/v1/tenants/{tenant}/events", post(storefront::post_events))
        .route("/v1/tenants/{tenant}/catalog/items", put(storefront::upsert_items).get(storefront::list_items))
        .route("/v1/tenants/{tenant}/catalog/items/{id}", get(storefront::get_item))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_route", "no such route; see /openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method; see /openapi.json",
    )
}

/// The deadline and the request metrics, per route template and tenant.
async fn observe(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // Only existing tenants become label values: random names must not grow the series.
    let tenant = request
        .uri()
        .path()
        .strip_prefix("/v1/tenants/")
        .and_then(|rest| rest.split('/').next())
        .filter(|name| app.tenant(name).is_ok())
        .unwrap_or("-")
        .to_string();
    let deadline = Duration::from_millis(app.config.request_timeout_ms);
    let response = match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
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

/// Readiness: tenants loaded and not shutting down.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)), tag = "health")]
async fn readyz(State(app): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    if app.is_ready() {
        Ok(Json(serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting or shutting down; retry shortly"))
    }
}

/// Prometheus text (operator token: the labels name tenants).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "health")]
async fn metrics_text(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require_operator(&headers)?;
    let text = app.metrics.render();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
