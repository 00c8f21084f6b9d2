//! A JSON body extractor whose failures use the API's error shape.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::error_code::ErrorCode;
use crate::timing::stage_done;

/// A JSON body; too large → 413 payload_too_large, not JSON or not the
/// expected shape → 400 malformed_json with serde's line/column message.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let _span = tracing::info_span!("parse", bytes = bytes.len()).entered();
        let start = Instant::now();
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not the JSON this route expects: {e}; see /openapi.json for the shape"),
            )
        })?;
        stage_done("parse", start);
        Ok(ApiJson(value))
    }
}

/// Path parameters; a segment that does not decode (`%FF`, not UTF-8) or
/// parse is a JSON 400, like every other error.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// A query string; one that does not parse is a JSON 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request(format!("bad query string: {}; see /openapi.json", e.body_text())))
    }
}

/// Maps a body-read failure (size limit, broken stream) to the API's error.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the body is larger than this route accepts; send smaller batches (see max_body_bytes / max_plugin_bytes)",
        )
    } else {
        ApiError::bad_request(format!("could not read the body: {}", rejection.body_text()))
    }
}
