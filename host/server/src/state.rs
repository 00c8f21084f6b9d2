//! Shared server state: tenants (model, item map, active pipeline), the
//! store, credentials, the encoder-state cache and the concurrency limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Backend, BackendState, Model};
use tokio::sync::Semaphore;

use super::auth::{KeyIndex, Operator};
use super::config::ServerConfig;
use super::error::ApiError;
use super::pipeline::ActivePipeline;
use super::quota::Quotas;
use super::store::{Store, TenantRecord};

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

/// A tenant loaded in memory.
pub struct Tenant {
    /// As stored.
    pub record: TenantRecord,
    /// The tenant's model.
    pub model: Arc<Model>,
    /// The uploaded model version it is (`None`: the record's base model).
    pub model_version: Option<String>,
    /// The engine that encodes and scores for this tenant.
    pub backend: Arc<dyn Backend>,
    /// Gathers this tenant's concurrent recommends into backend batches.
    pub scheduler: super::scheduler::Scheduler,
    /// External ↔ model item ids.
    pub items: Arc<ItemMap>,
    /// The active pipeline; swapped atomically, each request keeps the `Arc`
    /// it loaded. Shared with the tenant a model swap replaces.
    pub pipeline: Arc<ArcSwap<ActivePipeline>>,
    /// Serialises pipeline activations and key changes of this tenant.
    pub activation: Arc<tokio::sync::Mutex<()>>,
    /// This tenant's encoder states: its own byte bound (host and device
    /// bytes together), so that one tenant's users never evict another's;
    /// an evicted user is encoded from scratch on their next request.
    pub cache: UserCache,
    /// Catalog attributes of the candidates this host last read (item →
    /// attributes, `None`: not in the catalog): what the pipeline sees while
    /// the shared store is unreachable. Never read otherwise. Bounded in
    /// bytes per tenant (`attribute_cache_bytes`).
    pub attributes: AttributeCache,
    /// This tenant's share of the plugin slots
    /// (`tenant_plugin_concurrency`): its recommends wait for one of these
    /// before they take one of the server's, so that they never hold them all.
    pub plugin_share: Arc<Semaphore>,
}

/// A tenant's last-read catalog attributes, weighed by their size in bytes.
/// Shared (`Arc`) so that checking an entry against a fresh read clones nothing.
pub type AttributeCache = moka::sync::Cache<String, Arc<Option<serde_json::Value>>>;

/// Bytes an attribute entry is weighed at: its id, its JSON text and a
/// fixed overhead per entry (the map's node and the `Value` tree around the text).
pub fn attribute_weight(id: &str, value: &Option<serde_json::Value>) -> u32 {
    const ENTRY_OVERHEAD: usize = 128;
    let json = value.as_ref().map_or(0, crate::json_size::json_len);
    u32::try_from(id.len() + json + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// A tenant as the server holds it: serving, or refused with the reason it
/// could not load (its routes answer 503 `tenant_unavailable`; `/readyz` counts it, and names it to the operator).
pub enum TenantSlot {
    /// Loaded and serving.
    Ready(Arc<Tenant>),
    /// Stored, but its model or pipeline could not be loaded at start.
    Unavailable {
        /// What failed, for the operator.
        reason: String,
    },
}

/// Everything the handlers share.
pub struct AppState {
    /// The resolved configuration.
    pub config: ServerConfig,
    /// The store (embedded, or shared with other hosts).
    pub store: Arc<dyn Store>,
    /// SHA-256 (hex) of the operator token.
    pub operator_hash: String,
    /// Tenants by name.
    tenants: RwLock<HashMap<String, TenantSlot>>,
    /// API key hash → tenant name.
    keys: RwLock<KeyIndex>,
    /// Per-tenant request rates and in-flight caps.
    pub quotas: Quotas,
    /// Admission: recommends in flight (try-acquire → 503).
    pub admission: Arc<Semaphore>,
    /// Encodes running at once.
    pub encode_slots: Arc<Semaphore>,
    /// Plugin pipelines running at once.
    pub plugin_slots: Arc<Semaphore>,
    /// Uploads (plugins, models) being checked at once: each job holds a
    /// permit until it ends, even when its client stopped waiting.
    pub upload_slots: Arc<Semaphore>,
    /// The compiler/runner of plugin components.
    pub plugins: super::pipeline::PluginHost,
    /// Renders /metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// False until start-up finished and after shutdown began.
    pub ready: AtomicBool,
    /// False while the shared store cannot be reached: answers are served
    /// from this host's caches and say they are degraded.
    pub store_reachable: AtomicBool,
    /// Event batches acknowledged while the shared store was unreachable
    /// (shared stores only).
    pub outbox: Option<super::outbox::Outbox>,
}

impl AppState {
    /// The state before any tenant is loaded.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        operator_hash: String,
        plugins: super::pipeline::PluginHost,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> AppState {
        AppState {
            quotas: Quotas::new(&config),
            admission: Arc::new(Semaphore::new(config.max_in_flight)),
            encode_slots: Arc::new(Semaphore::new(config.encode_permits())),
            plugin_slots: Arc::new(Semaphore::new(config.plugin_permits())),
            upload_slots: Arc::new(Semaphore::new(config.upload_concurrency)),
            plugins,
            metrics,
            ready: AtomicBool::new(false),
            store_reachable: AtomicBool::new(true),
            outbox: None,
            tenants: RwLock::default(),
            keys: RwLock::default(),
            operator_hash,
            store,
            config,
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

    /// A tenant's attribute cache bounded by `bytes`, weighing each entry by its size.
    pub fn attribute_cache(bytes: u64) -> AttributeCache {
        moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|id: &String, value: &Arc<Option<serde_json::Value>>| attribute_weight(id, value))
            .build()
    }

    /// Whether the server is ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The tenant whose API key hashes to `hash`.
    pub(crate) fn tenant_of_key_hash(&self, hash: &str) -> Option<String> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).get(hash).cloned()
    }

    /// A tenant by name: 404 when unknown, 503 when it could not load.
    /// Reached by handlers only through the extractors of [`crate::auth`].
    pub(crate) fn lookup_tenant(&self, name: &str) -> Result<Arc<Tenant>, ApiError> {
        match self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            Some(TenantSlot::Ready(tenant)) => Ok(tenant.clone()),
            Some(TenantSlot::Unavailable { reason }) => Err(ApiError::tenant_unavailable(name, reason)),
            None => Err(ApiError::unknown_tenant(name)),
        }
    }

    /// A tenant by name, for the operator (and start-up code).
    pub fn tenant(&self, _operator: &Operator, name: &str) -> Result<Arc<Tenant>, ApiError> {
        self.lookup_tenant(name)
    }

    /// Whether a tenant of this name is stored (for metric labels: random names must not grow the series).
    pub fn has_tenant(&self, name: &str) -> bool {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).contains_key(name)
    }

    /// Every tenant name, sorted, with `None` for the available ones and the reason for the others.
    pub fn tenant_names(&self) -> Vec<(String, Option<String>)> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<_> = tenants
            .iter()
            .map(|(name, slot)| {
                let reason = match slot {
                    TenantSlot::Ready(_) => None,
                    TenantSlot::Unavailable { reason } => Some(reason.clone()),
                };
                (name.clone(), reason)
            })
            .collect();
        names.sort();
        names
    }

    /// Registers a loaded tenant (replacing any earlier slot of that name) and its keys.
    pub fn insert_tenant(&self, tenant: Tenant) {
        let name = tenant.record.name.clone();
        self.set_tenant_keys(&name, &tenant.record.keys);
        self.tenants.write().unwrap_or_else(PoisonError::into_inner).insert(name, TenantSlot::Ready(Arc::new(tenant)));
    }

    /// Registers a tenant unless one of that name is serving already;
    /// whether it did. Check and insert are one step: a tenant registered by
    /// its creator meanwhile is never replaced by an older copy.
    pub fn insert_tenant_unless_ready(&self, tenant: Tenant) -> bool {
        let name = tenant.record.name.clone();
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if matches!(tenants.get(&name), Some(TenantSlot::Ready(_))) {
            return false;
        }
        self.set_tenant_keys(&name, &tenant.record.keys);
        tenants.insert(name, TenantSlot::Ready(Arc::new(tenant)));
        true
    }

    /// Replaces the keys that open a tenant's storefront routes.
    pub fn set_tenant_keys(&self, name: &str, records: &[crate::store::ApiKeyRecord]) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.retain(|_, owner| owner != name);
        for key in records {
            keys.insert(key.sha256.clone(), name.to_string());
        }
    }

    /// Marks a stored tenant that could not load: its routes answer 503 with
    /// `reason` (its keys still identify it, so its clients learn why).
    pub fn insert_unavailable(&self, record: &TenantRecord, reason: String) {
        let name = record.name.as_str();
        self.set_tenant_keys(name, &record.keys);
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), TenantSlot::Unavailable { reason });
    }
}
