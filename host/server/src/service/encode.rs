//! A recommend's retrieval: history (stored events merged with the
//! request's), then encode (through the per-user cache) and score through the
//! tenant's backend, for one request or a batch of them (see
//! [`super::scheduler`]). Everything here blocks (disk, math) and runs on
//! tokio's blocking pool.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{
    AnnIndex, AnnOptions, AppendRequest, Backend, BackendError, BackendState, Event as ModelEvent, InputError, Model,
    RowMask, Scored, UserHistory,
};

use super::catalog::CatalogReader;
use super::{Error, Result};
use crate::error_code::ErrorCode;
use crate::store::{RetrievalMode, Store, StoredEvent};
use crate::timing::stage_done;

/// One user's cached encoder state and the embedding of its last encode.
pub struct CachedUser {
    /// The state (kept window and per-layer keys/values), where the
    /// tenant's backend keeps it (host or device memory).
    pub state: BackendState,
    /// The embedding at `state.query_time()`.
    pub embedding: Vec<f32>,
}

/// One tenant's per-user encoder states (key: user id), bounded by their size in bytes.
pub type UserCache = moka::sync::Cache<String, Arc<Mutex<CachedUser>>>;

/// What encodes and scores for one tenant: its model, the backend that
/// runs it, its item map, its encoder states and its catalog. The tenant
/// and its scheduler share one.
pub struct Engine {
    /// The tenant's name (store keys, logs).
    pub tenant: String,
    /// The model.
    pub model: Arc<Model>,
    /// The backend that encodes and scores with it.
    pub backend: Arc<dyn Backend>,
    /// External ↔ model item ids.
    pub items: Arc<ItemMap>,
    /// This tenant's encoder states: its own byte bound (host and device
    /// bytes together), so that one tenant's users never evict another's;
    /// an evicted user is encoded from scratch on their next request.
    pub cache: UserCache,
    /// The catalog in memory: the candidates' columns and the retrieval
    /// filters' masks (and, through the store, items the model does not know).
    pub catalog: CatalogReader,
    /// The HNSW index of an `ann` tenant once built ([`build_ann`]); exact
    /// retrieval serves while it is `None`.
    pub ann: ArcSwapOption<AnnIndex>,
}

impl Engine {
    /// The retrieval answering now.
    pub fn retrieval_serving(&self) -> RetrievalMode {
        match self.ann.load().is_some() {
            true => RetrievalMode::Ann,
            false => RetrievalMode::Exact,
        }
    }
}

/// Builds the engine's HNSW index on a thread of its own (it takes the
/// rayon pool while it runs, off the request path) and swaps it in; exact
/// retrieval serves until then. Rebuilt whenever the tenant's engine is
/// (at start, on a model swap): building is cheaper to keep than a file per
/// model version (docs/perf/retrieval.md).
pub fn build_ann(engine: &Arc<Engine>) {
    let engine = engine.clone();
    let spawned = std::thread::Builder::new().name("edgerec-ann-build".into()).spawn(move || {
        let start = Instant::now();
        match AnnIndex::from_model(&engine.model, AnnOptions::default()) {
            Ok(index) => {
                let ms = start.elapsed().as_millis() as u64;
                tracing::info!(tenant = %engine.tenant, items = index.len(), ms, "ann index built: ann retrieval serves");
                engine.ann.store(Some(Arc::new(index)));
            }
            Err(error) => {
                tracing::error!(tenant = %engine.tenant, %error, "cannot build the ann index: exact retrieval keeps serving")
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start building an ann index: exact retrieval keeps serving");
    }
}

/// A tenant's cache bounded by `cache_bytes`, weighing each user by its state's size.
pub fn user_cache(cache_bytes: u64) -> UserCache {
    moka::sync::Cache::builder()
        .max_capacity(cache_bytes)
        .weigher(|_key: &String, value: &Arc<Mutex<CachedUser>>| {
            let bytes =
                value.lock().map_or(0, |u| u.state.host_bytes() + u.state.device_bytes() + u.embedding.len() * 4);
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .build()
}

/// A user's history ready for the model: model-id events in the kept window
/// (sorted by time, last ≤ L) and their actions (for the plugins' context).
pub struct History {
    /// Kept window, model ids.
    pub events: Vec<ModelEvent>,
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
    engine: &Engine,
    user: Option<&str>,
    request_events: &[StoredEvent],
    query_time: Option<i64>,
) -> Result<History> {
    let _span = tracing::info_span!("history").entered();
    let start = Instant::now();
    let max_len = engine.model.config.max_seq_len;
    let mut degraded = false;
    let mut merged: Vec<StoredEvent> = match user {
        // Twice L by arrival: events arrive roughly in time order, and the
        // sort below then keeps the newest L by timestamp.
        Some(user) => match store.recent_events(&engine.tenant, user, 2 * max_len) {
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
        match engine.items.internal(&e.item) {
            Some(item) => {
                events.push(ModelEvent { item, ts: e.ts });
                actions.push(e.action.clone());
            }
            None => match engine.catalog.contains(&e.item) {
                Ok(true) => {}
                Ok(false) => return Err(Error::unknown_item(&e.item)),
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

fn input_error(error: InputError) -> Error {
    let code = match error {
        InputError::NoEvents => ErrorCode::EmptyHistory,
        _ => ErrorCode::BadRequest,
    };
    let message = match error {
        InputError::NoEvents => "the user has no history the model knows: send `events` (items of the model's catalog) or a `user_id` with stored events".to_string(),
        other => other.to_string(),
    };
    Error::new(code, message)
}

fn backend_error(error: BackendError) -> Error {
    match error {
        BackendError::Input(batch) => input_error(batch.source),
        other => Error::internal("the encoding backend", other),
    }
}

/// What one recommend asks of the engine.
pub struct EncodeRequest {
    /// The shopper, when known: their stored events join the history and
    /// their encoder state is cached.
    pub user: Option<String>,
    /// The request's own events.
    pub events: Vec<StoredEvent>,
    /// The request's time (default: now, never before the newest event).
    pub query_time: Option<i64>,
    /// The rows its pipeline's retrieval filter lets through (`None`: all).
    pub allow: Option<Arc<RowMask>>,
}

/// What retrieval answers one recommend: its history and the model's candidates.
pub struct Retrieval {
    /// The history the model saw.
    pub history: History,
    /// The model's best `candidates` items, the history's items excluded.
    pub candidates: Vec<Scored>,
}

/// Builds the histories of `requests`, encodes them through the tenant's
/// cache and backend and scores them, as one batch: anonymous users in one
/// [`edgerec_kernels::Backend::encode_batch`], cached users in one
/// `append_batch`, new users and slid windows in one `new_state_batch`, and
/// every embedding in one `top_k_batch`. One result per
/// request, in order; a bad request fails only itself.
pub fn encode_and_score(
    store: &dyn Store,
    engine: &Engine,
    requests: &[EncodeRequest],
    candidates: usize,
) -> Vec<Result<Retrieval>> {
    let histories: Vec<Result<History>> =
        requests.iter().map(|r| build_history(store, engine, r.user.as_deref(), &r.events, r.query_time)).collect();
    let _span = tracing::info_span!("encode", batch = requests.len()).entered();
    let start = Instant::now();
    let mut embeddings: Vec<Option<Result<Vec<f32>>>> = (0..requests.len()).map(|_| None).collect();
    for (i, history) in histories.iter().enumerate() {
        if let Ok(history) = history
            && history.events.is_empty()
        {
            embeddings[i] = Some(Err(input_error(InputError::NoEvents)));
        }
    }
    let pending = |embeddings: &[Option<Result<Vec<f32>>>], i: usize| embeddings[i].is_none() && histories[i].is_ok();
    let anonymous: Vec<usize> =
        (0..requests.len()).filter(|&i| requests[i].user.is_none() && pending(&embeddings, i)).collect();
    encode_anonymous(engine, &histories, &anonymous, &mut embeddings);
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
        encode_known(engine, requests, &histories, &round, &mut embeddings);
    }
    stage_done("encode", start);
    drop(_span);

    let _span = tracing::info_span!("score", candidates).entered();
    let start = Instant::now();
    let scored: Vec<usize> = (0..requests.len()).filter(|&i| matches!(embeddings[i], Some(Ok(_)))).collect();
    let mut lists: Vec<Option<Result<Vec<Scored>>>> = (0..requests.len()).map(|_| None).collect();
    if !scored.is_empty() {
        // One pass per distinct filter mask: requests of one pipeline
        // version share theirs (an activation mid-batch makes two groups).
        let mut groups: Vec<(Option<&Arc<RowMask>>, Vec<usize>)> = Vec::new();
        for &i in &scored {
            let allow = requests[i].allow.as_ref();
            let same = |(mask, _): &&mut (Option<&Arc<RowMask>>, Vec<usize>)| match (mask, allow) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            match groups.iter_mut().find(same) {
                Some((_, members)) => members.push(i),
                None => groups.push((allow, vec![i])),
            }
        }
        for (allow, members) in groups {
            score_group(engine, &histories, &embeddings, &members, allow.map(Arc::as_ref), candidates, &mut lists);
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
            (Ok(history), Some(Ok(_)), Some(Ok(candidates))) => Ok(Retrieval { history, candidates }),
            _ => Err(Error::internal("the encode batch", format!("request {i} got no result"))),
        })
        .collect()
}

/// Scores the embeddings of `members` in one backend call (filtered by
/// `allow` when given), their own kept events excluded.
fn score_group(
    engine: &Engine,
    histories: &[Result<History>],
    embeddings: &[Option<Result<Vec<f32>>>],
    members: &[usize],
    allow: Option<&RowMask>,
    candidates: usize,
    lists: &mut [Option<Result<Vec<Scored>>>],
) {
    let excludes: Vec<Vec<u32>> = members
        .iter()
        .map(|&i| histories[i].as_ref().map(|h| h.events.iter().map(|e| e.item).collect()).unwrap_or_default())
        .collect();
    let exclude: Vec<&[u32]> = excludes.iter().map(Vec::as_slice).collect();
    let vectors: Vec<Vec<f32>> =
        members.iter().filter_map(|&i| embeddings[i].as_ref().and_then(|e| e.as_ref().ok()).cloned()).collect();
    let scored = match (engine.ann.load().as_deref(), allow) {
        (Some(ann), allow) => {
            let queries: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
            ann.search_batch(&engine.model.weights.item_emb, &queries, candidates, &exclude, allow)
                .map_err(|e| BackendError::InvalidCall(e.to_string()))
        }
        (None, Some(allow)) => engine.backend.top_k_allowed(&vectors, candidates, &exclude, allow),
        (None, None) => engine.backend.top_k_batch(&vectors, candidates, &exclude),
    };
    match scored {
        Ok(results) => {
            for (&i, list) in members.iter().zip(results) {
                lists[i] = Some(Ok(list));
            }
        }
        Err(e) => {
            let error = backend_error(e);
            for &i in members {
                lists[i] = Some(Err(error.clone()));
            }
        }
    }
}

/// Users without an id: one stacked `encode_batch`, nothing cached. An
/// input error names its user; that one fails and the rest are retried.
fn encode_anonymous(
    engine: &Engine,
    histories: &[Result<History>],
    indices: &[usize],
    embeddings: &mut [Option<Result<Vec<f32>>>],
) {
    let mut left: Vec<usize> = indices.to_vec();
    while !left.is_empty() {
        let users: Vec<UserHistory<'_>> = left
            .iter()
            .filter_map(|&i| histories[i].as_ref().ok())
            .map(|h| UserHistory { events: &h.events, query_time: h.query_time })
            .collect();
        match engine.backend.encode_batch(&users) {
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
    engine: &Engine,
    requests: &[EncodeRequest],
    histories: &[Result<History>],
    round: &[usize],
    embeddings: &mut [Option<Result<Vec<f32>>>],
) {
    let mut appends: Vec<(usize, Arc<Mutex<CachedUser>>)> = Vec::new();
    let mut fresh: Vec<usize> = Vec::new();
    for &i in round {
        let (Some(user), Ok(history)) = (requests[i].user.as_deref(), &histories[i]) else { continue };
        let Some(entry) = engine.cache.get(user) else {
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
        let mut guards: Vec<AppendSlot<'_>> = Vec::new();
        for (i, entry) in &appends {
            let guard = lock(entry);
            let Ok(history) = &histories[*i] else { continue };
            let kept = guard.state.events();
            if history.events.len() >= kept.len() && history.events[..kept.len()] == *kept {
                guards.push(AppendSlot { index: *i, entry, history, guard });
            } else {
                fresh.push(*i);
            }
        }
        let mut calls: Vec<AppendRequest<'_>> = guards
            .iter_mut()
            .map(|AppendSlot { history, guard, .. }| {
                let kept = guard.state.events().len();
                AppendRequest {
                    state: &mut guard.state,
                    new_events: &history.events[kept..],
                    query_time: history.query_time,
                }
            })
            .collect();
        let results = engine.backend.append_batch(&mut calls);
        drop(calls);
        let mut updated = Vec::with_capacity(guards.len());
        for (AppendSlot { index: i, entry, mut guard, .. }, result) in guards.into_iter().zip(results) {
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
                engine.cache.insert(user.clone(), entry);
            }
        }
    }
    encode_fresh(engine, requests, histories, &fresh, embeddings);
}

/// Users encoded from scratch (new, evicted, or whose window slid): one
/// batched `new_state_batch`, each state then cached.
fn encode_fresh(
    engine: &Engine,
    requests: &[EncodeRequest],
    histories: &[Result<History>],
    fresh: &[usize],
    embeddings: &mut [Option<Result<Vec<f32>>>],
) {
    let members: Vec<(usize, &String, &History)> = fresh
        .iter()
        .filter_map(|&i| match (&requests[i].user, &histories[i]) {
            (Some(user), Ok(history)) => Some((i, user, history)),
            _ => None,
        })
        .collect();
    if members.is_empty() {
        return;
    }
    let users: Vec<UserHistory<'_>> =
        members.iter().map(|(_, _, h)| UserHistory { events: &h.events, query_time: h.query_time }).collect();
    let built = engine.backend.new_state_batch(&users);
    for ((i, user, _), result) in members.into_iter().zip(built) {
        embeddings[i] = Some(match result {
            Ok((state, vector)) => {
                engine
                    .cache
                    .insert(user.clone(), Arc::new(Mutex::new(CachedUser { state, embedding: vector.clone() })));
                metrics::counter!("edgerec_encoder_cache_total", "result" => "miss").increment(1);
                Ok(vector)
            }
            Err(e) => Err(backend_error(e)),
        });
    }
}

/// A user of an append batch, locked until the batch's results are written back.
struct AppendSlot<'a> {
    /// The request's index in the batch.
    index: usize,
    /// The user's cache entry.
    entry: &'a Arc<Mutex<CachedUser>>,
    /// The user's new history.
    history: &'a History,
    /// The entry's lock.
    guard: MutexGuard<'a, CachedUser>,
}

/// A poisoned entry is still a consistent state: a failed append leaves it unchanged.
fn lock(entry: &Mutex<CachedUser>) -> MutexGuard<'_, CachedUser> {
    entry.lock().unwrap_or_else(PoisonError::into_inner)
}
