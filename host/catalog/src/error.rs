//! Why a snapshot could not be built, updated or read.

/// A snapshot operation refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// An item names a row outside the snapshot's row space.
    #[error(
        "row {row} is outside the catalog's {rows} rows: rows are the model's item indices; map item ids to rows with the model's item map and leave out items the model does not know"
    )]
    RowOutOfRange {
        /// The row given.
        row: u32,
        /// Rows in the snapshot.
        rows: usize,
    },
    /// The row space is larger than row numbers (u32) can address.
    #[error("a catalog of {rows} rows is larger than u32 row numbers address: use a model with at most 2^32 - 1 items")]
    TooManyRows {
        /// The rows asked for.
        rows: usize,
    },
}
