//! The embedded store: one redb file in the data directory.
//!
//! Why redb: pure Rust (no C toolchain, no separate process), one file,
//! ACID transactions whose commit is fsync'd before it returns — so an event
//! batch acknowledged with a 2xx survives `kill -9` — and typed tuple keys
//! that give per-(tenant, user) ranges without an extra index.
//!
//! Every call blocks on disk: the HTTP layer calls it from the blocking pool.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};

use super::StoredEvent as Event;
use super::{
    AppendOutcome, BATCH_KEY_TTL, ModelAdd, ModelVersion, PipelineRecord, PipelineSpec, PluginDeletion, PluginVersion,
    Store, StoreError, TenantRecord, timed,
};
use crate::clock::now_unix;

mod events;

/// Tenants: name → JSON [`TenantRecord`].
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
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

impl RedbStore {
    /// Opens (or creates) `store.redb` in `dir` and makes sure every table exists.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::create(dir.join("store.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(TENANTS)?;
        txn.open_table(CATALOG)?;
        txn.open_table(PLUGINS)?;
        txn.open_table(BLOBS)?;
        txn.open_table(PIPELINES)?;
        txn.open_table(ACTIVATIONS)?;
        txn.open_table(META)?;
        txn.open_table(MODELS)?;
        txn.open_table(MODEL_ACTIVATIONS)?;
        events::prepare(&txn)?;
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
        timed("append_events", || {
            let txn = self.db.begin_write()?;
            let outcome = events::append(&txn, tenant, events, batch_key, keep, self.batch_key_ttl)?;
            // A replay wrote nothing: dropping the transaction aborts it, no fsync.
            if !outcome.replayed {
                txn.commit()?;
            }
            Ok(outcome)
        })
    }

    fn recent_events(&self, tenant: &str, user: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        timed("recent_events", || events::recent(&self.db.begin_read()?, tenant, user, limit))
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

    fn add_pipeline(&self, tenant: &str, spec: PipelineSpec) -> Result<PipelineRecord, StoreError> {
        timed("add_pipeline", || {
            let txn = self.db.begin_write()?;
            let record = {
                let mut pipelines = txn.open_table(PIPELINES)?;
                let latest = pipelines
                    .range((tenant, 0u32)..=(tenant, u32::MAX))?
                    .next_back()
                    .transpose()?
                    .map_or(0, |(k, _)| k.value().1);
                let PipelineSpec { retrieve, stages } = spec;
                let record = PipelineRecord { version: latest + 1, retrieve, stages, created_at: now_unix() };
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
