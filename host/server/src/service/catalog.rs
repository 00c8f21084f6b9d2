//! A tenant's catalog as the recommend path reads it: an in-memory snapshot
//! of typed columns over the model's item rows (`edgerec_catalog`), built
//! from the store when the tenant's engine is assembled, brought up to date
//! by every upsert (this host's at once, other hosts' through the change
//! stream), swapped atomically so that a request pins one version. A
//! recommend gathers its candidates' columns and its pipeline's filter mask
//! from the version it pinned: no store read, no JSON parse. While the
//! shared store is away the last version keeps answering.
//!
//! Items the model does not know have no row (retrieval can never return
//! them); whether the catalog holds one is asked of the store, and
//! remembered for answers while the store is away.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use edgerec_catalog::{CatalogError, CatalogSnapshot, CompiledFilter, FixedBitSet};
use edgerec_kernels::item_map::ItemMap;
use serde_json::Value;

use super::{Error, Result};
use crate::error_code::ErrorCode;
use crate::store::{Store, StoreError};

/// Items read from the store per page while a snapshot is built.
const BUILD_PAGE: usize = 4_096;

/// Filter masks a version keeps current: the active pipeline's and, for a
/// moment after an activation, the one before.
const KEPT_MASKS: usize = 2;

/// One version of a tenant's catalog: the snapshot and the masks of the
/// retrieval filters registered with it, each current for this snapshot.
pub struct CatalogView {
    /// Typed columns over the model's item rows.
    pub snapshot: CatalogSnapshot,
    masks: Vec<(Arc<CompiledFilter>, Arc<FixedBitSet>)>,
}

impl CatalogView {
    /// The rows `filter` lets through in this version: kept current when
    /// the filter was registered ([`CatalogReader::register_filter`]),
    /// computed here otherwise (a request that raced an activation).
    pub fn mask(&self, filter: &Arc<CompiledFilter>) -> Arc<FixedBitSet> {
        match self.masks.iter().find(|(f, _)| Arc::ptr_eq(f, filter)) {
            Some((_, mask)) => mask.clone(),
            None => Arc::new(filter.mask(&self.snapshot)),
        }
    }
}

/// One tenant's catalog for one model (row space). Shared by the engine's
/// users; a model swap builds a new one.
pub struct CatalogReader {
    store: Arc<dyn Store>,
    tenant: String,
    items: Arc<ItemMap>,
    current: ArcSwap<CatalogView>,
    /// Upper bound on the snapshot's bytes (`catalog_memory_bytes`).
    max_bytes: usize,
    /// Serialises this reader's read-modify-swap (the tenant's catalog write
    /// lock serialises them with the store writes and model swaps).
    swap: Mutex<()>,
    /// Ids of catalog items the model does not know that this host has seen
    /// in the store: what it knows of them while the store is away.
    known: moka::sync::Cache<String, ()>,
}

impl CatalogReader {
    /// Reads the tenant's whole catalog from the store into a snapshot over
    /// `items`' rows. Items the model does not know are left out. Callers
    /// hold the tenant's catalog write lock, so that no upsert lands between
    /// this read and the reader's registration.
    pub fn load(
        store: Arc<dyn Store>,
        tenant: &str,
        items: Arc<ItemMap>,
        max_bytes: usize,
        known_ids_bytes: u64,
    ) -> Result<CatalogReader> {
        let snapshot = read_snapshot(store.as_ref(), tenant, &items, max_bytes)?;
        let known = moka::sync::Cache::builder()
            .max_capacity(known_ids_bytes)
            .weigher(|id: &String, _: &()| u32::try_from(id.len() + 64).unwrap_or(u32::MAX))
            .build();
        Ok(CatalogReader {
            store,
            tenant: tenant.to_string(),
            items,
            current: ArcSwap::from_pointee(CatalogView { snapshot, masks: Vec::new() }),
            max_bytes,
            swap: Mutex::new(()),
            known,
        })
    }

    /// Reads the whole catalog from the store again into a new version (the
    /// upserts of other hosts this host missed while the store was away).
    /// Callers hold the tenant's catalog write lock.
    pub fn reload(&self) -> Result<()> {
        let snapshot = read_snapshot(self.store.as_ref(), &self.tenant, &self.items, self.max_bytes)?;
        let _serial = self.swap.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let masks = old.masks.iter().map(|(filter, _)| (filter.clone(), Arc::new(filter.mask(&snapshot)))).collect();
        self.current.store(Arc::new(CatalogView { snapshot, masks }));
        Ok(())
    }

    /// The current version; a request keeps the `Arc` it loaded.
    pub fn view(&self) -> Arc<CatalogView> {
        self.current.load_full()
    }

    /// Applies upserted items (attributes replaced whole) in one new
    /// version. Items the model does not know are remembered as known. With
    /// `check_size`, refuses (507 catalog_full) a batch that would take the
    /// snapshot past `catalog_memory_bytes`, before anything is written: call
    /// it so before the store write, then again (unchecked) after it.
    pub fn apply(&self, upserts: &[(String, Value)], check_size: bool) -> Result<()> {
        let rows: Vec<(u32, &Value)> =
            upserts.iter().filter_map(|(id, value)| self.items.internal(id).map(|row| (row, value))).collect();
        for (id, _) in upserts.iter().filter(|(id, _)| self.items.internal(id).is_none()) {
            self.known.insert(id.clone(), ());
        }
        if rows.is_empty() {
            return Ok(());
        }
        let _serial = self.swap.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let snapshot = old.snapshot.with_upserts(&rows).map_err(catalog_error)?;
        if check_size {
            let (before, after) = (old.snapshot.memory().total_bytes, snapshot.memory().total_bytes);
            if after > self.max_bytes && after > before {
                return Err(Error::new(
                    ErrorCode::CatalogFull,
                    format!(
                        "tenant {:?}: these items would take its in-memory catalog to {after} bytes, past this server's catalog_memory_bytes ({}); send smaller attributes, or ask the operator to raise the bound",
                        self.tenant, self.max_bytes
                    ),
                ));
            }
            // A check only: the version is made again after the store write.
            return Ok(());
        }
        let touched: Vec<u32> = rows.iter().map(|(row, _)| *row).collect();
        let masks = old
            .masks
            .iter()
            .map(|(filter, mask)| (filter.clone(), Arc::new(filter.mask_after_upserts(mask, &snapshot, &touched))))
            .collect();
        self.current.store(Arc::new(CatalogView { snapshot, masks }));
        Ok(())
    }

    /// Reads `ids` from the store and applies them: another host upserted
    /// them (the change stream said so).
    pub fn refresh(&self, ids: &[String]) -> Result<()> {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let values = self.store.items_many(&self.tenant, &refs)?;
        let upserts: Vec<(String, Value)> =
            ids.iter().zip(values).filter_map(|(id, value)| value.map(|v| (id.clone(), v))).collect();
        self.apply(&upserts, false)
    }

    /// Keeps `filter`'s mask current from now on (an activated pipeline's
    /// retrieval filter); the oldest registration beyond the last two is
    /// dropped.
    pub fn register_filter(&self, filter: &Arc<CompiledFilter>) {
        let _serial = self.swap.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        if old.masks.iter().any(|(f, _)| Arc::ptr_eq(f, filter)) {
            return;
        }
        let mut masks = vec![(filter.clone(), Arc::new(filter.mask(&old.snapshot)))];
        masks.extend(old.masks.iter().take(KEPT_MASKS - 1).cloned());
        self.current.store(Arc::new(CatalogView { snapshot: old.snapshot.clone(), masks }));
    }

    /// Whether the catalog holds `item` (one the model does not know), as
    /// the store says now.
    pub fn contains(&self, item: &str) -> Result<bool, StoreError> {
        let held = self.store.item(&self.tenant, item)?.is_some();
        if held {
            self.known.insert(item.to_string(), ());
        }
        Ok(held)
    }

    /// Whether this host saw `item` (one the model does not know) in the
    /// catalog before: what it knows while the store is away.
    pub fn contained(&self, item: &str) -> bool {
        self.known.contains_key(item)
    }
}

/// The tenant's whole catalog, page by page, as a snapshot over `items`' rows.
fn read_snapshot(store: &dyn Store, tenant: &str, items: &ItemMap, max_bytes: usize) -> Result<CatalogSnapshot> {
    let start = Instant::now();
    let mut rows: Vec<(u32, Value)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.items_page(tenant, after.as_deref(), BUILD_PAGE)?;
        let last = page.len() < BUILD_PAGE;
        after = page.last().map(|(id, _)| id.clone());
        rows.extend(page.into_iter().filter_map(|(id, value)| items.internal(&id).map(|row| (row, value))));
        if last {
            break;
        }
    }
    // Model ids are 1..=V (0 pads histories): V + 1 rows, as the item table.
    let snapshot = CatalogSnapshot::build(items.len() + 1, rows.iter().map(|(row, value)| (*row, value)))
        .map_err(|e| Error::internal("building the catalog snapshot", e))?;
    let bytes = snapshot.memory().total_bytes;
    if bytes > max_bytes {
        tracing::warn!(
            tenant,
            bytes,
            max_bytes,
            "the stored catalog is larger than catalog_memory_bytes: it serves, but upserts that grow it are refused until the bound is raised"
        );
    }
    let ms = start.elapsed().as_millis() as u64;
    tracing::info!(tenant, items = rows.len(), rows = items.len(), bytes, ms, "catalog snapshot built");
    Ok(snapshot)
}

fn catalog_error(error: CatalogError) -> Error {
    Error::internal("updating the catalog snapshot", error)
}

#[cfg(test)]
mod tests {
    use edgerec_catalog::{Filter, Op, Predicate};
    use serde_json::json;

    use super::*;
    use crate::store::RedbStore;

    fn reader(dir: &std::path::Path) -> CatalogReader {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir).unwrap());
        let rows: Vec<(String, Value)> = (0..8).map(|i| (format!("i{i}"), json!({"stock": i % 2}))).collect();
        store.upsert_items("t", &rows).unwrap();
        let items = ItemMap::from_external_ids((0..8).map(|i| format!("i{i}")).collect()).unwrap();
        CatalogReader::load(store, "t", Arc::new(items), 1 << 20, 1 << 20).unwrap()
    }

    /// A request pins a version: an upsert after it makes the next version
    /// and leaves the pinned one (its values and its masks) as it was.
    #[test]
    fn a_pinned_version_is_untouched_by_later_upserts_and_masks_follow_them() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = reader(dir.path());
        let filter = Filter { predicates: vec![Predicate { attribute: "stock".into(), op: Op::Gt, value: json!(0) }] };
        let filter = Arc::new(filter.compile(&catalog.view().snapshot).unwrap());
        catalog.register_filter(&filter);
        let pinned = catalog.view();
        catalog
            .apply(&[("i0".to_string(), json!({"stock": 4})), ("i1".to_string(), json!({"stock": 0}))], false)
            .unwrap();
        let next = catalog.view();
        // Model ids (rows) are 1-based: i0 is row 1.
        assert_eq!(pinned.snapshot.value("stock", 1), Some(json!(0)));
        assert_eq!(next.snapshot.value("stock", 1), Some(json!(4)));
        let rows = |view: &CatalogView| view.mask(&filter).ones().collect::<Vec<_>>();
        assert_eq!(rows(&pinned), vec![2, 4, 6, 8]);
        assert_eq!(rows(&next), vec![1, 4, 6, 8]);
        // Kept current (the registered mask), equal to one computed afresh.
        assert_eq!(*next.mask(&filter), filter.mask(&next.snapshot));
    }

    /// An upsert that would pass the memory bound is refused before any
    /// version is made; items the model does not know are remembered.
    #[test]
    fn a_catalog_past_its_memory_bound_refuses_growth() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = reader(dir.path());
        catalog.max_bytes = catalog.view().snapshot.memory().total_bytes;
        let big = json!({"stock": 1, "description": "x".repeat(10_000)});
        let refused = catalog.apply(&[("i2".to_string(), big.clone())], true).unwrap_err();
        assert!(matches!(refused, Error::Refused { code: ErrorCode::CatalogFull, .. }), "{}", refused.report());
        assert_eq!(catalog.view().snapshot.generation(), 0, "nothing was applied");
        catalog.apply(&[("elsewhere".to_string(), big)], true).unwrap();
        assert!(catalog.contained("elsewhere"));
    }
}
