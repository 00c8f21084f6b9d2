//! Fixed-size row chunks of one column: the unit an upsert copies.
//!
//! A column is a list of `Arc<Chunk>`, chunk c holding rows
//! `c * CHUNK_ROWS ..`. A new version clones the list of pointers and copies
//! only the chunks whose rows change (`Arc::make_mut`); every other chunk,
//! and every all-missing chunk of a sparse column, stays shared.

use crate::kind::Kind;

/// log2 of [`CHUNK_ROWS`].
pub(crate) const CHUNK_SHIFT: u32 = 8;
/// Rows per chunk: small enough that an upserted item copies 2 KiB of an
/// f64 column and that 1,000 upserts scattered over a million rows copy about
/// a fifth of the chunks (1 - e^(-1000 * 256 / 10^6)), large enough that the chunk list and per-chunk headers stay under a byte
/// per row (docs/perf/catalog.md has the measured trade-off against 1024).
pub(crate) const CHUNK_ROWS: usize = 1 << CHUNK_SHIFT;

/// One bit per row of a chunk, inline (a chunk's presence bits sit in the
/// same allocation as its header: one cache miss fewer per scattered read,
/// one allocation fewer per copied chunk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bits([u64; CHUNK_ROWS / 64]);

impl Bits {
    /// Whether bit `i` is set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Sets bit `i` to `on`.
    pub(crate) fn set(&mut self, i: usize, on: bool) {
        let bit = 1u64 << (i % 64);
        if on {
            self.0[i / 64] |= bit;
        } else {
            self.0[i / 64] &= !bit;
        }
    }

    /// The bits `passes(i)` sets, for every row of a chunk.
    pub(crate) fn from_fn(passes: impl Fn(usize) -> bool) -> Bits {
        let mut bits = Bits::default();
        for (w, word) in bits.0.iter_mut().enumerate() {
            *word = (0..64).fold(0u64, |acc, b| acc | (u64::from(passes(w * 64 + b)) << b));
        }
        bits
    }

    /// The bits set in both.
    pub(crate) fn and(self, other: Bits) -> Bits {
        Bits(std::array::from_fn(|w| self.0[w] & other.0[w]))
    }

    /// The bits below `limit` that are not set.
    pub(crate) fn not_below(self, limit: usize) -> Bits {
        Bits(std::array::from_fn(|w| {
            let below = match limit.saturating_sub(w * 64) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
            !self.0[w] & below
        }))
    }

    /// The 64-bit words, row 0 in bit 0 of the first.
    pub(crate) fn words(&self) -> &[u64] {
        &self.0
    }

    /// The set bits, ascending (the tests' view; the code reads words).
    #[cfg(test)]
    pub(crate) fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

/// The chunk holding `row`, and the row's place in it.
pub(crate) fn locate(row: u32) -> (usize, usize) {
    (row as usize >> CHUNK_SHIFT, row as usize & (CHUNK_ROWS - 1))
}

/// One row's value, as stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A string's dictionary code.
    Code(u32),
    /// A string list's dictionary codes.
    Codes(&'a [u32]),
}

impl Cell<'_> {
    /// Equality that tells 0.0 from -0.0 (what a reader would see differs).
    fn same(&self, other: &Cell<'_>) -> bool {
        match (self, other) {
            (Cell::F64(a), Cell::F64(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
}

/// The values of one chunk; a missing row holds the kind's zero.
#[derive(Clone, Debug)]
pub(crate) enum ChunkValues {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Bits),
    Code(Vec<u32>),
    /// Row i's codes are `codes[offsets[i]..offsets[i + 1]]`.
    Codes {
        offsets: Vec<u32>,
        codes: Vec<u32>,
    },
}

/// [`CHUNK_ROWS`] rows of one column.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub(crate) present: Bits,
    /// Rows whose JSON value did not fit the column's kind: stored as
    /// missing, or (string lists) without their non-string elements.
    pub(crate) mismatched: Bits,
    pub(crate) values: ChunkValues,
}

impl Chunk {
    /// A chunk with every row missing.
    pub(crate) fn missing(kind: Kind) -> Chunk {
        let values = match kind {
            Kind::F64 => ChunkValues::F64(vec![0.0; CHUNK_ROWS]),
            Kind::I64 => ChunkValues::I64(vec![0; CHUNK_ROWS]),
            Kind::Bool => ChunkValues::Bool(Bits::default()),
            Kind::String => ChunkValues::Code(vec![0; CHUNK_ROWS]),
            Kind::StringList => ChunkValues::Codes { offsets: vec![0; CHUNK_ROWS + 1], codes: Vec::new() },
        };
        Chunk { present: Bits::default(), mismatched: Bits::default(), values }
    }

    /// Row `i`'s value, `None` when missing.
    pub(crate) fn get(&self, i: usize) -> Option<Cell<'_>> {
        if !self.present.contains(i) {
            return None;
        }
        Some(match &self.values {
            ChunkValues::F64(v) => Cell::F64(v[i]),
            ChunkValues::I64(v) => Cell::I64(v[i]),
            ChunkValues::Bool(v) => Cell::Bool(v.contains(i)),
            ChunkValues::Code(v) => Cell::Code(v[i]),
            ChunkValues::Codes { offsets, codes } => Cell::Codes(&codes[offsets[i] as usize..offsets[i + 1] as usize]),
        })
    }

    /// Whether row `i` already holds `cell` and mismatch flag (so that writing
    /// it can be skipped and the chunk stays shared).
    pub(crate) fn holds(&self, i: usize, cell: Option<&Cell<'_>>, mismatched: bool) -> bool {
        if self.mismatched.contains(i) != mismatched {
            return false;
        }
        match (self.get(i), cell) {
            (None, None) => true,
            (Some(have), Some(want)) => have.same(want),
            _ => false,
        }
    }

    /// Writes row `i`. The cell must be of the chunk's kind (the column
    /// converts values before writing); a cell of another kind is stored as
    /// missing rather than trusted.
    pub(crate) fn set(&mut self, i: usize, cell: Option<Cell<'_>>, mismatched: bool) {
        self.mismatched.set(i, mismatched);
        let stored = match (&mut self.values, cell) {
            (ChunkValues::F64(v), Some(Cell::F64(x))) => {
                v[i] = x;
                true
            }
            (ChunkValues::I64(v), Some(Cell::I64(x))) => {
                v[i] = x;
                true
            }
            (ChunkValues::Bool(v), Some(Cell::Bool(x))) => {
                v.set(i, x);
                true
            }
            (ChunkValues::Code(v), Some(Cell::Code(x))) => {
                v[i] = x;
                true
            }
            (ChunkValues::Codes { offsets, codes }, Some(Cell::Codes(x))) => {
                splice(offsets, codes, i, x);
                true
            }
            (values, _) => {
                clear(values, i);
                false
            }
        };
        self.present.set(i, stored);
    }

    /// The chunk with integers turned into floats (the column widening).
    pub(crate) fn widened(&self) -> Chunk {
        let values = match &self.values {
            ChunkValues::I64(v) => ChunkValues::F64(v.iter().map(|&x| x as f64).collect()),
            other => other.clone(),
        };
        Chunk { present: self.present, mismatched: self.mismatched, values }
    }

    /// Frees a string list chunk's spare code capacity (a build appends row
    /// by row and leaves up to half of it unused).
    pub(crate) fn shrink(&mut self) {
        if let ChunkValues::Codes { codes, .. } = &mut self.values {
            codes.shrink_to_fit();
        }
    }

    /// Heap and inline bytes of the chunk, its `Arc` header included.
    pub(crate) fn bytes(&self) -> usize {
        let values = match &self.values {
            ChunkValues::F64(v) => v.capacity() * size_of::<f64>(),
            ChunkValues::I64(v) => v.capacity() * size_of::<i64>(),
            ChunkValues::Bool(_) => 0,
            ChunkValues::Code(v) => v.capacity() * size_of::<u32>(),
            ChunkValues::Codes { offsets, codes } => (offsets.capacity() + codes.capacity()) * size_of::<u32>(),
        };
        size_of::<Chunk>() + 2 * size_of::<usize>() + values
    }
}

/// Row `i`'s value reset to the kind's zero (a missing string list row holds
/// no codes, so that gathers copy nothing for it).
fn clear(values: &mut ChunkValues, i: usize) {
    match values {
        ChunkValues::F64(v) => v[i] = 0.0,
        ChunkValues::I64(v) => v[i] = 0,
        ChunkValues::Bool(v) => v.set(i, false),
        ChunkValues::Code(v) => v[i] = 0,
        ChunkValues::Codes { offsets, codes } => splice(offsets, codes, i, &[]),
    }
}

/// Replaces row `i`'s codes, moving the rows after it.
fn splice(offsets: &mut [u32], codes: &mut Vec<u32>, i: usize, new: &[u32]) {
    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
    codes.splice(start..end, new.iter().copied());
    let delta = new.len() as i64 - (end - start) as i64;
    if delta != 0 {
        for offset in &mut offsets[i + 1..] {
            *offset = (*offset as i64 + delta) as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_set_clear_and_list_in_order() {
        let mut bits = Bits::default();
        for i in [0, 1, 63, 64, 130, CHUNK_ROWS - 1] {
            bits.set(i, true);
        }
        bits.set(1, false);
        bits.set(2, false);
        assert_eq!(bits.ones().collect::<Vec<_>>(), [0, 63, 64, 130, CHUNK_ROWS - 1]);
        assert!(bits.contains(64) && !bits.contains(1) && !bits.contains(65));
        let even = Bits::from_fn(|i| i % 2 == 0);
        assert_eq!(even.and(bits).ones().collect::<Vec<_>>(), [0, 64, 130]);
        assert_eq!(bits.not_below(66).ones().collect::<Vec<_>>(), (1..63).chain([65]).collect::<Vec<_>>());
        assert_eq!(bits.not_below(0), Bits::default());
        assert_eq!(Bits::default().not_below(CHUNK_ROWS).ones().count(), CHUNK_ROWS);
        assert_eq!(even.words()[1], 0x5555_5555_5555_5555);
    }

    #[test]
    fn list_rows_move_when_one_grows_or_shrinks() {
        let mut chunk = Chunk::missing(Kind::StringList);
        chunk.set(3, Some(Cell::Codes(&[1, 2])), false);
        chunk.set(5, Some(Cell::Codes(&[7])), false);
        chunk.set(3, Some(Cell::Codes(&[4, 5, 6])), false);
        assert_eq!(chunk.get(3), Some(Cell::Codes(&[4, 5, 6])));
        assert_eq!(chunk.get(5), Some(Cell::Codes(&[7])));
        chunk.set(3, None, false);
        assert_eq!(chunk.get(3), None);
        assert_eq!(chunk.get(4), None);
        assert_eq!(chunk.get(5), Some(Cell::Codes(&[7])));
        chunk.set(4, Some(Cell::Codes(&[])), false);
        assert_eq!(chunk.get(4), Some(Cell::Codes(&[])));
        assert_eq!(chunk.get(5), Some(Cell::Codes(&[7])));
        let ChunkValues::Codes { offsets, codes } = &chunk.values else { unreachable!() };
        assert_eq!(codes, &[7]);
        assert_eq!(offsets[CHUNK_ROWS], 1);
    }

    #[test]
    fn a_cell_of_another_kind_is_stored_as_missing() {
        let mut chunk = Chunk::missing(Kind::I64);
        chunk.set(0, Some(Cell::I64(4)), false);
        chunk.set(0, Some(Cell::Bool(true)), true);
        assert_eq!(chunk.get(0), None);
        assert!(chunk.holds(0, None, true));
        assert!(!chunk.holds(0, None, false));
        assert!(!Chunk::missing(Kind::F64).holds(0, Some(&Cell::F64(0.0)), false));
        let mut floats = Chunk::missing(Kind::F64);
        floats.set(1, Some(Cell::F64(0.0)), false);
        assert!(!floats.holds(1, Some(&Cell::F64(-0.0)), false));
        assert!(floats.holds(1, Some(&Cell::F64(0.0)), false));
    }
}
