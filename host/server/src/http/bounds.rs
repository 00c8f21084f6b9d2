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
/// Longest tenant, plugin or model-version name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Which characters a kind of name may hold: ASCII digits, lowercase
/// letters, uppercase letters where allowed, and `extra`; 1 to
/// [`MAX_NAME_LEN`] of them. The checks and the document's patterns both
/// come from it.
pub struct NameRule {
    /// What is named, for messages.
    pub what: &'static str,
    /// Whether A-Z is allowed.
    pub uppercase: bool,
    /// The other characters allowed, as they appear in the pattern's class.
    pub extra: &'static str,
}

/// Tenant names (they appear in keys and paths: lowercase only).
pub const TENANT_NAME: NameRule = NameRule { what: "tenant name", uppercase: false, extra: "_-" };
/// Plugin names.
pub const PLUGIN_NAME: NameRule = NameRule { what: "plugin name", uppercase: true, extra: "_-" };
/// Model version names.
pub const MODEL_VERSION: NameRule = NameRule { what: "model version", uppercase: true, extra: "._-" };

impl NameRule {
    /// Whether `name` follows the rule.
    pub fn allows(&self, name: &str) -> bool {
        (1..=MAX_NAME_LEN).contains(&name.len())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || (self.uppercase && b.is_ascii_uppercase())
                    || self.extra.as_bytes().contains(&b)
            })
    }

    /// The JSON Schema pattern of the rule.
    pub fn pattern(&self) -> String {
        let letters = if self.uppercase { "A-Za-z" } else { "a-z" };
        format!("^[{letters}0-9{}]{{1,{MAX_NAME_LEN}}}$", self.extra)
    }

    /// "`what` "x" is invalid: use …", the message of a name that breaks the rule.
    pub fn refusal(&self, name: &str) -> String {
        let mut allowed = vec!["a-z".to_string()];
        if self.uppercase {
            allowed.push("A-Z".into());
        }
        allowed.push("0-9".into());
        allowed.extend(self.extra.chars().rev().map(|c| format!("'{c}'")));
        format!("{} {name:?} is invalid: use 1..={MAX_NAME_LEN} of {}", self.what, allowed.join(", "))
    }
}

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

/// Writes the bounds of query and path parameters into `paths` (the
/// document's `paths`): `limit`'s maximum, and the pattern of every plugin
/// name and model version in a path.
pub fn document_parameters(paths: &mut Value) {
    let parameters = [("/v1/tenants/{tenant}/catalog/items", "get", "limit", MAX_PAGE_ITEMS)];
    for (path, method, name, bound) in parameters {
        if let Some(list) = paths[path][method]["parameters"].as_array_mut() {
            for parameter in list.iter_mut().filter(|p| p["name"] == name) {
                parameter["schema"]["maximum"] = bound.into();
            }
        }
    }
    let Some(paths) = paths.as_object_mut() else { return };
    for (path, operations) in paths.iter_mut() {
        let named = [("/plugins/{name}", "name", &PLUGIN_NAME), ("/models/{version}", "version", &MODEL_VERSION)];
        for (segment, parameter, rule) in named {
            if !path.contains(segment) {
                continue;
            }
            for operation in operations.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let list = operation["parameters"].as_array_mut().into_iter().flatten();
                for p in list.filter(|p| p["name"] == parameter && p["in"] == "path") {
                    p["schema"]["pattern"] = rule.pattern().into();
                }
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
    schemas["CreateTenant"]["properties"]["name"]["pattern"] = TENANT_NAME.pattern().into();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_rule_checks_and_documents_the_same_characters() {
        assert_eq!(TENANT_NAME.pattern(), "^[a-z0-9_-]{1,64}$");
        assert_eq!(PLUGIN_NAME.pattern(), "^[A-Za-z0-9_-]{1,64}$");
        assert_eq!(MODEL_VERSION.pattern(), "^[A-Za-z0-9._-]{1,64}$");
        let longest = "a".repeat(MAX_NAME_LEN);
        for rule in [&TENANT_NAME, &PLUGIN_NAME, &MODEL_VERSION] {
            assert!(rule.allows("shop-2_x") && rule.allows(&longest), "{}", rule.what);
            for bad in ["", "a b", "a/b", "ü", &format!("{longest}a")] {
                assert!(!rule.allows(bad), "{} allows {bad:?}", rule.what);
            }
        }
        assert!(!TENANT_NAME.allows("Shop") && PLUGIN_NAME.allows("Shop"));
        assert!(MODEL_VERSION.allows("v1.2") && !PLUGIN_NAME.allows("v1.2"));
        assert_eq!(
            MODEL_VERSION.refusal("a b"),
            "model version \"a b\" is invalid: use 1..=64 of a-z, A-Z, 0-9, '-', '_', '.'"
        );
    }
}
