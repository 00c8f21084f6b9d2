//! The recommend path minus HTTP: history (stored events merged with the
//! request's), encode through the per-user cache, score, then the pipeline.
//! Everything here blocks (disk, math, Wasm) and runs on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgerec_kernels::{EncoderState, Event, InputError, Scored, encode, top_k};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::state::{AppState, CachedUser, Tenant};
use super::store::StoredEvent;

/// One event in a request (`user_id` is taken from the request when absent).
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// The shopper (required in `POST …/events`, optional in recommend).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: Option<String>,
    /// The client's id for this event: an event id stored before is not stored again.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub event_id: Option<String>,
    /// External item id.
    #[schema(min_length = 1, max_length = 256)]
    pub item: String,
    /// Unix seconds, from 1970 to at most `max_future_skew_s` (default a day) ahead of the server clock.
    #[serde(deserialize_with = "crate::extract::integral::required")]
    #[schema(minimum = 0, maximum = 4102444800.0, format = Int64)]
    pub ts: i64,
    /// view, cart, purchase, … (default `view`).
    #[serde(default = "default_action")]
    #[schema(min_length = 1, max_length = 32)]
    pub action: String,
}

fn default_action() -> String {
    "view".into()
}

/// Records the time of one stage as a metric (the span records it for traces).
pub fn stage_done(stage: &'static str, start: Instant) {
    metrics::histogram!("edgerec_stage_seconds", "stage" => stage).record(start.elapsed().as_secs_f64());
}

/// A user's history ready for the model: model-id events in the kept window
/// (sorted by time, last ≤ L) and their actions (for the plugins' context).
pub struct History {
    /// Kept window, model ids.
    pub events: Vec<Event>,
    /// Action of each kept event.
    pub actions: Vec<String>,
    /// The query time used.
    pub query_time: i64,
}

/// Merges stored and request events, maps external ids, keeps the last L.
/// Items known to the catalog but not the model are skipped (the model
/// cannot encode them); items known to neither are a 404 unknown_item.
pub fn build_history(
    app: &AppState,
    tenant: &Tenant,
    user: Option<&str>,
    request_events: &[EventIn],
    query_time: Option<i64>,
) -> Result<History, ApiError> {
    let _span = tracing::info_span!("history").entered();
    let start = Instant::now();
    let max_len = tenant.model.config.max_seq_len;
    let mut merged: Vec<StoredEvent> = match user {
        // Twice L by arrival: events arrive roughly in time order, and the
        // sort below then keeps the newest L by timestamp.
        Some(user) => app.store.recent_events(&tenant.record.name, user, 2 * max_len)?,
        None => Vec::new(),
    };
    merged.extend(request_events.iter().map(|e| StoredEvent {
        item: e.item.clone(),
        ts: e.ts,
        action: e.action.clone(),
    }));
    merged.sort_by_key(|e| e.ts);
    let mut events = Vec::with_capacity(merged.len());
    let mut actions = Vec::with_capacity(merged.len());
    for e in &merged {
        match tenant.items.internal(&e.item) {
            Some(item) => {
                events.push(Event { item, ts: e.ts });
                actions.push(e.action.clone());
            }
            None => {
                if app.store.item(&tenant.record.name, &e.item)?.is_none() {
                    return Err(ApiError::unknown_item(&e.item));
                }
            }
        }
    }
    let skip = events.len().saturating_sub(max_len);
    events.drain(..skip);
    actions.drain(..skip);
    let last_ts = events.last().map(|e| e.ts);
    // Never before the newest event: a storefront clock a little behind the
    // events' clocks must not turn a request into an error.
    let query_time = match (query_time, last_ts) {
        (Some(q), Some(last)) => q.max(last),
        (Some(q), None) => q,
        (None, Some(last)) => super::store::now_unix().max(last),
        (None, None) => super::store::now_unix(),
    };
    stage_done("history", start);
    Ok(History { events, actions, query_time })
}

fn input_error(error: InputError) -> ApiError {
    let code = match error {
        InputError::NoEvents => ErrorCode::EmptyHistory,
        _ => ErrorCode::BadRequest,
    };
    let message = match error {
        InputError::NoEvents => "the user has no history the model knows: send `events` (items of the model's catalog) or a `user_id` with stored events".to_string(),
        other => other.to_string(),
    };
    ApiError::new(code, message)
}

/// The user embedding, through the cache when the user is known: a hit
/// when nothing changed, an incremental append when the cached window is a
/// prefix of the new one (window not slid), a fresh encode otherwise.
pub fn encode_user(tenant: &Tenant, user: Option<&str>, history: &History) -> Result<Vec<f32>, ApiError> {
    let _span = tracing::info_span!("encode", history_len = history.events.len()).entered();
    let start = Instant::now();
    let model = &tenant.model;
    let Some(user) = user else {
        let embedding = encode(model, &history.events, history.query_time).map_err(input_error)?;
        metrics::counter!("edgerec_encoder_cache_total", "result" => "uncached").increment(1);
        stage_done("encode", start);
        return Ok(embedding);
    };
    let key = user.to_string();
    if let Some(entry) = tenant.cache.get(&key) {
        let mut cached = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = cached.state.events().len();
        if history.events.len() >= kept && history.events[..kept] == *cached.state.events() {
            let result = if history.events.len() == kept && cached.state.query_time() == history.query_time {
                "hit"
            } else {
                let embedding =
                    cached.state.append(model, &history.events[kept..], history.query_time).map_err(input_error)?;
                cached.embedding = embedding;
                "incremental"
            };
            let embedding = cached.embedding.clone();
            drop(cached);
            if result == "incremental" {
                // Re-inserting re-weighs the grown state against the byte bound.
                tenant.cache.insert(key, entry);
            }
            metrics::counter!("edgerec_encoder_cache_total", "result" => result).increment(1);
            stage_done("encode", start);
            return Ok(embedding);
        }
    }
    let (state, embedding) = EncoderState::new(model, &history.events, history.query_time).map_err(input_error)?;
    tenant.cache.insert(key, Arc::new(Mutex::new(CachedUser { state, embedding: embedding.clone() })));
    metrics::counter!("edgerec_encoder_cache_total", "result" => "miss").increment(1);
    stage_done("encode", start);
    Ok(embedding)
}

/// The model's best `n` items for the embedding, the history's items excluded.
pub fn score(tenant: &Tenant, embedding: &[f32], history: &History, n: usize) -> Vec<Scored> {
    let _span = tracing::info_span!("score", candidates = n).entered();
    let start = Instant::now();
    let exclude: Vec<u32> = history.events.iter().map(|e| e.item).collect();
    let candidates = top_k(&tenant.model, embedding, n, &exclude);
    stage_done("score", start);
    candidates
}
