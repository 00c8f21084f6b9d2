//! `POST …/events`: the event a storefront sends, and the handler that
//! checks a batch and hands it to [`crate::service::ingest`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::auth::TenantAccess;
use super::bounds::{MAX_ACTION_LEN, MAX_EVENTS};
use super::checks::{check_count, check_id};
use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use crate::clock::now_unix;
use crate::config::ServerConfig;
use crate::service::app::AppState;
use crate::service::ingest::{self, Ingested};
use crate::service::quota::QuotaKind;
use crate::store::StoredEvent;

/// One thing a shopper did.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Event)]
pub struct IngestEvent {
    /// The shopper (required in `POST …/events`, optional in recommend,
    /// where the request's `user_id` applies).
    #[serde(default)]
    #[schema(min_length = 1)]
    pub user_id: Option<String>,
    /// The client's id for this event: an event id stored before is not stored again.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub event_id: Option<String>,
    /// External item id.
    #[schema(min_length = 1)]
    pub item: String,
    /// Unix seconds, from 1970 to at most `max_future_skew_s` (default a day) ahead of the server clock.
    #[serde(deserialize_with = "crate::integral::required")]
    #[schema(minimum = 0, maximum = 4102444800.0, format = Int64)]
    pub ts: i64,
    /// view, cart, purchase, … (default `view`).
    #[serde(default = "default_action")]
    #[schema(min_length = 1)]
    pub action: String,
}

fn default_action() -> String {
    "view".into()
}

impl From<IngestEvent> for StoredEvent {
    fn from(e: IngestEvent) -> Self {
        StoredEvent { user_id: e.user_id, event_id: e.event_id, item: e.item, ts: e.ts, action: e.action }
    }
}

/// Checks one event's sizes and time: no timestamps before 1970 or further
/// ahead of the server clock than `max_future_skew_s`.
pub fn check_event(config: &ServerConfig, event: &IngestEvent) -> Result<(), ApiError> {
    check_id("item", &event.item)?;
    if let Some(id) = &event.event_id {
        check_id("event_id", id)?;
    }
    let action = event.action.chars().count();
    if action == 0 || action > MAX_ACTION_LEN {
        return Err(ApiError::bad_request(format!(
            "action must be 1..={MAX_ACTION_LEN} characters long, got {action}"
        )));
    }
    let latest = now_unix().saturating_add(config.max_future_skew_s);
    if event.ts < 0 || event.ts > latest {
        return Err(ApiError::bad_request(format!(
            "event ts {} (item {:?}) is outside 0..={latest}: send unix seconds, not milliseconds, and no time before 1970 or more than {} s ahead of now",
            event.ts, event.item, config.max_future_skew_s
        )));
    }
    Ok(())
}

/// Body of `POST …/events`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// The events (at most 1000); each needs a `user_id`.
    pub events: Vec<IngestEvent>,
}

/// Answer of `POST …/events`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsResponse {
    /// Events committed to the store by this batch (on a replay: by its first delivery).
    pub accepted: usize,
    /// Events skipped because their `event_id` was stored before.
    #[serde(default)]
    pub duplicates: usize,
    /// The batch's `Idempotency-Key` was seen before: nothing was written again.
    #[serde(default)]
    pub replayed: bool,
    /// Present (true) when the shared store could not be reached: the batch
    /// is kept durably on this host and forwarded, in order and once, when
    /// the store returns (`accepted` counts it whole; duplicates among its
    /// events are dropped then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

impl From<Ingested> for EventsResponse {
    fn from(Ingested { outcome, queued }: Ingested) -> Self {
        EventsResponse {
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            replayed: outcome.replayed,
            queued,
        }
    }
}

/// The `Idempotency-Key` header, checked: visible ASCII only, so that no
/// client key can take the server's own namespace
/// ([`ingest::SERVER_KEY_PREFIX`] starts with a control character).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    // An empty header is no key (the document allows it; nothing to dedupe by).
    let Some(value) = headers.get("idempotency-key").filter(|v| !v.is_empty()) else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?.to_string();
    check_id("Idempotency-Key", &key)?;
    Ok(Some(key))
}

/// Checks a batch: its size, and each event's sizes, time and user.
fn check(app: &AppState, events: Vec<IngestEvent>) -> Result<Vec<StoredEvent>, ApiError> {
    check_count("events", events.len(), MAX_EVENTS)?;
    for event in &events {
        check_event(&app.config, event)?;
        let user = event
            .user_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request(format!("event for item {:?} has no user_id", event.item)))?;
        check_id("user_id", user)?;
    }
    Ok(events.into_iter().map(Into::into).collect())
}

/// Appends events; they are committed (fsync'd) before the 200. Retries are
/// stored once: send the same `Idempotency-Key` header with a retried batch,
/// or give each event an `event_id`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events", request_body = EventsRequest,
    params(("tenant" = String, Path, description = "tenant name"),
           ("Idempotency-Key" = Option<String>, Header, description = "a retried batch with the same key is stored once (1..=256 bytes)")),
    responses((status = 200, body = EventsResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn post_events(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EventsRequest>,
) -> Result<Json<EventsResponse>, ApiError> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::Write)?;
    let batch_key = idempotency_key(&headers)?;
    let events = check(&app, request.events)?;
    let ingested = ingest::append(&app, tenant, quota, events, batch_key).await?;
    Ok(Json(ingested.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ingest::{SERVER_KEY_PREFIX, server_batch_key};
    use axum::http::HeaderValue;

    #[test]
    fn server_batch_keys_are_128_random_bits_no_client_can_send() {
        let keys: std::collections::HashSet<String> = (0..10_000).map(|_| server_batch_key()).collect();
        assert_eq!(keys.len(), 10_000, "a key repeated");
        for key in keys.iter().take(100) {
            let bits = key.strip_prefix(SERVER_KEY_PREFIX).expect("the server's prefix");
            assert_eq!(bits.len(), 32, "{key:?}");
            assert!(bits.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
            // A client cannot send it: not a header value, and no header
            // value the server accepts starts with the prefix.
            assert!(HeaderValue::from_str(key).is_err(), "{key:?} is a valid header value");
        }
        for sent in ["edge-k0000abcd", "\tedge:", "x"] {
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", HeaderValue::from_str(sent).unwrap());
            let key = idempotency_key(&headers).unwrap().unwrap();
            assert!(!key.starts_with(SERVER_KEY_PREFIX), "{key:?}");
        }
    }
}
