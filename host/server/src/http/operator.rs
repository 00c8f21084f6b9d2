//! Operator routes (the operator token): tenants, plugins, pipelines.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::{OperatorAccess, OperatorTenant};
use super::bounds::{PLUGIN_NAME, TENANT_NAME};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, body_error};
use super::records::{PipelineRecordJson, PluginVersionJson, RetrieveJson, StageSpecJson};
use crate::clock::now_unix;
use crate::error_code::ErrorCode;
use crate::service::app::{AppState, Tenant};
use crate::service::jobs::{self, JobKind};
use crate::service::{Error, first_party, plugins, tenants};
use crate::store::{PipelineSpec, RetrievalMode, TenantRecord};

/// Body of `POST /v1/tenants`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name: 1..=64 of a-z, 0-9, `-`, `_`.
    pub name: String,
    /// `"demo"` (the bundled model) or a model directory on the server (config.json, model.safetensors, items.json).
    pub model: String,
    /// The engine for this tenant, when not the server's `backend` setting.
    #[serde(default)]
    #[schema(pattern = "^(auto|cpu|cuda|cuda-emu)$")]
    pub backend: Option<String>,
    /// `exact` (the default): the exact top candidates, a scan of a
    /// quantised copy of the item table; `ann`: an HNSW graph built when the
    /// tenant loads (exact serves until it is ready), for catalogs past what
    /// the scan answers in time (recall@10 against exact ≥ 0.99 at the
    /// defaults, measured in docs/perf/retrieval.md).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(exact|ann)$")]
    pub retrieval: Option<RetrievalMode>,
    /// `"default"`: activate the default pipeline of first-party plugins
    /// (in-stock, exclude-recent, diversity: the demo tenant's) in the same
    /// call. Absent: no pipeline (the model's ranking) until `PUT …/pipeline`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^default$")]
    pub pipeline: Option<String>,
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
    /// The backend serving it (`cpu`, `cuda`, `cuda-emu`; empty when unavailable).
    pub backend: String,
    /// The retrieval asked for: `exact` or `ann`.
    pub retrieval: String,
    /// The retrieval serving now: `exact` while an `ann` tenant's index builds.
    pub retrieval_serving: String,
    /// Active pipeline version (0 = none).
    pub pipeline_version: u32,
    /// The uploaded model version serving (absent: the base model `model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The storefront API key (only in the answer to the creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Why the tenant is not serving, when it could not be loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// List of tenants.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantList {
    /// Tenants by name.
    pub tenants: Vec<TenantView>,
}

fn view(tenant: &Tenant) -> TenantView {
    TenantView {
        name: tenant.record.name.clone(),
        model: tenant.record.model.clone(),
        created_at: tenant.record.created_at,
        model_items: tenant.engine.items.len(),
        backend: tenant.engine.backend.name().to_string(),
        retrieval: tenant.record.retrieval.name().to_string(),
        retrieval_serving: tenant.engine.retrieval_serving().name().to_string(),
        pipeline_version: tenant.pipeline.load().version,
        model_version: tenant.model_version.clone(),
        api_key: None,
        unavailable: None,
    }
}

/// Creates a tenant with a model (and, asked, the default pipeline); answers its API key once.
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn create_tenant(
    State(app): State<Arc<AppState>>,
    OperatorAccess(operator): OperatorAccess,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    if !TENANT_NAME.allows(&request.name) {
        return Err(ApiError::bad_request(TENANT_NAME.refusal(&request.name)));
    }
    let default_pipeline = match request.pipeline.as_deref() {
        None => false,
        Some(first_party::DEFAULT_PIPELINE) => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidPipeline,
                format!(
                    "pipeline {other:?} is not one this server names: give \"{}\" for the default pipeline, or leave \"pipeline\" out and PUT …/pipeline your own stages",
                    first_party::DEFAULT_PIPELINE
                ),
            ));
        }
    };
    let (key, key_record) = tenants::issue_key();
    let record = TenantRecord {
        name: request.name.clone(),
        model: request.model,
        backend: request.backend,
        retrieval: request.retrieval.unwrap_or_default(),
        keys: vec![key_record],
        created_at: now_unix(),
        legacy_api_key: None,
    };
    let tenant = jobs::run(JobKind::Write, tracing::Span::current(), (), move || {
        tenants::create(&app, &operator, record)?;
        let tenant = app.tenant(&operator, &request.name)?;
        if default_pipeline {
            tenants::activate_default(&app, &tenant).map_err(|e| {
                e.context(format!(
                    "tenant {:?} was created, but its default pipeline was not activated (PUT …/pipeline activates one)",
                    request.name
                ))
            })?;
        }
        Ok::<_, Error>(tenant)
    })
    .await?;
    let mut view = view(&tenant);
    view.api_key = Some(key);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/tenants",
    responses((status = 200, body = TenantList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_tenants(
    State(app): State<Arc<AppState>>,
    OperatorAccess(operator): OperatorAccess,
) -> Result<Json<TenantList>, ApiError> {
    let mut tenants = Vec::new();
    for (name, unavailable) in app.tenant_names() {
        match unavailable {
            None => tenants.push(view(&*app.tenant(&operator, &name)?)),
            Some(reason) => tenants.push(TenantView {
                name,
                model: String::new(),
                created_at: 0,
                model_items: 0,
                backend: String::new(),
                retrieval: String::new(),
                retrieval_serving: String::new(),
                pipeline_version: 0,
                model_version: None,
                api_key: None,
                unavailable: Some(reason),
            }),
        }
    }
    Ok(Json(TenantList { tenants }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = TenantView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn get_tenant(OperatorTenant { tenant, .. }: OperatorTenant) -> Json<TenantView> {
    Json(view(&tenant))
}

/// A storefront key as the operator sees it (never the key itself, which is shown once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Names the key for revocation.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The key, only in the answer that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// The tenant's keys.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Oldest first.
    pub keys: Vec<KeyView>,
}

/// Issues a new storefront key for the tenant (rotation: issue, deploy, then revoke the old one).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 201, body = KeyView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn create_key(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let serial = tenant.activation.clone().lock_owned().await;
    let (key, record) =
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::add_key(&app, &tenant)).await?;
    Ok((StatusCode::CREATED, Json(KeyView { id: record.id, created_at: record.created_at, api_key: Some(key) })))
}

/// Lists the tenant's storefront keys (ids and dates only).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = KeyList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_keys(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<KeyList>, ApiError> {
    let record =
        jobs::run(JobKind::Read, tracing::Span::current(), (), move || tenants::stored_record(&app, &tenant)).await?;
    let keys = record.keys.into_iter().map(|k| KeyView { id: k.id, created_at: k.created_at, api_key: None }).collect();
    Ok(Json(KeyList { keys }))
}

/// Revokes one of the tenant's storefront keys; requests with it get 401 from now on.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{id}",
    params(("tenant" = String, Path, description = "tenant name"), ("id" = String, Path, description = "key id")),
    responses((status = 204, description = "revoked"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn revoke_key(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let serial = tenant.activation.clone().lock_owned().await;
    jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::revoke_key(&app, &tenant, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `PUT …/plugins/{name}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Store the component under `{name}` even though it declares another
    /// plugin name (or none, where earlier versions declared one).
    #[serde(default)]
    pub replace: bool,
}

/// Uploads a plugin component: compiled and checked before the answer; a
/// new immutable version (the same bytes again give the same version). A
/// component that declares another plugin's name, or an upload under a
/// first-party name that is not the first-party component, is a 409.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/plugins/{name}",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "the component (binary)"),
    params(("tenant" = String, Path, description = "tenant name"),
           ("name" = String, Path, description = "plugin name: 1..=64 of a-z, A-Z, 0-9, '-', '_'"),
           UploadQuery),
    responses((status = 201, body = PluginVersionJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn put_plugin(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, name)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<PluginVersionJson>), ApiError> {
    check_plugin_name_syntax(&name)?;
    let bytes = body.map_err(body_error)?;
    let checking = upload_slot(&app)?;
    let (_alive, abandoned) = jobs::watch_request();
    let version = jobs::run(JobKind::Write, tracing::Span::current(), checking, move || {
        plugins::upload(&app, &tenant.record.name, &name, &bytes, query.replace, &abandoned)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(version.into())))
}

/// One of the `upload_concurrency` permits of the checks of uploads
/// (compile, unpack, load), or 503 overloaded at once: the check holds it
/// until it ends, even when its client has stopped waiting (the request
/// deadline answered it), so that abandoned uploads cannot pile up.
pub(crate) fn upload_slot(app: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    app.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError(Error::retry_after(
            ErrorCode::Overloaded,
            format!(
                "{} uploads are being checked (upload_concurrency); retry after the Retry-After delay",
                app.config.upload_concurrency
            ),
            app.config.retry_after_s.max(5),
        ))
    })
}

fn check_plugin_name_syntax(name: &str) -> Result<(), ApiError> {
    if !PLUGIN_NAME.allows(name) {
        return Err(ApiError::bad_request(PLUGIN_NAME.refusal(name)));
    }
    Ok(())
}

/// Deletes a plugin version that no pipeline version uses (409 naming the
/// pipeline versions that do: roll forward past them first).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/plugins/{name}/versions/{version}",
    params(("tenant" = String, Path, description = "tenant name"),
           ("name" = String, Path, description = "plugin name"),
           ("version" = u32, Path, description = "plugin version", minimum = 1)),
    responses((status = 204, description = "deleted"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn delete_plugin_version(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, name, version)): ApiPath<(String, String, u32)>,
) -> Result<StatusCode, ApiError> {
    check_plugin_name_syntax(&name)?;
    // Serialised with activations: a pipeline being built cannot pick the version being deleted.
    let serial = tenant.activation.clone().lock_owned().await;
    jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
        plugins::delete_version(&app, &tenant.record.name, &name, version)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Plugin versions of a tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginList {
    /// By name, then version.
    pub plugins: Vec<PluginVersionJson>,
}

/// Lists the tenant's plugin versions.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PluginList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_plugins(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<PluginList>, ApiError> {
    let plugins = jobs::run(JobKind::Read, tracing::Span::current(), (), move || {
        Ok::<_, Error>(app.store.plugins(&tenant.record.name)?)
    })
    .await?;
    Ok(Json(PluginList { plugins: plugins.into_iter().map(Into::into).collect() }))
}

/// Body of `PUT …/pipeline`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPipeline {
    /// Hard filters retrieval applies before it takes the candidates
    /// (absent: every item may be retrieved).
    #[serde(default)]
    pub retrieve: Option<RetrieveJson>,
    /// Stages in order (an empty list = the model's ranking unchanged).
    pub stages: Vec<StageSpecJson>,
}

impl From<PutPipeline> for PipelineSpec {
    fn from(request: PutPipeline) -> Self {
        PipelineSpec {
            retrieve: request.retrieve.map(Into::into).unwrap_or_default(),
            stages: request.stages.into_iter().map(Into::into).collect(),
        }
    }
}

/// The active pipeline and every version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineHistory {
    /// The active version (0 = none).
    pub active: u32,
    /// Every version, oldest first.
    pub versions: Vec<PipelineRecordJson>,
}

/// Activates a new pipeline version (stored, then swapped atomically).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/pipeline", request_body = PutPipeline,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineRecordJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn put_pipeline(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiJson(mut raw): ApiJson<serde_json::Value>,
) -> Result<Json<PipelineRecordJson>, ApiError> {
    integral_limits(&mut raw);
    let request: PutPipeline = serde_json::from_value(raw).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the body is not the pipeline this route expects: {e}; see /openapi.json for the shape"),
        )
    })?;
    let serial = tenant.activation.clone().lock_owned().await;
    let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
        tenants::activate(&app, &tenant, PipelineSpec::from(request))
    })
    .await?;
    Ok(Json(record.into()))
}

/// Writes `limits` numbers like `178.0` as the integers JSON Schema says they
/// are, so that the runtime's integer fields accept them (the console's
/// pipeline form reads its JSON the same way).
pub(crate) fn integral_limits(raw: &mut serde_json::Value) {
    let Some(stages) = raw.get_mut("stages").and_then(serde_json::Value::as_array_mut) else { return };
    for limits in stages.iter_mut().filter_map(|s| s.get_mut("limits")).filter_map(serde_json::Value::as_object_mut) {
        for value in limits.values_mut() {
            if let Some(f) = value.as_f64().filter(|f| value.is_f64() && f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19) {
                *value = serde_json::Value::from(f as u64);
            }
        }
    }
}

/// The active pipeline and its history.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/pipeline",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineHistory), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn get_pipeline(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<PipelineHistory>, ApiError> {
    let active = tenant.pipeline.load().version;
    let (_, versions) = jobs::run(JobKind::Read, tracing::Span::current(), (), move || {
        Ok::<_, Error>(app.store.pipelines(&tenant.record.name)?)
    })
    .await?;
    Ok(Json(PipelineHistory { active, versions: versions.into_iter().map(Into::into).collect() }))
}

/// Activates a stored pipeline version again (rolling forward or back to
/// any version, not only the previous one); rollback then returns to the
/// version active before this call.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/pipeline/versions/{version}/activate",
    params(("tenant" = String, Path, description = "tenant name"),
           ("version" = u32, Path, description = "pipeline version", minimum = 1)),
    responses((status = 200, body = PipelineRecordJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn activate_pipeline_version(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, version)): ApiPath<(String, u32)>,
) -> Result<Json<PipelineRecordJson>, ApiError> {
    let serial = tenant.activation.clone().lock_owned().await;
    let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
        tenants::activate_version(&app, &tenant, version)
    })
    .await?;
    Ok(Json(record.into()))
}

/// Returns to the previously active pipeline version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/pipeline/rollback",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = PipelineRecordJson), (status = 409, body = ErrorBody), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn rollback(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<PipelineRecordJson>, ApiError> {
    let serial = tenant.activation.clone().lock_owned().await;
    let record =
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::rollback(&app, &tenant)).await?;
    Ok(Json(record.into()))
}
