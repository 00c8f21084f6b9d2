//! Hard filters over catalog columns, compiled against a snapshot into a row
//! mask that retrieval applies before it takes the top candidates.
//!
//! The ops mean what the `boost` plugin's predicates mean, value for value:
//! numbers (i64 columns read as f64) take `eq ne gt ge lt le`, booleans
//! `eq ne`, strings `eq ne` and `contains` (substring), string lists
//! `contains` (an element equal to the operand), every kind `present` and
//! `missing`. `in` (not a boost op) is `eq` to any element of a non-empty
//! array, on the kinds that take `eq`. **A missing value passes no predicate
//! but `missing`, `ne` included**: boost's `ne` is false on a missing value,
//! and a hard filter that let items without the attribute through `ne`
//! would surprise the merchant more than it helps.

mod compiled;
mod error;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use compiled::CompiledFilter;
pub use error::FilterError;

/// A hard filter: every predicate must hold. Its JSON is the array of a
/// pipeline's `"retrieve": {"where": [...]}`; an empty array lets every row
/// through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filter {
    /// The predicates, all of which must hold.
    pub predicates: Vec<Predicate>,
}

impl Filter {
    /// True for a filter without predicates (every row passes).
    pub fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }
}

/// `attribute op value`, e.g. `{"attribute": "stock", "op": "gt", "value": 0}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// The catalog attribute it reads.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub attribute: String,
    /// The comparison.
    pub op: Op,
    /// The operand: a number, string or boolean; an array of them for `in`;
    /// none for `present` / `missing` (ignored there, as boost ignores it).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

/// A comparison (JSON: lowercase names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (false on a missing value).
    Ne,
    /// Greater than.
    Gt,
    /// At least.
    Ge,
    /// Less than.
    Lt,
    /// At most.
    Le,
    /// Equal to one element of the array operand.
    In,
    /// Substring of a string / element of a list of strings.
    Contains,
    /// Has a value.
    Present,
    /// Has no value.
    Missing,
}

impl Op {
    /// The op's JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::In => "in",
            Op::Contains => "contains",
            Op::Present => "present",
            Op::Missing => "missing",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
