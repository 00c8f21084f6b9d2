//! The checks of storefront requests, against [`super::bounds`] and the
//! configuration: what the OpenAPI document declares, enforced.

use serde_json::{Map, Value};

use super::bounds::{
    MAX_ATTRIBUTE_LIST_LEN, MAX_ATTRIBUTE_LIST_STRING_LEN, MAX_ATTRIBUTE_NAME_LEN, MAX_ATTRIBUTE_STRING_LEN,
    MAX_ATTRIBUTES, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_VALUE_LEN, MAX_ID_LEN,
};
use super::error::ApiError;
use crate::config::ServerConfig;
use crate::error_code::ErrorCode;
use crate::json_size::json_len;

/// Lengths are counted in characters, as JSON Schema's `maxLength` counts them.
pub fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!("{kind} must be 1..={MAX_ID_LEN} characters long, got {chars}")));
    }
    Ok(())
}

/// Refuses more than `max` of `what` in one request.
pub fn check_count(what: &str, count: usize, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(ApiError::bad_request(format!("{count} {what} in one request: send at most {max}")));
    }
    Ok(())
}

/// A recommend's `context` as the plugins get it (values as text), checked.
pub fn check_context(context: Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    check_count("context entries", context.len(), MAX_CONTEXT_ENTRIES)?;
    let mut attributes = Vec::with_capacity(context.len());
    for (key, value) in context {
        let value = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if key.chars().count() > MAX_CONTEXT_VALUE_LEN || value.chars().count() > MAX_CONTEXT_VALUE_LEN {
            return Err(ApiError::bad_request(format!(
                "context entry {:?}: keys and values are at most {MAX_CONTEXT_VALUE_LEN} characters",
                key.chars().take(40).collect::<String>()
            )));
        }
        attributes.push((key, value));
    }
    Ok(attributes)
}

/// Checks a catalog item's attributes: the shapes plugins read as typed
/// columns (number, boolean, string, list of strings), within the bounds
/// the OpenAPI document declares.
pub fn check_attributes(id: &str, attributes: &Map<String, Value>) -> Result<(), ApiError> {
    let bad = |what: String| ApiError::bad_request(format!("item {id:?}: {what}"));
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(bad(format!("{} attributes, at most {MAX_ATTRIBUTES}", attributes.len())));
    }
    for (name, value) in attributes {
        if name.is_empty() || name.chars().count() > MAX_ATTRIBUTE_NAME_LEN {
            return Err(bad(format!("attribute names are 1..={MAX_ATTRIBUTE_NAME_LEN} characters")));
        }
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
            Value::String(text) if text.chars().count() <= MAX_ATTRIBUTE_STRING_LEN => {}
            Value::String(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: strings are at most {MAX_ATTRIBUTE_STRING_LEN} characters"
                )));
            }
            Value::Array(list)
                if list.len() <= MAX_ATTRIBUTE_LIST_LEN
                    && list
                        .iter()
                        .all(|v| v.as_str().is_some_and(|s| s.chars().count() <= MAX_ATTRIBUTE_LIST_STRING_LEN)) => {}
            Value::Array(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: lists hold at most {MAX_ATTRIBUTE_LIST_LEN} strings of at most {MAX_ATTRIBUTE_LIST_STRING_LEN} characters"
                )));
            }
            Value::Object(_) => {
                return Err(bad(format!(
                    "attribute {name:?}: nested objects are not attributes plugins can read; flatten them (e.g. \"{name}_field\")"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses an item whose attributes, as JSON, pass `max_item_bytes`: what
/// every read of the item (a listing, a recommend's candidates) costs.
pub fn check_item_bytes(config: &ServerConfig, id: &str, attributes: &Value) -> Result<(), ApiError> {
    let bytes = json_len(attributes);
    if bytes > config.max_item_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "item {id:?}: its attributes take {bytes} bytes as JSON, over the server's max_item_bytes ({}); keep large content (descriptions, media) outside the catalog and store what plugins need",
                config.max_item_bytes
            ),
        ));
    }
    Ok(())
}
