//! The API's error answer: `{"error":{"code","message"}}` with the code's
//! HTTP status (and `Retry-After` where retrying helps). Made from the
//! service's [`Error`]: a refusal is answered as it is; an internal fault is
//! logged here, where the answer is made, with an id the client gets instead
//! of the cause.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::error_code::ErrorCode;
use crate::service::Error;
use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError(pub Error);

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

// The codes are defined once, in `error_code`'s table (a leaf that knows no
// OpenAPI): the document lists them from there.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Every error code the API answers, stable across versions."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }

    /// 400 bad_request: a well-formed request with a wrong value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(Error::bad_request(message))
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

    /// 500 internal: a fault on our side (logged when it is answered).
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        ApiError(Error::internal(context, cause))
    }
}

fn status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let retry_after_s = match &self.0 {
            Error::Refused { retry_after_s, .. } => *retry_after_s,
            Error::Internal { .. } => None,
        };
        // For a fault, `report` logs the cause with an id and answers the id
        // only: never store paths or panic text.
        let body = ErrorBody { error: ErrorDetail { code, message: self.0.report() } };
        let mut response = (status(code), axum::Json(body)).into_response();
        if let Some(seconds) = retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl crate::service::jobs::JobError for ApiError {
    fn log_unanswered(&self) {
        self.0.log_unanswered();
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError(error.into())
    }
}
