//! The API's error codes, stable across versions: each defined once, in
//! `error_codes!`'s table, with its wire name and its HTTP status, from
//! which the enum, [`ErrorCode::ALL`], the wire names and the statuses all
//! derive. A leaf: the service reports refusals by code, the HTTP layer
//! answers them (and documents the list in the OpenAPI document).

/// Builds [`ErrorCode`] from one table of `Variant = "wire_name", status;` rows.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $wire:literal, $status:literal; )+) => {
        /// Every error code the API answers, stable across versions.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            /// Every code, for documents and tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $wire, )+
                }
            }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self {
                    $( ErrorCode::$variant => $status, )+
                }
            }
        }
    };
}

error_codes! {
    /// A well-formed request with a wrong value (400).
    BadRequest = "bad_request", 400;
    /// The body is not the JSON the route expects (400).
    MalformedJson = "malformed_json", 400;
    /// The body is larger than the route accepts (413).
    PayloadTooLarge = "payload_too_large", 413;
    /// No or unknown credentials (401).
    Unauthorized = "unauthorized", 401;
    /// Valid credentials that do not cover the resource (403).
    Forbidden = "forbidden", 403;
    /// No tenant of that name (404).
    UnknownTenant = "unknown_tenant", 404;
    /// The tenant is stored but could not be loaded (503).
    TenantUnavailable = "tenant_unavailable", 503;
    /// An item neither the model nor the catalog knows (404).
    UnknownItem = "unknown_item", 404;
    /// No plugin or plugin version of that name (404).
    UnknownPlugin = "unknown_plugin", 404;
    /// The tenant has no pipeline version of that number (404).
    UnknownPipelineVersion = "unknown_pipeline_version", 404;
    /// The tenant has no API key of that id (404).
    UnknownKey = "unknown_key", 404;
    /// No such route (404).
    UnknownRoute = "unknown_route", 404;
    /// The route does not take this method (405).
    MethodNotAllowed = "method_not_allowed", 405;
    /// The plugin component was refused (400).
    InvalidPlugin = "invalid_plugin", 400;
    /// The pipeline was refused (400).
    InvalidPipeline = "invalid_pipeline", 400;
    /// The model directory was refused (400).
    InvalidModel = "invalid_model", 400;
    /// The user has no history the model knows (404: none was found).
    EmptyHistory = "empty_history", 404;
    /// No model directory at the given path (404).
    UnknownModel = "unknown_model", 404;
    /// The backend asked for cannot run on this server, e.g. `cuda` on a host
    /// without a GPU or driver (409: the request is valid; this host's state
    /// refuses it, and another host, or `cpu`, would take it).
    BackendUnavailable = "backend_unavailable", 409;
    /// The request conflicts with the current state (409).
    Conflict = "conflict", 409;
    /// The server is at a concurrency limit (503, `Retry-After`).
    Overloaded = "overloaded", 503;
    /// The tenant is over its request rate or in-flight quota (429, `Retry-After`).
    RateLimited = "rate_limited", 429;
    /// The request took longer than the server's deadline (503).
    Timeout = "timeout", 503;
    /// Starting or shutting down (503).
    NotReady = "not_ready", 503;
    /// The shared store (Redis) cannot be reached and the request needs it (503, `Retry-After`).
    StoreUnavailable = "store_unavailable", 503;
    /// A pipeline's retrieval filter does not fit the tenant's catalog as
    /// upserted: an attribute it has no column for, or an op or value that
    /// does not fit the column's kind (409).
    FilterMismatch = "filter_mismatch", 409;
    /// An upsert would take the tenant's in-memory catalog past the server's
    /// `catalog_memory_bytes` (507); nothing was written.
    CatalogFull = "catalog_full", 507;
    /// A pipeline stage with `on_error = fail` failed (502).
    PluginFailed = "plugin_failed", 502;
    /// A fault on the server's side (500); the details are in the server's log.
    Internal = "internal", 500;
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_wire_name_with_an_error_status() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serialise");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_string()));
            assert!((400..600).contains(&code.http_status()), "{code:?}");
        }
        let names: std::collections::HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "two codes share a wire name");
    }
}
