//! Credentials as extractors. They read only the request's head (the
//! `Authorization` header and the path), so they run before any body
//! extractor: an unauthenticated request is answered 401 without its body
//! being read. A handler reaches a tenant only through [`TenantAccess`] or
//! [`OperatorTenant`], so a route that forgets its check does not compile.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::ids::{same_hash, secret_hash};
use crate::state::{AppState, Tenant};

fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Who the presented secret belongs to.
enum Caller {
    Operator,
    Tenant(String),
}

fn caller(parts: &Parts, app: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    let hash = secret_hash(token);
    if same_hash(&hash, &app.operator_hash) {
        return Ok(Caller::Operator);
    }
    app.tenant_of_key_hash(&hash).map(Caller::Tenant).ok_or_else(ApiError::unauthorized)
}

/// The `{tenant}` segment of the matched route.
async fn tenant_param(parts: &mut Parts) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
    params
        .iter()
        .find(|(key, _)| *key == "tenant")
        .map(|(_, value)| value.to_string())
        .ok_or_else(|| ApiError::internal("resolving the tenant", "route without a {tenant} segment"))
}

/// Proof that the request carries the operator token. Only this module (and
/// start-up code, through `Operator::start_up`) can make one.
pub struct Operator(());

impl Operator {
    /// The server itself at start-up (loading tenants, the demo tenant).
    pub(crate) fn start_up() -> Operator {
        Operator(())
    }
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match caller(parts, app)? {
            Caller::Operator => Ok(Operator(())),
            Caller::Tenant(_) => Err(ApiError::forbidden()),
        }
    }
}

/// The operator's proof when the request carries the operator token, for
/// routes that answer everyone but tell the operator more (`/readyz`). Never
/// refuses: no token, a tenant's key or a wrong token are all `None`.
pub struct MaybeOperator(pub Option<Operator>);

impl FromRequestParts<Arc<AppState>> for MaybeOperator {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        Ok(MaybeOperator(matches!(caller(parts, app), Ok(Caller::Operator)).then_some(Operator(()))))
    }
}

/// The tenant named by the path, for a caller holding that tenant's API key
/// or the operator token. Another tenant's key gets 403 without learning
/// whether the named tenant exists.
pub struct TenantAccess {
    /// The tenant, loaded and available.
    pub tenant: Arc<Tenant>,
}

impl FromRequestParts<Arc<AppState>> for TenantAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let who = caller(parts, app)?;
        let name = tenant_param(parts).await?;
        match who {
            Caller::Tenant(owner) if owner != name => Err(ApiError::forbidden()),
            _ => Ok(TenantAccess { tenant: app.lookup_tenant(&name)? }),
        }
    }
}

/// The operator acting on the tenant named by the path.
pub struct OperatorTenant {
    /// The operator's proof.
    pub operator: Operator,
    /// The tenant (404 when unknown, 503 when it could not load).
    pub tenant: Arc<Tenant>,
}

impl FromRequestParts<Arc<AppState>> for OperatorTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let operator = Operator::from_request_parts(parts, app).await?;
        let name = tenant_param(parts).await?;
        Ok(OperatorTenant { operator, tenant: app.lookup_tenant(&name)? })
    }
}

/// Key hash → tenant name, for the storefront routes.
pub type KeyIndex = HashMap<String, String>;
