//! The recommend path minus HTTP: history (stored events merged with the
//! request's), then encode (through the per-user cache) and score through the
//! tenant's backend, for one request or a batch of them (see
//! [`crate::scheduler`]). Everything here blocks (disk, math) and runs on
//! tokio's blocking pool.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use edgerec_kernels::{AppendRequest, BackendError, Event, InputError, Scored, UserHistory};

use super::error::{ApiError, ErrorCode};
use super::state::{CachedUser, Tenant};
use super::store::Store;
use crate::event::Event as ShopperEvent;
use crate::timing::stage_done;

/// A user's history ready for the model: model-id events in the kept window
/// (sorted by time, last ≤ L) and their actions (for the plugins' context).
pub struct History {
    /// Kept window, model ids.
    pub events: Vec<Event>,
    /// Action of each kept event.
    pub actions: Vec<String>,
    /// The query time used.
    pub query_time: i64,
    /// The shared store could not be reached: the history is the request's
    /// own events only (and stored events of items only the catalog knows
    /// were skipped).
    pub degraded: bool,
}

/// Merges stored and request events, maps external ids, keeps the last L.
/// Items known to the catalog but not the model are skipped (the model
/// cannot encode them); items known to neither are a 404 unknown_item.
pub fn build_history(
    store: &dyn Store,
    tenant: &Tenant,
    user: Option<&str>,
    request_events: &[ShopperEvent],
    query_time: Option<i64>,
) -> Result<History, ApiError> {
    let _span = tracing::info_span!("history").entered();
    let start = Instant::now();
    let max_len = tenant.model.config.max_seq_len;
    let mut degraded = false;
    let mut merged: Vec<ShopperEvent> = match user {
        // Twice L by arrival: events arrive roughly in time order, and the
        // sort below then keeps the newest L by timestamp.
        Some(user) => match store.recent_events(&tenant.record.name, user, 2 * max_len) {
            Ok(events) => events,
            // The edge keeps answering while the core is away.
            Err(error) if error.is_unavailable() => {
                degraded = true;
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        },
        None => Vec::new(),
    };
    merged.extend(request_events.iter().cloned());
    merged.sort_by_key(|e| e.ts);
    let mut events = Vec::with_capacity(merged.len());
    let mut actions = Vec::with_capacity(merged.len());
    for e in &merged {
        match tenant.items.internal(&e.item) {
            Some(item) => {
                events.push(Event { item, ts: e.ts });
                actions.push(e.action.clone());
            }
            None => match store.item(&tenant.record.name, &e.item) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(ApiError::unknown_item(&e.item)),
                // Unknown to the model either way: skipped, as a catalog item would be.
                Err(error) if error.is_unavailable() => degraded = true,
                Err(error) => return Err(error.into()),
            },
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
        (None, Some(last)) => crate::clock::now_unix().max(last),
        (None, None) => crate::clock::now_unix(),
    };
    stage_done("history", start);
    Ok(History { events, actions, query_time, degraded })
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

fn backend_error(error: BackendError) -> ApiError {
    match error {
        BackendError::Input(batch) => input_error(batch.source),
        other => ApiError::internal("the encoding backend", other),
    }
}

/// What one recommend asks of the engine.
pub struct EncodeRequest {
    /// The shopper, when known: their stored events join the history and
    /// their encoder state is cached.
    pub user: Option<String>,
    /// The request's own events.
    pub events: Vec<ShopperEvent>,
    /// The request's time (default: now, never before the newest event).
    pub query_time: Option<i64>,
}

/// What the engine answers one recommend: its history and the model's candidates.
pub struct Encoded {
    /// The history the model saw.
    pub history: History,
    /// The model's best `candidates` items, the history's items excluded.
    pub candidates: Vec<Scored>,
}

/// Builds the histories of `requests`, encodes them through the tenant's
/// cache and backend and scores them, as one batch: anonymous users in one
/// [`edgerec_kernels::Backend::encode_batch`], cached users in one
/// `append_batch`, and every embedding in one `top_k_batch`. One result per
/// request, in order; a bad request fails only itself.
pub fn encode_and_score(
    store: &dyn Store,
    tenant: &Tenant,
    requests: &[EncodeRequest],
    candidates: usize,
) -> Vec<Result<Encoded, ApiError>> {
    let histories: Vec<Result<History, ApiError>> =
        requests.iter().map(|r| build_history(store, tenant, r.user.as_deref(), &r.events, r.query_time)).collect();
    let _span = tracing::info_span!("encode", batch = requests.len()).entered();
    let start = Instant::now();
    let mut embeddings: Vec<Option<Result<Vec<f32>, ApiError>>> = (0..requests.len()).map(|_| None).collect();
    for (i, history) in histories.iter().enumerate() {
        if let Ok(history) = history
            && history.events.is_empty()
        {
            embeddings[i] = Some(Err(input_error(InputError::NoEvents)));
        }
    }
    let pending =
        |embeddings: &[Option<Result<Vec<f32>, ApiError>>], i: usize| embeddings[i].is_none() && histories[i].is_ok();
    let anonymous: Vec<usize> =
        (0..requests.len()).filter(|&i| requests[i].user.is_none() && pending(&embeddings, i)).collect();
    encode_anonymous(tenant, &histories, &anonymous, &mut embeddings);
    // A user twice in one batch: the second request sees the state the
    // first left, so each round takes every user once.
    loop {
        let mut seen = HashSet::new();
        let round: Vec<usize> = (0..requests.len())
            .filter(|&i| pending(&embeddings, i))
            .filter(|&i| requests[i].user.as_deref().is_some_and(|u| seen.insert(u)))
            .collect();
        if round.is_empty() {
            break;
        }
        encode_known(tenant, requests, &histories, &round, &mut embeddings);
    }
    stage_done("encode", start);
    drop(_span);

    let _span = tracing::info_span!("score", candidates).entered();
    let start = Instant::now();
    let scored: Vec<usize> = (0..requests.len()).filter(|&i| matches!(embeddings[i], Some(Ok(_)))).collect();
    let mut lists: Vec<Option<Result<Vec<Scored>, ApiError>>> = (0..requests.len()).map(|_| None).collect();
    if !scored.is_empty() {
        let excludes: Vec<Vec<u32>> = scored
            .iter()
            .map(|&i| histories[i].as_ref().map(|h| h.events.iter().map(|e| e.item).collect()).unwrap_or_default())
            .collect();
        let exclude: Vec<&[u32]> = excludes.iter().map(Vec::as_slice).collect();
        let vectors: Vec<Vec<f32>> =
            scored.iter().filter_map(|&i| embeddings[i].as_ref().and_then(|e| e.as_ref().ok()).cloned()).collect();
        match tenant.backend.top_k_batch(&vectors, candidates, &exclude) {
            Ok(results) => {
                for (&i, list) in scored.iter().zip(results) {
                    lists[i] = Some(Ok(list));
                }
            }
            Err(e) => {
                let error = backend_error(e);
                for &i in &scored {
                    lists[i] = Some(Err(error.clone()));
                }
            }
        }
    }
    stage_done("score", start);

    histories
        .into_iter()
        .zip(embeddings)
        .zip(lists)
        .enumerate()
        .map(|(i, ((history, embedding), list))| match (history, embedding, list) {
            (Err(e), _, _) | (_, Some(Err(e)), _) | (_, _, Some(Err(e))) => Err(e),
            (Ok(history), Some(Ok(_)), Some(Ok(candidates))) => Ok(Encoded { history, candidates }),
            _ => Err(ApiError::internal("the encode batch", format!("request {i} got no result"))),
        })
        .collect()
}

/// Users without an id: one stacked `encode_batch`, nothing cached. An
/// input error names its user; that one fails and the rest are retried.
fn encode_anonymous(
    tenant: &Tenant,
    histories: &[Result<History, ApiError>],
    indices: &[usize],
    embeddings: &mut [Option<Result<Vec<f32>, ApiError>>],
) {
    let mut left: Vec<usize> = indices.to_vec();
    while !left.is_empty() {
        let users: Vec<UserHistory<'_>> = left
            .iter()
            .filter_map(|&i| histories[i].as_ref().ok())
            .map(|h| UserHistory { events: &h.events, query_time: h.query_time })
            .collect();
        match tenant.backend.encode_batch(&users) {
            Ok(vectors) => {
                for (&i, vector) in left.iter().zip(vectors) {
                    embeddings[i] = Some(Ok(vector));
                }
                metrics::counter!("edgerec_encoder_cache_total", "result" => "uncached").increment(left.len() as u64);
                return;
            }
            Err(BackendError::Input(bad)) if bad.index < left.len() => {
                let i = left.remove(bad.index);
                embeddings[i] = Some(Err(input_error(bad.source)));
            }
            Err(other) => {
                let error = backend_error(other);
                for &i in &left {
                    embeddings[i] = Some(Err(error.clone()));
                }
                return;
            }
        }
    }
}

/// Distinct known users: a hit when nothing changed, one `append_batch` for
/// the users whose cached window is a prefix of their new one, and a fresh
/// state for the rest (new, evicted, or whose window slid).
fn encode_known(
    tenant: &Tenant,
    requests: &[EncodeRequest],
    histories: &[Result<History, ApiError>],
    round: &[usize],
    embeddings: &mut [Option<Result<Vec<f32>, ApiError>>],
) {
    let mut appends: Vec<(usize, Arc<Mutex<CachedUser>>)> = Vec::new();
    let mut fresh: Vec<usize> = Vec::new();
    for &i in round {
        let (Some(user), Ok(history)) = (requests[i].user.as_deref(), &histories[i]) else { continue };
        let Some(entry) = tenant.cache.get(user) else {
            fresh.push(i);
            continue;
        };
        let cached = lock(&entry);
        let kept = cached.state.events();
        if history.events.len() < kept.len() || history.events[..kept.len()] != *kept {
            fresh.push(i);
        } else if history.events.len() == kept.len() && cached.state.query_time() == history.query_time {
            embeddings[i] = Some(Ok(cached.embedding.clone()));
            metrics::counter!("edgerec_encoder_cache_total", "result" => "hit").increment(1);
        } else {
            drop(cached);
            appends.push((i, entry));
        }
    }
    if !appends.is_empty() {
        // Distinct users, so distinct locks: holding them all cannot deadlock.
        // The prefix is checked again under the lock: an unbatched request
        // of the same user may have moved the state since.
        let mut guards: Vec<Locked<'_>> = Vec::new();
        for (i, entry) in &appends {
            let guard = lock(entry);
            let Ok(history) = &histories[*i] else { continue };
            let kept = guard.state.events();
            if history.events.len() >= kept.len() && history.events[..kept.len()] == *kept {
                guards.push((*i, entry, history, guard));
            } else {
                fresh.push(*i);
            }
        }
        let mut calls: Vec<AppendRequest<'_>> = guards
            .iter_mut()
            .map(|(_, _, history, guard)| {
                let kept = guard.state.events().len();
                AppendRequest {
                    state: &mut guard.state,
                    new_events: &history.events[kept..],
                    query_time: history.query_time,
                }
            })
            .collect();
        let results = tenant.backend.append_batch(&mut calls);
        drop(calls);
        let mut updated = Vec::with_capacity(guards.len());
        for ((i, entry, _, mut guard), result) in guards.into_iter().zip(results) {
            embeddings[i] = Some(match result {
                Ok(vector) => {
                    guard.embedding.clone_from(&vector);
                    updated.push((i, entry.clone()));
                    Ok(vector)
                }
                Err(e) => Err(backend_error(e)),
            });
        }
        metrics::counter!("edgerec_encoder_cache_total", "result" => "incremental").increment(updated.len() as u64);
        for (i, entry) in updated {
            // Re-inserting re-weighs the grown state against the byte bound.
            if let Some(user) = &requests[i].user {
                tenant.cache.insert(user.clone(), entry);
            }
        }
    }
    for i in fresh {
        let (Some(user), Ok(history)) = (&requests[i].user, &histories[i]) else { continue };
        embeddings[i] = Some(match tenant.backend.new_state(&history.events, history.query_time) {
            Ok((state, vector)) => {
                tenant
                    .cache
                    .insert(user.clone(), Arc::new(Mutex::new(CachedUser { state, embedding: vector.clone() })));
                metrics::counter!("edgerec_encoder_cache_total", "result" => "miss").increment(1);
                Ok(vector)
            }
            Err(e) => Err(backend_error(e)),
        });
    }
}

/// A user of an append batch: request index, cache entry, new history, and
/// the entry's lock, held until the batch's results are written back.
type Locked<'a> = (usize, &'a Arc<Mutex<CachedUser>>, &'a History, MutexGuard<'a, CachedUser>);

/// A poisoned entry is still a consistent state: a failed append leaves it unchanged.
fn lock(entry: &Mutex<CachedUser>) -> MutexGuard<'_, CachedUser> {
    entry.lock().unwrap_or_else(PoisonError::into_inner)
}
