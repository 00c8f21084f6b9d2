//! Candidate columns gathered from a snapshot, in the plugin contract's shape.
//!
//! The output is what `edgerec-runtime` encodes today from JSON per request
//! (`EncodedColumn::encode`): one value per candidate (the kind's zero where
//! missing), the missing rows listed, strings as codes into a dictionary of
//! the distinct strings *of these candidates* in first-seen order. Here the
//! codes come from the snapshot's dictionary and are only renumbered through
//! a small map; no string is hashed per request.

use std::collections::HashMap;

use serde::Serialize;

use crate::chunk::Cell;
use crate::column::Column;
use crate::error::CatalogError;
use crate::kind::Kind;
use crate::snapshot::CatalogSnapshot;

/// One attribute's values for a list of candidate rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatheredColumn {
    /// The attribute's name.
    pub name: String,
    /// One value per candidate, in candidate order.
    pub values: GatheredValues,
    /// Positions (into the candidate list) whose value is missing; their
    /// entry in `values` is the kind's zero (no codes for a string list).
    pub missing: Vec<u32>,
}

/// The values of a [`GatheredColumn`], by kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum GatheredValues {
    /// Floats.
    F64s {
        /// One per candidate.
        values: Vec<f64>,
    },
    /// Integers.
    I64s {
        /// One per candidate.
        values: Vec<i64>,
    },
    /// Booleans.
    Bools {
        /// One per candidate.
        values: Vec<bool>,
    },
    /// Strings: candidate i's value is `dictionary[codes[i]]`.
    Strings {
        /// One per candidate (0 where missing).
        codes: Vec<u32>,
        /// The distinct strings of these candidates, first-seen order.
        dictionary: Vec<String>,
    },
    /// String lists: candidate i's strings are
    /// `dictionary[codes[offsets[i]..offsets[i + 1]]]`.
    StringLists {
        /// One more than candidates.
        offsets: Vec<u32>,
        /// All candidates' codes, concatenated.
        codes: Vec<u32>,
        /// The distinct strings of these candidates, first-seen order.
        dictionary: Vec<String>,
    },
}

impl GatheredValues {
    /// The kind of column these values came from (`f64`, ...).
    pub fn kind(&self) -> Kind {
        match self {
            GatheredValues::F64s { .. } => Kind::F64,
            GatheredValues::I64s { .. } => Kind::I64,
            GatheredValues::Bools { .. } => Kind::Bool,
            GatheredValues::Strings { .. } => Kind::String,
            GatheredValues::StringLists { .. } => Kind::StringList,
        }
    }
}

impl CatalogSnapshot {
    /// The columns `names` for the candidate rows `rows`, in the order of
    /// `names`. As the per-request path did, an attribute the catalog does
    /// not have, or that none of these candidates has, is left out (the
    /// plugin contract's "absent column"), and a name asked for twice is
    /// gathered once. Refuses a row outside the row space.
    pub fn gather<S: AsRef<str>>(&self, names: &[S], rows: &[u32]) -> Result<Vec<GatheredColumn>, CatalogError> {
        if let Some(&row) = rows.iter().find(|&&r| r as usize >= self.rows()) {
            return Err(CatalogError::RowOutOfRange { row, rows: self.rows() });
        }
        let mut out: Vec<GatheredColumn> = Vec::with_capacity(names.len());
        for name in names.iter().map(AsRef::as_ref) {
            if out.iter().any(|c| c.name == name) {
                continue;
            }
            let Some(column) = self.column(name) else { continue };
            if let Some(gathered) = gather_column(column, rows) {
                out.push(gathered);
            }
        }
        Ok(out)
    }
}

/// One column at `rows`, `None` when no row has a value.
fn gather_column(column: &Column, rows: &[u32]) -> Option<GatheredColumn> {
    let cells: Vec<Option<Cell<'_>>> = rows.iter().map(|&r| column.get(r)).collect();
    if cells.iter().all(Option::is_none) {
        return None;
    }
    let missing = (0..cells.len() as u32).filter(|&j| cells[j as usize].is_none()).collect();
    let mut remap = Remap::new(column);
    let values = match column.kind {
        Kind::F64 => GatheredValues::F64s { values: scalars(&cells, |c| if let Cell::F64(x) = c { x } else { 0.0 }) },
        Kind::I64 => GatheredValues::I64s { values: scalars(&cells, |c| if let Cell::I64(x) = c { x } else { 0 }) },
        Kind::Bool => GatheredValues::Bools { values: scalars(&cells, |c| matches!(c, Cell::Bool(true))) },
        Kind::String => {
            let codes = cells
                .iter()
                .map(|c| match c {
                    Some(Cell::Code(code)) => remap.code(*code),
                    _ => 0,
                })
                .collect();
            GatheredValues::Strings { codes, dictionary: remap.dictionary }
        }
        Kind::StringList => {
            let mut offsets = Vec::with_capacity(cells.len() + 1);
            offsets.push(0);
            let mut codes = Vec::new();
            for cell in &cells {
                if let Some(Cell::Codes(row)) = cell {
                    codes.extend(row.iter().map(|&code| remap.code(code)));
                }
                offsets.push(codes.len() as u32);
            }
            GatheredValues::StringLists { offsets, codes, dictionary: remap.dictionary }
        }
    };
    Some(GatheredColumn { name: column.name.to_string(), values, missing })
}

fn scalars<T: Default>(cells: &[Option<Cell<'_>>], value: impl Fn(Cell<'_>) -> T) -> Vec<T> {
    cells.iter().map(|c| c.map_or_else(T::default, &value)).collect()
}

/// Snapshot codes → dense per-request codes, first-seen order.
struct Remap<'a> {
    column: &'a Column,
    codes: HashMap<u32, u32>,
    dictionary: Vec<String>,
}

impl<'a> Remap<'a> {
    fn new(column: &'a Column) -> Self {
        Remap { column, codes: HashMap::new(), dictionary: Vec::new() }
    }

    fn code(&mut self, code: u32) -> u32 {
        *self.codes.entry(code).or_insert_with(|| {
            let s = self.column.dictionary.as_ref().and_then(|d| d.view().get(code)).unwrap_or_default();
            self.dictionary.push(s.to_owned());
            (self.dictionary.len() - 1) as u32
        })
    }
}

#[cfg(test)]
mod tests;
