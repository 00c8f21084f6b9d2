//! The API's error: a stable machine-readable code, a message that says what
//! to fix, and the HTTP status, rendered as `{"error":{"code","message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (documented in the OpenAPI document), e.g. `unknown_tenant`.
    pub code: &'static str,
    /// Human-readable: what was wrong and what to do.
    pub message: String,
    /// Seconds for `Retry-After` (503 overloaded).
    pub retry_after_s: Option<u64>,
}

/// The JSON body of every error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code: bad_request, malformed_json, payload_too_large, unauthorized,
    /// forbidden, unknown_tenant, unknown_item, unknown_plugin, unknown_route,
    /// method_not_allowed, invalid_plugin, invalid_pipeline, conflict,
    /// overloaded, timeout, not_ready, plugin_failed, internal.
    pub code: String,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    /// 400 bad_request: a well-formed request with a wrong value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown credentials: send `Authorization: Bearer <tenant API key or operator token>`",
        )
    }

    /// 403: valid credentials that do not cover this resource.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "these credentials do not grant access to this resource; use the key of the tenant named in the path (or the operator token for operator routes)",
        )
    }

    /// 404 unknown_tenant.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no tenant named {tenant:?}; list tenants with GET /v1/tenants or create it with POST /v1/tenants"),
        )
    }

    /// 404 unknown_item.
    pub fn unknown_item(item: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_item",
            format!("item {item:?} is neither in the tenant's model nor in its catalog; upsert it with PUT …/catalog/items first"),
        )
    }

    /// 503 overloaded with Retry-After.
    pub fn overloaded(retry_after_s: u64) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is at its concurrency limit; retry after the Retry-After delay",
        );
        error.retry_after_s = Some(retry_after_s);
        error
    }

    /// 500 internal: a fault on our side (the message is logged in full).
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, context, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed on the server: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::server::store::StoreError> for ApiError {
    fn from(error: crate::server::store::StoreError) -> Self {
        ApiError::internal("the store", error)
    }
}
