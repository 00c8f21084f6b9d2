//! The candidates as typed columns.

use std::collections::HashMap;

use crate::Error;
use crate::bindings::edgerec::plugin::types as wit;

/// The candidates of a stage: ids, current scores and the declared attribute
/// columns, all indexed by candidate index `0..len()`.
#[derive(Clone, Debug)]
pub struct Candidates {
    inner: wit::Candidates,
    /// Per column: `missing[i]` is true where row i has no value (empty = none missing).
    missing: Vec<Vec<bool>>,
}

impl Candidates {
    /// Candidates with these ids and scores and no attribute columns (add them
    /// with the `with_*` builders). Used by unit tests; the host builds the real ones.
    ///
    /// # Panics
    /// If `ids` and `scores` differ in length.
    pub fn new(ids: Vec<u64>, scores: Vec<f32>) -> Self {
        assert_eq!(ids.len(), scores.len(), "ids and scores must have one entry per candidate");
        Candidates { inner: wit::Candidates { ids, scores, columns: Vec::new() }, missing: Vec::new() }
    }

    /// Checks the host's columns are consistent (lengths, codes, offsets) and indexes the missing rows.
    pub(crate) fn from_wit(inner: wit::Candidates) -> Result<Self, Error> {
        let n = inner.ids.len();
        if inner.scores.len() != n {
            return Err(Error::new("host sent scores of the wrong length"));
        }
        let mut missing = Vec::with_capacity(inner.columns.len());
        for column in &inner.columns {
            check_column(column, n).map_err(|e| Error(format!("column `{}`: {e}", column.name)))?;
            let mut flags = Vec::new();
            if !column.missing.is_empty() {
                flags = vec![false; n];
                for &row in &column.missing {
                    flags[row as usize] = true;
                }
            }
            missing.push(flags);
        }
        Ok(Candidates { inner, missing })
    }

    fn push(mut self, name: &str, values: wit::ColumnValues, missing_rows: Vec<u32>) -> Self {
        let n = self.len();
        let mut flags = Vec::new();
        if !missing_rows.is_empty() {
            flags = vec![false; n];
            for &row in &missing_rows {
                flags[row as usize] = true;
            }
        }
        self.inner.columns.push(wit::Column { name: name.to_owned(), values, missing: missing_rows });
        self.missing.push(flags);
        self
    }

    /// Adds an f64 column (`None` = missing). Panics if the length differs from `len()`.
    pub fn with_f64(self, name: &str, values: Vec<Option<f64>>) -> Self {
        assert_eq!(values.len(), self.len(), "column `{name}` must have one value per candidate");
        let missing = missing_rows(&values);
        self.push(name, wit::ColumnValues::F64s(values.iter().map(|v| v.unwrap_or(0.0)).collect()), missing)
    }

    /// Adds an i64 column (`None` = missing). Panics if the length differs from `len()`.
    pub fn with_i64(self, name: &str, values: Vec<Option<i64>>) -> Self {
        assert_eq!(values.len(), self.len(), "column `{name}` must have one value per candidate");
        let missing = missing_rows(&values);
        self.push(name, wit::ColumnValues::I64s(values.iter().map(|v| v.unwrap_or(0)).collect()), missing)
    }

    /// Adds a bool column (`None` = missing). Panics if the length differs from `len()`.
    pub fn with_bool(self, name: &str, values: Vec<Option<bool>>) -> Self {
        assert_eq!(values.len(), self.len(), "column `{name}` must have one value per candidate");
        let missing = missing_rows(&values);
        self.push(name, wit::ColumnValues::Bools(values.iter().map(|v| v.unwrap_or(false)).collect()), missing)
    }

    /// Adds a string column (`None` = missing). Panics if the length differs from `len()`.
    pub fn with_string(self, name: &str, values: Vec<Option<&str>>) -> Self {
        assert_eq!(values.len(), self.len(), "column `{name}` must have one value per candidate");
        let missing = missing_rows(&values);
        let mut dictionary = Dictionary::default();
        let codes = values.iter().map(|v| v.map_or(0, |s| dictionary.code(s))).collect();
        let values = wit::ColumnValues::Strings(wit::StringColumn { codes, dictionary: dictionary.strings });
        self.push(name, values, missing)
    }

    /// Adds a list-of-strings column (`None` = missing). Panics if the length differs from `len()`.
    pub fn with_string_list(self, name: &str, values: Vec<Option<Vec<&str>>>) -> Self {
        assert_eq!(values.len(), self.len(), "column `{name}` must have one value per candidate");
        let missing = missing_rows(&values);
        let mut dictionary = Dictionary::default();
        let mut offsets = vec![0u32];
        let mut codes = Vec::new();
        for row in &values {
            for s in row.iter().flatten() {
                codes.push(dictionary.code(s));
            }
            offsets.push(codes.len() as u32);
        }
        let values =
            wit::ColumnValues::StringLists(wit::StringListColumn { offsets, codes, dictionary: dictionary.strings });
        self.push(name, values, missing)
    }

    /// Replaces the scores (what the next stage sees after a re-scoring stage).
    ///
    /// # Panics
    /// If the length differs from `len()`.
    pub fn with_scores(mut self, scores: Vec<f32>) -> Self {
        assert_eq!(scores.len(), self.len(), "one score per candidate");
        self.inner.scores = scores;
        self
    }

    /// The number of candidates.
    pub fn len(&self) -> usize {
        self.inner.ids.len()
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.inner.ids.is_empty()
    }

    /// Item ids, by candidate index.
    pub fn ids(&self) -> &[u64] {
        &self.inner.ids
    }

    /// Current scores, by candidate index (higher is better).
    pub fn scores(&self) -> &[f32] {
        &self.inner.scores
    }

    /// Names of the columns present (the declared ones the catalog has).
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.inner.columns.iter().map(|c| c.name.as_str())
    }

    fn column(&self, name: &str) -> Option<(&wit::ColumnValues, &[bool])> {
        let at = self.inner.columns.iter().position(|c| c.name == name)?;
        Some((&self.inner.columns[at].values, &self.missing[at]))
    }

    /// The f64 column `name`, if present and of that type.
    pub fn f64(&self, name: &str) -> Option<F64Column<'_>> {
        match self.column(name)? {
            (wit::ColumnValues::F64s(values), missing) => Some(F64Column { values, missing }),
            _ => None,
        }
    }

    /// The i64 column `name`, if present and of that type.
    pub fn i64(&self, name: &str) -> Option<I64Column<'_>> {
        match self.column(name)? {
            (wit::ColumnValues::I64s(values), missing) => Some(I64Column { values, missing }),
            _ => None,
        }
    }

    /// The bool column `name`, if present and of that type.
    pub fn bool(&self, name: &str) -> Option<BoolColumn<'_>> {
        match self.column(name)? {
            (wit::ColumnValues::Bools(values), missing) => Some(BoolColumn { values, missing }),
            _ => None,
        }
    }

    /// The string column `name`, if present and of that type.
    pub fn string(&self, name: &str) -> Option<StringColumn<'_>> {
        match self.column(name)? {
            (wit::ColumnValues::Strings(c), missing) => {
                Some(StringColumn { codes: &c.codes, dictionary: &c.dictionary, missing })
            }
            _ => None,
        }
    }

    /// The list-of-strings column `name`, if present and of that type.
    pub fn string_list(&self, name: &str) -> Option<StringListColumn<'_>> {
        match self.column(name)? {
            (wit::ColumnValues::StringLists(c), missing) => {
                Some(StringListColumn { offsets: &c.offsets, codes: &c.codes, dictionary: &c.dictionary, missing })
            }
            _ => None,
        }
    }

    /// The candidates at `order` (input indices, which must be in range), in that
    /// order, with every column gathered: what the next stage would see.
    pub fn select(&self, order: &[u32]) -> Candidates {
        let pick = |i: &u32| *i as usize;
        let ids = order.iter().map(|i| self.inner.ids[pick(i)]).collect();
        let scores = order.iter().map(|i| self.inner.scores[pick(i)]).collect();
        let mut out = Candidates::new(ids, scores);
        for (column, missing) in self.inner.columns.iter().zip(&self.missing) {
            let values = match &column.values {
                wit::ColumnValues::F64s(v) => wit::ColumnValues::F64s(order.iter().map(|i| v[pick(i)]).collect()),
                wit::ColumnValues::I64s(v) => wit::ColumnValues::I64s(order.iter().map(|i| v[pick(i)]).collect()),
                wit::ColumnValues::Bools(v) => wit::ColumnValues::Bools(order.iter().map(|i| v[pick(i)]).collect()),
                wit::ColumnValues::Strings(c) => wit::ColumnValues::Strings(wit::StringColumn {
                    codes: order.iter().map(|i| c.codes[pick(i)]).collect(),
                    dictionary: c.dictionary.clone(),
                }),
                wit::ColumnValues::StringLists(c) => {
                    let mut offsets = vec![0u32];
                    let mut codes = Vec::new();
                    for i in order {
                        let (a, b) = (c.offsets[pick(i)] as usize, c.offsets[pick(i) + 1] as usize);
                        codes.extend_from_slice(&c.codes[a..b]);
                        offsets.push(codes.len() as u32);
                    }
                    wit::ColumnValues::StringLists(wit::StringListColumn {
                        offsets,
                        codes,
                        dictionary: c.dictionary.clone(),
                    })
                }
            };
            let missing_rows = if missing.is_empty() {
                Vec::new()
            } else {
                (0..order.len() as u32).filter(|&j| missing[pick(&order[j as usize])]).collect()
            };
            out = out.push(&column.name, values, missing_rows);
        }
        out
    }
}

fn missing_rows<T>(values: &[Option<T>]) -> Vec<u32> {
    (0..values.len() as u32).filter(|&i| values[i as usize].is_none()).collect()
}

/// Assigns dense codes to distinct strings in first-seen order.
#[derive(Default)]
struct Dictionary {
    strings: Vec<String>,
    codes: HashMap<String, u32>,
}

impl Dictionary {
    fn code(&mut self, s: &str) -> u32 {
        if let Some(&code) = self.codes.get(s) {
            return code;
        }
        let code = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        self.codes.insert(s.to_owned(), code);
        code
    }
}

fn check_column(column: &wit::Column, n: usize) -> Result<(), String> {
    let len = match &column.values {
        wit::ColumnValues::F64s(v) => v.len(),
        wit::ColumnValues::I64s(v) => v.len(),
        wit::ColumnValues::Bools(v) => v.len(),
        wit::ColumnValues::Strings(c) => {
            if c.codes.iter().any(|&code| code as usize >= c.dictionary.len() && !c.dictionary.is_empty()) {
                return Err("string code out of the dictionary".into());
            }
            c.codes.len()
        }
        wit::ColumnValues::StringLists(c) => {
            let ordered = c.offsets.windows(2).all(|w| w[0] <= w[1]);
            if c.offsets.first() != Some(&0) || !ordered || c.offsets.last().map(|&o| o as usize) != Some(c.codes.len())
            {
                return Err("bad offsets".into());
            }
            if c.codes.iter().any(|&code| code as usize >= c.dictionary.len()) {
                return Err("string code out of the dictionary".into());
            }
            c.offsets.len() - 1
        }
    };
    if len != n {
        return Err(format!("{len} values for {n} candidates"));
    }
    if column.missing.iter().any(|&row| row as usize >= n) {
        return Err("missing row out of range".into());
    }
    Ok(())
}

fn present(missing: &[bool], i: u32) -> bool {
    missing.is_empty() || !missing[i as usize]
}

/// An f64 attribute column.
#[derive(Clone, Copy, Debug)]
pub struct F64Column<'a> {
    values: &'a [f64],
    missing: &'a [bool],
}

impl F64Column<'_> {
    /// Candidate `i`'s value; `None` if missing or out of range.
    pub fn get(&self, i: u32) -> Option<f64> {
        self.values.get(i as usize).copied().filter(|_| present(self.missing, i))
    }
}

/// An i64 attribute column.
#[derive(Clone, Copy, Debug)]
pub struct I64Column<'a> {
    values: &'a [i64],
    missing: &'a [bool],
}

impl I64Column<'_> {
    /// Candidate `i`'s value; `None` if missing or out of range.
    pub fn get(&self, i: u32) -> Option<i64> {
        self.values.get(i as usize).copied().filter(|_| present(self.missing, i))
    }
}

/// A bool attribute column.
#[derive(Clone, Copy, Debug)]
pub struct BoolColumn<'a> {
    values: &'a [bool],
    missing: &'a [bool],
}

impl BoolColumn<'_> {
    /// Candidate `i`'s value; `None` if missing or out of range.
    pub fn get(&self, i: u32) -> Option<bool> {
        self.values.get(i as usize).copied().filter(|_| present(self.missing, i))
    }
}

/// A string attribute column (dictionary-encoded).
#[derive(Clone, Copy, Debug)]
pub struct StringColumn<'a> {
    codes: &'a [u32],
    dictionary: &'a [String],
    missing: &'a [bool],
}

impl<'a> StringColumn<'a> {
    /// Candidate `i`'s value; `None` if missing or out of range.
    pub fn get(&self, i: u32) -> Option<&'a str> {
        self.code(i).and_then(|c| self.dictionary.get(c as usize)).map(String::as_str)
    }

    /// Candidate `i`'s dictionary code: equal codes mean equal strings (cheap grouping).
    pub fn code(&self, i: u32) -> Option<u32> {
        self.codes.get(i as usize).copied().filter(|_| present(self.missing, i))
    }

    /// The distinct strings; `code(i)` indexes into it.
    pub fn dictionary(&self) -> &'a [String] {
        self.dictionary
    }
}

/// A list-of-strings attribute column (e.g. tags).
#[derive(Clone, Copy, Debug)]
pub struct StringListColumn<'a> {
    offsets: &'a [u32],
    codes: &'a [u32],
    dictionary: &'a [String],
    missing: &'a [bool],
}

impl<'a> StringListColumn<'a> {
    /// Candidate `i`'s strings; `None` if missing or out of range.
    pub fn get(&self, i: u32) -> Option<Vec<&'a str>> {
        let i_us = i as usize;
        if i_us + 1 >= self.offsets.len() || !present(self.missing, i) {
            return None;
        }
        let (a, b) = (self.offsets[i_us] as usize, self.offsets[i_us + 1] as usize);
        Some(self.codes[a..b].iter().map(|&c| self.dictionary[c as usize].as_str()).collect())
    }

    /// True when candidate `i`'s list contains `value`.
    pub fn contains(&self, i: u32, value: &str) -> bool {
        self.get(i).is_some_and(|list| list.contains(&value))
    }
}
