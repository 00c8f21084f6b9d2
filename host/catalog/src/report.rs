//! What a snapshot holds and what it costs: [`CatalogSnapshot::stats`] and
//! [`CatalogSnapshot::memory`].

use serde::Serialize;

use crate::kind::Kind;
use crate::snapshot::CatalogSnapshot;

/// Counts of one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogStats {
    /// Rows in the row space.
    pub rows: usize,
    /// The version's generation.
    pub generation: u64,
    /// Values ignored since the build because their attribute has no
    /// column: the name's first value was an object, or the catalog already
    /// had [`crate::MAX_COLUMNS`] columns.
    pub ignored_values: u64,
    /// Per column, in the order they appeared.
    pub columns: Vec<ColumnStats>,
}

/// Counts of one column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnStats {
    /// The attribute's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Rows with a value.
    pub present: u64,
    /// Rows whose JSON value did not fit the kind: stored as missing, or
    /// (string lists) stored without their non-string elements.
    pub mismatched: u64,
    /// Distinct strings ever written (string kinds; 0 otherwise).
    pub distinct: usize,
}

/// Bytes held by one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// The sum over columns.
    pub total_bytes: usize,
    /// Per column, in the order they appeared.
    pub columns: Vec<ColumnMemory>,
}

/// Bytes held by one column of one version. Storage shared with other
/// versions is counted in each (it is what this version keeps alive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnMemory {
    /// The attribute's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Values, presence and mismatch bits of the distinct chunks (an
    /// all-missing chunk shared by many positions counts once), plus the
    /// two levels of chunk pointers.
    pub value_bytes: usize,
    /// The string dictionary (strings, headers, lookup map); 0 for other kinds.
    pub dictionary_bytes: usize,
}

impl CatalogSnapshot {
    /// Counts per column: present and mismatched rows, distinct strings.
    pub fn stats(&self) -> CatalogStats {
        let columns = self
            .columns()
            .map(|c| ColumnStats {
                name: c.name.to_string(),
                kind: c.kind,
                present: c.present,
                mismatched: c.mismatched,
                distinct: c.dictionary.as_ref().map_or(0, |d| d.view().len()),
            })
            .collect();
        CatalogStats { rows: self.rows(), generation: self.generation(), ignored_values: self.ignored(), columns }
    }

    /// Bytes per column (README, "Memory", states the per-item costs).
    pub fn memory(&self) -> MemoryReport {
        let columns: Vec<ColumnMemory> = self
            .columns()
            .map(|c| ColumnMemory {
                name: c.name.to_string(),
                kind: c.kind,
                value_bytes: c.chunks.bytes_beyond(None),
                dictionary_bytes: c.dictionary.as_ref().map_or(0, |d| d.bytes()),
            })
            .collect();
        let total_bytes = columns.iter().map(|c| c.value_bytes + c.dictionary_bytes).sum();
        MemoryReport { total_bytes, columns }
    }

    /// Bytes of column storage this version holds that `older` does not
    /// share: what the upserts between them copied (chunks and the
    /// pointer lists above them; the shared dictionaries' growth is not
    /// included).
    pub fn unshared_bytes(&self, older: &CatalogSnapshot) -> usize {
        self.columns().map(|c| c.chunks.bytes_beyond(older.column(&c.name).map(|o| &o.chunks))).sum()
    }
}
