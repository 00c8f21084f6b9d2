//! Operator routes of model versions: upload a bundle, list, activate a
//! version (hot swap), roll back. Thin: the work is in
//! [`crate::service::bundles`] (bundles) and [`crate::service::tenants`] (swaps).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::auth::OperatorTenant;
use super::bounds::MODEL_VERSION;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, body_error};
use super::records::ModelVersionJson;
use crate::service::app::AppState;
use crate::service::jobs::{self, JobKind};
use crate::service::{Error, bundles, tenants};

/// A tenant's model versions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelHistory {
    /// The version this host serves (absent: the tenant's base model).
    pub active: Option<String>,
    /// Every uploaded version, oldest first.
    pub versions: Vec<ModelVersionJson>,
}

/// The model serving after a rollback.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelRollback {
    /// The version now active (absent: the tenant's base model).
    pub active: Option<String>,
}

fn check_version_name(version: &str) -> Result<(), ApiError> {
    // `…/models/rollback` is the rollback route.
    if !MODEL_VERSION.allows(version) || version == "rollback" {
        return Err(ApiError::bad_request(MODEL_VERSION.refusal(version)));
    }
    Ok(())
}

/// Uploads a model bundle (a tar of `config.json`, `model.safetensors`,
/// `items.json`) as an immutable version: unpacked, loaded and checked
/// before the answer; the same bundle again is the same version, another
/// bundle under a stored version is a 409. Activate it with `…/activate`.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/models/{version}",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the bundle: a tar of config.json, model.safetensors and items.json"),
    params(("tenant" = String, Path, description = "tenant name"),
           ("version" = String, Path, description = "model version: 1..=64 of a-z, A-Z, 0-9, '-', '_', '.'")),
    responses((status = 201, body = ModelVersionJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn put_model(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, version)): ApiPath<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<ModelVersionJson>), ApiError> {
    check_version_name(&version)?;
    let bytes = body.map_err(body_error)?;
    let checking = super::operator::upload_slot(&app)?;
    let (_alive, abandoned) = jobs::watch_request();
    let stored = jobs::run(JobKind::Write, tracing::Span::current(), checking, move || {
        bundles::upload(&app, &tenant.record.name, &version, &bytes, &abandoned)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// The model version this host serves and every uploaded version.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/models",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = ModelHistory), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn list_models(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<ModelHistory>, ApiError> {
    let active = tenant.model_version.clone();
    let (_, versions) = jobs::run(JobKind::Read, tracing::Span::current(), (), move || {
        Ok::<_, Error>(app.store.models(&tenant.record.name)?)
    })
    .await?;
    Ok(Json(ModelHistory { active, versions: versions.into_iter().map(Into::into).collect() }))
}

/// Activates an uploaded model version: loaded before the switch, then
/// swapped in without dropping a request (requests in flight finish on the
/// model they started with; the new model starts with an empty encoder cache).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{version}/activate",
    params(("tenant" = String, Path, description = "tenant name"),
           ("version" = String, Path, description = "model version")),
    responses((status = 200, body = ModelVersionJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn activate_model(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
    ApiPath((_, version)): ApiPath<(String, String)>,
) -> Result<Json<ModelVersionJson>, ApiError> {
    check_version_name(&version)?;
    let serial = tenant.activation.clone().lock_owned().await;
    let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
        tenants::activate_model(&app, &tenant, &version)
    })
    .await?;
    Ok(Json(record.into()))
}

/// Returns to the model active before the last activation (the base model
/// after the first); 409 when none was activated.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/rollback",
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = ModelRollback), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "operator")]
pub async fn rollback_model(
    State(app): State<Arc<AppState>>,
    OperatorTenant { tenant, .. }: OperatorTenant,
) -> Result<Json<ModelRollback>, ApiError> {
    let serial = tenant.activation.clone().lock_owned().await;
    let active =
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::rollback_model(&app, &tenant))
            .await?;
    Ok(Json(ModelRollback { active }))
}
