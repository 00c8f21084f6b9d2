//! The embedded store: one redb file in the data directory.
//!
//! Why redb: pure Rust (no C toolchain, no separate process), one file,
//! ACID transactions whose commit is fsync'd before it returns — so an event
//! batch acknowledged with a 2xx survives `kill -9` — and typed tuple keys
//! that give per-(tenant, user) ranges without an extra index.
//!
//! Every call blocks on disk: the HTTP layer calls it from the blocking pool.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::StoredEvent as Event;
use super::{
    AppendOutcome, BATCH_KEY_TTL, ModelAdd, ModelVersion, PipelineRecord, PluginDeletion, PluginVersion, StageSpec,
    Store, StoreError, TenantRecord, event_id_window, timed,
};
use crate::clock::now_unix;

/// Tenants: name → JSON [`TenantRecord`].
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Events: (tenant, user, sequence) → JSON [`Event`], as the client sent it.
const EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("events");
/// Catalog: (tenant, external id) → JSON attributes object.
const CATALOG: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("catalog");
/// Plugin versions: (tenant, name, version) → JSON [`PluginVersion`].
const PLUGINS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("plugins");
/// Plugin components by content address (sha256 hex) → bytes.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Pipelines: (tenant, version) → JSON [`PipelineRecord`].
const PIPELINES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("pipelines");
/// Activation log per tenant: JSON list of pipeline versions, the last active.
const ACTIVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("activations");
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
/// Model versions: (tenant, version) → JSON [`ModelVersion`] (bundles in [`BLOBS`]).
const MODELS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("models");
/// Model activation log per tenant: JSON list of versions, the last active.
const MODEL_ACTIVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("model_activations");
/// Secrets and counters: name → text.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The embedded store: one redb file (cheap to share behind an `Arc`).
pub struct RedbStore {
    db: Database,
    /// How long an event batch's answer is kept for retries with its key.
    batch_key_ttl: Duration,
}

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

impl RedbStore {
    /// Opens (or creates) `store.redb` in `dir` and makes sure every table exists.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::create(dir.join("store.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(TENANTS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(CATALOG)?;
        txn.open_table(PLUGINS)?;
        txn.open_table(BLOBS)?;
        txn.open_table(PIPELINES)?;
        txn.open_table(ACTIVATIONS)?;
        txn.open_table(META)?;
        txn.open_table(BATCH_KEYS)?;
        txn.open_table(MODELS)?;
        txn.open_table(MODEL_ACTIVATIONS)?;
        let per_user = txn.list_tables()?.any(|table| table.name() == USER_COUNTS.name());
        if !per_user {
            index_events_per_user(&txn)?;
        }
        let batch_keys_expire = txn.list_tables()?.any(|table| table.name() == BATCH_KEY_ORDER.name());
        if !batch_keys_expire {
            index_batch_keys(&txn)?;
        }
        txn.commit()?;
        Ok(RedbStore { db, batch_key_ttl: BATCH_KEY_TTL })
    }

    /// Keeps event batches' answers for retries `ttl` long ([`BATCH_KEY_TTL`]
    /// unless set; at least a second): tests shorten it.
    pub fn with_batch_key_ttl(mut self, ttl: Duration) -> Self {
        self.batch_key_ttl = ttl.max(Duration::from_secs(1));
        self
    }
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

impl Store for RedbStore {
    fn kind(&self) -> &'static str {
        "redb"
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let txn = self.db.begin_write()?;
        let stored = {
            let mut table = txn.open_table(META)?;
            let existing = table.get(key)?.map(|v| v.value().to_string());
            match existing {
                Some(existing) => existing,
                None => {
                    table.insert(key, value)?;
                    value.to_string()
                }
            }
        };
        txn.commit()?;
        Ok(stored)
    }

    fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        Ok(match table.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        timed("create_tenant", || {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(TENANTS)?;
                if table.get(record.name.as_str())?.is_some() {
                    return Ok(false);
                }
                table.insert(record.name.as_str(), serde_json::to_vec(record)?.as_slice())?;
            }
            txn.commit()?;
            Ok(true)
        })
    }

    fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(TENANTS)?.insert(record.name.as_str(), serde_json::to_vec(record)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn append_events(
        &self,
        tenant: &str,
        events: &[Event],
        batch_key: Option<&str>,
        keep: usize,
    ) -> Result<AppendOutcome, StoreError> {
        let keep = keep.max(1) as u64;
        let window = event_id_window(keep as usize) as u64;
        timed("append_events", || {
            let txn = self.db.begin_write()?;
            let now = now_unix().max(0) as u64;
            let expired_before = now.saturating_sub(self.batch_key_ttl.as_secs());
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
                    let user =
                        event.user_id.as_deref().ok_or_else(|| StoreError::NoUser { item: event.item.clone() })?;
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
            txn.commit()?;
            Ok(outcome)
        })
    }

    fn recent_events(&self, tenant: &str, user: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        timed("recent_events", || {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for row in table.range((tenant, user, 0u64)..=(tenant, user, u64::MAX))?.rev().take(limit) {
                let (_, value) = row?;
                out.push(serde_json::from_slice(value.value())?);
            }
            out.reverse();
            Ok(out)
        })
    }

    fn upsert_items(&self, tenant: &str, items: &[(String, serde_json::Value)]) -> Result<(), StoreError> {
        timed("upsert_items", || {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(CATALOG)?;
                for (id, attributes) in items {
                    table.insert((tenant, id.as_str()), serde_json::to_vec(attributes)?.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    fn item(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CATALOG)?;
        Ok(match table.get((tenant, id))? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    fn items_many(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
        timed("items_many", || {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(CATALOG)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(match table.get((tenant, *id))? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                });
            }
            Ok(out)
        })
    }

    fn items_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CATALOG)?;
        let mut out = Vec::new();
        let start = after.unwrap_or("");
        for row in table.range((tenant, start)..)? {
            let (key, value) = row?;
            let (t, id) = key.value();
            if t != tenant {
                break;
            }
            if after.is_some_and(|a| a == id) {
                continue;
            }
            out.push((id.to_string(), serde_json::from_slice(value.value())?));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn add_plugin(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
        bytes: &[u8],
        declared_name: Option<&str>,
    ) -> Result<PluginVersion, StoreError> {
        timed("add_plugin", || {
            let txn = self.db.begin_write()?;
            let record = {
                let mut plugins = txn.open_table(PLUGINS)?;
                let mut latest = 0;
                for row in plugins.range((tenant, name, 0u32)..=(tenant, name, u32::MAX))? {
                    let (_, value) = row?;
                    let existing: PluginVersion = serde_json::from_slice(value.value())?;
                    if existing.digest == digest {
                        return Ok(existing);
                    }
                    latest = latest.max(existing.version);
                }
                let record = PluginVersion {
                    name: name.to_string(),
                    version: latest + 1,
                    digest: digest.to_string(),
                    size: bytes.len(),
                    uploaded_at: now_unix(),
                    declared_name: declared_name.map(str::to_string),
                };
                plugins.insert((tenant, name, record.version), serde_json::to_vec(&record)?.as_slice())?;
                txn.open_table(BLOBS)?.insert(digest, bytes)?;
                record
            };
            txn.commit()?;
            Ok(record)
        })
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PLUGINS)?;
        let mut out = Vec::new();
        for row in table.range((tenant, "", 0u32)..)? {
            let (key, value) = row?;
            if key.value().0 != tenant {
                break;
            }
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    fn delete_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<PluginDeletion, StoreError> {
        timed("delete_plugin_version", || {
            let txn = self.db.begin_write()?;
            let outcome = {
                let mut plugins = txn.open_table(PLUGINS)?;
                let Some(record) = plugins.get((tenant, name, version))?.map(|v| v.value().to_vec()) else {
                    return Ok(PluginDeletion::NotFound);
                };
                let record: PluginVersion = serde_json::from_slice(&record)?;
                let pipelines = txn.open_table(PIPELINES)?;
                let mut users = Vec::new();
                for row in pipelines.range((tenant, 0u32)..=(tenant, u32::MAX))? {
                    let (_, value) = row?;
                    let pipeline: PipelineRecord = serde_json::from_slice(value.value())?;
                    if pipeline.stages.iter().any(|s| s.plugin == name && s.version == Some(version)) {
                        users.push(pipeline.version);
                    }
                }
                if !users.is_empty() {
                    return Ok(PluginDeletion::InUse(users));
                }
                plugins.remove((tenant, name, version))?;
                let mut shared = false;
                for row in plugins.iter()? {
                    let (_, value) = row?;
                    if serde_json::from_slice::<PluginVersion>(value.value())?.digest == record.digest {
                        shared = true;
                        break;
                    }
                }
                if !shared {
                    txn.open_table(BLOBS)?.remove(record.digest.as_str())?;
                }
                PluginDeletion::Deleted
            };
            txn.commit()?;
            Ok(outcome)
        })
    }

    fn blob(&self, _tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        Ok(table.get(digest)?.map(|v| v.value().to_vec()))
    }

    fn add_pipeline(&self, tenant: &str, stages: Vec<StageSpec>) -> Result<PipelineRecord, StoreError> {
        timed("add_pipeline", || {
            let txn = self.db.begin_write()?;
            let record = {
                let mut pipelines = txn.open_table(PIPELINES)?;
                let latest = pipelines
                    .range((tenant, 0u32)..=(tenant, u32::MAX))?
                    .next_back()
                    .transpose()?
                    .map_or(0, |(k, _)| k.value().1);
                let record = PipelineRecord { version: latest + 1, stages, created_at: now_unix() };
                pipelines.insert((tenant, record.version), serde_json::to_vec(&record)?.as_slice())?;
                let mut activations = txn.open_table(ACTIVATIONS)?;
                let mut log: Vec<u32> = match activations.get(tenant)? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => Vec::new(),
                };
                log.push(record.version);
                activations.insert(tenant, serde_json::to_vec(&log)?.as_slice())?;
                record
            };
            txn.commit()?;
            Ok(record)
        })
    }

    fn activate_pipeline(&self, tenant: &str, version: u32) -> Result<Option<PipelineRecord>, StoreError> {
        timed("activate_pipeline", || {
            let txn = self.db.begin_write()?;
            let record = {
                let pipelines = txn.open_table(PIPELINES)?;
                let Some(record) = pipelines.get((tenant, version))?.map(|v| v.value().to_vec()) else {
                    return Ok(None);
                };
                let record: PipelineRecord = serde_json::from_slice(&record)?;
                let mut activations = txn.open_table(ACTIVATIONS)?;
                let mut log: Vec<u32> = match activations.get(tenant)? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => Vec::new(),
                };
                log.push(version);
                activations.insert(tenant, serde_json::to_vec(&log)?.as_slice())?;
                record
            };
            txn.commit()?;
            Ok(Some(record))
        })
    }

    fn rollback_target(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let activations = txn.open_table(ACTIVATIONS)?;
        let log: Vec<u32> = match activations.get(tenant)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => Vec::new(),
        };
        let Some(&version) = log.len().checked_sub(2).and_then(|i| log.get(i)) else {
            return Ok(None);
        };
        let pipelines = txn.open_table(PIPELINES)?;
        let record = match pipelines.get((tenant, version))? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(record)
    }

    fn rollback(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut activations = txn.open_table(ACTIVATIONS)?;
            let mut log: Vec<u32> = match activations.get(tenant)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Vec::new(),
            };
            if log.len() < 2 {
                return Ok(None);
            }
            log.pop();
            let Some(&version) = log.last() else { return Ok(None) };
            activations.insert(tenant, serde_json::to_vec(&log)?.as_slice())?;
            let pipelines = txn.open_table(PIPELINES)?;
            let value = pipelines.get((tenant, version))?.map(|v| v.value().to_vec());
            match value {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => return Ok(None),
            }
        };
        txn.commit()?;
        Ok(Some(record))
    }

    fn pipelines(&self, tenant: &str) -> Result<(Option<u32>, Vec<PipelineRecord>), StoreError> {
        let txn = self.db.begin_read()?;
        let activations = txn.open_table(ACTIVATIONS)?;
        let active = match activations.get(tenant)? {
            Some(v) => serde_json::from_slice::<Vec<u32>>(v.value())?.last().copied(),
            None => None,
        };
        let table = txn.open_table(PIPELINES)?;
        let mut all = Vec::new();
        for row in table.range((tenant, 0u32)..=(tenant, u32::MAX))? {
            let (_, value) = row?;
            all.push(serde_json::from_slice(value.value())?);
        }
        Ok((active, all))
    }

    fn add_model(&self, tenant: &str, version: &str, digest: &str, bytes: &[u8]) -> Result<ModelAdd, StoreError> {
        timed("add_model", || {
            let txn = self.db.begin_write()?;
            let outcome = {
                let mut models = txn.open_table(MODELS)?;
                let existing = models.get((tenant, version))?.map(|v| v.value().to_vec());
                if let Some(existing) = existing {
                    let existing: ModelVersion = serde_json::from_slice(&existing)?;
                    return Ok(if existing.digest == digest {
                        ModelAdd::Unchanged(existing)
                    } else {
                        ModelAdd::Taken(existing)
                    });
                }
                let record = ModelVersion {
                    version: version.to_string(),
                    digest: digest.to_string(),
                    size: bytes.len(),
                    uploaded_at: now_unix(),
                };
                models.insert((tenant, version), serde_json::to_vec(&record)?.as_slice())?;
                txn.open_table(BLOBS)?.insert(digest, bytes)?;
                ModelAdd::Added(record)
            };
            txn.commit()?;
            Ok(outcome)
        })
    }

    fn models(&self, tenant: &str) -> Result<(Option<String>, Vec<ModelVersion>), StoreError> {
        let txn = self.db.begin_read()?;
        let log: Vec<String> = match txn.open_table(MODEL_ACTIVATIONS)?.get(tenant)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => Vec::new(),
        };
        let table = txn.open_table(MODELS)?;
        let mut all: Vec<ModelVersion> = Vec::new();
        for row in table.range((tenant, "")..)? {
            let (key, value) = row?;
            if key.value().0 != tenant {
                break;
            }
            all.push(serde_json::from_slice(value.value())?);
        }
        all.sort_by(|a, b| (a.uploaded_at, &a.version).cmp(&(b.uploaded_at, &b.version)));
        Ok((log.last().cloned(), all))
    }

    fn activate_model(&self, tenant: &str, version: &str) -> Result<Option<ModelVersion>, StoreError> {
        timed("activate_model", || {
            let txn = self.db.begin_write()?;
            let record = {
                let Some(record) = txn.open_table(MODELS)?.get((tenant, version))?.map(|v| v.value().to_vec()) else {
                    return Ok(None);
                };
                let record: ModelVersion = serde_json::from_slice(&record)?;
                let mut activations = txn.open_table(MODEL_ACTIVATIONS)?;
                let mut log: Vec<String> = match activations.get(tenant)? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => Vec::new(),
                };
                log.push(version.to_string());
                activations.insert(tenant, serde_json::to_vec(&log)?.as_slice())?;
                record
            };
            txn.commit()?;
            Ok(Some(record))
        })
    }

    fn rollback_model(&self, tenant: &str) -> Result<Option<Option<String>>, StoreError> {
        let txn = self.db.begin_write()?;
        let active = {
            let mut activations = txn.open_table(MODEL_ACTIVATIONS)?;
            let mut log: Vec<String> = match activations.get(tenant)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Vec::new(),
            };
            if log.pop().is_none() {
                return Ok(None);
            }
            activations.insert(tenant, serde_json::to_vec(&log)?.as_slice())?;
            log.last().cloned()
        };
        txn.commit()?;
        Ok(Some(active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
