//! Operator routes (the operator token): tenants, plugins, pipelines.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, body_error};
use super::state::AppState;
use super::store::{PipelineRecord, PluginVersion, StageSpec, TenantRecord, now_unix};
use super::tenants;

/// Body of `POST /v1/tenants`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name: 1..=64 of a-z, 0-9, `-`, `_`.
    pub name: String,
    /// `"demo"` (the bundled model) or a model directory on the server (config.json, model.safetensors, items.json).
    pub model: String,
}

/// A tenant as the operator sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantView {
    /// Name.
    pub name: String,
    /// Model source.
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Items the model knows.
    pub model_items: usize,
    /// Active pipeline version (0 = none).
    pub pipeline_version: u32,
    /// The storefront API key (only in the answer to the creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// List of tenants.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantList {
    /// Tenants by name.
    pub tenants: Vec<TenantView>,
}

fn view(app: &AppState, name: &str) -> Result<TenantView, ApiError> {
    let tenant = app.tenant(name)?;
    Ok(TenantView {
        name: tenant.record.name.clone(),
        model: tenant.record.model.clone(),
        created_at: tenant.record.created_at,
        model_items: tenant.items.len(),
        pipeline_version: tenant.pipeline.load().version,
        api_key: None,
    })
}

/// Creates a tenant with a model; answers its API key once.
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn create_tenant(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    app.require_operator(&headers)?;
    let valid = !request.name.is_empty()
        && request.name.len() <= 64
        && request.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::bad_request(format!(
            "tenant name {:?} is invalid: use 1..=64 characters of a-z, 0-9, '-', '_'",
            request.name
        )));
    }
    let record = TenantRecord {
        name: request.name.clone(),
        model: request.model,
        api_key: tenants::new_secret("ek"),
        created_at: now_unix(),
    };
    let app2 = app.clone();
    let key = record.api_key.clone();
    tokio::task::spawn_blocking(move || tenants::create(&app2, record))
        .await
        .map_err(|e| ApiError::internal("the tenant task", e))??;
    let mut view = view(&app, &request.name)?;
    view.api_key = Some(key);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/tenants",
    responses((status = 200, body = TenantList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_tenants(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<TenantList>, ApiError> {
    app.require_operator(&headers)?;
    let mut names: Vec<String> = app.tenants.read().expect("tenant map lock").keys().cloned().collect();
    names.sort();
    let tenants = names.iter().map(|n| view(&app, n)).collect::<Result<_, _>>()?;
    Ok(Json(TenantList { tenants }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = TenantView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn get_tenant(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TenantView>, ApiError> {
    app.require_operator(&headers)?;
    Ok(Json(view(&app, &tenant)?))
}

/// Uploads a plugin component: compiled and checked before the answer; a
/// new immutable version (the same bytes again give the same version).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/plugins/{name}", request_body(content = Vec<u8>, content_type = "application/wasm"),
    params(("tenant" = String, Path, description = "tenant name"), ("name" = String, Path, description = "plugin name")),
    responses((status = 201, body = PluginVersion), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn put_plugin(
    State(app): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<PluginVersion>), ApiError> {
    app.require_operator(&headers)?;
    let tenant = app.tenant(&tenant)?;
    let bytes = body.map_err(body_error)?;
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::bad_request(format!("plugin name {name:?} is invalid: use 1..=64 of a-z, A-Z, 0-9, '-', '_'")));
    }
    let app2 = app.clone();
    let version = tokio::task::spawn_blocking(move || {
        let digest = app2.plugins.check(&bytes)?;
        Ok::<_, ApiError>(app2.store.add_plugin(&tenant.record.name, &name, &digest, &bytes)?)
    })
    .await
    .map_err(|e| ApiError::internal("the compile task", e))??;
    Ok((StatusCode::CREATED, Json(version)))
}

/// Plugin versions of a tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginList {
    /// By name, then version.
    pub plugins: Vec<PluginVersion>,
}

/// Lists the tenant's plugin versions.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PluginList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_plugins(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PluginList>, ApiError> {
    app.require_operator(&headers)?;
    let tenant = app.tenant(&tenant)?;
    Ok(Json(PluginList { plugins: app.store.plugins(&tenant.record.name)? }))
}

/// Body of `PUT …/pipeline`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPipeline {
    /// Stages in order (an empty list = the model's ranking unchanged).
    pub stages: Vec<StageSpec>,
}

/// The active pipeline and every version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineHistory {
    /// The active version (0 = none).
    pub active: u32,
    /// Every version, oldest first.
    pub versions: Vec<PipelineRecord>,
}

/// Activates a new pipeline version (stored, then swapped atomically).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/pipeline", request_body = PutPipeline,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineRecord), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn put_pipeline(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PutPipeline>,
) -> Result<Json<PipelineRecord>, ApiError> {
    app.require_operator(&headers)?;
    let tenant = app.tenant(&tenant)?;
    let _serial = tenant.activation.lock().await;
    let app2 = app.clone();
    let tenant2 = tenant.clone();
    let record = tokio::task::spawn_blocking(move || tenants::activate(&app2, &tenant2, request.stages))
        .await
        .map_err(|e| ApiError::internal("the activation task", e))??;
    Ok(Json(record))
}

/// The active pipeline and its history.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/pipeline",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineHistory), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn get_pipeline(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PipelineHistory>, ApiError> {
    app.require_operator(&headers)?;
    let tenant = app.tenant(&tenant)?;
    let (_, versions) = app.store.pipelines(&tenant.record.name)?;
    Ok(Json(PipelineHistory { active: tenant.pipeline.load().version, versions }))
}

/// Returns to the previously active pipeline version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/pipeline/rollback",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineRecord), (status = 409, body = ErrorBody), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn rollback(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PipelineRecord>, ApiError> {
    app.require_operator(&headers)?;
    let tenant = app.tenant(&tenant)?;
    let _serial = tenant.activation.lock().await;
    let app2 = app.clone();
    let tenant2 = tenant.clone();
    let record = tokio::task::spawn_blocking(move || tenants::rollback(&app2, &tenant2))
        .await
        .map_err(|e| ApiError::internal("the rollback task", e))??;
    Ok(Json(record))
}
