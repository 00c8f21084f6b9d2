//! A JSON body extractor whose failures use the API's error shape.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
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

/// Integers as JSON Schema defines them: `883` and `883.0` alike (a number
/// with a zero fraction is an integer there, so a client generated from the
/// OpenAPI document may send either). Query strings give text: parsed too.
pub mod integral {
    use serde::de::{self, Deserializer, Visitor};

    struct Integral;

    impl Visitor<'_> for Integral {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // ±2^63 is exactly representable; the range check keeps the cast exact.
            if v.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            if let Ok(n) = v.parse::<i64>() {
                return Ok(n);
            }
            match v.parse::<f64>() {
                Ok(f) if f.is_finite() => self.visit_f64(f),
                _ => Err(E::custom(format!("{v:?} is not an integer"))),
            }
        }
    }

    fn convert<T: TryFrom<i64>, E: de::Error>(v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    /// A required integer field: `#[serde(deserialize_with = "integral::required")]`.
    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        convert(d.deserialize_any(Integral)?)
    }

    /// An optional integer field (absent or null = None).
    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<i64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(Integral).map(Some)
            }
        }
        d.deserialize_option(Maybe)?.map(convert).transpose()
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Deserialize, Debug)]
        struct Probe {
            #[serde(deserialize_with = "super::required")]
            k: usize,
            #[serde(default, deserialize_with = "super::optional")]
            t: Option<i64>,
        }

        #[test]
        fn integers_with_zero_fraction_pass_and_others_fail() {
            let p: Probe = serde_json::from_str(r#"{"k": 883.0, "t": -5}"#).expect("integral");
            assert_eq!((p.k, p.t), (883, Some(-5)));
            let p: Probe = serde_json::from_str(r#"{"k": 3, "t": null}"#).expect("null");
            assert_eq!((p.k, p.t), (3, None));
            let p: Probe = serde_json::from_str(r#"{"k": 3}"#).expect("absent");
            assert_eq!(p.t, None);
            assert!(serde_json::from_str::<Probe>(r#"{"k": 1.5}"#).is_err());
            assert!(serde_json::from_str::<Probe>(r#"{"k": -1}"#).is_err());
            assert!(serde_json::from_str::<Probe>(r#"{"k": 1e300}"#).is_err());
            assert!(serde_json::from_str::<Probe>(r#"{"k": "3"}"#).is_ok());
        }
    }
}
