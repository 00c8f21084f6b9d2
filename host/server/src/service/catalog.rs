//! The seam between the store's catalog and the recommend path: everything
//! a recommend reads of a tenant's catalog (is an item in it, the
//! attributes of the candidates) goes through [`CatalogReader`]. Today it
//! reads the store and keeps what it read in a bounded per-tenant cache,
//! which answers while the shared store is unreachable. A per-tenant
//! in-memory catalog snapshot (issue 23) replaces this module's insides;
//! its callers stay as they are.

use std::sync::Arc;

use serde_json::Value;

use crate::json_size::json_len;
use crate::store::{Store, StoreError};

/// A tenant's last-read catalog attributes (item → attributes, `None`: not
/// in the catalog), weighed by their size in bytes. Shared (`Arc`) so that
/// checking an entry against a fresh read clones nothing.
pub type AttributeCache = moka::sync::Cache<String, Arc<Option<Value>>>;

/// Bytes an attribute entry is weighed at: its id, its JSON text and a
/// fixed overhead per entry (the map's node and the `Value` tree around the text).
pub fn attribute_weight(id: &str, value: &Option<Value>) -> u32 {
    const ENTRY_OVERHEAD: usize = 128;
    let json = value.as_ref().map_or(0, json_len);
    u32::try_from(id.len() + json + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// One tenant's catalog as the recommend path reads it. Cloning shares
/// the cache: a tenant whose model is swapped keeps what it read.
#[derive(Clone)]
pub struct CatalogReader {
    store: Arc<dyn Store>,
    tenant: String,
    /// Never read while the store answers; bounded in bytes per tenant
    /// (`attribute_cache_bytes`).
    cache: AttributeCache,
}

/// Attributes of a list of items, and whether they came from the cache
/// because the shared store could not be reached.
pub struct Attributes {
    /// One per item asked for, in order (`None`: not in the catalog, or
    /// never read by this host while the store is away).
    pub values: Vec<Option<Value>>,
    /// The store was unreachable: these are what this host last read.
    pub degraded: bool,
}

impl CatalogReader {
    /// The catalog of `tenant`, with a cache of at most `cache_bytes`.
    pub fn new(store: Arc<dyn Store>, tenant: &str, cache_bytes: u64) -> CatalogReader {
        let cache = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|id: &String, value: &Arc<Option<Value>>| attribute_weight(id, value))
            .build();
        CatalogReader { store, tenant: tenant.to_string(), cache }
    }

    /// Whether the catalog holds `item`, as the store says now.
    pub fn contains(&self, item: &str) -> Result<bool, StoreError> {
        Ok(self.store.item(&self.tenant, item)?.is_some())
    }

    /// Whether this host read `item` from the catalog before (what it
    /// knows while the store is away).
    pub fn contained(&self, item: &str) -> bool {
        self.cache.get(item).is_some_and(|cached| cached.is_some())
    }

    /// The attributes of `ids`: from the store, or, while the shared store
    /// is unreachable, from what this host last read (`degraded`).
    pub fn attributes(&self, ids: &[String]) -> Result<Attributes, StoreError> {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        match self.store.items_many(&self.tenant, &refs) {
            Ok(values) => {
                // Written only when the catalog changed: a deep clone and a
                // cache insert per candidate on every request showed in
                // profiles of the recommend route under load.
                for (id, value) in ids.iter().zip(&values) {
                    if self.cache.get(id).is_none_or(|cached| *cached != *value) {
                        self.cache.insert(id.clone(), Arc::new(value.clone()));
                    }
                }
                Ok(Attributes { values, degraded: false })
            }
            // The edge keeps answering while the core is away, on what it last read.
            Err(error) if error.is_unavailable() => {
                let values =
                    ids.iter().map(|id| self.cache.get(id).and_then(|cached| Option::clone(&cached))).collect();
                Ok(Attributes { values, degraded: true })
            }
            Err(error) => Err(error),
        }
    }
}
