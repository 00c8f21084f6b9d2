//! The store: tenants and their keys, events, catalogs, plugin components,
//! pipeline versions and the active pointer, behind one interface ([`Store`])
//! with two implementations:
//!
//! - [`RedbStore`] (the default): one embedded redb file, for a single host;
//! - [`RedisStore`] (`--store redis://…` or `redis+cluster://…`): shared by
//!   many hosts, with a change stream ([`Store::follow`]) that tells every
//!   host what another changed.
//!
//! Every call blocks (disk or network): the HTTP layer calls it from the
//! blocking pool.

mod event;
mod redb;
mod redis;
mod redis_scripts;

use std::time::{Duration, Instant};

use edgerec_catalog::Filter;
use serde::{Deserialize, Serialize};

pub use self::event::StoredEvent;
pub use self::redb::RedbStore;
pub use self::redis::{DEFAULT_USER_TTL, RedisStore};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (boxed: redb's error is large, and every store call returns this).
    #[error("store: {0}")]
    Db(Box<::redb::Error>),
    /// Redis answered with an error, or the connection failed mid-command.
    #[error("redis: {0}")]
    Redis(Box<::redis::RedisError>),
    /// Redis could not be reached (or did not answer in time): the core is away.
    #[error("the shared store (Redis) is unreachable: {0}; the host serves from its caches until it returns")]
    Unavailable(String),
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

impl StoreError {
    /// Whether the failure is the shared store being away (not a bad record
    /// or a bug): callers may serve degraded instead of failing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Redis(Box::new(e))
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}

impl From<::redb::Error> for StoreError {
    fn from(e: ::redb::Error) -> Self {
        StoreError::Db(Box::new(e))
    }
}
from_redb!(
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);

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
    /// How retrieval takes the candidates.
    #[serde(default, skip_serializing_if = "RetrievalMode::is_exact")]
    pub retrieval: RetrievalMode,
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

/// How a tenant's retrieval takes the candidates from its model's items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    /// The exact top candidates: a scan of the quantised item table with an
    /// exact bound, re-ranked in f32 (the default).
    #[default]
    Exact,
    /// An HNSW graph (approximate: recall@10 against exact is measured in
    /// docs/perf/retrieval.md), built when the tenant loads; exact serves
    /// until it is ready.
    Ann,
}

impl RetrievalMode {
    /// `exact` or `ann`.
    pub fn name(self) -> &'static str {
        match self {
            RetrievalMode::Exact => "exact",
            RetrievalMode::Ann => "ann",
        }
    }

    fn is_exact(&self) -> bool {
        *self == RetrievalMode::Exact
    }
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Plugin name (uploaded to this tenant).
    pub plugin: String,
    /// Plugin version; absent in a request = the latest.
    #[serde(default, deserialize_with = "crate::integral::optional")]
    pub version: Option<u32>,
    /// The stage's configuration, handed to the plugin.
    #[serde(default)]
    pub config: serde_json::Value,
    /// `skip` (fail open, candidates pass unchanged) or `fail` (the request fails).
    #[serde(default)]
    pub on_error: OnErrorPolicy,
    /// Per-call limits (deadline_us, fuel, memory_bytes, max_reason_bytes,
    /// max_log_lines, max_log_bytes); each one absent takes the server's
    /// default, each one given must be within the server's maxima.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<edgerec_runtime::LimitsSpec>,
}

/// What a failing stage does to the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnErrorPolicy {
    /// Fail open: the candidates pass the stage unchanged (the default).
    #[default]
    Skip,
    /// The request fails with 502 plugin_failed.
    Fail,
}

/// One pipeline version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// 1, 2, … per tenant.
    pub version: u32,
    /// Hard filters retrieval applies before it takes the candidates
    /// (versions stored before filters existed have none).
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub retrieve: Filter,
    /// Stages in order, with resolved plugin versions.
    pub stages: Vec<StageSpec>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A pipeline version to store: what `PUT …/pipeline` asked for, plugin
/// versions resolved.
#[derive(Clone, Debug, Default)]
pub struct PipelineSpec {
    /// Hard filters retrieval applies before it takes the candidates.
    pub retrieve: Filter,
    /// Stages in order, with resolved plugin versions.
    pub stages: Vec<StageSpec>,
}

impl From<Vec<StageSpec>> for PipelineSpec {
    /// These stages, with no retrieval filter.
    fn from(stages: Vec<StageSpec>) -> Self {
        PipelineSpec { retrieve: Filter::default(), stages }
    }
}

/// One uploaded model version of a tenant (the bundle is stored by digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The version's name, given at upload (`PUT …/models/{version}`).
    pub version: String,
    /// sha256 of the bundle (hex).
    pub digest: String,
    /// Bundle size in bytes.
    pub size: usize,
    /// Unix seconds.
    pub uploaded_at: i64,
}

/// What storing a model version did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelAdd {
    /// Stored now.
    Added(ModelVersion),
    /// The same bundle was stored under this version before: nothing changed.
    Unchanged(ModelVersion),
    /// Another bundle holds this version (versions are immutable).
    Taken(ModelVersion),
}

/// One change of a tenant's control-plane state, as the change stream carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The stream position (`<ms>-<seq>`): followers resume after it.
    pub id: String,
    /// The tenant that changed.
    pub tenant: String,
    /// What changed (`tenant`, `keys`, `plugin`, `pipeline`, `model`,
    /// `catalog`): a follower applies a catalog change item by item and
    /// resynchronises the whole tenant for any other.
    pub kind: String,
    /// For a `catalog` change: the ids of the items upserted.
    pub items: Vec<String>,
    /// When the change was written (Unix milliseconds, the writer's clock).
    pub at_ms: u64,
}

/// Where a store keeps its state, and what it promises.
pub trait Store: Send + Sync {
    /// `redb` or `redis`, for logs and `/readyz`.
    fn kind(&self) -> &'static str;

    /// A meta value (secrets).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a meta value.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Sets a meta value unless one is stored; returns the value stored now
    /// (so that hosts starting together agree on one generated secret).
    fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Removes a meta value.
    fn remove_meta(&self, key: &str) -> Result<(), StoreError>;

    /// Every tenant.
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// One tenant's record.
    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError>;
    /// Inserts a tenant; false when the name is taken.
    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError>;
    /// Replaces a tenant's record (keys added or revoked, legacy keys hashed).
    fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError>;

    /// Appends a batch of events durably, exactly once: a batch whose
    /// `batch_key` was stored before (within [`BATCH_KEY_TTL`]) writes nothing
    /// and returns the first answer (`replayed`), and an event whose `event_id` the same user's
    /// events were stored under before is skipped (counted in `duplicates`;
    /// ids are per user: two users' `e-1` are two events). Each user keeps
    /// their newest `keep` events (what the model can use) and the ids of
    /// their newest [`event_id_window`]`(keep)`; older ones are deleted.
    fn append_events(
        &self,
        tenant: &str,
        events: &[StoredEvent],
        batch_key: Option<&str>,
        keep: usize,
    ) -> Result<AppendOutcome, StoreError>;
    /// The user's newest `limit` events by arrival, oldest first.
    fn recent_events(&self, tenant: &str, user: &str, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// Upserts catalog items, all or none.
    fn upsert_items(&self, tenant: &str, items: &[(String, serde_json::Value)]) -> Result<(), StoreError>;
    /// One catalog item's attributes.
    fn item(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Attributes of several items in one read (missing items are `None`).
    fn items_many(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<serde_json::Value>>, StoreError>;
    /// Up to `limit` items with ids after `after`, in id order.
    fn items_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Stores a plugin component; an identical component of the same name
    /// returns its existing version (versions are content-addressed).
    fn add_plugin(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
        bytes: &[u8],
        declared_name: Option<&str>,
    ) -> Result<PluginVersion, StoreError>;
    /// Every plugin version of a tenant, by name then version.
    fn plugins(&self, tenant: &str) -> Result<Vec<PluginVersion>, StoreError>;
    /// Deletes one plugin version unless a pipeline version (active or in
    /// the history rollback walks) uses it; the component's bytes go too when
    /// no other version keeps them.
    fn delete_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<PluginDeletion, StoreError>;
    /// A tenant's component bytes by digest.
    fn blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a new pipeline version and activates it, at once.
    fn add_pipeline(&self, tenant: &str, spec: PipelineSpec) -> Result<PipelineRecord, StoreError>;
    /// Activates a stored pipeline version; `None` when there is no such version.
    fn activate_pipeline(&self, tenant: &str, version: u32) -> Result<Option<PipelineRecord>, StoreError>;
    /// The version a rollback would return to, without changing anything
    /// (so that it can be built before the rollback is committed).
    fn rollback_target(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError>;
    /// Returns to the previously active version; `None` when there is none.
    fn rollback(&self, tenant: &str) -> Result<Option<PipelineRecord>, StoreError>;
    /// The active pipeline (if any) and every version, oldest first.
    fn pipelines(&self, tenant: &str) -> Result<(Option<u32>, Vec<PipelineRecord>), StoreError>;

    /// Stores a model bundle as `version` (immutable: another bundle under
    /// a stored version is refused).
    fn add_model(&self, tenant: &str, version: &str, digest: &str, bytes: &[u8]) -> Result<ModelAdd, StoreError>;
    /// The active model version (`None`: the tenant's base model) and every
    /// stored version, oldest first.
    fn models(&self, tenant: &str) -> Result<(Option<String>, Vec<ModelVersion>), StoreError>;
    /// Activates a stored model version; `None` when there is no such version.
    fn activate_model(&self, tenant: &str, version: &str) -> Result<Option<ModelVersion>, StoreError>;
    /// Returns to the model active before the last activation: `None` when
    /// nothing was activated, `Some(None)` for the base model.
    fn rollback_model(&self, tenant: &str) -> Result<Option<Option<String>>, StoreError>;

    /// Whether other hosts may change this store (then the server follows
    /// [`Store::follow`]).
    fn is_shared(&self) -> bool {
        false
    }
    /// The position of the newest change (`None`: no change stream, or
    /// nothing written yet). Read before a full load, so that following from
    /// it misses nothing.
    fn change_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// The changes after `after` (from the beginning when `None`), waiting
    /// up to `wait` for one. A store nobody else writes has none.
    fn follow(&self, after: Option<&str>, wait: Duration) -> Result<Vec<Change>, StoreError> {
        let _ = (after, wait);
        Ok(Vec::new())
    }
}

/// Opens the store a `--store` value names: empty for the embedded store in
/// `data_dir`, `redis://HOST:PORT` for one Redis, `redis+cluster://H1:P1,H2:P2,…`
/// for a Redis Cluster.
/// On Redis, a user's keys expire `user_ttl` after their last event (`None`:
/// never).
pub fn open(
    spec: &str,
    data_dir: &std::path::Path,
    user_ttl: Option<Duration>,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    if spec.is_empty() || spec == "redb" {
        let store =
            RedbStore::open(data_dir).with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        return Ok(std::sync::Arc::new(store));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") || spec.starts_with("redis+cluster://") {
        let store = RedisStore::connect(spec)?.with_user_ttl(user_ttl);
        return Ok(std::sync::Arc::new(store));
    }
    anyhow::bail!(
        "store {spec:?} is not understood: give nothing (the embedded store in data_dir), redis://HOST:PORT, or redis+cluster://HOST1:PORT1,HOST2:PORT2,…"
    )
}

/// How long an event batch's answer is kept for retries with its
/// `Idempotency-Key`, on both stores; a key used again after that is a new batch.
pub const BATCH_KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Per user, the newest `event_id`s kept for de-duplication: 4096, or four
/// times the kept events when that is more (a retry arrives long after its
/// events were trimmed from what the model reads).
pub fn event_id_window(keep: usize) -> usize {
    4096.max(keep.saturating_mul(4))
}

/// Records a store call's duration (`edgerec_store_seconds{op}`).
fn timed<T>(op: &'static str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = f();
    metrics::histogram!("edgerec_store_seconds", "op" => op).record(start.elapsed().as_secs_f64());
    result
}
