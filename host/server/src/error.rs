//! The API's error: a stable machine-readable code, a message that says what
//! to fix, and the HTTP status, rendered as `{"error":{"code","message"}}`.
//! [`ErrorCode`] is the one list of codes: responses and the OpenAPI
//! document are both made from it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every error code the API answers, stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A well-formed request with a wrong value (400).
    BadRequest,
    /// The body is not the JSON the route expects (400).
    MalformedJson,
    /// The body is larger than the route accepts (413).
    PayloadTooLarge,
    /// No or unknown credentials (401).
    Unauthorized,
    /// Valid credentials that do not cover the resource (403).
    Forbidden,
    /// No tenant of that name (404).
    UnknownTenant,
    /// The tenant is stored but could not be loaded (503).
    TenantUnavailable,
    /// An item neither the model nor the catalog knows (404).
    UnknownItem,
    /// No plugin or plugin version of that name (404).
    UnknownPlugin,
    /// The tenant has no pipeline version of that number (404).
    UnknownPipelineVersion,
    /// The tenant has no API key of that id (404).
    UnknownKey,
    /// No such route (404).
    UnknownRoute,
    /// The route does not take this method (405).
    MethodNotAllowed,
    /// The plugin component was refused (400).
    InvalidPlugin,
    /// The pipeline was refused (400).
    InvalidPipeline,
    /// The model directory was refused (400).
    InvalidModel,
    /// The user has no history the model knows (404: none was found).
    EmptyHistory,
    /// No model directory at the given path (404).
    UnknownModel,
    /// The backend asked for cannot run on this server, e.g. `cuda` on a host
    /// without a GPU or driver (409: the request is valid; this host's state
    /// refuses it, and another host, or `cpu`, would take it).
    BackendUnavailable,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The server is at a concurrency limit (503, `Retry-After`).
    Overloaded,
    /// The tenant is over its request rate or in-flight quota (429, `Retry-After`).
    RateLimited,
    /// The request took longer than the server's deadline (503).
    Timeout,
    /// Starting or shutting down (503).
    NotReady,
    /// The shared store (Redis) cannot be reached and the request needs it (503, `Retry-After`).
    StoreUnavailable,
    /// A pipeline stage with `on_error = fail` failed (502).
    PluginFailed,
    /// A fault on the server's side (500); the details are in the server's log.
    Internal,
}

impl ErrorCode {
    /// Every code, for documents and tests.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::BadRequest,
        ErrorCode::MalformedJson,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::UnknownTenant,
        ErrorCode::TenantUnavailable,
        ErrorCode::UnknownItem,
        ErrorCode::UnknownPlugin,
        ErrorCode::UnknownPipelineVersion,
        ErrorCode::UnknownKey,
        ErrorCode::UnknownRoute,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidPlugin,
        ErrorCode::InvalidPipeline,
        ErrorCode::InvalidModel,
        ErrorCode::EmptyHistory,
        ErrorCode::UnknownModel,
        ErrorCode::BackendUnavailable,
        ErrorCode::Conflict,
        ErrorCode::Overloaded,
        ErrorCode::RateLimited,
        ErrorCode::Timeout,
        ErrorCode::NotReady,
        ErrorCode::StoreUnavailable,
        ErrorCode::PluginFailed,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::TenantUnavailable => "tenant_unavailable",
            ErrorCode::UnknownItem => "unknown_item",
            ErrorCode::UnknownPlugin => "unknown_plugin",
            ErrorCode::UnknownPipelineVersion => "unknown_pipeline_version",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::UnknownRoute => "unknown_route",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidPlugin => "invalid_plugin",
            ErrorCode::InvalidPipeline => "invalid_pipeline",
            ErrorCode::InvalidModel => "invalid_model",
            ErrorCode::EmptyHistory => "empty_history",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::PluginFailed => "plugin_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::MalformedJson
            | ErrorCode::InvalidPlugin
            | ErrorCode::InvalidPipeline
            | ErrorCode::InvalidModel => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::UnknownTenant
            | ErrorCode::UnknownItem
            | ErrorCode::UnknownPlugin
            | ErrorCode::UnknownKey
            | ErrorCode::UnknownPipelineVersion
            | ErrorCode::UnknownRoute
            | ErrorCode::UnknownModel
            | ErrorCode::EmptyHistory => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::BackendUnavailable => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TenantUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::Timeout
            | ErrorCode::NotReady
            | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PluginFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable code; it decides the HTTP status.
    pub code: ErrorCode,
    /// Human-readable: what was wrong and what to do.
    pub message: String,
    /// Seconds for `Retry-After` (503 overloaded, 429 rate_limited).
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
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_s: None }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// 400 bad_request: a well-formed request with a wrong value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or unknown credentials: send `Authorization: Bearer <tenant API key or operator token>`",
        )
    }

    /// 403: valid credentials that do not cover this resource.
    pub fn forbidden() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "these credentials do not grant access to this resource; use the key of the tenant named in the path (or the operator token for operator routes)",
        )
    }

    /// 404 unknown_tenant.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            ErrorCode::UnknownTenant,
            format!("no tenant named {tenant:?}; list tenants with GET /v1/tenants or create it with POST /v1/tenants"),
        )
    }

    /// 503 tenant_unavailable: stored, but it could not load at start.
    pub fn tenant_unavailable(tenant: &str, reason: &str) -> Self {
        let mut error = Self::new(
            ErrorCode::TenantUnavailable,
            format!(
                "tenant {tenant:?} could not be loaded ({reason}); the operator must fix its model or pipeline and restart"
            ),
        );
        error.retry_after_s = Some(30);
        error
    }

    /// 404 unknown_item.
    pub fn unknown_item(item: &str) -> Self {
        Self::new(
            ErrorCode::UnknownItem,
            format!(
                "item {item:?} is neither in the tenant's model nor in its catalog; upsert it with PUT …/catalog/items first"
            ),
        )
    }

    /// 503 overloaded with Retry-After.
    pub fn overloaded(retry_after_s: u64) -> Self {
        let mut error = Self::new(
            ErrorCode::Overloaded,
            "the server is at its concurrency limit; retry after the Retry-After delay",
        );
        error.retry_after_s = Some(retry_after_s);
        error
    }

    /// 429 rate_limited with Retry-After.
    pub fn rate_limited(what: &str, retry_after_s: u64) -> Self {
        let mut error = Self::new(
            ErrorCode::RateLimited,
            format!(
                "this tenant is over its {what} quota; retry after the Retry-After delay or ask the operator for a higher quota"
            ),
        );
        error.retry_after_s = Some(retry_after_s.max(1));
        error
    }

    /// 500 internal: a fault on our side. The cause is logged with an id; the
    /// client gets only the id, never store paths or panic text.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        let id = crate::ids::new_key_id();
        tracing::error!(%error, context, error_id = %id, "internal error");
        Self::new(
            ErrorCode::Internal,
            format!("{context} failed on the server (error id {id}; the operator finds the cause in the server log)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        if error.is_unavailable() {
            let mut api = ApiError::new(
                ErrorCode::StoreUnavailable,
                format!("{error}; this request needs it: retry when it is back (GET /readyz says)"),
            );
            api.retry_after_s = Some(1);
            return api;
        }
        ApiError::internal("the store", error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_wire_name_with_an_error_status() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serialise");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_string()));
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code:?}");
        }
    }
}
