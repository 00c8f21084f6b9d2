//! The shared store: Redis (one server, or a Redis Cluster), for many hosts.
//!
//! Why the `redis` crate (redis-rs): it is the maintained Rust client, with
//! async multiplexed connections (the commands of every request thread are
//! pipelined on one socket), a connection manager that reconnects after Redis
//! restarts, Redis Cluster with slot routing and redirections, Lua scripts
//! (`EVALSHA` with reload) and streams, all behind one API.
//!
//! Key layout (every tenant key hash-tagged `{tenant}` and every per-user key
//! `{tenant:user}`, so that a cluster keeps a tenant's control plane and each
//! user's events on one shard and the scripts below stay single-slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `er:tenants` | set | tenant names |
//! | `er:{T}:tenant` | string | JSON [`TenantRecord`] (key hashes only) |
//! | `er:{T}:catalog`, `er:{T}:catalog-ids` | hash, sorted set | item → attributes; ids for paging |
//! | `er:{T}:plugins` | hash | `name/version` → JSON [`PluginVersion`] |
//! | `er:{T}:blob:DIGEST` | string | component bytes (content-addressed) |
//! | `er:{T}:pipelines`, `er:{T}:pipeline-seq` | hash, counter | version → stages |
//! | `er:{T}:activations` | list | activated versions, the last active |
//! | `er:{T}:models` | hash | model version → JSON [`ModelVersion`] (bundle in `blob:`) |
//! | `er:{T}:model-activations` | list | activated model versions, the last active |
//! | `er:{T}:batch:KEY` | string | a stored batch's answer (7 days) |
//! | `er:{T:U}:events` | list | the user's newest events, as sent (expires [`RedisStore::with_user_ttl`] after the last) |
//! | `er:{T:U}:event-ids` | sorted set | the user's recent `event_id`s (expires with the events) |
//! | `er:meta:NAME` | string | operator token hash |
//! | `er:changes` | stream | control-plane changes (tenant, kind) |
//!
//! Durability is Redis's: an event batch is acknowledged after Redis
//! answered its write, so it survives `kill -9` of Redis when Redis runs with
//! `appendonly yes` and `appendfsync always` (the README says why this and
//! not `WAIT`); at connect the store warns when it does not.
//!
//! The [`Store`] interface is synchronous (handlers call it from tokio's
//! blocking pool); this store runs the async client on a small runtime of
//! its own and waits for each answer, bounded by a timeout so that a Redis
//! that has gone away fails a call quickly ([`StoreError::Unavailable`])
//! instead of holding a thread.

use std::time::Duration;

use redis::AsyncCommands;

use super::redis_scripts::Scripts;
use serde::{Deserialize, Serialize};

use self::client::{COMMAND_TIMEOUT, Client};
use super::StoredEvent;
use super::{
    AppendOutcome, BATCH_KEY_TTL, Change, Filter, ModelAdd, ModelVersion, PipelineRecord, PipelineSpec, PluginDeletion,
    PluginVersion, StageSpec, Store, StoreError, TenantRecord, event_id_window,
};
use crate::clock::{now_unix, now_unix_ms as unix_ms};

mod client;

/// The change stream keeps about this many entries (a host that was away
/// longer resynchronises from the full state anyway).
const CHANGES_KEPT: usize = 100_000;
/// The change stream.
const CHANGES: &str = "er:changes";
/// The set of tenant names.
const TENANTS: &str = "er:tenants";

/// The Redis store (see the module documentation for its key layout).
pub struct RedisStore {
    client: Client,
    scripts: Scripts,
    /// Seconds a user's keys live after their last event (0: for ever).
    user_ttl_s: u64,
    /// Seconds an event batch's answer is kept for retries with its key.
    batch_key_ttl_s: u64,
}

/// How long a user's keys live after their last event unless configured.
pub const DEFAULT_USER_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// A pipeline version as stored (its number is the hash field).
#[derive(Serialize, Deserialize)]
struct PipelineBody {
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    retrieve: Filter,
    stages: Vec<StageSpec>,
    created_at: i64,
}

impl PipelineBody {
    fn record(self, version: u32) -> PipelineRecord {
        PipelineRecord { version, retrieve: self.retrieve, stages: self.stages, created_at: self.created_at }
    }
}

/// One event as the append script takes it: its de-duplication id (empty:
/// none) and its JSON.
type IdAndEvent = (String, Vec<u8>);

fn tenant_key(tenant: &str, what: &str) -> String {
    format!("er:{{{tenant}}}:{what}")
}

/// Tenant names hold no `:` (a-z, 0-9, `-`, `_`), so `{tenant:user}` names one user unambiguously.
fn user_key(tenant: &str, user: &str, what: &str) -> String {
    format!("er:{{{tenant}:{user}}}:{what}")
}

impl RedisStore {
    /// Every key this store may write for `tenant` starts with one of these
    /// (the tests check that no tenant's data lands outside its own prefixes).
    pub fn tenant_prefixes(tenant: &str) -> [String; 2] {
        [format!("er:{{{tenant}}}:"), format!("er:{{{tenant}:")]
    }

    /// Connects to `redis://HOST:PORT` (or `rediss://`, with a password in
    /// the URL if needed) or to a cluster, `redis+cluster://H1:P1,H2:P2,…`.
    pub fn connect(address: &str) -> anyhow::Result<RedisStore> {
        let store = RedisStore {
            client: Client::connect(address)?,
            scripts: Scripts::new(),
            user_ttl_s: DEFAULT_USER_TTL.as_secs(),
            batch_key_ttl_s: BATCH_KEY_TTL.as_secs(),
        };
        store.client.warn_unless_durable();
        Ok(store)
    }

    /// Makes a user's events and event ids expire `ttl` after their last
    /// event (`None`: never; [`DEFAULT_USER_TTL`] unless set). A shopper who
    /// does not return stops costing memory; one who does starts afresh.
    pub fn with_user_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.user_ttl_s = ttl.map_or(0, |ttl| ttl.as_secs().max(1));
        self
    }

    /// Keeps event batches' answers for retries `ttl` long ([`BATCH_KEY_TTL`]
    /// unless set; at least a second): tests shorten it.
    pub fn with_batch_key_ttl(mut self, ttl: Duration) -> Self {
        self.batch_key_ttl_s = ttl.as_secs().max(1);
        self
    }

    fn publish(&self, tenant: &str, kind: &'static str) -> Result<(), StoreError> {
        self.append_change(tenant, kind, None)
    }

    /// Announces a catalog upsert with the ids it wrote (a JSON array).
    fn publish_items(&self, tenant: &str, ids: String) -> Result<(), StoreError> {
        self.append_change(tenant, "catalog", Some(ids))
    }

    fn append_change(&self, tenant: &str, kind: &'static str, items: Option<String>) -> Result<(), StoreError> {
        let tenant = tenant.to_string();
        self.client.block("publish", move |mut conn| async move {
            let mut command = redis::cmd("XADD");
            command.arg(CHANGES).arg("MAXLEN").arg("~").arg(CHANGES_KEPT).arg("*");
            command.arg("tenant").arg(tenant).arg("kind").arg(kind).arg("at").arg(unix_ms());
            if let Some(items) = items {
                command.arg("items").arg(items);
            }
            let _: String = command.query_async(&mut conn).await?;
            Ok(())
        })
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = format!("er:meta:{key}");
        self.client.block("meta", |mut conn| async move { Ok(conn.get(key).await?) })
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (format!("er:meta:{key}"), value.to_string());
        self.client.block("set_meta", |mut conn| async move {
            let () = conn.set(key, value).await?;
            Ok(())
        })
    }

    fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (key, value) = (format!("er:meta:{key}"), value.to_string());
        self.client.block("init_meta", |mut conn| async move {
            let before: Option<String> =
                redis::cmd("SET").arg(&key).arg(&value).arg("NX").arg("GET").query_async(&mut conn).await?;
            Ok(before.unwrap_or(value))
        })
    }

    fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        let key = format!("er:meta:{key}");
        self.client.block("remove_meta", |mut conn| async move {
            let () = conn.del(key).await?;
            Ok(())
        })
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.client.block("tenants", |mut conn| async move {
            let mut names: Vec<String> = conn.smembers(TENANTS).await?;
            names.sort();
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                // A name whose record is missing was being created when its writer stopped.
                let record: Option<Vec<u8>> = conn.get(tenant_key(&name, "tenant")).await?;
                if let Some(record) = record {
                    out.push(serde_json::from_slice(&record)?);
                }
            }
            Ok(out)
        })
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let key = tenant_key(name, "tenant");
        self.client.block("tenant", |mut conn| async move {
            let record: Option<Vec<u8>> = conn.get(key).await?;
            Ok(match record {
                Some(record) => Some(serde_json::from_slice(&record)?),
                None => None,
            })
        })
    }

    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_vec(record)?;
        let name = record.name.clone();
        let created = self.client.block("create_tenant", move |mut conn| async move {
            // Listed first: a name without a record is skipped by `tenants`,
            // a record without its name would be invisible.
            let _: () = conn.sadd(TENANTS, &name).await?;
            let created: bool = redis::cmd("SET")
                .arg(tenant_key(&name, "tenant"))
                .arg(json)
                .arg("NX")
                .query_async::<Option<String>>(&mut conn)
                .await?
                .is_some();
            Ok(created)
        })?;
        if created {
            self.publish(&record.name, "tenant")?;
        }
        Ok(created)
    }

    fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record)?;
        let key = tenant_key(&record.name, "tenant");
        self.client.block("put_tenant", |mut conn| async move {
            let () = conn.set(key, json).await?;
            Ok(())
        })?;
        self.publish(&record.name, "keys")
    }

    fn append_events(
        &self,
        tenant: &str,
        events: &[StoredEvent],
        batch_key: Option<&str>,
        keep: usize,
    ) -> Result<AppendOutcome, StoreError> {
        // Per user, one script call (atomic on the user's shard); the batch's
        // answer is stored after every user's part. A keyed batch retried
        // after a partial failure is still stored once: its events without
        // an `event_id` are de-duplicated under one derived from the key.
        let mut by_user: Vec<(String, Vec<IdAndEvent>)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let user = event.user_id.as_deref().ok_or_else(|| StoreError::NoUser { item: event.item.clone() })?;
            let id = match (&event.event_id, batch_key) {
                (Some(id), _) => id.clone(),
                (None, Some(key)) => format!("\u{1}batch:{key}#{index}"),
                (None, None) => String::new(),
            };
            let json = serde_json::to_vec(event)?;
            match by_user.iter_mut().find(|(u, _)| u == user) {
                Some((_, rows)) => rows.push((id, json)),
                None => by_user.push((user.to_string(), vec![(id, json)])),
            }
        }
        let batch = batch_key.map(|key| tenant_key(tenant, &format!("batch:{key}")));
        let tenant = tenant.to_string();
        let keep = keep.max(1);
        let window = event_id_window(keep);
        let ttl = self.user_ttl_s;
        let batch_key_ttl_s = self.batch_key_ttl_s;
        let script = self.scripts.append.clone();
        self.client.block("append_events", move |mut conn| async move {
            if let Some(batch) = &batch {
                let first: Option<Vec<u8>> = conn.get(batch).await?;
                if let Some(first) = first {
                    let mut outcome: AppendOutcome = serde_json::from_slice(&first)?;
                    outcome.replayed = true;
                    return Ok(outcome);
                }
            }
            let mut outcome = AppendOutcome::default();
            let now = unix_ms();
            for (user, rows) in by_user {
                let mut call = script.key(user_key(&tenant, &user, "events"));
                call.key(user_key(&tenant, &user, "event-ids")).arg(keep).arg(now).arg(window).arg(ttl);
                for (id, json) in rows {
                    call.arg(id).arg(json);
                }
                let (accepted, duplicates): (usize, usize) = call.invoke_async(&mut conn).await?;
                outcome.accepted += accepted;
                outcome.duplicates += duplicates;
            }
            if let Some(batch) = batch {
                let _: () = conn.set_ex(batch, serde_json::to_vec(&outcome)?, batch_key_ttl_s).await?;
            }
            Ok(outcome)
        })
    }

    fn recent_events(&self, tenant: &str, user: &str, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = user_key(tenant, user, "events");
        self.client.block("recent_events", move |mut conn| async move {
            let rows: Vec<Vec<u8>> = conn.lrange(key, -(limit as isize), -1).await?;
            rows.iter().map(|row| Ok(serde_json::from_slice(row)?)).collect()
        })
    }

    fn upsert_items(&self, tenant: &str, items: &[(String, serde_json::Value)]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let (catalog, ids) = (tenant_key(tenant, "catalog"), tenant_key(tenant, "catalog-ids"));
        for (id, attributes) in items {
            pipe.hset(&catalog, id, serde_json::to_vec(attributes)?).ignore();
            pipe.zadd(&ids, id, 0).ignore();
        }
        self.client.block("upsert_items", move |mut conn| async move {
            let () = pipe.query_async(&mut conn).await?;
            Ok(())
        })?;
        // Announced after the write (the stream's key lives in another
        // cluster slot than the tenant's, so one transaction cannot hold
        // both). A failure here fails the request: upserts are idempotent,
        // and the client's retry writes and announces again.
        let upserted: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        self.publish_items(tenant, serde_json::to_string(&upserted)?)
    }

    fn item(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let (key, id) = (tenant_key(tenant, "catalog"), id.to_string());
        self.client.block("item", |mut conn| async move {
            let value: Option<Vec<u8>> = conn.hget(key, id).await?;
            Ok(match value {
                Some(value) => Some(serde_json::from_slice(&value)?),
                None => None,
            })
        })
    }

    fn items_many(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = tenant_key(tenant, "catalog");
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        self.client.block("items_many", |mut conn| async move {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(key).arg(ids).query_async(&mut conn).await?;
            values
                .into_iter()
                .map(|v| match v {
                    Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
                    None => Ok(None),
                })
                .collect()
        })
    }

    fn items_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (catalog, ids) = (tenant_key(tenant, "catalog"), tenant_key(tenant, "catalog-ids"));
        let start = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        self.client.block("items_page", move |mut conn| async move {
            let page: Vec<String> = redis::cmd("ZRANGE")
                .arg(&ids)
                .arg(start)
                .arg("+")
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await?;
            if page.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("HMGET").arg(&catalog).arg(&page).query_async(&mut conn).await?;
            let mut out = Vec::with_capacity(page.len());
            for (id, value) in page.into_iter().zip(values) {
                if let Some(value) = value {
                    out.push((id, serde_json::from_slice(&value)?));
                }
            }
            Ok(out)
        })
    }

    fn add_plugin(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
        bytes: &[u8],
        declared_name: Option<&str>,
    ) -> Result<PluginVersion, StoreError> {
        let draft = PluginVersion {
            name: name.to_string(),
            version: 0,
            digest: digest.to_string(),
            size: bytes.len(),
            uploaded_at: now_unix(),
            declared_name: declared_name.map(str::to_string),
        };
        let stored: Vec<u8> = self.client.run_script(
            "add_plugin",
            &self.scripts.add_plugin,
            vec![tenant_key(tenant, "plugins"), tenant_key(tenant, &format!("blob:{digest}"))],
            vec![name.into(), digest.into(), serde_json::to_vec(&draft)?, bytes.to_vec()],
        )?;
        let stored: PluginVersion = serde_json::from_slice(&stored)?;
        self.publish(tenant, "plugin")?;
        Ok(stored)
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let key = tenant_key(tenant, "plugins");
        let mut all: Vec<PluginVersion> = self.client.block("plugins", |mut conn| async move {
            let values: Vec<Vec<u8>> = conn.hvals(key).await?;
            values.iter().map(|v| Ok(serde_json::from_slice(v)?)).collect()
        })?;
        all.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        Ok(all)
    }

    fn delete_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<PluginDeletion, StoreError> {
        let answer: Vec<String> = self.client.run_script(
            "delete_plugin_version",
            &self.scripts.delete_plugin,
            vec![tenant_key(tenant, "plugins"), tenant_key(tenant, "pipelines")],
            vec![name.into(), version.to_string().into(), tenant_key(tenant, "blob:").into()],
        )?;
        let outcome = match answer.first().map(String::as_str) {
            Some("deleted") => PluginDeletion::Deleted,
            Some("in-use") => {
                let mut users: Vec<u32> = answer[1..].iter().filter_map(|v| v.parse().ok()).collect();
                users.sort_unstable();
                PluginDeletion::InUse(users)
            }
            _ => PluginDeletion::NotFound,
        };
        if outcome == PluginDeletion::Deleted {
            self.publish(tenant, "plugin")?;
        }
        Ok(outcome)
    }

    fn blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = tenant_key(tenant, &format!("blob:{digest}"));
        self.client.block("blob", |mut conn| async move { Ok(conn.get(key).await?) })
    }

    fn add_pipeline(&self, tenant: &str, spec: PipelineSpec) -> Result<PipelineRecord, StoreError> {
        let PipelineSpec { retrieve, stages } = spec;
        let body = PipelineBody { retrieve, stages, created_at: now_unix() };
        let version: u32 = self.client.run_script(
            "add_pipeline",
            &self.scripts.add_pipeline,
            vec![
                tenant_key(tenant, "pipeline-seq"),
                tenant_key(tenant, "pipelines"),
                tenant_key(tenant, "activations"),
            ],
            vec![serde_json::to_vec(&body)?],
        )?;
        self.publish(tenant, "pipeline")?;
        Ok(body.record(version))
    }

    fn activate_pipeline(&self, tenant: &str, version: u32) -> Result<Option<PipelineRecord>, StoreError> {
        let body: Option<Vec<u8>> = self.client.run_script(
            "activate_pipeline",
            &self.scripts.activate,
            vec![tenant_key(tenant, "pipelines"), tenant_key(tenant, "activations")],
            vec![version.to_string().into()],
        )?;
        let Some(body) = body else { return Ok(None) };
        let record = serde_json::from_slice::<PipelineBody>(&body)?.record(version);
        self.publish(tenant, "pipeline")?;
        Ok(Some(record))
    }

    fn rollback_target(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
        let (pipelines, activations) = (tenant_key(tenant, "pipelines"), tenant_key(tenant, "activations"));
        self.client.block("rollback_target", |mut conn| async move {
            let previous: Option<u32> = conn.lindex(&activations, -2).await?;
            let Some(version) = previous else { return Ok(None) };
            let body: Option<Vec<u8>> = conn.hget(&pipelines, version).await?;
            Ok(match body {
                Some(body) => Some(serde_json::from_slice::<PipelineBody>(&body)?.record(version)),
                None => None,
            })
        })
    }

    fn rollback(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError> {
        let answer: Option<(u32, Option<Vec<u8>>)> = self.client.run_script(
            "rollback",
            &self.scripts.rollback,
            vec![tenant_key(tenant, "pipelines"), tenant_key(tenant, "activations")],
            Vec::new(),
        )?;
        let Some((version, Some(body))) = answer else { return Ok(None) };
        let record = serde_json::from_slice::<PipelineBody>(&body)?.record(version);
        self.publish(tenant, "pipeline")?;
        Ok(Some(record))
    }

    fn pipelines(&self, tenant: &str) -> Result<(Option<u32>, Vec<PipelineRecord>), StoreError> {
        let (pipelines, activations) = (tenant_key(tenant, "pipelines"), tenant_key(tenant, "activations"));
        self.client.block("pipelines", |mut conn| async move {
            let active: Option<u32> = conn.lindex(&activations, -1).await?;
            let all: Vec<(u32, Vec<u8>)> = conn.hgetall(&pipelines).await?;
            let mut records = Vec::with_capacity(all.len());
            for (version, body) in all {
                records.push(serde_json::from_slice::<PipelineBody>(&body)?.record(version));
            }
            records.sort_by_key(|r| r.version);
            Ok((active, records))
        })
    }

    fn add_model(&self, tenant: &str, version: &str, digest: &str, bytes: &[u8]) -> Result<ModelAdd, StoreError> {
        let record = ModelVersion {
            version: version.to_string(),
            digest: digest.to_string(),
            size: bytes.len(),
            uploaded_at: now_unix(),
        };
        let (models, blob) = (tenant_key(tenant, "models"), tenant_key(tenant, &format!("blob:{digest}")));
        let (json, field) = (serde_json::to_vec(&record)?, version.to_string());
        let stored_as = |existing: Vec<u8>, digest: &str| -> Result<ModelAdd, StoreError> {
            let existing: ModelVersion = serde_json::from_slice(&existing)?;
            Ok(if existing.digest == digest { ModelAdd::Unchanged(existing) } else { ModelAdd::Taken(existing) })
        };
        // A version already stored costs nothing: no bytes are written.
        let (key, name) = (models.clone(), field.clone());
        let existing: Option<Vec<u8>> =
            self.client.block("add_model", |mut conn| async move { Ok(conn.hget(key, name).await?) })?;
        if let Some(existing) = existing {
            return stored_as(existing, digest);
        }
        let (models_key, blob_key, bytes) = (models.clone(), blob.clone(), bytes.to_vec());
        let added = self.client.block("add_model", move |mut conn| async move {
            // The bundle first: a version is never listed without its bytes.
            let () = conn.set(&blob, bytes).await?;
            let added: bool = conn.hset_nx(&models, &field, json).await?;
            if added {
                return Ok(None);
            }
            let existing: Vec<u8> = conn.hget(&models, &field).await?;
            Ok(Some(existing))
        })?;
        let outcome = match added {
            None => ModelAdd::Added(record),
            Some(existing) => {
                // Another upload took the version meanwhile: leave no bytes
                // behind that no version lists.
                let _: i64 = self.client.run_script(
                    "add_model",
                    &self.scripts.drop_unlisted_blob,
                    vec![models_key, blob_key],
                    vec![digest.into()],
                )?;
                stored_as(existing, digest)?
            }
        };
        if matches!(outcome, ModelAdd::Added(_)) {
            self.publish(tenant, "model")?;
        }
        Ok(outcome)
    }

    fn models(&self, tenant: &str) -> Result<(Option<String>, Vec<ModelVersion>), StoreError> {
        let (models, log) = (tenant_key(tenant, "models"), tenant_key(tenant, "model-activations"));
        self.client.block("models", |mut conn| async move {
            let active: Option<String> = conn.lindex(&log, -1).await?;
            let values: Vec<Vec<u8>> = conn.hvals(&models).await?;
            let mut all: Vec<ModelVersion> =
                values.iter().map(|v| serde_json::from_slice(v)).collect::<Result<_, _>>()?;
            all.sort_by(|a, b| (a.uploaded_at, &a.version).cmp(&(b.uploaded_at, &b.version)));
            Ok((active, all))
        })
    }

    fn activate_model(&self, tenant: &str, version: &str) -> Result<Option<ModelVersion>, StoreError> {
        let record: Option<Vec<u8>> = self.client.run_script(
            "activate_model",
            &self.scripts.activate,
            vec![tenant_key(tenant, "models"), tenant_key(tenant, "model-activations")],
            vec![version.into()],
        )?;
        let Some(record) = record else { return Ok(None) };
        let record: ModelVersion = serde_json::from_slice(&record)?;
        self.publish(tenant, "model")?;
        Ok(Some(record))
    }

    fn rollback_model(&self, tenant: &str) -> Result<Option<Option<String>>, StoreError> {
        let active: Option<String> = self.client.run_script(
            "rollback_model",
            &self.scripts.model_rollback,
            vec![tenant_key(tenant, "model-activations")],
            Vec::new(),
        )?;
        let Some(active) = active else { return Ok(None) };
        self.publish(tenant, "model")?;
        Ok(Some(Some(active).filter(|v| !v.is_empty())))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn change_cursor(&self) -> Result<Option<String>, StoreError> {
        self.client.block("change_cursor", |mut conn| async move {
            let newest: redis::streams::StreamRangeReply = conn.xrevrange_count(CHANGES, "+", "-", 1).await?;
            Ok(Some(newest.ids.first().map_or_else(|| "0-0".to_string(), |entry| entry.id.clone())))
        })
    }

    fn follow(&self, after: Option<&str>, wait: Duration) -> Result<Vec<Change>, StoreError> {
        let after = after.unwrap_or("0-0").to_string();
        let mut conn = self.client.follow_conn.clone();
        let wait_ms = wait.as_millis().max(1) as u64;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.client.handle.spawn(async move {
            let read = async {
                let options = redis::streams::StreamReadOptions::default().block(wait_ms as usize).count(256);
                let reply: Option<redis::streams::StreamReadReply> =
                    conn.xread_options(&[CHANGES], &[&after], &options).await?;
                let mut changes = Vec::new();
                for key in reply.map(|r| r.keys).unwrap_or_default() {
                    for entry in key.ids {
                        let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
                        changes.push(Change {
                            id: entry.id.clone(),
                            tenant: text("tenant"),
                            kind: text("kind"),
                            at_ms: text("at").parse().unwrap_or(0),
                            items: serde_json::from_str(&text("items")).unwrap_or_default(),
                        });
                    }
                }
                Ok::<_, StoreError>(changes)
            };
            let limit = Duration::from_millis(wait_ms) + COMMAND_TIMEOUT;
            let result = match tokio::time::timeout(limit, read).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!("the change stream did not answer within {limit:?}"))),
            };
            let _ = sender.send(result);
        });
        receiver.recv().map_err(|_| StoreError::Unavailable("the Redis client stopped".into()))?
    }
}
