//! Storefront routes (a tenant API key): recommend, events, catalog.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::pipeline::{self, StageTrace};
use super::recommend::{self, EventIn};
use super::state::AppState;
use super::store::StoredEvent;

/// Longest user or item id accepted.
const MAX_ID_LEN: usize = 256;

/// Body of `POST …/recommend`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The shopper; their stored events join the request's.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Recent events not (yet) posted, external item ids.
    #[serde(default)]
    pub events: Vec<EventIn>,
    /// How many items to return (1..=max_k, default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Unix seconds; defaults to now.
    #[serde(default)]
    pub query_time: Option<i64>,
    /// Request attributes handed to the plugins (page, locale, …), string values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Return the per-stage trace.
    #[serde(default)]
    pub explain: bool,
}

fn default_k() -> usize {
    10
}

/// One recommended item.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoredItem {
    /// External item id.
    pub item: String,
    /// Final score (the model's or the last re-scoring stage's).
    pub score: f32,
    /// With `explain`: reason codes the stages left (`stage<i>:<code>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Answer of `POST …/recommend`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecommendResponse {
    /// Best first.
    pub items: Vec<ScoredItem>,
    /// The pipeline version that produced the answer (0 = no pipeline).
    pub pipeline_version: u32,
    /// With `explain`: what each stage did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<StageTrace>>,
}

fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "{kind} must be 1..={MAX_ID_LEN} bytes long, got {} bytes",
            id.len()
        )));
    }
    Ok(())
}

/// Recommends `k` items for a shopper.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/recommend", request_body = RecommendRequest,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = RecommendResponse), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn recommend(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let tenant = app.require_tenant(&headers, &tenant)?;
    let span = tracing::info_span!("recommend", tenant = %tenant.record.name);
    // Admission first: a saturated server answers 503 now instead of queueing.
    let _admitted = app
        .admission
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded(app.config.retry_after_s))?;
    let RecommendRequest { user_id, events, k, query_time, context, explain } = request;
    if k == 0 || k > app.config.max_k {
        return Err(ApiError::bad_request(format!("k must be in 1..={}, got {k}", app.config.max_k)));
    }
    if let Some(user) = &user_id {
        check_id("user_id", user)?;
    }
    for event in &events {
        check_id("item", &event.item)?;
    }
    let attributes = context
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => (key, s),
            other => (key, other.to_string()),
        })
        .collect();
    // The version is pinned here: a swap during this request does not affect it.
    let active = tenant.pipeline.load_full();
    let encode_slot = app.encode_slots.clone().acquire_owned().await.map_err(|_| ApiError::overloaded(1))?;
    let (history, candidates) = {
        let (app, tenant, span, user) = (app.clone(), tenant.clone(), span.clone(), user_id.clone());
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let user = user.as_deref();
                let history = recommend::build_history(&app, &tenant, user, &events, query_time)?;
                let embedding = recommend::encode_user(&app, &tenant, user, &history)?;
                let candidates = recommend::score(&tenant, &embedding, &history, app.config.candidates);
                Ok::<_, ApiError>((history, candidates))
            })
        })
        .await
        .map_err(|e| ApiError::internal("the encode task", e))??
    };
    drop(encode_slot);
    let plugin_slot = app.plugin_slots.clone().acquire_owned().await.map_err(|_| ApiError::overloaded(1))?;
    let info = pipeline::RequestInfo {
        tenant: tenant.record.name.clone(),
        user: user_id,
        k,
        now: history.query_time,
        attributes,
        history: history.events.iter().zip(&history.actions).map(|(e, a)| (e.item, a.clone(), e.ts)).collect(),
    };
    let outcome = {
        let (app, tenant) = (app.clone(), tenant.clone());
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| pipeline::run(&app, &tenant, &active, &info, candidates, explain))
        })
        .await
        .map_err(|e| ApiError::internal("the plugin task", e))??
    };
    drop(plugin_slot);
    let items = outcome
        .items
        .iter()
        .zip(outcome.reasons)
        .filter_map(|(s, reasons)| {
            let reasons = if explain { reasons } else { Vec::new() };
            tenant.items.external(s.item).map(|id| ScoredItem { item: id.to_string(), score: s.score, reasons })
        })
        .take(k)
        .collect();
    Ok(Json(RecommendResponse {
        items,
        pipeline_version: outcome.version,
        trace: explain.then_some(outcome.trace),
    }))
}

/// Body of `POST …/events`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// The events; each needs a `user_id`.
    pub events: Vec<EventIn>,
}

/// Answer of `POST …/events`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsResponse {
    /// Events committed to the store.
    pub accepted: usize,
}

/// Appends events; they are committed (fsync'd) before the 200.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events", request_body = EventsRequest,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = EventsResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn post_events(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EventsRequest>,
) -> Result<Json<EventsResponse>, ApiError> {
    let tenant = app.require_tenant(&headers, &tenant)?;
    let mut rows = Vec::with_capacity(request.events.len());
    for event in &request.events {
        let user = event
            .user_id
            .clone()
            .ok_or_else(|| ApiError::bad_request(format!("event for item {:?} has no user_id", event.item)))?;
        check_id("user_id", &user)?;
        check_id("item", &event.item)?;
        rows.push((user, StoredEvent { item: event.item.clone(), ts: event.ts, action: event.action.clone() }));
    }
    let accepted = rows.len();
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let name = &tenant.record.name;
        for (_, event) in &rows {
            if tenant.items.internal(&event.item).is_none() && app2.store.item(name, &event.item)?.is_none() {
                return Err(ApiError::unknown_item(&event.item));
            }
        }
        let start = Instant::now();
        app2.store.append_events(name, &rows)?;
        recommend::stage_done("store_events", start);
        Ok::<(), ApiError>(())
    })
    .await
    .map_err(|e| ApiError::internal("the store task", e))??;
    Ok(Json(EventsResponse { accepted }))
}

/// One catalog item.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// External item id.
    pub id: String,
    /// Attributes (the typed columns plugins read): numbers, booleans, strings, lists of strings.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Body of `PUT …/catalog/items`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItems {
    /// Items to insert or replace.
    pub items: Vec<CatalogItem>,
}

/// A page of the catalog.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemsPage {
    /// Items in id order.
    pub items: Vec<CatalogItem>,
    /// The `after` of the next page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Inserts or replaces catalog items (items unknown to the model are stored too).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/catalog/items", request_body = UpsertItems,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = EventsResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn upsert_items(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpsertItems>,
) -> Result<Json<EventsResponse>, ApiError> {
    let tenant = app.require_tenant(&headers, &tenant)?;
    let mut rows = Vec::with_capacity(request.items.len());
    for item in request.items {
        check_id("item id", &item.id)?;
        rows.push((item.id, serde_json::Value::Object(item.attributes)));
    }
    let accepted = rows.len();
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.upsert_items(&tenant.record.name, &rows))
        .await
        .map_err(|e| ApiError::internal("the store task", e))??;
    Ok(Json(EventsResponse { accepted }))
}

/// One catalog item.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/catalog/items/{id}",
    params(("tenant" = String, Path, description = "tenant name"), ("id" = String, Path, description = "item id")),
    responses((status = 200, body = CatalogItem), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn get_item(
    State(app): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<CatalogItem>, ApiError> {
    let tenant = app.require_tenant(&headers, &tenant)?;
    match app.store.item(&tenant.record.name, &id)? {
        Some(serde_json::Value::Object(attributes)) => Ok(Json(CatalogItem { id, attributes })),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_item",
            format!("the catalog has no item {id:?}; upsert it with PUT …/catalog/items"),
        )),
    }
}

/// Paging of `GET …/catalog/items`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (1..=1000, default 100).
    pub limit: Option<usize>,
    /// The last id of the previous page.
    pub after: Option<String>,
}

/// Lists the catalog in id order, a page at a time.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/catalog/items",
    params(("tenant" = String, Path, description = "tenant name"), PageQuery),
    responses((status = 200, body = ItemsPage), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn list_items(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ItemsPage>, ApiError> {
    let tenant = app.require_tenant(&headers, &tenant)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be in 1..=1000, got {limit}")));
    }
    let rows = app.store.items_page(&tenant.record.name, query.after.as_deref(), limit)?;
    let next = (rows.len() == limit).then(|| rows[rows.len() - 1].0.clone());
    let items = rows
        .into_iter()
        .map(|(id, value)| CatalogItem { id, attributes: value.as_object().cloned().unwrap_or_default() })
        .collect();
    Ok(Json(ItemsPage { items, next }))
}
