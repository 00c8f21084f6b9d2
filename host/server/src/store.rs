//! The embedded store: one redb file in the data directory.
//!
//! Why redb: pure Rust (no C toolchain, no separate process), one file,
//! ACID transactions whose commit is fsync'd before it returns — so an event
//! batch acknowledged with a 2xx survives `kill -9` — and typed tuple keys
//! that give per-(tenant, user) ranges without an extra index.
//!
//! Every call blocks on disk: the HTTP layer calls it from the blocking pool.

use std::path::Path;
use std::time::Instant;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::event::Event;

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
/// Event batches already stored: (tenant, Idempotency-Key) → JSON [`AppendOutcome`].
const BATCH_KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("batch_keys");
/// Client event ids already stored: (tenant, event_id) → sequence number.
const EVENT_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("event_ids");
/// Secrets and counters: name → text.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A store failure (disk, corruption, or a record that no longer parses).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (boxed: redb's error is large, and every store call returns this).
    #[error("store: {0}")]
    Db(Box<redb::Error>),
    /// A stored record does not parse.
    #[error("store record: {0}")]
    Record(#[from] serde_json::Error),
    /// An event to append names no user (the caller checks this first).
    #[error("event for item {item:?} has no user_id")]
    NoUser {
        /// The event's item.
        item: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(Box::new(e))
    }
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A tenant as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Name (the `{tenant}` of the paths).
    pub name: String,
    /// `"demo"` (the bundled model) or a model directory on the server.
    pub model: String,
    /// The backend this tenant is served with, when not the server's `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The storefront API keys that are valid, as hashes (never the keys).
    #[serde(default)]
    pub keys: Vec<ApiKeyRecord>,
    /// Unix seconds.
    pub created_at: i64,
    /// A plain key written by versions before keys were hashed: read once,
    /// hashed into `keys` at start, never written again.
    #[serde(default, rename = "api_key", skip_serializing)]
    pub legacy_api_key: Option<String>,
}

/// One storefront API key of a tenant, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Names the key for listing and revocation (not secret).
    pub id: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What an append did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Events stored.
    pub accepted: usize,
    /// Events skipped because their `event_id` was stored before.
    pub duplicates: usize,
    /// The whole batch was stored before under the same key; nothing written.
    #[serde(default)]
    pub replayed: bool,
}

/// One uploaded plugin version.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersion {
    /// Plugin name.
    pub name: String,
    /// 1, 2, … per (tenant, name).
    pub version: u32,
    /// sha256 of the component bytes (hex).
    pub digest: String,
    /// Component size in bytes.
    pub size: usize,
    /// Unix seconds.
    pub uploaded_at: i64,
    /// The plugin name the component declares (its `edgerec:plugin-name` section), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_name: Option<String>,
}

/// What deleting a plugin version did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginDeletion {
    /// The version is gone (and its component, when no other version kept it).
    Deleted,
    /// No such version.
    NotFound,
    /// These pipeline versions use it; nothing was deleted.
    InUse(Vec<u32>),
}

/// One stage of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Plugin name (uploaded to this tenant).
    pub plugin: String,
    /// Plugin version; absent in a request = the latest.
    #[serde(default, deserialize_with = "crate::extract::integral::optional")]
    pub version: Option<u32>,
    /// The stage's configuration, handed to the plugin.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `skip` (fail open, candidates pass unchanged) or `fail` (the request fails).
    #[serde(default)]
    pub on_error: OnErrorPolicy,
    /// Per-call limits (deadline_us, fuel, memory_bytes, max_reason_bytes,
    /// max_log_lines, max_log_bytes); each one absent takes the server's
    /// default, each one given must be within the server's maxima.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<edgerec_runtime::LimitsSpec>,
}

/// What a failing stage does to the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnErrorPolicy {
    /// Fail open: the candidates pass the stage unchanged (the default).
    #[default]
    Skip,
    /// The request fails with 502 plugin_failed.
    Fail,
}

/// One pipeline version.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineRecord {
    /// 1, 2, … per tenant.
    pub version: u32,
    /// Stages in order, with resolved plugin versions.
    pub stages: Vec<StageSpec>,
    /// Unix seconds.
    pub created_at: i64,
}

/// The store handle (cheap to share behind an `Arc`).
pub struct Store {
    db: Database,
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn timed<T>(op: &'static str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = f();
    metrics::histogram!("edgerec_store_seconds", "op" => op).record(start.elapsed().as_secs_f64());
    result
}

impl Store {
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
        txn.open_table(EVENT_IDS)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// A meta value (secrets).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes a meta value.
    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// One tenant's record.
    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        Ok(match table.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Inserts a tenant; false when the name is taken.
    pub fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
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

    /// Replaces a tenant's record (keys added or revoked, legacy keys hashed).
    pub fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(TENANTS)?.insert(record.name.as_str(), serde_json::to_vec(record)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Appends a batch of events in one durable transaction, exactly once:
    /// a batch whose `batch_key` was stored before writes nothing and
    /// returns the first answer (`replayed`), and an event whose `event_id`
    /// was stored before is skipped (counted in `duplicates`).
    pub fn append_events(
        &self,
        tenant: &str,
        events: &[Event],
        batch_key: Option<&str>,
    ) -> Result<AppendOutcome, StoreError> {
        timed("append_events", || {
            let txn = self.db.begin_write()?;
            let outcome = {
                let mut batches = txn.open_table(BATCH_KEYS)?;
                if let Some(key) = batch_key
                    && let Some(first) = batches.get((tenant, key))?
                {
                    let mut outcome: AppendOutcome = serde_json::from_slice(first.value())?;
                    outcome.replayed = true;
                    return Ok(outcome);
                }
                let mut meta = txn.open_table(META)?;
                let mut seq: u64 = meta.get("event_seq")?.and_then(|v| v.value().parse().ok()).unwrap_or(0);
                let mut table = txn.open_table(EVENTS)?;
                let mut ids = txn.open_table(EVENT_IDS)?;
                let mut outcome = AppendOutcome::default();
                for event in events {
                    let user =
                        event.user_id.as_deref().ok_or_else(|| StoreError::NoUser { item: event.item.clone() })?;
                    if let Some(id) = &event.event_id {
                        if ids.get((tenant, id.as_str()))?.is_some() {
                            outcome.duplicates += 1;
                            continue;
                        }
                        ids.insert((tenant, id.as_str()), seq + 1)?;
                    }
                    seq += 1;
                    table.insert((tenant, user, seq), serde_json::to_vec(event)?.as_slice())?;
                    outcome.accepted += 1;
                }
                meta.insert("event_seq", seq.to_string().as_str())?;
                if let Some(key) = batch_key {
                    batches.insert((tenant, key), serde_json::to_vec(&outcome)?.as_slice())?;
                }
                outcome
            };
            txn.commit()?;
            Ok(outcome)
        })
    }

    /// The user's newest `limit` events by arrival, oldest first.
    pub fn recent_events(&self, tenant: &str, user: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
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

    /// Upserts catalog items in one transaction.
    pub fn upsert_items(&self, tenant: &str, items: &[(String, serde_json::Value)]) -> Result<(), StoreError> {
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

    /// One catalog item's attributes.
    pub fn item(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CATALOG)?;
        Ok(match table.get((tenant, id))? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Attributes of several items in one read (missing items are `None`).
    pub fn items_many(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
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

    /// Up to `limit` items with ids after `after`, in id order.
    pub fn items_page(
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

    /// Stores a plugin component; an identical component of the same name
    /// returns its existing version (versions are content-addressed).
    pub fn add_plugin(
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

    /// Every plugin version of a tenant, by name then version.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<PluginVersion>, StoreError> {
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

    /// Deletes one plugin version unless a pipeline version (active or in
    /// the history rollback walks) uses it; the component's bytes go too when
    /// no version of any tenant shares them.
    pub fn delete_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<PluginDeletion, StoreError> {
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

    /// Component bytes by digest.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        Ok(table.get(digest)?.map(|v| v.value().to_vec()))
    }

    /// Stores a new pipeline version and activates it, in one transaction.
    pub fn add_pipeline(&self, tenant: &str, stages: Vec<StageSpec>) -> Result<PipelineRecord, StoreError> {
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

    /// The version a rollback would return to, without changing anything
    /// (so that it can be built before the rollback is committed).
    pub fn rollback_target(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
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

    /// Returns to the previously active version; `None` when there is none.
    pub fn rollback(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
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

    /// The active pipeline (if any) and every version, oldest first.
    pub fn pipelines(&self, tenant: &str) -> Result<(Option<u32>, Vec<PipelineRecord>), StoreError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(item: &str, ts: i64) -> Event {
        Event { user_id: None, event_id: None, item: item.into(), ts, action: "view".into() }
    }

    #[test]
    fn events_are_per_tenant_and_user_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.append_events("a", &[new("u1", event("x", 1)), new("u2", event("y", 2))], None).unwrap();
            store.append_events("b", &[new("u1", event("z", 3))], None).unwrap();
            store.append_events("a", &[new("u1", event("w", 4))], None).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.recent_events("a", "u1", 10).unwrap(),
            vec![new("u1", event("x", 1)), new("u1", event("w", 4))]
        );
        assert_eq!(store.recent_events("a", "u1", 1).unwrap(), vec![new("u1", event("w", 4))]);
        assert_eq!(store.recent_events("b", "u1", 10).unwrap(), vec![new("u1", event("z", 3))]);
        assert!(store.recent_events("a", "u3", 10).unwrap().is_empty());
    }

    fn new(user: &str, event: Event) -> Event {
        Event { user_id: Some(user.into()), ..event }
    }

    #[test]
    fn batches_and_event_ids_are_stored_once_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = [new("u1", event("x", 1)), new("u1", event("y", 2))];
        let first = store.append_events("a", &batch, Some("batch-1")).unwrap();
        assert_eq!(first, AppendOutcome { accepted: 2, duplicates: 0, replayed: false });
        let again = store.append_events("a", &batch, Some("batch-1")).unwrap();
        assert_eq!(again, AppendOutcome { accepted: 2, duplicates: 0, replayed: true });
        // The same key in another tenant is another batch.
        assert!(!store.append_events("b", &batch, Some("batch-1")).unwrap().replayed);
        assert_eq!(store.recent_events("a", "u1", 10).unwrap().len(), 2);

        let with_id = |id: &str, ts| Event { event_id: Some(id.into()), ..new("u2", event("z", ts)) };
        let outcome = store.append_events("a", &[with_id("e1", 5), with_id("e2", 6)], None).unwrap();
        assert_eq!((outcome.accepted, outcome.duplicates), (2, 0));
        let outcome = store.append_events("a", &[with_id("e2", 6), with_id("e3", 7)], None).unwrap();
        assert_eq!((outcome.accepted, outcome.duplicates), (1, 1));
        assert_eq!(store.recent_events("a", "u2", 10).unwrap().len(), 3);
    }

    #[test]
    fn catalog_pages_stay_inside_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let items: Vec<_> = (0..5).map(|i| (format!("i{i}"), serde_json::json!({"n": i}))).collect();
        store.upsert_items("a", &items).unwrap();
        store.upsert_items("b", &[("zz".into(), serde_json::json!({}))]).unwrap();
        let first = store.items_page("a", None, 2).unwrap();
        assert_eq!(first.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), ["i0", "i1"]);
        let rest = store.items_page("a", Some("i1"), 10).unwrap();
        assert_eq!(rest.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), ["i2", "i3", "i4"]);
        assert_eq!(store.item("a", "i3").unwrap(), Some(serde_json::json!({"n": 3})));
        assert_eq!(store.item("b", "i3").unwrap(), None);
    }

    #[test]
    fn plugins_are_content_addressed_and_pipelines_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v1 = store.add_plugin("a", "boost", "d1", b"one", None).unwrap();
        let again = store.add_plugin("a", "boost", "d1", b"one", None).unwrap();
        let v2 = store.add_plugin("a", "boost", "d2", b"two", None).unwrap();
        assert_eq!((v1.version, again.version, v2.version), (1, 1, 2));
        assert_eq!(store.blob("d2").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(store.plugins("a").unwrap().len(), 2);
        assert!(store.plugins("b").unwrap().is_empty());

        let p1 = store.add_pipeline("a", vec![]).unwrap();
        let p2 = store.add_pipeline("a", vec![]).unwrap();
        assert_eq!((p1.version, p2.version), (1, 2));
        assert_eq!(store.rollback("a").unwrap().map(|p| p.version), Some(1));
        assert!(store.rollback("a").unwrap().is_none());
        let (active, all) = store.pipelines("a").unwrap();
        assert_eq!((active, all.len()), (Some(1), 2));
    }

    #[test]
    fn a_plugin_version_is_deleted_only_when_no_pipeline_version_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_plugin("a", "boost", "d1", b"one", Some("boost")).unwrap();
        store.add_plugin("a", "boost", "d2", b"two", Some("boost")).unwrap();
        // Tenant b uploaded the same bytes: the blob is shared.
        store.add_plugin("b", "mine", "d1", b"one", None).unwrap();
        let stage = |version| StageSpec {
            plugin: "boost".into(),
            version: Some(version),
            config: serde_json::json!({}),
            on_error: OnErrorPolicy::Skip,
            limits: None,
        };
        store.add_pipeline("a", vec![stage(1)]).unwrap();
        store.add_pipeline("a", vec![stage(2)]).unwrap();
        store.add_pipeline("a", vec![stage(1)]).unwrap();
        assert_eq!(store.delete_plugin_version("a", "boost", 1).unwrap(), PluginDeletion::InUse(vec![1, 3]));
        assert_eq!(store.delete_plugin_version("a", "boost", 9).unwrap(), PluginDeletion::NotFound);
        assert_eq!(store.delete_plugin_version("b", "mine", 1).unwrap(), PluginDeletion::Deleted);
        assert_eq!(store.blob("d1").unwrap().as_deref(), Some(&b"one"[..]), "tenant a's version still holds it");
        assert_eq!(store.delete_plugin_version("b", "mine", 1).unwrap(), PluginDeletion::NotFound);
        let names: Vec<_> = store.plugins("a").unwrap().into_iter().map(|p| (p.version, p.declared_name)).collect();
        assert_eq!(names, [(1, Some("boost".to_string())), (2, Some("boost".to_string()))]);
    }
}
