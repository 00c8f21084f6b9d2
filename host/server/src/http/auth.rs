//! Credentials as extractors. They read only the request's head (the
//! `Authorization` header and the path), so they run before any body
//! extractor: an unauthenticated request is answered 401 without its body
//! being read. A handler reaches a tenant only through [`TenantAccess`] or
//! [`OperatorTenant`], so a route that forgets its check does not compile.
//! Whose secret it is, the service decides ([`AppState::caller`]).

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::service::access::{Caller, Operator};
use crate::service::app::{AppState, Tenant};

fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn caller(parts: &Parts, app: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    app.caller(token).ok_or_else(ApiError::unauthorized)
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

/// The operator token, as an extractor: the service's proof of it.
pub struct OperatorAccess(pub Operator);

impl FromRequestParts<Arc<AppState>> for OperatorAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match caller(parts, app)? {
            Caller::Operator(operator) => Ok(OperatorAccess(operator)),
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
        Ok(MaybeOperator(match caller(parts, app) {
            Ok(Caller::Operator(operator)) => Some(operator),
            _ => None,
        }))
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
        let OperatorAccess(operator) = OperatorAccess::from_request_parts(parts, app).await?;
        let name = tenant_param(parts).await?;
        Ok(OperatorTenant { operator, tenant: app.lookup_tenant(&name)? })
    }
}
