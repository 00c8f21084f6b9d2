//! A user's history as the engine sees it: events, their validation, the
//! stable time sort, the kept window (last ≤ L events) and the log-time bucket
//! of the relative attention bias.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::InputError;
use crate::model::Model;

/// One interaction: an item (1..=V) at a unix timestamp in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Model item id, 1..=V (0 is the padding row and is rejected).
    pub item: u32,
    /// Unix seconds.
    pub ts: i64,
}

/// One user of a batch: their events (any order) and the request's time.
#[derive(Clone, Copy, Debug)]
pub struct UserHistory<'a> {
    /// The events, in any order (sorted stably by `ts` before encoding).
    pub events: &'a [Event],
    /// The request's timestamp (unix seconds); the newest event's rab uses it.
    pub query_time: i64,
}

/// Checks every item id is in 1..=V.
pub fn validate_items(config: &ModelConfig, events: &[Event]) -> Result<(), InputError> {
    match events.iter().find(|e| e.item == 0 || e.item as usize > config.num_items) {
        Some(bad) => Err(InputError::UnknownItem { item: bad.item, num_items: config.num_items }),
        None => Ok(()),
    }
}

/// Validates a request and returns its kept window: the events sorted stably
/// by time, of which the last `max_seq_len` are kept.
///
/// Errors: no events, an item outside 1..=V (any event, kept or not), or a
/// `query_time` before the newest event.
pub fn kept_window(config: &ModelConfig, events: &[Event], query_time: i64) -> Result<Vec<Event>, InputError> {
    if events.is_empty() {
        return Err(InputError::NoEvents);
    }
    validate_items(config, events)?;
    let mut sorted = events.to_vec();
    // Stable: events with equal timestamps keep the caller's order.
    sorted.sort_by_key(|e| e.ts);
    let last_ts = sorted[sorted.len() - 1].ts;
    if query_time < last_ts {
        return Err(InputError::QueryBeforeLastEvent { query_time, last_ts });
    }
    let start = sorted.len().saturating_sub(config.max_seq_len);
    sorted.drain(..start);
    Ok(sorted)
}

/// Item ids of the kept window (the last ≤ L events after the stable time
/// sort), the set the reference's evaluation excludes from retrieval. Items
/// are returned in window order, duplicates included; invalid requests give
/// the same error as encoding would.
pub fn kept_items(model: &Model, events: &[Event], query_time: i64) -> Result<Vec<u32>, InputError> {
    Ok(kept_window(&model.config, events, query_time)?.iter().map(|e| e.item).collect())
}

/// The rab time bucket of a gap `delta` (seconds):
/// `clamp(floor(ln(max(|Δ|, 1)) / div), 0, num_time_buckets)`, evaluated in
/// float32 exactly as the reference does so that a gap on a boundary lands in
/// the same bucket.
pub fn time_bucket(config: &ModelConfig, delta: i64) -> usize {
    time_bucket_of_gap(config, delta.unsigned_abs() as f32)
}

/// [`time_bucket`] of a gap already converted to float32 (`|Δ| as f32`).
pub fn time_bucket_of_gap(config: &ModelConfig, gap: f32) -> usize {
    let gap = gap.max(1.0);
    let bucket = (gap.ln() / config.time_bucket_div).floor();
    // ln(gap) ≥ 0, so only the upper clamp can bind; the cast truncates like the reference.
    (bucket as usize).min(config.num_time_buckets)
}

/// `len` events of random items of `1..=num_items`, one every hour or so, and
/// a query time a minute after the last: the seeded synthetic history that
/// benchmarks and the CUDA cost report feed the engine.
pub fn random_history(num_items: usize, len: usize, seed: u64) -> (Vec<Event>, i64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ts = 1_600_000_000i64;
    let events = (0..len)
        .map(|_| {
            ts += rng.random_range(0..7200);
            Event { item: rng.random_range(1..=num_items as u32), ts }
        })
        .collect();
    (events, ts + 60)
}
