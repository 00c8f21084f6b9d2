//! Storefront catalog routes: upsert items, read one, list them a page at
//! a time. The work is in [`crate::service::items`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::TenantAccess;
use super::bounds::{MAX_ITEMS, MAX_PAGE_ITEMS};
use super::checks::{check_attributes, check_count, check_id, check_item_bytes};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::integral;
use crate::service::app::AppState;
use crate::service::items;
use crate::service::quota::QuotaKind;

/// One catalog item.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// External item id.
    #[schema(min_length = 1)]
    pub id: String,
    /// Attributes (the typed columns plugins read): numbers, booleans, strings, lists of strings.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Body of `PUT …/catalog/items`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItems {
    /// Items to insert or replace (at most 1000).
    pub items: Vec<CatalogItem>,
}

/// Answer of `PUT …/catalog/items`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UpsertResponse {
    /// Items inserted or replaced.
    pub accepted: usize,
}

/// A page of the catalog: at most `limit` items and at most the server's
/// `max_page_bytes` of attributes (a page holds at least one item).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemsPage {
    /// Items in id order.
    pub items: Vec<CatalogItem>,
    /// The `after` of the next page, absent on the last one (a page that
    /// ended early by bytes has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Inserts or replaces catalog items (items unknown to the model are stored
/// too). An item whose attributes take more than the server's
/// `max_item_bytes` as JSON is refused (413, nothing stored).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/catalog/items", request_body = UpsertItems,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = UpsertResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn upsert_items(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiJson(request): ApiJson<UpsertItems>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::Write)?;
    check_count("items", request.items.len(), MAX_ITEMS)?;
    let mut rows = Vec::with_capacity(request.items.len());
    for item in request.items {
        check_id("item id", &item.id)?;
        check_attributes(&item.id, &item.attributes)?;
        let value = serde_json::Value::Object(item.attributes);
        check_item_bytes(&app.config, &item.id, &value)?;
        rows.push((item.id, value));
    }
    let accepted = rows.len();
    items::upsert(&app, tenant, quota, rows).await?;
    Ok(Json(UpsertResponse { accepted }))
}

/// One catalog item.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/catalog/items/{id}",
    params(("tenant" = String, Path, description = "tenant name"), ("id" = String, Path, description = "item id")),
    responses((status = 200, body = CatalogItem), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn get_item(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<CatalogItem>, ApiError> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::CatalogRead)?;
    let (id, attributes) = items::item(&app, tenant, quota, id).await?;
    Ok(Json(CatalogItem { id, attributes }))
}

/// Paging of `GET …/catalog/items`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (1..=1000, default 100).
    #[serde(default, deserialize_with = "integral::optional")]
    #[param(minimum = 1)]
    pub limit: Option<usize>,
    /// The last id of the previous page.
    pub after: Option<String>,
}

/// Lists the catalog in id order, a page at a time.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/catalog/items",
    params(("tenant" = String, Path, description = "tenant name"), PageQuery),
    responses((status = 200, body = ItemsPage), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn list_items(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ItemsPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE_ITEMS).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be in 1..={MAX_PAGE_ITEMS}, got {limit}")));
    }
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::CatalogRead)?;
    let page = items::page(&app, tenant, quota, query.after, limit).await?;
    let items = page.items.into_iter().map(|(id, attributes)| CatalogItem { id, attributes }).collect();
    Ok(Json(ItemsPage { items, next: page.next }))
}
