//! The storefront's catalog operations: upserting items and reading them
//! back (one item, or a page bounded in count and bytes).

use std::sync::{Arc, PoisonError};

use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::app::{AppState, Tenant};
use super::jobs::{self, JobKind};
use super::{Error, Result};
use crate::error_code::ErrorCode;
use crate::json_size::json_len;

/// One catalog item: its id and attributes.
pub type Item = (String, Map<String, Value>);

/// A page of the catalog.
pub struct Page {
    /// Items in id order.
    pub items: Vec<Item>,
    /// The `after` of the next page (`None` on the last one).
    pub next: Option<String>,
    /// Ids and attributes as JSON, in bytes: what the page costs its tenant.
    pub bytes: usize,
}

/// Inserts or replaces checked items, holding the tenant's write `quota`
/// permit: in the store, then in the catalog snapshot the next recommend
/// reads (507 catalog_full, nothing written, when the snapshot would pass
/// `catalog_memory_bytes`).
pub async fn upsert(
    app: &Arc<AppState>,
    tenant: Arc<Tenant>,
    quota: OwnedSemaphorePermit,
    rows: Vec<(String, Value)>,
) -> Result<()> {
    let app = app.clone();
    jobs::run(JobKind::Write, tracing::Span::current(), quota, move || write(&app, &tenant, &rows)).await
}

/// [`upsert`] without the job: blocks on the store.
pub fn write(app: &AppState, tenant: &Tenant, rows: &[(String, Value)]) -> Result<()> {
    let _writes = tenant.catalog_writes.lock().unwrap_or_else(PoisonError::into_inner);
    // The engine serving now: a model swap may have replaced the one this
    // request resolved (it read the catalog under the same lock).
    let engine = app.lookup_tenant(&tenant.record.name)?.engine.clone();
    engine.catalog.apply(rows, true)?;
    app.store.upsert_items(&tenant.record.name, rows)?;
    engine.catalog.apply(rows, false)
}

/// Applies items another host upserted (the change stream named them) to
/// the tenant's catalog snapshot, read back from the shared store.
pub fn refresh(app: &AppState, tenant: &str, ids: &[String]) -> Result<()> {
    let Ok(tenant) = app.lookup_tenant(tenant) else { return Ok(()) };
    let _writes = tenant.catalog_writes.lock().unwrap_or_else(PoisonError::into_inner);
    let engine = app.lookup_tenant(&tenant.record.name)?.engine.clone();
    engine.catalog.refresh(ids)
}

/// One item (404 unknown_item when the catalog has none of that id).
pub async fn item(app: &AppState, tenant: Arc<Tenant>, quota: OwnedSemaphorePermit, id: String) -> Result<Item> {
    let store = app.store.clone();
    let share = read_share(&tenant).await?;
    let item = jobs::run(JobKind::Read, tracing::Span::current(), quota, move || {
        match store.item(&tenant.record.name, &id)? {
            Some(Value::Object(attributes)) => Ok((id, attributes)),
            _ => Err(Error::new(
                ErrorCode::UnknownItem,
                format!("the catalog has no item {id:?}; upsert it with PUT …/catalog/items"),
            )),
        }
    })
    .await?;
    let bytes = item.0.len() + item.1.iter().map(|(k, v)| k.len() + json_len(v)).sum::<usize>();
    pace(app, share, bytes);
    Ok(item)
}

/// The page after `after`: at most `limit` items and at most the server's
/// `max_page_bytes` of attributes (at least one item).
pub async fn page(
    app: &Arc<AppState>,
    tenant: Arc<Tenant>,
    quota: OwnedSemaphorePermit,
    after: Option<String>,
    limit: usize,
) -> Result<Page> {
    let share = read_share(&tenant).await?;
    let reader = app.clone();
    let page = jobs::run(JobKind::Read, tracing::Span::current(), quota, move || {
        read_page(&reader, &tenant.record.name, after, limit)
    })
    .await?;
    pace(app, share, page.bytes);
    Ok(page)
}

/// One of the tenant's catalog-read permits, waited for within the request's deadline.
async fn read_share(tenant: &Tenant) -> Result<OwnedSemaphorePermit> {
    tenant.read_share.clone().acquire_owned().await.map_err(|_| Error::overloaded(1))
}

/// Holds the tenant's read permit for `bytes / tenant_catalog_read_bytes_rate`
/// after a read returned that many bytes, without delaying its answer: the
/// tenant's next read waits instead.
fn pace(app: &AppState, share: OwnedSemaphorePermit, bytes: usize) {
    let rate = app.config.tenant_catalog_read_bytes_rate;
    if rate == 0 || bytes == 0 {
        return;
    }
    let hold = std::time::Duration::from_secs_f64(bytes as f64 / rate as f64);
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        drop(share);
    });
}

/// Read from the store in chunks so that no read holds much more than the page.
fn read_page(app: &AppState, tenant: &str, mut after: Option<String>, limit: usize) -> Result<Page> {
    let budget = app.config.max_page_bytes;
    // Items of the largest size a chunk may hold while the page still has room.
    let chunk = (budget / app.config.max_item_bytes.max(1)).clamp(1, limit);
    let (mut items, mut bytes) = (Vec::new(), 0usize);
    loop {
        let want = chunk.min(limit - items.len());
        let rows = app.store.items_page(tenant, after.as_deref(), want)?;
        let exhausted = rows.len() < want;
        for (id, value) in rows {
            let size = id.len() + json_len(&value);
            if !items.is_empty() && bytes + size > budget {
                // Full by bytes: the next page starts at this item.
                return Ok(Page { next: after, items, bytes });
            }
            bytes += size;
            after = Some(id.clone());
            items.push((id, value.as_object().cloned().unwrap_or_default()));
        }
        if exhausted {
            return Ok(Page { items, next: None, bytes });
        }
        if items.len() == limit {
            return Ok(Page { next: after, items, bytes });
        }
    }
}
