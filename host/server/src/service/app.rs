//! The service's state: the tenant registry (each tenant's engine, active
//! pipeline and caches), the store, credentials and the concurrency limits.
//! Built whole by [`AppState::new`]; the HTTP layer holds it in an `Arc`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::access::{Caller, Operator};
use super::console::Sessions;
use super::encode::Engine;
use super::outbox::Outbox;
use super::pipeline::{ActivePipeline, PluginHost};
use super::quota::Quotas;
use super::scheduler::Scheduler;
use super::{Error, Result};
use crate::config::ServerConfig;
use crate::ids::{same_hash, secret_hash};
use crate::store::{ApiKeyRecord, Store, TenantRecord};

/// A tenant loaded in memory.
pub struct Tenant {
    /// As stored.
    pub record: TenantRecord,
    /// What encodes and scores for it: model, backend, item map, encoder
    /// states. Shared with its scheduler.
    pub engine: Arc<Engine>,
    /// The uploaded model version it is (`None`: the record's base model).
    pub model_version: Option<String>,
    /// Gathers this tenant's concurrent recommends into backend batches.
    pub scheduler: Scheduler,
    /// The active pipeline; swapped atomically, each request keeps the `Arc`
    /// it loaded. Shared with the tenant a model swap replaces.
    pub pipeline: Arc<ArcSwap<ActivePipeline>>,
    /// Serialises pipeline activations and key changes of this tenant.
    pub activation: Arc<tokio::sync::Mutex<()>>,
    /// Serialises this tenant's catalog writes (store write, then snapshot)
    /// with model swaps, which read the whole catalog into a new snapshot:
    /// no upsert lands between that read and the new engine's registration.
    /// Shared with the tenant a model swap replaces.
    pub catalog_writes: Arc<std::sync::Mutex<()>>,
    /// This tenant's share of the plugin slots
    /// (`tenant_plugin_concurrency`): its recommends wait for one of these
    /// before they take one of the server's, so that they never hold them all.
    pub plugin_share: Arc<Semaphore>,
    /// This tenant's catalog reads at once (`tenant_catalog_read_concurrency`):
    /// reading large items costs threads, and one tenant never holds more.
    pub read_share: Arc<Semaphore>,
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

/// API key hash → tenant name, for the storefront routes.
type KeyIndex = HashMap<String, String>;

/// Everything the service shares.
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
    pub plugins: PluginHost,
    /// Renders /metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// False until start-up finished and after shutdown began.
    pub ready: AtomicBool,
    /// False while the shared store cannot be reached: answers are served
    /// from this host's caches and say they are degraded.
    pub store_reachable: AtomicBool,
    /// Event batches acknowledged while the shared store was unreachable
    /// (shared stores only).
    pub outbox: Option<Arc<Outbox>>,
    /// The operator console's logins on this host.
    pub console_sessions: Sessions,
}

impl AppState {
    /// The state before any tenant is loaded.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        operator_hash: String,
        plugins: PluginHost,
        outbox: Option<Arc<Outbox>>,
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
            outbox,
            console_sessions: Sessions::default(),
            tenants: RwLock::default(),
            keys: RwLock::default(),
            operator_hash,
            store,
            config,
        }
    }

    /// Whether the server is ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The owner of `secret` (the operator token or a tenant's storefront
    /// key), or `None` when it opens nothing.
    pub fn caller(&self, secret: &str) -> Option<Caller> {
        let hash = secret_hash(secret);
        if same_hash(&hash, &self.operator_hash) {
            return Some(Caller::Operator(Operator::verified()));
        }
        self.keys.read().unwrap_or_else(PoisonError::into_inner).get(&hash).cloned().map(Caller::Tenant)
    }

    /// A tenant by name: 404 when unknown, 503 when it could not load.
    /// Reached by handlers only through the HTTP layer's extractors, after
    /// the caller's key or token was checked.
    pub(crate) fn lookup_tenant(&self, name: &str) -> Result<Arc<Tenant>> {
        match self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            Some(TenantSlot::Ready(tenant)) => Ok(tenant.clone()),
            Some(TenantSlot::Unavailable { reason }) => Err(Error::tenant_unavailable(name, reason)),
            None => Err(Error::unknown_tenant(name)),
        }
    }

    /// A tenant by name, for the operator (and start-up code).
    pub fn tenant(&self, _operator: &Operator, name: &str) -> Result<Arc<Tenant>> {
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

    /// Serving tenants whose backend does not serve as chosen (a device
    /// backend that lost its context serves on the CPU while it is
    /// rebuilt), with what it does instead, by name.
    pub fn degraded_backends(&self) -> std::collections::BTreeMap<String, String> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants
            .iter()
            .filter_map(|(name, slot)| match slot {
                TenantSlot::Ready(tenant) => tenant.engine.backend.degraded().map(|why| (name.clone(), why)),
                TenantSlot::Unavailable { .. } => None,
            })
            .collect()
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
    pub fn set_tenant_keys(&self, name: &str, records: &[ApiKeyRecord]) {
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
