//! The request and candidate types the host works with (serde: they are what
//! the server and `edgerec plugin run` read), and their encoding into the
//! contract's columns.

use std::collections::{BTreeMap, HashMap};

use edgerec_catalog::{GatheredColumn, GatheredValues};
use serde::{Deserialize, Serialize};

use crate::bindings::wire;
use crate::error::CandidatesError;

/// One thing the shopper did recently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Item id.
    pub item: u64,
    /// "view", "cart", "purchase", ...
    pub action: String,
    /// Unix seconds.
    pub ts: i64,
}

/// What the host knows about the request; the same for every stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// The merchant.
    pub tenant: String,
    /// The shopper, when known.
    #[serde(default)]
    pub user: Option<String>,
    /// How many items the storefront wants back.
    #[serde(default = "default_k")]
    pub k: u32,
    /// The request's time, unix seconds (plugins have no clock of their own).
    #[serde(default)]
    pub now: i64,
    /// Free-form attributes: page, locale, device, ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The shopper's recent events, oldest first.
    #[serde(default)]
    pub recent_events: Vec<Event>,
}

fn default_k() -> u32 {
    10
}

impl RequestContext {
    /// A context for `tenant` with defaults (`k` = 10, nothing else).
    pub fn new(tenant: &str) -> Self {
        RequestContext {
            tenant: tenant.to_owned(),
            user: None,
            k: default_k(),
            now: 0,
            attributes: BTreeMap::new(),
            recent_events: Vec::new(),
        }
    }

    pub(crate) fn to_wire(&self) -> wire::RequestContext {
        wire::RequestContext {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            k: self.k,
            now: self.now,
            attributes: self.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            recent_events: self
                .recent_events
                .iter()
                .map(|e| wire::Event { item: e.item, action: e.action.clone(), ts: e.ts })
                .collect(),
        }
    }
}

/// The values of one attribute column, one per candidate (`null` = missing).
/// JSON: `{"name": "price", "type": "f64", "values": [9.5, null]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "values", rename_all = "snake_case")]
pub enum ColumnValues {
    /// Floating point numbers.
    F64(Vec<Option<f64>>),
    /// Integers.
    I64(Vec<Option<i64>>),
    /// Booleans.
    Bool(Vec<Option<bool>>),
    /// Strings (dictionary-encoded when they cross into a plugin).
    String(Vec<Option<String>>),
    /// Lists of strings (tags, ...).
    StringList(Vec<Option<Vec<String>>>),
}

impl ColumnValues {
    /// The number of rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::F64(v) => v.len(),
            ColumnValues::I64(v) => v.len(),
            ColumnValues::Bool(v) => v.len(),
            ColumnValues::String(v) => v.len(),
            ColumnValues::StringList(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One catalog attribute column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// The attribute's name.
    pub name: String,
    /// Its values.
    #[serde(flatten)]
    pub values: ColumnValues,
}

/// The candidates entering a pipeline: ids, scores and attribute columns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateBatch {
    /// Item ids.
    pub ids: Vec<u64>,
    /// Model scores, higher is better.
    pub scores: Vec<f32>,
    /// Attribute columns (only the ones some stage declared are passed on).
    #[serde(default)]
    pub columns: Vec<Column>,
}

impl CandidateBatch {
    /// The number of candidates.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Checks every list has one entry per candidate and column names are unique.
    pub fn validate(&self) -> Result<(), CandidatesError> {
        let n = self.ids.len();
        if self.scores.len() != n {
            return Err(CandidatesError::Length { what: "scores".into(), len: self.scores.len(), expected: n });
        }
        for (i, column) in self.columns.iter().enumerate() {
            if column.values.len() != n {
                return Err(CandidatesError::Length {
                    what: format!("column `{}`", column.name),
                    len: column.values.len(),
                    expected: n,
                });
            }
            if self.columns[..i].iter().any(|c| c.name == column.name) {
                return Err(CandidatesError::DuplicateColumn(column.name.clone()));
            }
        }
        if n > u32::MAX as usize / 2 {
            return Err(CandidatesError::TooMany(n));
        }
        Ok(())
    }

    /// The column called `name`, if any.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The candidates entering a pipeline with columns a catalog snapshot
/// gathered ([`edgerec_catalog::CatalogSnapshot::gather`]): typed and
/// dictionary-encoded already, so a run parses and hashes nothing.
#[derive(Clone, Debug, Default)]
pub struct GatheredCandidates {
    /// Item ids.
    pub ids: Vec<u64>,
    /// Model scores, higher is better.
    pub scores: Vec<f32>,
    /// The columns the pipeline's stages read, one value per candidate.
    pub columns: Vec<GatheredColumn>,
}

impl GatheredCandidates {
    /// Checks every list has one entry per candidate and column names are unique.
    pub fn validate(&self) -> Result<(), CandidatesError> {
        let n = self.ids.len();
        if self.scores.len() != n {
            return Err(CandidatesError::Length { what: "scores".into(), len: self.scores.len(), expected: n });
        }
        for (i, column) in self.columns.iter().enumerate() {
            let len = gathered_len(&column.values);
            if len != n || column.missing.iter().any(|&m| m as usize >= n) {
                return Err(CandidatesError::Length { what: format!("column `{}`", column.name), len, expected: n });
            }
            if self.columns[..i].iter().any(|c| c.name == column.name) {
                return Err(CandidatesError::DuplicateColumn(column.name.clone()));
            }
        }
        if n > u32::MAX as usize / 2 {
            return Err(CandidatesError::TooMany(n));
        }
        Ok(())
    }
}

/// Candidates in a gathered column; a code outside its dictionary or a
/// list offset past its codes counts as a length mismatch (`usize::MAX`).
fn gathered_len(values: &GatheredValues) -> usize {
    match values {
        GatheredValues::F64s { values } => values.len(),
        GatheredValues::I64s { values } => values.len(),
        GatheredValues::Bools { values } => values.len(),
        GatheredValues::Strings { codes, dictionary } => {
            if codes.iter().any(|&c| c as usize >= dictionary.len().max(1)) { usize::MAX } else { codes.len() }
        }
        GatheredValues::StringLists { offsets, codes, dictionary } => {
            let sane = offsets.first() == Some(&0)
                && offsets.windows(2).all(|w| w[0] <= w[1])
                && offsets.last().is_some_and(|&last| last as usize == codes.len())
                && codes.iter().all(|&c| (c as usize) < dictionary.len());
            if sane { offsets.len() - 1 } else { usize::MAX }
        }
    }
}

/// A column encoded once per pipeline run in the contract's form, from which
/// each stage's rows are gathered.
pub(crate) struct EncodedColumn {
    pub name: String,
    pub values: wire::ColumnValues,
    /// `missing[row]` over the whole batch.
    pub missing: Vec<bool>,
}

/// Dense codes for distinct strings, first-seen order, found with foldhash:
/// one short hash and one comparison per row. (std's SipHash on every row of
/// every string column was once the host's largest item in the profile; a
/// linear scan of the first 16 strings after it still cost one `memcmp` call
/// per comparison, ~20 ns a row.) The strings are the tenant's own catalog
/// values, so a hash without DoS hardening harms no one else.
#[derive(Default)]
struct Dictionary<'a> {
    strings: Vec<String>,
    codes: HashMap<&'a str, u32, foldhash::fast::RandomState>,
}

impl<'a> Dictionary<'a> {
    fn code(&mut self, s: &'a str) -> u32 {
        *self.codes.entry(s).or_insert_with(|| {
            self.strings.push(s.to_owned());
            (self.strings.len() - 1) as u32
        })
    }
}

impl EncodedColumn {
    pub fn encode(column: &Column) -> Self {
        let (values, missing) = match &column.values {
            ColumnValues::F64(v) => (wire::ColumnValues::F64s(v.iter().map(|x| x.unwrap_or(0.0)).collect()), flags(v)),
            ColumnValues::I64(v) => (wire::ColumnValues::I64s(v.iter().map(|x| x.unwrap_or(0)).collect()), flags(v)),
            ColumnValues::Bool(v) => {
                (wire::ColumnValues::Bools(v.iter().map(|x| x.unwrap_or(false)).collect()), flags(v))
            }
            ColumnValues::String(v) => {
                let mut dictionary = Dictionary::default();
                let codes = v.iter().map(|x| x.as_deref().map_or(0, |s| dictionary.code(s))).collect();
                let values = wire::StringColumn { codes, dictionary: dictionary.strings };
                (wire::ColumnValues::Strings(values), flags(v))
            }
            ColumnValues::StringList(v) => {
                let mut dictionary = Dictionary::default();
                let mut offsets = Vec::with_capacity(v.len() + 1);
                offsets.push(0u32);
                let mut codes = Vec::new();
                for row in v {
                    for s in row.iter().flatten() {
                        codes.push(dictionary.code(s));
                    }
                    offsets.push(codes.len() as u32);
                }
                let values = wire::StringListColumn { offsets, codes, dictionary: dictionary.strings };
                (wire::ColumnValues::StringLists(values), flags(v))
            }
        };
        EncodedColumn { name: column.name.clone(), values, missing }
    }

    /// A column the catalog snapshot encoded: the contract's form already,
    /// only the missing positions turned into flags.
    pub fn from_gathered(column: GatheredColumn) -> Self {
        let GatheredColumn { name, values, missing: positions } = column;
        let values = match values {
            GatheredValues::F64s { values } => wire::ColumnValues::F64s(values),
            GatheredValues::I64s { values } => wire::ColumnValues::I64s(values),
            GatheredValues::Bools { values } => wire::ColumnValues::Bools(values),
            GatheredValues::Strings { codes, dictionary } => {
                wire::ColumnValues::Strings(wire::StringColumn { codes, dictionary })
            }
            GatheredValues::StringLists { offsets, codes, dictionary } => {
                wire::ColumnValues::StringLists(wire::StringListColumn { offsets, codes, dictionary })
            }
        };
        let rows = match &values {
            wire::ColumnValues::F64s(v) => v.len(),
            wire::ColumnValues::I64s(v) => v.len(),
            wire::ColumnValues::Bools(v) => v.len(),
            wire::ColumnValues::Strings(c) => c.codes.len(),
            wire::ColumnValues::StringLists(c) => c.offsets.len().saturating_sub(1),
        };
        let mut missing = vec![false; rows];
        for position in positions {
            missing[position as usize] = true;
        }
        EncodedColumn { name, values, missing }
    }

    /// This column's rows at `rows` (indices into the batch), in that order.
    pub fn gather(&self, rows: &[u32]) -> wire::Column {
        let at = |r: &u32| *r as usize;
        let values = match &self.values {
            wire::ColumnValues::F64s(v) => wire::ColumnValues::F64s(rows.iter().map(|r| v[at(r)]).collect()),
            wire::ColumnValues::I64s(v) => wire::ColumnValues::I64s(rows.iter().map(|r| v[at(r)]).collect()),
            wire::ColumnValues::Bools(v) => wire::ColumnValues::Bools(rows.iter().map(|r| v[at(r)]).collect()),
            wire::ColumnValues::Strings(c) => wire::ColumnValues::Strings(wire::StringColumn {
                codes: rows.iter().map(|r| c.codes[at(r)]).collect(),
                dictionary: c.dictionary.clone(),
            }),
            wire::ColumnValues::StringLists(c) => {
                let mut offsets = Vec::with_capacity(rows.len() + 1);
                offsets.push(0u32);
                let mut codes = Vec::new();
                for r in rows {
                    codes.extend_from_slice(&c.codes[c.offsets[at(r)] as usize..c.offsets[at(r) + 1] as usize]);
                    offsets.push(codes.len() as u32);
                }
                wire::ColumnValues::StringLists(wire::StringListColumn {
                    offsets,
                    codes,
                    dictionary: c.dictionary.clone(),
                })
            }
        };
        let missing = (0..rows.len() as u32).filter(|&j| self.missing[at(&rows[j as usize])]).collect();
        wire::Column { name: self.name.clone(), values, missing }
    }
}

fn flags<T>(values: &[Option<T>]) -> Vec<bool> {
    values.iter().map(Option::is_none).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are first-seen indices, and the dictionary lists each distinct
    /// string once, in that order.
    #[test]
    fn dictionary_codes_are_first_seen_order() {
        let values: Vec<String> = (0..96).map(|i| format!("v{}", (i * 7) % 32)).collect();
        let mut dictionary = Dictionary::default();
        let mut first_seen: Vec<&str> = Vec::new();
        for value in &values {
            let expected = match first_seen.iter().position(|s| s == value) {
                Some(at) => at,
                None => {
                    first_seen.push(value);
                    first_seen.len() - 1
                }
            };
            assert_eq!(dictionary.code(value), expected as u32, "{value}");
        }
        assert_eq!(dictionary.strings, first_seen);
        assert_eq!(first_seen.len(), 32);
    }
}
