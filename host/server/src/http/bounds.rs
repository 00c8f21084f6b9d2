//! The request bounds, each defined once: the handlers' checks read these
//! constants, and [`document`] writes the same numbers into the OpenAPI
//! document (utoipa's attributes take only literals, so the bounds are not
//! written there). The bounds that come from the configuration (`max_k`,
//! the newest `ts`, the stage limits) are written by
//! [`super::routes::with_config`] from the configuration.

use serde_json::{Value, json};

/// Longest user, item or event id accepted, in characters.
pub const MAX_ID_LEN: usize = 256;
/// Longest `action`, in characters.
pub const MAX_ACTION_LEN: usize = 32;
/// Most entries in a recommend's `context`.
pub const MAX_CONTEXT_ENTRIES: usize = 32;
/// Longest `context` key or value (as text), in characters.
pub const MAX_CONTEXT_VALUE_LEN: usize = 256;
/// Most attributes on one catalog item.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute name, in characters.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;
/// Longest string attribute value, in characters.
pub const MAX_ATTRIBUTE_STRING_LEN: usize = 1024;
/// Most strings in a list attribute.
pub const MAX_ATTRIBUTE_LIST_LEN: usize = 64;
/// Longest string inside a list attribute, in characters.
pub const MAX_ATTRIBUTE_LIST_STRING_LEN: usize = 256;
/// Most events in one request.
pub const MAX_EVENTS: usize = 1000;
/// Most items in one catalog upsert.
pub const MAX_ITEMS: usize = 1000;
/// Most items in one catalog page (`limit`).
pub const MAX_PAGE_ITEMS: usize = 1000;

/// Where each fixed bound appears in the document: (schema, property,
/// JSON Schema keyword, bound).
const DOCUMENTED: &[(&str, &str, &str, usize)] = &[
    ("Event", "user_id", "maxLength", MAX_ID_LEN),
    ("Event", "event_id", "maxLength", MAX_ID_LEN),
    ("Event", "item", "maxLength", MAX_ID_LEN),
    ("Event", "action", "maxLength", MAX_ACTION_LEN),
    ("RecommendRequest", "user_id", "maxLength", MAX_ID_LEN),
    ("RecommendRequest", "events", "maxItems", MAX_EVENTS),
    ("EventsRequest", "events", "maxItems", MAX_EVENTS),
    ("CatalogItem", "id", "maxLength", MAX_ID_LEN),
    ("UpsertItems", "items", "maxItems", MAX_ITEMS),
];

/// Writes the bounds of query parameters into `paths` (the document's
/// `paths`): (path, method, parameter, bound).
pub fn document_parameters(paths: &mut Value) {
    let parameters = [("/v1/tenants/{tenant}/catalog/items", "get", "limit", MAX_PAGE_ITEMS)];
    for (path, method, name, bound) in parameters {
        if let Some(list) = paths[path][method]["parameters"].as_array_mut() {
            for parameter in list.iter_mut().filter(|p| p["name"] == name) {
                parameter["schema"]["maximum"] = bound.into();
            }
        }
    }
}

/// Writes every fixed bound into `schemas` (the document's
/// `components.schemas`), and the free-form maps (a recommend's
/// `context`, an item's `attributes`) as the handlers bound them: utoipa's
/// derive cannot say this about a `serde_json::Map`.
pub fn document(schemas: &mut Value) {
    for (schema, property, keyword, bound) in DOCUMENTED {
        schemas[*schema]["properties"][*property][*keyword] = (*bound).into();
    }
    let text = |max: usize| json!({"type": "string", "maxLength": max});
    schemas["RecommendRequest"]["properties"]["context"] = json!({
        "type": "object",
        "description": "Request attributes handed to the plugins (page, locale, …).",
        "maxProperties": MAX_CONTEXT_ENTRIES,
        "propertyNames": text(MAX_CONTEXT_VALUE_LEN),
        "additionalProperties": {"oneOf": [text(MAX_CONTEXT_VALUE_LEN), {"type": "boolean"}, {"type": "integer", "minimum": -1e15, "maximum": 1e15}]},
    });
    schemas["CatalogItem"]["properties"]["attributes"] = json!({
        "type": "object",
        "description": "Attributes plugins read as typed columns: numbers, booleans, strings, lists of strings.",
        "maxProperties": MAX_ATTRIBUTES,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": MAX_ATTRIBUTE_NAME_LEN},
        "additionalProperties": {"oneOf": [
            {"type": "null"}, {"type": "boolean"}, {"type": "number"},
            text(MAX_ATTRIBUTE_STRING_LEN),
            {"type": "array", "maxItems": MAX_ATTRIBUTE_LIST_LEN, "items": text(MAX_ATTRIBUTE_LIST_STRING_LEN)},
        ]},
    });
}
