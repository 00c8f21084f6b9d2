//! [`CatalogSnapshot`]: one immutable version of a tenant's catalog columns.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::column::Column;
use crate::error::CatalogError;
use crate::kind::{Kind, kind_of_first};

/// The most attribute columns a catalog keeps. Values of further attribute
/// names are ignored (and counted): a catalog with thousands of distinct
/// keys is a data bug, and each column costs a chunk list over every row.
pub const MAX_COLUMNS: usize = 256;

/// One version of a tenant's catalog: typed attribute columns over the
/// model's item rows (row r = the item the model's item map numbers r, so a
/// filter mask's bit r is retrieval's row r).
///
/// Versions are immutable. [`CatalogSnapshot::with_upserts`] returns a new
/// version that shares every untouched chunk and the append-only string
/// dictionaries with this one; a request that holds this version keeps
/// reading exactly what it read before. Cloning is cheap (a list of `Arc`s).
#[derive(Clone, Debug)]
pub struct CatalogSnapshot {
    rows: usize,
    generation: u64,
    columns: Vec<Arc<Column>>,
    /// Column name → position in `columns` (positions never change).
    index: Arc<HashMap<Arc<str>, usize>>,
    /// Values written under attribute names that have no column.
    ignored: u64,
}

impl CatalogSnapshot {
    /// An empty catalog over `rows` rows (every value missing).
    pub fn empty(rows: usize) -> Result<CatalogSnapshot, CatalogError> {
        if rows > u32::MAX as usize {
            return Err(CatalogError::TooManyRows { rows });
        }
        Ok(CatalogSnapshot { rows, generation: 0, columns: Vec::new(), index: Arc::default(), ignored: 0 })
    }

    /// Builds generation 0 over `rows` rows from `(row, attributes)` pairs,
    /// as the store's catalog pages give them once ids are mapped to rows.
    /// `attributes` is the item's JSON object (anything else means no
    /// attributes); a row given twice keeps its last attributes.
    pub fn build<I, V>(rows: usize, items: I) -> Result<CatalogSnapshot, CatalogError>
    where
        I: IntoIterator<Item = (u32, V)>,
        V: Borrow<Value>,
    {
        let mut snapshot = CatalogSnapshot::empty(rows)?;
        let mut writer = Writer::default();
        for (row, attributes) in items {
            snapshot.check_row(row)?;
            snapshot.write_row(row, attributes.borrow(), &mut writer);
        }
        snapshot.finish(&writer);
        for column in &mut snapshot.columns {
            Arc::make_mut(column).shrink();
        }
        Ok(snapshot)
    }

    /// The next version: every upserted row's attributes replaced by the
    /// given object (attributes it lacks become missing; a new attribute
    /// name adds a column). Shares all untouched storage with `self`, which
    /// is left unchanged. All or nothing: a row outside the row space
    /// refuses the whole batch.
    pub fn with_upserts<V: Borrow<Value>>(&self, upserts: &[(u32, V)]) -> Result<CatalogSnapshot, CatalogError> {
        for (row, _) in upserts {
            self.check_row(*row)?;
        }
        let mut next = self.clone();
        next.generation += 1;
        let mut writer = Writer::default();
        for (row, attributes) in upserts {
            next.write_row(*row, attributes.borrow(), &mut writer);
        }
        next.finish(&writer);
        Ok(next)
    }

    /// Rows in the row space (the model's item count).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// 0 for a build, one more for each [`CatalogSnapshot::with_upserts`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The attribute names that have a column, in the order they appeared.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| &*c.name)
    }

    /// The kind of attribute `name`'s column, if the catalog has one.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.column(name).map(|c| c.kind)
    }

    /// Row `row`'s value of attribute `name` as JSON, `None` when missing or
    /// unknown. For inspection and tests; requests use
    /// [`CatalogSnapshot::gather`].
    pub fn value(&self, name: &str, row: u32) -> Option<Value> {
        if row as usize >= self.rows {
            return None;
        }
        self.column(name)?.json(row)
    }

    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.index.get(name).map(|&at| &*self.columns[at])
    }

    pub(crate) fn columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().map(|c| &**c)
    }

    pub(crate) fn ignored(&self) -> u64 {
        self.ignored
    }

    fn check_row(&self, row: u32) -> Result<(), CatalogError> {
        if row as usize >= self.rows {
            return Err(CatalogError::RowOutOfRange { row, rows: self.rows });
        }
        Ok(())
    }

    /// Replaces row `row`'s attributes: existing columns first (a lookup in
    /// the item's object each), then the item's names that have no column
    /// yet, looked up only when the object has more names than were found.
    fn write_row(&mut self, row: u32, attributes: &Value, writer: &mut Writer) {
        let object = attributes.as_object();
        let mut found = 0;
        for at in 0..self.columns.len() {
            let value = object.and_then(|o| o.get(&*self.columns[at].name));
            found += usize::from(value.is_some());
            self.write(at, row, value, writer);
        }
        let Some(object) = object else { return };
        if object.len() == found {
            return;
        }
        for (name, value) in object {
            if self.index.contains_key(name.as_str()) {
                continue;
            }
            let Some(kind) = kind_of_first(value) else {
                self.ignored += u64::from(!value.is_null());
                continue;
            };
            if self.columns.len() >= MAX_COLUMNS {
                self.ignored += 1;
                continue;
            }
            let at = self.columns.len();
            self.columns.push(Arc::new(Column::new(name, kind, self.rows)));
            Arc::make_mut(&mut self.index).insert(Arc::clone(&self.columns[at].name), at);
            self.write(at, row, Some(value), writer);
        }
    }

    fn write(&mut self, at: usize, row: u32, value: Option<&Value>, writer: &mut Writer) {
        let prepared = self.columns[at].prepare(value);
        if self.columns[at].holds(row, &prepared) {
            return;
        }
        // The first write of a batch to a column copies its chunk list if an
        // older version shares it; later ones find it unique.
        Arc::make_mut(&mut self.columns[at]).store(row, &prepared);
        writer.touch(at);
    }

    fn finish(&mut self, writer: &Writer) {
        for (at, &touched) in writer.touched.iter().enumerate() {
            if touched {
                Arc::make_mut(&mut self.columns[at]).finish();
            }
        }
    }
}

/// What a batch of writes changed.
#[derive(Default)]
struct Writer {
    touched: Vec<bool>,
}

impl Writer {
    fn touch(&mut self, at: usize) {
        if self.touched.len() <= at {
            self.touched.resize(at + 1, false);
        }
        self.touched[at] = true;
    }
}

#[cfg(test)]
mod tests;
