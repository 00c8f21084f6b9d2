//! Column kinds and the catalog-wide rule that gives an attribute its kind.
//!
//! The rule (README, "Column kinds"): the first non-null value an attribute
//! ever gets decides its *family* (number, bool, string, string list) and the
//! family never changes. Numbers start as `i64` when that value is an integer
//! that fits and widen the whole column to `f64` the first time a value does
//! not (a float, or an integer past `i64::MAX`), so ints and floats mixed are
//! `f64`, as the per-request rule made them. A value of another family is
//! stored as missing and counted (`ColumnStats::mismatched`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a column holds, decided catalog-wide (see the module docs for the rule).
/// Serialised as the candidate columns' type tags (`"f64"`, `"string_list"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Floating point numbers (or integers mixed with floats).
    F64,
    /// Integers, every value so far fitting an `i64`.
    I64,
    /// Booleans.
    Bool,
    /// Strings, dictionary-encoded.
    String,
    /// Lists of strings (tags, ...), dictionary-encoded.
    StringList,
}

impl Kind {
    /// The family the kind belongs to: what a value must be to be stored.
    pub(crate) fn family(self) -> Family {
        match self {
            Kind::F64 | Kind::I64 => Family::Number,
            Kind::Bool => Family::Bool,
            Kind::String => Family::String,
            Kind::StringList => Family::StringList,
        }
    }

    /// The name used in errors and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::F64 => "f64",
            Kind::I64 => "i64",
            Kind::Bool => "bool",
            Kind::String => "string",
            Kind::StringList => "string_list",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Kinds that take the same values: a column never leaves its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Number,
    Bool,
    String,
    StringList,
}

/// The kind a new column gets from its first value; `None` for a value that
/// cannot start a column (null, an object).
pub(crate) fn kind_of_first(value: &Value) -> Option<Kind> {
    match value {
        Value::Bool(_) => Some(Kind::Bool),
        Value::Number(n) if n.as_i64().is_some() => Some(Kind::I64),
        Value::Number(_) => Some(Kind::F64),
        Value::String(_) => Some(Kind::String),
        Value::Array(_) => Some(Kind::StringList),
        Value::Null | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_values_start_these_kinds() {
        assert_eq!(kind_of_first(&json!(3)), Some(Kind::I64));
        assert_eq!(kind_of_first(&json!(-3)), Some(Kind::I64));
        assert_eq!(kind_of_first(&json!(u64::MAX)), Some(Kind::F64));
        assert_eq!(kind_of_first(&json!(2.5)), Some(Kind::F64));
        assert_eq!(kind_of_first(&json!(true)), Some(Kind::Bool));
        assert_eq!(kind_of_first(&json!("red")), Some(Kind::String));
        assert_eq!(kind_of_first(&json!(["a", 1])), Some(Kind::StringList));
        assert_eq!(kind_of_first(&json!(null)), None);
        assert_eq!(kind_of_first(&json!({"a": 1})), None);
        assert_eq!(serde_json::to_value(Kind::StringList).unwrap(), json!("string_list"));
    }
}
