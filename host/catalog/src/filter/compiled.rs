//! A filter checked against a catalog, and the row masks it yields.

use std::collections::HashSet;
use std::sync::Arc;

use fixedbitset::FixedBitSet;
use serde_json::Value;

use crate::chunk::{Bits, CHUNK_ROWS, Cell, ChunkValues};
use crate::column::Column;
use crate::dictionary::StringsView;
use crate::filter::{Filter, FilterError, Op, Predicate};
use crate::kind::{Family, Kind};
use crate::snapshot::CatalogSnapshot;

/// A [`Filter`] whose attributes, ops and operands fit a catalog's columns.
/// It refers to columns by name and family, which never change across the
/// versions of one catalog, so it stays valid for every later version.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledFilter {
    predicates: Vec<Compiled>,
}

#[derive(Clone, Debug, PartialEq)]
struct Compiled {
    attribute: Arc<str>,
    family: Family,
    test: Test,
}

/// A predicate's test on a present value (or on presence itself).
#[derive(Clone, Debug, PartialEq)]
enum Test {
    Present,
    Missing,
    Number(Op, f64),
    /// The members' [`number_key`]s: a long `in` list costs one lookup per row.
    NumberIn(HashSet<u64>),
    /// `eq b` (and `ne b` as `eq !b`: on a present bool they agree).
    BoolIs(bool),
    BoolIn(Vec<bool>),
    StringEq(String),
    StringNe(String),
    StringContains(String),
    StringIn(HashSet<String>),
    ListContains(String),
}

impl Test {
    fn number(&self, x: f64) -> bool {
        match self {
            Test::Number(op, v) => match op {
                Op::Eq => x == *v,
                Op::Ne => x != *v,
                Op::Gt => x > *v,
                Op::Ge => x >= *v,
                Op::Lt => x < *v,
                Op::Le => x <= *v,
                Op::In | Op::Contains | Op::Present | Op::Missing => false,
            },
            Test::NumberIn(keys) => keys.contains(&number_key(x)),
            _ => false,
        }
    }

    /// [`Test::number`] over a chunk's rows, the op chosen once per chunk
    /// rather than per row (the comparison loop then compiles branch-free).
    fn numbers(&self, value: impl Fn(usize) -> f64) -> Bits {
        match self {
            Test::Number(Op::Eq, v) => Bits::from_fn(|i| value(i) == *v),
            Test::Number(Op::Ne, v) => Bits::from_fn(|i| value(i) != *v),
            Test::Number(Op::Gt, v) => Bits::from_fn(|i| value(i) > *v),
            Test::Number(Op::Ge, v) => Bits::from_fn(|i| value(i) >= *v),
            Test::Number(Op::Lt, v) => Bits::from_fn(|i| value(i) < *v),
            Test::Number(Op::Le, v) => Bits::from_fn(|i| value(i) <= *v),
            test => Bits::from_fn(|i| test.number(value(i))),
        }
    }

    fn boolean(&self, b: bool) -> bool {
        match self {
            Test::BoolIs(v) => b == *v,
            Test::BoolIn(values) => values.contains(&b),
            _ => false,
        }
    }

    fn string(&self, s: &str) -> bool {
        match self {
            Test::StringEq(v) => s == v,
            Test::StringNe(v) => s != v,
            Test::StringContains(v) => s.contains(v.as_str()),
            Test::StringIn(values) => values.contains(s),
            Test::ListContains(v) => s == v,
            _ => false,
        }
    }

    /// Whether a row with this stored value passes.
    fn cell(&self, cell: Option<Cell<'_>>, strings: Option<&StringsView>) -> bool {
        let decode = |code: u32| strings.and_then(|d| d.get(code)).unwrap_or_default();
        match (self, cell) {
            (Test::Present, cell) => cell.is_some(),
            (Test::Missing, cell) => cell.is_none(),
            (_, None) => false,
            (_, Some(Cell::F64(x))) => self.number(x),
            (_, Some(Cell::I64(x))) => self.number(x as f64),
            (_, Some(Cell::Bool(b))) => self.boolean(b),
            (_, Some(Cell::Code(code))) => self.string(decode(code)),
            (_, Some(Cell::Codes(codes))) => codes.iter().any(|&code| self.string(decode(code))),
        }
    }
}

impl Filter {
    /// Checks every predicate against `snapshot`'s columns: the attribute
    /// must have a column, the op must apply to its kind and the value must
    /// be what the op needs there.
    pub fn compile(&self, snapshot: &CatalogSnapshot) -> Result<CompiledFilter, FilterError> {
        let predicates = self
            .predicates
            .iter()
            .enumerate()
            .map(|(index, predicate)| compile(index, predicate, snapshot))
            .collect::<Result<_, _>>()?;
        Ok(CompiledFilter { predicates })
    }
}

fn compile(index: usize, predicate: &Predicate, snapshot: &CatalogSnapshot) -> Result<Compiled, FilterError> {
    let Predicate { attribute, op, value } = predicate;
    if attribute.is_empty() {
        return Err(FilterError::EmptyAttribute { index });
    }
    let Some(column) = snapshot.column(attribute) else {
        let known: Vec<&str> = snapshot.attributes().collect();
        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        return Err(FilterError::UnknownAttribute { index, attribute: attribute.clone(), known });
    };
    let kind = column.kind;
    let family = kind.family();
    let wrong = |expected: &'static str| FilterError::WrongValue {
        index,
        attribute: attribute.clone(),
        op: *op,
        kind,
        expected,
        got: value.to_string(),
    };
    let test = match (family, op) {
        (_, Op::Present) => Test::Present,
        (_, Op::Missing) => Test::Missing,
        (Family::Number, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le) => {
            Test::Number(*op, value.as_f64().ok_or_else(|| wrong("a number"))?)
        }
        (Family::Number, Op::In) => {
            let numbers = array(value, Value::as_f64).ok_or_else(|| wrong(IN_NUMBERS))?;
            Test::NumberIn(numbers.into_iter().map(number_key).collect())
        }
        (Family::Bool, Op::Eq) => Test::BoolIs(value.as_bool().ok_or_else(|| wrong("true or false"))?),
        (Family::Bool, Op::Ne) => Test::BoolIs(!value.as_bool().ok_or_else(|| wrong("true or false"))?),
        (Family::Bool, Op::In) => Test::BoolIn(array(value, Value::as_bool).ok_or_else(|| wrong(IN_BOOLS))?),
        (Family::String, Op::Eq) => Test::StringEq(string(value).ok_or_else(|| wrong("a string"))?),
        (Family::String, Op::Ne) => Test::StringNe(string(value).ok_or_else(|| wrong("a string"))?),
        (Family::String, Op::Contains) => Test::StringContains(string(value).ok_or_else(|| wrong("a string"))?),
        (Family::StringList, Op::Contains) => Test::ListContains(string(value).ok_or_else(|| wrong("a string"))?),
        (Family::String, Op::In) => {
            Test::StringIn(array(value, string).ok_or_else(|| wrong(IN_STRINGS))?.into_iter().collect())
        }
        _ => return Err(not_for_kind(index, attribute, *op, kind)),
    };
    Ok(Compiled { attribute: Arc::clone(&column.name), family, test })
}

const IN_NUMBERS: &str = "a non-empty array of numbers";
const IN_BOOLS: &str = "a non-empty array of true / false";
const IN_STRINGS: &str = "a non-empty array of strings";

/// A number as a set key that agrees with `==` (0.0 and -0.0 are one key;
/// JSON has no NaN).
fn number_key(x: f64) -> u64 {
    if x == 0.0 { 0 } else { x.to_bits() }
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// The elements of a non-empty array, each converted; `None` if any is not.
fn array<T>(value: &Value, convert: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    let items = value.as_array().filter(|items| !items.is_empty())?;
    items.iter().map(convert).collect()
}

fn not_for_kind(index: usize, attribute: &str, op: Op, kind: Kind) -> FilterError {
    let ops = match kind.family() {
        Family::Number => "eq, ne, gt, ge, lt, le, in, present, missing",
        Family::Bool => "eq, ne, in, present, missing",
        Family::String => "eq, ne, in, contains (substring), present, missing",
        Family::StringList => "contains (an element equal to the value), present, missing",
    };
    FilterError::OpNotForKind { index, attribute: attribute.to_owned(), op, kind, ops }
}

impl CompiledFilter {
    /// The rows of `snapshot` that pass every predicate: bit r set when row r
    /// passes, one bit per row (the type retrieval's allow mask is). A
    /// column that `snapshot` lacks, or of another family (a snapshot of
    /// another catalog), reads as all missing, as boost reads an absent column.
    pub fn mask(&self, snapshot: &CatalogSnapshot) -> FixedBitSet {
        let mut mask = FixedBitSet::with_capacity(snapshot.rows());
        mask.insert_range(..);
        for predicate in &self.predicates {
            mask.intersect_with(&predicate.mask(snapshot));
        }
        mask
    }

    /// `old_mask` (this filter's mask of the version before) brought up to
    /// `snapshot` by re-evaluating only `touched_rows`, the rows the upserts
    /// between the two versions wrote. Rows past the row space are ignored.
    pub fn mask_after_upserts(
        &self,
        old_mask: &FixedBitSet,
        snapshot: &CatalogSnapshot,
        touched_rows: &[u32],
    ) -> FixedBitSet {
        let mut mask = old_mask.clone();
        mask.grow(snapshot.rows());
        let columns: Vec<Option<&Column>> = self.predicates.iter().map(|p| p.column(snapshot)).collect();
        for &row in touched_rows.iter().filter(|&&r| (r as usize) < snapshot.rows()) {
            let passes = self.predicates.iter().zip(&columns).all(|(predicate, column)| predicate.row(*column, row));
            mask.set(row as usize, passes);
        }
        mask
    }

    /// True for a filter without predicates (every row passes).
    pub fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }
}

impl Compiled {
    fn column<'a>(&self, snapshot: &'a CatalogSnapshot) -> Option<&'a Column> {
        snapshot.column(&self.attribute).filter(|c| c.kind.family() == self.family)
    }

    fn row(&self, column: Option<&Column>, row: u32) -> bool {
        match column {
            Some(column) => self.test.cell(column.get(row), column.dictionary.as_ref().map(|d| d.view())),
            None => self.test == Test::Missing,
        }
    }

    /// The rows passing this predicate, a chunk's 64-bit words at a time.
    fn mask(&self, snapshot: &CatalogSnapshot) -> FixedBitSet {
        let rows = snapshot.rows();
        let Some(column) = self.column(snapshot) else {
            let mut mask = FixedBitSet::with_capacity(rows);
            if self.test == Test::Missing {
                mask.insert_range(..);
            }
            return mask;
        };
        // Strings are tested once per dictionary entry, then looked up by code.
        let per_code: Vec<bool> = match (&self.test, &column.dictionary) {
            (Test::Present | Test::Missing, _) | (_, None) => Vec::new(),
            (test, Some(dictionary)) => dictionary.view().iter().map(|s| test.string(s)).collect(),
        };
        let passes_code = |code: u32| per_code.get(code as usize).copied().unwrap_or(false);
        let mut words: Vec<u64> = Vec::with_capacity(rows.div_ceil(64));
        for (c, chunk) in column.chunks.iter().enumerate() {
            // Rows past the row space are never present, so only `missing`
            // needs the limit.
            let limit = CHUNK_ROWS.min(rows - c * CHUNK_ROWS);
            let present = chunk.present;
            let passing = match (&self.test, &chunk.values) {
                (Test::Present, _) => present,
                (Test::Missing, _) => present.not_below(limit),
                (test, ChunkValues::F64(v)) => present.and(test.numbers(|i| v[i])),
                (test, ChunkValues::I64(v)) => present.and(test.numbers(|i| v[i] as f64)),
                (test, ChunkValues::Bool(v)) => present.and(Bits::from_fn(|i| test.boolean(v.contains(i)))),
                (_, ChunkValues::Code(v)) => present.and(Bits::from_fn(|i| passes_code(v[i]))),
                (_, ChunkValues::Codes { offsets, codes }) => present.and(Bits::from_fn(|i| {
                    codes[offsets[i] as usize..offsets[i + 1] as usize].iter().any(|&c| passes_code(c))
                })),
            };
            words.extend_from_slice(passing.words());
        }
        FixedBitSet::with_capacity_and_blocks(rows, blocks(words))
    }
}

/// 64-bit words as the bit set's blocks (`usize`: one block per word on
/// 64-bit targets, two, low half first, on 32-bit ones).
fn blocks(words: Vec<u64>) -> impl Iterator<Item = usize> {
    let per_word = (u64::BITS / usize::BITS) as usize;
    words.into_iter().flat_map(move |w| (0..per_word).map(move |k| (w >> (k as u32 * usize::BITS)) as usize))
}
