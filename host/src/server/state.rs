//! Shared server state: tenants (model, item map, active pipeline), the
//! store, credentials, the encoder-state cache and the concurrency limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{EncoderState, Model};
use tokio::sync::Semaphore;

use super::config::ServerConfig;
use super::error::ApiError;
use super::pipeline::ActivePipeline;
use super::store::{Store, TenantRecord};

/// One user's cached encoder state and the embedding of its last encode.
pub struct CachedUser {
    /// The state (kept window and per-layer keys/values).
    pub state: EncoderState,
    /// The embedding at `state.query_time()`.
    pub embedding: Vec<f32>,
}

/// Cache key: (tenant, user).
pub type UserKey = (String, String);

/// A tenant loaded in memory.
pub struct Tenant {
    /// As stored.
    pub record: TenantRecord,
    /// The tenant's model.
    pub model: Arc<Model>,
    /// External ↔ model item ids.
    pub items: Arc<ItemMap>,
    /// The active pipeline; swapped atomically, each request keeps the `Arc` it loaded.
    pub pipeline: ArcSwap<ActivePipeline>,
    /// Serialises pipeline activations of this tenant (store then swap, in order).
    pub activation: tokio::sync::Mutex<()>,
}

/// Everything the handlers share.
pub struct AppState {
    /// The resolved configuration.
    pub config: ServerConfig,
    /// The embedded store.
    pub store: Arc<Store>,
    /// The operator token.
    pub operator_token: String,
    /// Tenants by name.
    pub tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    /// Per-user encoder states, bounded by their size in bytes.
    pub cache: moka::sync::Cache<UserKey, Arc<Mutex<CachedUser>>>,
    /// Admission: recommends in flight (try-acquire → 503).
    pub admission: Arc<Semaphore>,
    /// Encodes running at once.
    pub encode_slots: Arc<Semaphore>,
    /// Plugin pipelines running at once.
    pub plugin_slots: Arc<Semaphore>,
    /// The compiler/runner of plugin components.
    pub plugins: super::pipeline::PluginHost,
    /// Renders /metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// False until start-up finished and after shutdown began.
    pub ready: AtomicBool,
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl AppState {
    /// Builds the cache bounded by `cache_bytes`, weighing each user by its state's size.
    pub fn user_cache(cache_bytes: u64) -> moka::sync::Cache<UserKey, Arc<Mutex<CachedUser>>> {
        moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_key: &UserKey, value: &Arc<Mutex<CachedUser>>| {
                let bytes = value.lock().map_or(0, |u| u.state.size_bytes() + u.embedding.len() * 4);
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build()
    }

    /// Whether the server is ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Checks the operator token.
    pub fn require_operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(token) if same_secret(token, &self.operator_token) => Ok(()),
            Some(token) if self.tenant_of_key(token).is_some() => Err(ApiError::forbidden()),
            _ => Err(ApiError::unauthorized()),
        }
    }

    fn tenant_of_key(&self, token: &str) -> Option<Arc<Tenant>> {
        let tenants = self.tenants.read().expect("tenant map lock");
        tenants.values().find(|t| same_secret(token, &t.record.api_key)).cloned()
    }

    /// Checks that the caller may act for `tenant` (its API key, or the
    /// operator token) and returns it. Another tenant's key gets 403 without
    /// saying whether `tenant` exists.
    pub fn require_tenant(&self, headers: &HeaderMap, tenant: &str) -> Result<Arc<Tenant>, ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if same_secret(token, &self.operator_token) {
            return self.tenant(tenant);
        }
        match self.tenant_of_key(token) {
            Some(owner) if owner.record.name == tenant => Ok(owner),
            Some(_) => Err(ApiError::forbidden()),
            None => Err(ApiError::unauthorized()),
        }
    }

    /// A tenant by name (operator routes, after `require_operator`).
    pub fn tenant(&self, name: &str) -> Result<Arc<Tenant>, ApiError> {
        self.tenants
            .read()
            .expect("tenant map lock")
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::unknown_tenant(name))
    }

    /// Registers a loaded tenant.
    pub fn insert_tenant(&self, tenant: Tenant) {
        let name = tenant.record.name.clone();
        self.tenants.write().expect("tenant map lock").insert(name, Arc::new(tenant));
    }
}
