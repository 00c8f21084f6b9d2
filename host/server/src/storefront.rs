//! Storefront routes (a tenant API key): recommend, events, catalog.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::auth::TenantAccess;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::jobs::{self, JobKind};
use super::pipeline::{self, StageTrace};
use super::quota::QuotaKind;
use super::recommend;
use super::state::AppState;
use super::store::AppendOutcome;
use crate::clock::now_unix;
use crate::event::Event;
use crate::integral;
use crate::json_size::json_len;
use crate::timing::stage_done;
use tracing::Instrument;

/// Longest user, item or event id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest `action`, in bytes.
pub const MAX_ACTION_LEN: usize = 32;
/// Most entries in a recommend's `context`.
pub const MAX_CONTEXT_ENTRIES: usize = 32;
/// Longest `context` key or value (as text), in bytes.
pub const MAX_CONTEXT_VALUE_LEN: usize = 256;
/// Most attributes on one catalog item.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute name, in characters.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;
/// Longest string attribute value, in characters.
pub const MAX_ATTRIBUTE_STRING_LEN: usize = 1024;
/// Most strings in a list attribute.
pub const MAX_ATTRIBUTE_LIST_LEN: usize = 64;
/// Longest string inside a list attribute, in characters.
pub const MAX_ATTRIBUTE_LIST_STRING_LEN: usize = 256;
/// Most events in one request.
pub const MAX_EVENTS: usize = 1000;
/// Most items in one catalog page.
pub const MAX_ITEMS: usize = 1000;

/// Body of `POST …/recommend`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The shopper; their stored events join the request's.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: Option<String>,
    /// Recent events not (yet) posted, external item ids (at most 1000).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub events: Vec<Event>,
    /// How many items to return (1..=max_k, default 10).
    #[serde(default = "default_k", deserialize_with = "integral::required")]
    #[schema(minimum = 1, maximum = 100, format = Int32)]
    pub k: usize,
    /// Unix seconds; defaults to now.
    #[serde(default, deserialize_with = "integral::optional")]
    #[schema(minimum = 0, maximum = 4102444800.0, format = Int64)]
    pub query_time: Option<i64>,
    /// Request attributes handed to the plugins (page, locale, …): at most 32
    /// entries, names and values (as text) of at most 256 characters.
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
    /// Present (true) when the shared store could not be reached: the answer
    /// used the request's own events and this host's cached catalog attributes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// Lengths are counted in characters, as JSON Schema's `maxLength` counts them.
fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!("{kind} must be 1..={MAX_ID_LEN} characters long, got {chars}")));
    }
    Ok(())
}

/// Checks one event's sizes and time: no timestamps before 1970 or further
/// ahead of the server clock than `max_future_skew_s`.
fn check_event(app: &AppState, event: &Event) -> Result<(), ApiError> {
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
    let latest = now_unix().saturating_add(app.config.max_future_skew_s);
    if event.ts < 0 || event.ts > latest {
        return Err(ApiError::bad_request(format!(
            "event ts {} (item {:?}) is outside 0..={latest}: send unix seconds, not milliseconds, and no time before 1970 or more than {} s ahead of now",
            event.ts, event.item, app.config.max_future_skew_s
        )));
    }
    Ok(())
}

/// Checks a catalog item's attributes: the shapes plugins read as typed
/// columns (number, boolean, string, list of strings), within the bounds
/// the OpenAPI document declares.
fn check_attributes(id: &str, attributes: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    use serde_json::Value;
    let bad = |what: String| ApiError::bad_request(format!("item {id:?}: {what}"));
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(bad(format!("{} attributes, at most {MAX_ATTRIBUTES}", attributes.len())));
    }
    for (name, value) in attributes {
        if name.is_empty() || name.chars().count() > MAX_ATTRIBUTE_NAME_LEN {
            return Err(bad(format!("attribute names are 1..={MAX_ATTRIBUTE_NAME_LEN} characters")));
        }
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
            Value::String(text) if text.chars().count() <= MAX_ATTRIBUTE_STRING_LEN => {}
            Value::String(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: strings are at most {MAX_ATTRIBUTE_STRING_LEN} characters"
                )));
            }
            Value::Array(list)
                if list.len() <= MAX_ATTRIBUTE_LIST_LEN
                    && list
                        .iter()
                        .all(|v| v.as_str().is_some_and(|s| s.chars().count() <= MAX_ATTRIBUTE_LIST_STRING_LEN)) => {}
            Value::Array(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: lists hold at most {MAX_ATTRIBUTE_LIST_LEN} strings of at most {MAX_ATTRIBUTE_LIST_STRING_LEN} characters"
                )));
            }
            Value::Object(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: nested objects are not attributes plugins can read; flatten them (e.g. \"{name}_field\")"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses an item whose attributes, as JSON, pass `max_item_bytes`: what
/// every read of the item (a listing, a recommend's candidates) costs.
fn check_item_bytes(app: &AppState, id: &str, attributes: &serde_json::Value) -> Result<(), ApiError> {
    let bytes = json_len(attributes);
    if bytes > app.config.max_item_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "item {id:?}: its attributes take {bytes} bytes as JSON, over the server's max_item_bytes ({}); keep large content (descriptions, media) outside the catalog and store what plugins need",
                app.config.max_item_bytes
            ),
        ));
    }
    Ok(())
}

fn check_count(what: &str, count: usize, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(ApiError::bad_request(format!("{count} {what} in one request: send at most {max}")));
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
    TenantAccess { tenant }: TenantAccess,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let span = tracing::info_span!("recommend", tenant = %tenant.record.name);
    // Quota, then admission: a flooding tenant gets 429 and a saturated
    // server 503 at once, instead of a queue.
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::Recommend)?;
    let admitted =
        app.admission.clone().try_acquire_owned().map_err(|_| ApiError::overloaded(app.config.retry_after_s))?;
    let held = Arc::new((quota, admitted));
    let RecommendRequest { user_id, events, k, query_time, context, explain } = request;
    if k == 0 || k > app.config.max_k {
        return Err(ApiError::bad_request(format!("k must be in 1..={}, got {k}", app.config.max_k)));
    }
    if let Some(user) = &user_id {
        check_id("user_id", user)?;
    }
    check_count("events", events.len(), MAX_EVENTS)?;
    for event in &events {
        check_event(&app, event)?;
    }
    if let Some(q) = query_time
        && q < 0
    {
        return Err(ApiError::bad_request(format!("query_time {q} is before 1970; send unix seconds")));
    }
    check_count("context entries", context.len(), MAX_CONTEXT_ENTRIES)?;
    let mut attributes = Vec::with_capacity(context.len());
    for (key, value) in context {
        let value = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if key.chars().count() > MAX_CONTEXT_VALUE_LEN || value.chars().count() > MAX_CONTEXT_VALUE_LEN {
            return Err(ApiError::bad_request(format!(
                "context entry {:?}: keys and values are at most {MAX_CONTEXT_VALUE_LEN} characters",
                key.chars().take(40).collect::<String>()
            )));
        }
        attributes.push((key, value));
    }
    // The version is pinned here: a swap during this request does not affect it.
    let active = tenant.pipeline.load_full();
    let request = recommend::EncodeRequest { user: user_id.clone(), events, query_time };
    let recommend::Encoded { history, candidates } = if app.config.max_batch > 1 {
        tenant.scheduler.submit(tenant.clone(), request, Box::new(held.clone())).instrument(span.clone()).await?
    } else {
        let encode_slot = app.encode_slots.clone().acquire_owned().await.map_err(|_| ApiError::overloaded(1))?;
        let (app, tenant) = (app.clone(), tenant.clone());
        jobs::run(JobKind::Encode, span.clone(), (encode_slot, held.clone()), move || {
            let mut results =
                recommend::encode_and_score(app.store.as_ref(), &tenant, &[request], app.config.candidates);
            results.pop().unwrap_or_else(|| Err(ApiError::internal("the encode job", "no result")))
        })
        .await?
    };
    let history_degraded = history.degraded;
    // The tenant's share first, then the server's slot: a tenant whose
    // recommends are slow (large attributes, slow stages) queues behind its
    // own, and the other tenants still find slots free.
    let share = tenant.plugin_share.clone().acquire_owned().await.map_err(|_| ApiError::overloaded(1))?;
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
        jobs::run(JobKind::Plugins, span, (share, plugin_slot, held), move || {
            pipeline::run(&app, &tenant, &active, &info, candidates, explain)
        })
        .await?
    };
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
    let degraded = history_degraded || outcome.degraded;
    if degraded {
        metrics::counter!("edgerec_degraded_answers_total", "tenant" => tenant.record.name.clone()).increment(1);
    }
    Ok(Json(RecommendResponse {
        items,
        pipeline_version: outcome.version,
        trace: explain.then_some(outcome.trace),
        degraded,
    }))
}

/// Body of `POST …/events`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// The events (at most 1000); each needs a `user_id`.
    #[schema(max_items = 1000)]
    pub events: Vec<Event>,
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

/// Answer of `PUT …/catalog/items`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UpsertResponse {
    /// Items inserted or replaced.
    pub accepted: usize,
}

/// Keys the server makes for batches sent without one start with this: a
/// control character, which no `Idempotency-Key` header can carry (header
/// values are visible ASCII, and [`idempotency_key`] takes only those), so
/// no client key can ever name a batch the server keyed.
const SERVER_KEY_PREFIX: &str = "\u{1}edge:";

/// A key for a batch sent without one: 128 random bits (hex) in the
/// server's own namespace. Two batches drawing the same key would store the
/// second as a replay of the first, so the draw must never repeat: at a
/// billion keys alive the chance of any repeat is about 10^-21.
fn server_batch_key() -> String {
    use rand::Rng;
    let bits: [u8; 16] = rand::rng().random();
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SERVER_KEY_PREFIX}{hex}")
}

/// The `Idempotency-Key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    // An empty header is no key (the document allows it; nothing to dedupe by).
    let Some(value) = headers.get("idempotency-key").filter(|v| !v.is_empty()) else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?.to_string();
    check_id("Idempotency-Key", &key)?;
    Ok(Some(key))
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
    check_count("events", request.events.len(), MAX_EVENTS)?;
    let rows = request.events;
    for event in &rows {
        check_event(&app, event)?;
        let user = event
            .user_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request(format!("event for item {:?} has no user_id", event.item)))?;
        check_id("user_id", user)?;
    }
    let app2 = app.clone();
    let answer = jobs::run(JobKind::Write, tracing::Span::current(), quota, move || {
        let name = &tenant.record.name;
        for row in &rows {
            let item = &row.item;
            if tenant.items.internal(item).is_some() {
                continue;
            }
            match app2.store.item(name, item) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(ApiError::unknown_item(item)),
                // Store away: an item this host read from the catalog before is known.
                Err(error)
                    if error.is_unavailable() && tenant.attributes.get(item).is_some_and(|cached| cached.is_some()) => {
                }
                Err(error) => return Err(error.into()),
            }
        }
        let start = Instant::now();
        // Twice the model's window: what the recommend path reads back.
        let keep = 2 * tenant.model.config.max_seq_len;
        let Some(outbox) = app2.outbox.as_ref() else {
            let outcome = app2.store.append_events(name, &rows, batch_key.as_deref(), keep)?;
            stage_done("store_events", start);
            return Ok(EventsResponse::from((outcome, false)));
        };
        // On a shared store every batch travels under a key, so that one cut
        // off mid-write and then queued is still stored once.
        let batch_key = batch_key.unwrap_or_else(server_batch_key);
        // While batches wait, new ones queue behind them: forwarded in order.
        if outbox.depth() == 0 {
            match app2.store.append_events(name, &rows, Some(&batch_key), keep) {
                Ok(outcome) => {
                    stage_done("store_events", start);
                    return Ok(EventsResponse::from((outcome, false)));
                }
                Err(error) if error.is_unavailable() => {}
                Err(error) => return Err(error.into()),
            }
        }
        outbox.push(name, &rows, &batch_key, keep)?;
        stage_done("store_events", start);
        let outcome = AppendOutcome { accepted: rows.len(), duplicates: 0, replayed: false };
        Ok(EventsResponse::from((outcome, true)))
    })
    .await?;
    Ok(Json(answer))
}

impl From<(AppendOutcome, bool)> for EventsResponse {
    fn from((outcome, queued): (AppendOutcome, bool)) -> Self {
        EventsResponse {
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            replayed: outcome.replayed,
            queued,
        }
    }
}

/// One catalog item.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// External item id.
    #[schema(min_length = 1, max_length = 256)]
    pub id: String,
    /// Attributes (the typed columns plugins read): numbers, booleans, strings, lists of strings.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Body of `PUT …/catalog/items`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItems {
    /// Items to insert or replace (at most 1000).
    #[schema(max_items = 1000)]
    pub items: Vec<CatalogItem>,
}

/// A page of the catalog: at most `limit` items and at most the server's
/// `max_page_bytes` of attributes (a page holds at least one item).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemsPage {
    /// Items in id order.
    pub items: Vec<CatalogItem>,
    /// The `after` of the next page, absent on the last one (a page that
    /// ended early by bytes has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Inserts or replaces catalog items (items unknown to the model are stored
/// too). An item whose attributes take more than the server's
/// `max_item_bytes` as JSON is refused (413, nothing stored).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/catalog/items", request_body = UpsertItems,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = UpsertResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn upsert_items(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiJson(request): ApiJson<UpsertItems>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::Write)?;
    check_count("items", request.items.len(), MAX_ITEMS)?;
    let mut rows = Vec::with_capacity(request.items.len());
    for item in request.items {
        check_id("item id", &item.id)?;
        check_attributes(&item.id, &item.attributes)?;
        let value = serde_json::Value::Object(item.attributes);
        check_item_bytes(&app, &item.id, &value)?;
        rows.push((item.id, value));
    }
    let accepted = rows.len();
    let store = app.store.clone();
    jobs::run(JobKind::Write, tracing::Span::current(), quota, move || {
        Ok(store.upsert_items(&tenant.record.name, &rows)?)
    })
    .await?;
    Ok(Json(UpsertResponse { accepted }))
}

/// One catalog item.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/catalog/items/{id}",
    params(("tenant" = String, Path, description = "tenant name"), ("id" = String, Path, description = "item id")),
    responses((status = 200, body = CatalogItem), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn get_item(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<CatalogItem>, ApiError> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::CatalogRead)?;
    let item = jobs::run(JobKind::Read, tracing::Span::current(), quota, move || {
        match app.store.item(&tenant.record.name, &id)? {
            Some(serde_json::Value::Object(attributes)) => Ok(CatalogItem { id, attributes }),
            _ => Err(ApiError::new(
                ErrorCode::UnknownItem,
                format!("the catalog has no item {id:?}; upsert it with PUT …/catalog/items"),
            )),
        }
    })
    .await?;
    Ok(Json(item))
}

/// Paging of `GET …/catalog/items`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (1..=1000, default 100).
    #[serde(default, deserialize_with = "integral::optional")]
    #[param(minimum = 1, maximum = 1000)]
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
    TenantAccess { tenant }: TenantAccess,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ItemsPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be in 1..=1000, got {limit}")));
    }
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::CatalogRead)?;
    let page = jobs::run(JobKind::Read, tracing::Span::current(), quota, move || {
        read_page(&app, &tenant.record.name, query.after, limit)
    })
    .await?;
    Ok(Json(page))
}

/// Items after `after`, at most `limit` of them and at most `max_page_bytes`
/// of attributes (at least one item), read from the store in chunks so that
/// no read holds much more than the page.
fn read_page(app: &AppState, tenant: &str, mut after: Option<String>, limit: usize) -> Result<ItemsPage, ApiError> {
    let budget = app.config.max_page_bytes;
    // Items of the largest size a chunk may hold while the page still has room.
    let chunk = (budget / app.config.max_item_bytes.max(1)).clamp(1, limit);
    let (mut items, mut bytes) = (Vec::new(), 0usize);
    loop {
        let want = chunk.min(limit - items.len());
        let rows = app.store.items_page(tenant, after.as_deref(), want)?;
        let exhausted = rows.len() < want;
        for (id, value) in rows {
            let size = id.len() + json_len(&value);
            if !items.is_empty() && bytes + size > budget {
                // Full by bytes: the next page starts at this item.
                return Ok(ItemsPage { next: after, items });
            }
            bytes += size;
            after = Some(id.clone());
            items.push(CatalogItem { id, attributes: value.as_object().cloned().unwrap_or_default() });
        }
        if exhausted {
            return Ok(ItemsPage { items, next: None });
        }
        if items.len() == limit {
            return Ok(ItemsPage { next: after, items });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
