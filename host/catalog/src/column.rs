//! One attribute's values over the whole row space, in shared chunks.

use std::sync::Arc;

use serde_json::Value;

use crate::chunk::{CHUNK_ROWS, Cell, Chunk, locate};
use crate::chunk_list::ChunkList;
use crate::dictionary::Dictionary;
use crate::kind::{Family, Kind};

/// One attribute column of a snapshot version.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    pub(crate) chunks: ChunkList,
    /// The strings of a string or string list column.
    pub(crate) dictionary: Option<Dictionary>,
    /// Rows with a value.
    pub(crate) present: u64,
    /// Rows whose value did not fit the kind.
    pub(crate) mismatched: u64,
}

/// A JSON value turned into what the column stores.
pub(crate) struct Prepared {
    /// The column must widen from i64 to f64 before storing.
    widen: bool,
    cell: Option<PreparedCell>,
    mismatched: bool,
}

/// [`Cell`] with its own list of codes (the value is prepared before the
/// column is borrowed mutably).
enum PreparedCell {
    Scalar(Cell<'static>),
    Codes(Vec<u32>),
}

impl PreparedCell {
    fn cell(&self) -> Cell<'_> {
        match self {
            PreparedCell::Scalar(cell) => *cell,
            PreparedCell::Codes(codes) => Cell::Codes(codes),
        }
    }
}

impl Column {
    /// A column of `kind` over `rows` rows, all missing: every chunk is the
    /// same shared empty chunk until a row is written.
    pub(crate) fn new(name: &str, kind: Kind, rows: usize) -> Column {
        let dictionary = matches!(kind, Kind::String | Kind::StringList).then(Dictionary::default);
        Column {
            name: Arc::from(name),
            kind,
            chunks: ChunkList::filled(Chunk::missing(kind), rows.div_ceil(CHUNK_ROWS)),
            dictionary,
            present: 0,
            mismatched: 0,
        }
    }

    /// Row `row`'s stored value (`row` must be in the row space).
    pub(crate) fn get(&self, row: u32) -> Option<Cell<'_>> {
        let (c, i) = locate(row);
        self.chunks.get(c).get(i)
    }

    /// What writing `value` (`None` or null: no value) would store. Strings
    /// are interned here: a new string gets its code even if the write is
    /// then skipped, which the append-only dictionary allows.
    pub(crate) fn prepare(&self, value: Option<&Value>) -> Prepared {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Prepared { widen: false, cell: None, mismatched: false };
        };
        let scalar = |cell| Prepared { widen: false, cell: Some(PreparedCell::Scalar(cell)), mismatched: false };
        let mismatch = Prepared { widen: false, cell: None, mismatched: true };
        match (self.kind.family(), value) {
            (Family::Number, Value::Number(n)) => match (self.kind, n.as_i64(), n.as_f64()) {
                (Kind::I64, Some(i), _) => scalar(Cell::I64(i)),
                (Kind::I64, None, Some(f)) => {
                    Prepared { widen: true, cell: Some(PreparedCell::Scalar(Cell::F64(f))), mismatched: false }
                }
                (_, _, Some(f)) => scalar(Cell::F64(f)),
                // Only serde_json's arbitrary precision numbers lack an f64.
                (_, _, None) => mismatch,
            },
            (Family::Bool, Value::Bool(b)) => scalar(Cell::Bool(*b)),
            (Family::String, Value::String(s)) => match &self.dictionary {
                Some(dictionary) => scalar(Cell::Code(dictionary.code(s))),
                None => mismatch,
            },
            (Family::StringList, Value::Array(items)) => match &self.dictionary {
                Some(dictionary) => {
                    let codes: Vec<u32> = items.iter().filter_map(Value::as_str).map(|s| dictionary.code(s)).collect();
                    let dropped = codes.len() != items.len();
                    Prepared { widen: false, cell: Some(PreparedCell::Codes(codes)), mismatched: dropped }
                }
                None => mismatch,
            },
            _ => mismatch,
        }
    }

    /// Whether storing `prepared` at `row` would change nothing.
    pub(crate) fn holds(&self, row: u32, prepared: &Prepared) -> bool {
        let (c, i) = locate(row);
        !prepared.widen
            && self.chunks.get(c).holds(i, prepared.cell.as_ref().map(PreparedCell::cell).as_ref(), prepared.mismatched)
    }

    /// Stores `prepared` at `row`, copying the row's chunk if another
    /// version shares it.
    pub(crate) fn store(&mut self, row: u32, prepared: &Prepared) {
        if prepared.widen {
            self.widen();
        }
        let (c, i) = locate(row);
        let chunk = self.chunks.get(c);
        let (was_present, was_mismatched) = (chunk.present.contains(i), chunk.mismatched.contains(i));
        let cell = prepared.cell.as_ref().map(PreparedCell::cell);
        let chunk = self.chunks.make_mut(c);
        chunk.set(i, cell, prepared.mismatched);
        let (is_present, is_mismatched) = (chunk.present.contains(i), chunk.mismatched.contains(i));
        self.present = self.present + u64::from(is_present) - u64::from(was_present);
        self.mismatched = self.mismatched + u64::from(is_mismatched) - u64::from(was_mismatched);
    }

    /// Turns an i64 column into f64, every chunk converted once (chunks that
    /// several positions share stay shared).
    fn widen(&mut self) {
        if self.kind != Kind::I64 {
            return;
        }
        self.chunks = self.chunks.map(Chunk::widened);
        self.kind = Kind::F64;
    }

    /// Makes the column readable after a batch of writes: its dictionary view
    /// covers every code written.
    pub(crate) fn finish(&mut self) {
        if let Some(dictionary) = &mut self.dictionary {
            dictionary.refresh();
        }
    }

    /// Frees spare capacity of the chunks no other version shares (after a
    /// build, where every written chunk is this version's own).
    pub(crate) fn shrink(&mut self) {
        self.chunks.for_each_unique(Chunk::shrink);
    }

    /// Row `row`'s value as JSON (string lists without the elements that were
    /// dropped for not being strings).
    pub(crate) fn json(&self, row: u32) -> Option<Value> {
        let decode = |code: u32| {
            let s = self.dictionary.as_ref().and_then(|d| d.view().get(code)).unwrap_or_default();
            Value::String(s.to_owned())
        };
        Some(match self.get(row)? {
            Cell::F64(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
            Cell::I64(x) => Value::from(x),
            Cell::Bool(x) => Value::Bool(x),
            Cell::Code(code) => decode(code),
            Cell::Codes(codes) => Value::Array(codes.iter().map(|&c| decode(c)).collect()),
        })
    }
}
