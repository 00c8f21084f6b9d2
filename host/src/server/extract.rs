//! A JSON body extractor whose failures use the API's error shape.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::recommend::stage_done;

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
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not the JSON this route expects: {e}; see /openapi.json for the shape"),
            )
        })?;
        stage_done("parse", start);
        Ok(ApiJson(value))
    }
}

/// Maps a body-read failure (size limit, broken stream) to the API's error.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than this route accepts; send smaller batches (see max_body_bytes / max_plugin_bytes)",
        )
    } else {
        ApiError::bad_request(format!("could not read the body: {}", rejection.body_text()))
    }
}
