//! The embedded store's event log: events per (tenant, user) in arrival
//! order, each user's recent `event_id`s, the answers of keyed batches, and
//! the bounds on all three (what the model can use, a window of ids, seven
//! days of batch answers). One write transaction per append: an
//! acknowledged batch is all stored, exactly once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::META;
use crate::clock::now_unix;
use crate::store::StoredEvent as Event;
use crate::store::{AppendOutcome, StoreError, event_id_window};

/// Events: (tenant, user, sequence) → JSON [`Event`], as the client sent it.
const EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("events");
/// Event batches already stored: (tenant, Idempotency-Key) → JSON
/// [`StoredBatch`] (an [`AppendOutcome`] with the time it was stored).
const BATCH_KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("batch_keys");
/// The same keys by the time they were stored, (unix seconds, tenant,
/// Idempotency-Key) → (), so that the expired ones are found without a scan.
const BATCH_KEY_ORDER: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("batch_key_order");
/// Expired batch keys deleted per append: the backlog shrinks faster than
/// appends add to it, and no append pays for a long one at once.
const BATCH_KEYS_PRUNED_PER_APPEND: usize = 64;
/// The tenant-wide event ids of stores written before ids were per user:
/// rebuilt per user from [`EVENTS`] at open, then dropped.
const LEGACY_EVENT_IDS: &str = "event_ids";
/// Client event ids a user's events were stored under: (tenant, user,
/// event_id) → sequence number. Per user, as on Redis: two shoppers' `e-1`
/// are two events.
const USER_EVENT_IDS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("user_event_ids");
/// The same ids in arrival order, (tenant, user, sequence) → event_id, so
/// that the oldest beyond the window are found without a scan.
const USER_EVENT_ID_ORDER: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("user_event_id_order");
/// Per user, (tenant, user) → (events kept, event ids kept): what is over the
/// bounds is trimmed from the front without counting the user's rows.
const USER_COUNTS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("user_counts");

/// An event batch's answer as kept under its Idempotency-Key.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBatch {
    #[serde(flatten)]
    outcome: AppendOutcome,
    /// When it was stored (unix seconds); absent in stores written before
    /// batch keys expired (those are indexed at open as stored then).
    #[serde(default)]
    stored_at: Option<u64>,
}

/// Makes the log's tables exist, and brings a store written by an older
/// version up to date (each step runs once).
pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS)?;
    txn.open_table(BATCH_KEYS)?;
    let per_user = txn.list_tables()?.any(|table| table.name() == USER_COUNTS.name());
    if !per_user {
        index_events_per_user(txn)?;
    }
    let batch_keys_expire = txn.list_tables()?.any(|table| table.name() == BATCH_KEY_ORDER.name());
    if !batch_keys_expire {
        index_batch_keys(txn)?;
    }
    Ok(())
}

/// Appends a batch in `txn` (see [`crate::store::Store::append_events`]);
/// a `replayed` answer wrote nothing, and the caller need not commit.
pub(super) fn append(
    txn: &WriteTransaction,
    tenant: &str,
    events: &[Event],
    batch_key: Option<&str>,
    keep: usize,
    batch_key_ttl: Duration,
) -> Result<AppendOutcome, StoreError> {
    let keep = keep.max(1) as u64;
    let window = event_id_window(keep as usize) as u64;
    let now = now_unix().max(0) as u64;
    let expired_before = now.saturating_sub(batch_key_ttl.as_secs());
    let outcome = {
        let mut batches = txn.open_table(BATCH_KEYS)?;
        let mut batch_order = txn.open_table(BATCH_KEY_ORDER)?;
        if let Some(key) = batch_key
            && let Some(first) = batches.get((tenant, key))?
        {
            let first: StoredBatch = serde_json::from_slice(first.value())?;
            // Not pruned yet but expired: a new batch under an old key.
            if first.stored_at.is_none_or(|at| at >= expired_before) {
                let mut outcome = first.outcome;
                outcome.replayed = true;
                return Ok(outcome);
            }
        }
        prune_batch_keys(&mut batches, &mut batch_order, expired_before)?;
        let mut meta = txn.open_table(META)?;
        let mut seq: u64 = meta.get("event_seq")?.and_then(|v| v.value().parse().ok()).unwrap_or(0);
        let mut table = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(USER_EVENT_IDS)?;
        let mut order = txn.open_table(USER_EVENT_ID_ORDER)?;
        let mut counts = txn.open_table(USER_COUNTS)?;
        // (events, ids) per user of this batch, from the stored counts.
        let mut touched: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut outcome = AppendOutcome::default();
        for event in events {
            let user = event.user_id.as_deref().ok_or_else(|| StoreError::NoUser { item: event.item.clone() })?;
            let count = match touched.entry(user) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(counts.get((tenant, user))?.map_or((0, 0), |v| v.value())),
            };
            if let Some(id) = &event.event_id {
                if ids.get((tenant, user, id.as_str()))?.is_some() {
                    outcome.duplicates += 1;
                    continue;
                }
                ids.insert((tenant, user, id.as_str()), seq + 1)?;
                order.insert((tenant, user, seq + 1), id.as_str())?;
                count.1 += 1;
            }
            seq += 1;
            table.insert((tenant, user, seq), serde_json::to_vec(event)?.as_slice())?;
            count.0 += 1;
            outcome.accepted += 1;
        }
        meta.insert("event_seq", seq.to_string().as_str())?;
        // Each user keeps what the model can use, and recognises the
        // ids of a window of their newest events, as on Redis.
        for (user, (mut kept, mut kept_ids)) in touched {
            if kept > keep {
                let stale = oldest_seqs(&table, tenant, user, kept - keep)?;
                for seq in stale {
                    table.remove((tenant, user, seq))?;
                }
                kept = keep;
            }
            if kept_ids > window {
                let stale: Vec<(u64, String)> = order
                    .range((tenant, user, 0u64)..=(tenant, user, u64::MAX))?
                    .take((kept_ids - window) as usize)
                    .map(|row| row.map(|(k, v)| (k.value().2, v.value().to_string())))
                    .collect::<Result<_, _>>()?;
                for (seq, id) in stale {
                    order.remove((tenant, user, seq))?;
                    ids.remove((tenant, user, id.as_str()))?;
                }
                kept_ids = window;
            }
            counts.insert((tenant, user), (kept, kept_ids))?;
        }
        if let Some(key) = batch_key {
            let stored = StoredBatch { outcome, stored_at: Some(now) };
            if let Some(old) = batches.insert((tenant, key), serde_json::to_vec(&stored)?.as_slice())? {
                // The expired answer this key held: its place in the order goes too.
                let old: StoredBatch = serde_json::from_slice(old.value())?;
                if let Some(at) = old.stored_at {
                    batch_order.remove((at, tenant, key))?;
                }
            }
            batch_order.insert((now, tenant, key), ())?;
        }
        outcome
    };
    Ok(outcome)
}

/// The user's newest `limit` events, oldest first.
pub(super) fn recent(txn: &ReadTransaction, tenant: &str, user: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
    let table = txn.open_table(EVENTS)?;
    let mut out = Vec::new();
    for row in table.range((tenant, user, 0u64)..=(tenant, user, u64::MAX))?.rev().take(limit) {
        let (_, value) = row?;
        out.push(serde_json::from_slice(value.value())?);
    }
    out.reverse();
    Ok(out)
}

/// Gives every batch key of a store written before keys expired a time
/// (now: each lives one more [`BATCH_KEY_TTL`]). Runs once.
fn index_batch_keys(txn: &WriteTransaction) -> Result<(), StoreError> {
    let keys = txn.open_table(BATCH_KEYS)?;
    let mut order = txn.open_table(BATCH_KEY_ORDER)?;
    let now = now_unix().max(0) as u64;
    for row in keys.iter()? {
        let (key, _) = row?;
        let (tenant, batch_key) = key.value();
        order.insert((now, tenant, batch_key), ())?;
    }
    Ok(())
}

/// Deletes up to [`BATCH_KEYS_PRUNED_PER_APPEND`] batch keys stored before `expired_before`.
fn prune_batch_keys(
    keys: &mut redb::Table<(&str, &str), &[u8]>,
    order: &mut redb::Table<(u64, &str, &str), ()>,
    expired_before: u64,
) -> Result<(), StoreError> {
    let expired: Vec<(u64, String, String)> = order
        .range((0u64, "", "")..(expired_before, "", ""))?
        .take(BATCH_KEYS_PRUNED_PER_APPEND)
        .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_string(), k.value().2.to_string())))
        .collect::<Result<_, _>>()?;
    for (stored_at, tenant, key) in expired {
        order.remove((stored_at, tenant.as_str(), key.as_str()))?;
        keys.remove((tenant.as_str(), key.as_str()))?;
    }
    Ok(())
}

/// Builds the per-user id index and counts from the stored events (a store
/// written before they existed: its ids were tenant-wide), then drops the
/// tenant-wide ids. Runs once; each user is trimmed to the bounds at their
/// next append.
fn index_events_per_user(txn: &WriteTransaction) -> Result<(), StoreError> {
    let events = txn.open_table(EVENTS)?;
    let mut ids = txn.open_table(USER_EVENT_IDS)?;
    let mut order = txn.open_table(USER_EVENT_ID_ORDER)?;
    let mut counts = txn.open_table(USER_COUNTS)?;
    let mut tally: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for row in events.iter()? {
        let (key, value) = row?;
        let (tenant, user, seq) = key.value();
        let event: Event = serde_json::from_slice(value.value())?;
        let count = tally.entry((tenant.to_string(), user.to_string())).or_default();
        count.0 += 1;
        if let Some(id) = &event.event_id
            && ids.insert((tenant, user, id.as_str()), seq)?.is_none()
        {
            order.insert((tenant, user, seq), id.as_str())?;
            count.1 += 1;
        }
    }
    for ((tenant, user), count) in &tally {
        counts.insert((tenant.as_str(), user.as_str()), *count)?;
    }
    if txn.list_tables()?.any(|table| table.name() == LEGACY_EVENT_IDS) {
        txn.delete_table(TableDefinition::<(&str, &str), u64>::new(LEGACY_EVENT_IDS))?;
    }
    Ok(())
}

/// The sequence numbers of a user's `count` oldest events.
fn oldest_seqs(
    events: &redb::Table<(&str, &str, u64), &[u8]>,
    tenant: &str,
    user: &str,
    count: u64,
) -> Result<Vec<u64>, StoreError> {
    let range = events.range((tenant, user, 0u64)..=(tenant, user, u64::MAX))?;
    Ok(range.take(count as usize).map(|row| row.map(|(k, _)| k.value().2)).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::redb::RedbStore;
    use redb::ReadableTableMetadata;

    fn batch_key_rows(store: &RedbStore) -> (u64, u64) {
        let txn = store.db.begin_read().unwrap();
        (txn.open_table(BATCH_KEYS).unwrap().len().unwrap(), txn.open_table(BATCH_KEY_ORDER).unwrap().len().unwrap())
    }

    /// Expired batch keys are deleted by later appends, a bounded number each,
    /// so an embedded store's batch keys do not grow for ever.
    #[test]
    fn expired_batch_keys_are_deleted_by_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap().with_batch_key_ttl(Duration::from_secs(1));
        let event = |user: &str| Event {
            user_id: Some(user.into()),
            event_id: None,
            item: "x".into(),
            ts: 1,
            action: "view".into(),
        };
        let keys = BATCH_KEYS_PRUNED_PER_APPEND + 10;
        for n in 0..keys {
            store.append_events("a", &[event("u")], Some(&format!("k{n}")), 10).unwrap();
        }
        assert_eq!(batch_key_rows(&store), (keys as u64, keys as u64));
        std::thread::sleep(Duration::from_millis(2100));
        store.append_events("a", &[event("u")], None, 10).unwrap();
        assert_eq!(batch_key_rows(&store), (10, 10), "one append deletes a bounded number");
        store.append_events("a", &[event("u")], Some("fresh"), 10).unwrap();
        assert_eq!(batch_key_rows(&store), (1, 1), "only the fresh key is left");
    }
}
