//! Why a filter does not fit a catalog.

use crate::filter::Op;
use crate::kind::Kind;

/// A filter refused at compile time; each error names the predicate (its
/// position in the `where` array), what was wrong and what to write instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A predicate without an attribute name.
    #[error("where[{index}]: `attribute` is empty: name the catalog attribute to filter on")]
    EmptyAttribute {
        /// The predicate's position.
        index: usize,
    },
    /// The catalog has no column of that name.
    #[error(
        "where[{index}]: the catalog has no attribute `{attribute}` (it has: {known}): filter on an attribute the items carry (names are case-sensitive), or upsert items that carry it before setting the filter"
    )]
    UnknownAttribute {
        /// The predicate's position.
        index: usize,
        /// The name given.
        attribute: String,
        /// The names the catalog has, comma-separated ("none" when empty).
        known: String,
    },
    /// The op does not apply to the column's kind (`gt` on strings, ...).
    #[error("where[{index}]: `{op}` does not apply to `{attribute}`, a {kind} column: use one of {ops}")]
    OpNotForKind {
        /// The predicate's position.
        index: usize,
        /// The attribute.
        attribute: String,
        /// The op given.
        op: Op,
        /// The column's kind.
        kind: Kind,
        /// The ops that apply to the kind.
        ops: &'static str,
    },
    /// The operand is not what the op needs on this column.
    #[error("where[{index}]: `{op}` on `{attribute}` (a {kind} column) needs {expected} as `value`, got {got}")]
    WrongValue {
        /// The predicate's position.
        index: usize,
        /// The attribute.
        attribute: String,
        /// The op given.
        op: Op,
        /// The column's kind.
        kind: Kind,
        /// What the value must be.
        expected: &'static str,
        /// The value given, as JSON.
        got: String,
    },
}
