//! Exact cosine top-k from a quantised copy of the item table.
//!
//! [`QuantizedTable`] keeps every row as int8 codes of the row divided by
//! its norm (one f32 scale per row) plus, table-wide, the bound terms of
//! `bound.rs`. [`QuantizedTable::top_k`] scans the codes (a quarter of the
//! f32 table's bytes) for a batch of queries in one pass, keeps every row
//! whose score *may* reach the k-th best, and re-ranks those rows with the
//! exact path's own f32 cosine ([`crate::score::top_k`]'s arithmetic): the
//! result is the f32 scan's result, scores and tie order included, always.
//! Why that holds is in the crate README ("Exact retrieval from a quantised
//! table").
//!
//! [`AnnIndex`] (ann.rs) answers the same calls approximately from an HNSW
//! graph, for catalogs where a full scan costs too much; its scores are the
//! exact path's, only rows the graph misses differ.

mod ann;
mod bound;
mod scan;
mod select;

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::model::Model;
use crate::model::item_norm;
use crate::score::{Scored, better, cosine};
pub use ann::{AnnIndex, AnnOptions, AnnStorage};
pub(crate) use bound::QueryCodes;
use bound::{RowBound, TableBound, quantize_query, quantize_row};
use scan::{BLOCK_ROWS, Line, ScanPath, ZERO_LINE, block_masks, scan_path};
use select::Selection;

/// A set of table rows (bit r = row r): the rows a query may return.
/// Rows at or past the mask's length are not allowed.
pub type RowMask = fixedbitset::FixedBitSet;

/// A table as the CUDA backend uploads it (see [`QuantizedTable::device_table`]).
pub(crate) struct DeviceTable {
    /// `groups` lines per block of 16 rows, 16 words per line.
    pub words: Vec<u32>,
    /// One per row slot (blocks × 16); NaN: not scanned.
    pub scales: Vec<f32>,
}

/// Blocks of 16 rows scanned per parallel task: enough that a task outweighs
/// its scheduling and its selection buffers, few enough that every core gets
/// several tasks on a catalog of 10⁵ rows.
const BLOCKS_PER_TASK: usize = 512;
/// Blocks in a run that the scan skips when none of its rows is live
/// (a multiple of [`SHARE_EVERY`] and a divisor of [`BLOCKS_PER_TASK`]).
const SKIP_SPAN: usize = 16;
/// Blocks between two reads of the thresholds other tasks shared.
const SHARE_EVERY: usize = 16;
/// Queries that share one pass over a block's lines in the kernel.
const QUERIES_PER_PASS: usize = 4;

/// Why a retrieval call or a table update was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetrievalError {
    /// A vector's length is not the table's dimension.
    #[error("a vector has {got} values but the table's dimension is {dim}: pass one value per dimension")]
    Dimension {
        /// The table's dimension.
        dim: usize,
        /// The vector's length.
        got: usize,
    },
    /// The f32 rows passed to a call are not the table's shape.
    #[error(
        "the f32 rows hold {got} values but the table has {rows} rows of {dim}: pass the matrix the table was built from"
    )]
    Rows {
        /// Rows in the table.
        rows: usize,
        /// The table's dimension.
        dim: usize,
        /// Values passed.
        got: usize,
    },
    /// A row index past the end of the table (or past u32).
    #[error("row {row} is out of range: the table has {rows} rows (set_row may append row {rows})")]
    RowOutOfRange {
        /// The index given.
        row: usize,
        /// Rows in the table.
        rows: usize,
    },
    /// The exclusion lists do not match the queries.
    #[error("{lists} exclusion lists for {queries} queries: pass none or one per query")]
    ExclusionCount {
        /// Lists passed.
        lists: usize,
        /// Queries passed.
        queries: usize,
    },
    /// The dimension is zero.
    #[error("a table needs a dimension of at least 1")]
    ZeroDimension,
    /// The ANN index (usearch) refused an operation.
    #[error("could not {action} the ANN index: {reason}")]
    Index {
        /// What was asked of the index ("load", "add a row to", ...).
        action: &'static str,
        /// What the index or the file system said.
        reason: String,
    },
}

/// The quantised copy of an item table that [`QuantizedTable::top_k`] scans.
///
/// Rows are numbered from 0; a table built by [`QuantizedTable::from_model`]
/// numbers them by item id (row 0, the padding row, removed). The table does
/// not keep the f32 rows: every query call takes them, and they must be the
/// rows the table was built from and updated with.
pub struct QuantizedTable {
    dim: usize,
    groups: usize,
    rows: usize,
    /// `groups` lines per block of 16 rows.
    lines: Vec<Line>,
    /// One scale per row slot (blocks × 16).
    scales: Vec<f32>,
    /// The exact path's f32 norm of every row.
    norms: Vec<f32>,
    /// Rows the scan considers: present and inside the bound's domain.
    scanned: RowMask,
    /// Present rows outside the bound's domain, sorted: always re-ranked.
    unbounded: Vec<u32>,
    bound: TableBound,
}

impl QuantizedTable {
    /// An empty table of dimension `dim`.
    pub fn empty(dim: usize) -> Result<Self, RetrievalError> {
        if dim == 0 {
            return Err(RetrievalError::ZeroDimension);
        }
        Ok(QuantizedTable {
            dim,
            groups: dim.div_ceil(4),
            rows: 0,
            lines: Vec::new(),
            scales: Vec::new(),
            norms: Vec::new(),
            scanned: RowMask::new(),
            unbounded: Vec::new(),
            bound: TableBound::default(),
        })
    }

    /// A table of the row-major matrix `rows` (`rows.len() / dim` rows, all present).
    pub fn new(dim: usize, rows: &[f32]) -> Result<Self, RetrievalError> {
        let mut table = QuantizedTable::empty(dim)?;
        if !rows.len().is_multiple_of(dim) {
            return Err(RetrievalError::Dimension { dim, got: rows.len() % dim });
        }
        let n = rows.len() / dim;
        if u32::try_from(n).is_err() {
            return Err(RetrievalError::RowOutOfRange { row: n, rows: u32::MAX as usize });
        }
        table.grow_to(n);
        let groups = table.groups;
        let blocks: Vec<EncodedBlock> = rows
            .par_chunks(dim * BLOCK_ROWS)
            .map(|block| {
                let mut encoded = EncodedBlock {
                    lines: vec![ZERO_LINE; groups],
                    scales: [0.0; BLOCK_ROWS],
                    norms: Vec::with_capacity(BLOCK_ROWS),
                    bounds: Vec::with_capacity(BLOCK_ROWS),
                };
                for (r, x) in block.chunks_exact(dim).enumerate() {
                    let (norm, scale, bound) = encode_row(x, r, &mut encoded.lines);
                    encoded.scales[r] = scale;
                    encoded.norms.push(norm);
                    encoded.bounds.push(bound);
                }
                encoded
            })
            .collect();
        for (b, block) in blocks.into_iter().enumerate() {
            table.lines[b * groups..(b + 1) * groups].copy_from_slice(&block.lines);
            table.scales[b * BLOCK_ROWS..(b + 1) * BLOCK_ROWS].copy_from_slice(&block.scales);
            let first = b * BLOCK_ROWS;
            table.norms[first..first + block.norms.len()].copy_from_slice(&block.norms);
            for (r, bound) in block.bounds.into_iter().enumerate() {
                table.apply(first + r, bound);
            }
        }
        table.unbounded.sort_unstable();
        Ok(table)
    }

    /// The table of a model's item embeddings, row = item id, row 0 (the
    /// padding row) removed: `top_k(&model.weights.item_emb, …)` then answers
    /// exactly as [`crate::score::top_k`] does.
    pub fn from_model(model: &Model) -> Self {
        let d = model.config.d_model;
        let mut table =
            QuantizedTable::new(d, &model.weights.item_emb).expect("a loaded model's table has V+1 rows of D");
        table.remove_row(0);
        table
    }

    /// The dimension of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row slots (present or removed).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the table has no row slots.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether `row` is present (may be returned by a query).
    pub fn contains(&self, row: usize) -> bool {
        self.scanned.contains(row) || self.unbounded.binary_search(&(row as u32)).is_ok()
    }

    /// Bytes a scan reads (codes and scales): what `bench kernels` divides by time.
    pub fn scan_bytes(&self) -> usize {
        self.lines.len() * size_of::<Line>() + self.scales.len() * size_of::<f32>()
    }

    /// Bytes held by the table.
    pub fn size_bytes(&self) -> usize {
        self.scan_bytes() + self.norms.len() * 4 + self.scanned.as_slice().len() * 8 + self.unbounded.len() * 4
    }

    /// Sets row `row` to `values` (re-quantised) and marks it present;
    /// `row == len()` appends. The caller updates its f32 matrix alike.
    pub fn set_row(&mut self, row: usize, values: &[f32]) -> Result<(), RetrievalError> {
        if values.len() != self.dim {
            return Err(RetrievalError::Dimension { dim: self.dim, got: values.len() });
        }
        if row > self.rows || u32::try_from(row).is_err() {
            return Err(RetrievalError::RowOutOfRange { row, rows: self.rows });
        }
        if row == self.rows {
            self.grow_to(row + 1);
        }
        let b = row / BLOCK_ROWS;
        let r = row % BLOCK_ROWS;
        let (norm, scale, state) = encode_row(values, r, &mut self.lines[b * self.groups..(b + 1) * self.groups]);
        self.scales[row] = scale;
        self.norms[row] = norm;
        self.remove_row(row);
        self.apply(row, state);
        if state.is_none() {
            self.unbounded.sort_unstable();
        }
        Ok(())
    }

    /// Marks `row` absent: no query returns it until [`QuantizedTable::set_row`]
    /// sets it again. Rows out of range are ignored.
    pub fn remove_row(&mut self, row: usize) {
        if row < self.rows {
            self.scanned.set(row, false);
            if let Ok(i) = self.unbounded.binary_search(&(row as u32)) {
                self.unbounded.remove(i);
            }
        }
    }

    fn grow_to(&mut self, rows: usize) {
        let slots = rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
        self.lines.resize(slots / BLOCK_ROWS * self.groups, ZERO_LINE);
        self.scales.resize(slots, 0.0);
        self.norms.resize(rows, 0.0);
        self.scanned.grow(slots);
        self.rows = rows;
    }

    /// Marks a freshly encoded row present: scanned when bounded, always
    /// re-ranked otherwise.
    fn apply(&mut self, row: usize, state: Option<RowBound>) {
        match state {
            Some(b) => {
                self.bound.include(&b);
                self.scanned.insert(row);
            }
            None => self.unbounded.push(row as u32),
        }
    }

    /// The exact cosine top-k of every query: for query i, the `k` present
    /// rows with the highest `dot(q, x) / max(‖x‖, 1e-6)` as the f32 scan
    /// computes it, best first, ties by the smaller row, rows in
    /// `exclude[i]` skipped (`exclude` is empty or one list per query), and
    /// only rows in `allow` when given. Fewer than `k` when fewer rows pass.
    ///
    /// All queries share one pass over the table. `rows` must be the f32
    /// matrix the table was built from and kept in step with.
    pub fn top_k(
        &self,
        rows: &[f32],
        queries: &[&[f32]],
        k: usize,
        exclude: &[&[u32]],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Vec<Scored>>, RetrievalError> {
        if rows.len() != self.rows * self.dim {
            return Err(RetrievalError::Rows { rows: self.rows, dim: self.dim, got: rows.len() });
        }
        if let Some(q) = queries.iter().find(|q| q.len() != self.dim) {
            return Err(RetrievalError::Dimension { dim: self.dim, got: q.len() });
        }
        if !exclude.is_empty() && exclude.len() != queries.len() {
            return Err(RetrievalError::ExclusionCount { lists: exclude.len(), queries: queries.len() });
        }
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let excluded: Vec<Vec<u32>> = (0..queries.len())
            .map(|i| {
                let mut e = exclude.get(i).map_or_else(Vec::new, |e| e.to_vec());
                e.sort_unstable();
                e
            })
            .collect();
        let codes: Vec<Option<QueryCodes>> =
            queries.iter().map(|q| quantize_query(q, self.groups, &self.bound)).collect();
        let scanned: Vec<usize> = (0..queries.len()).filter(|&i| codes[i].is_some()).collect();
        let lanes: Vec<Lane<'_>> = scanned
            .iter()
            .map(|&i| Lane { codes: codes[i].as_ref().expect("filtered above"), excluded: &excluded[i] })
            .collect();
        let mut candidates = self.scan(&lanes, k, allow);
        let mut results: Vec<Vec<Scored>> = vec![Vec::new(); queries.len()];
        let mut per_query: Vec<(usize, Option<Vec<select::Candidate>>)> =
            (0..queries.len()).map(|i| (i, None)).collect();
        for (&i, c) in scanned.iter().zip(candidates.drain(..)) {
            per_query[i].1 = Some(c);
        }
        per_query
            .into_par_iter()
            .map(|(i, cands)| {
                let cands = cands.as_ref().map(|c| c.iter().map(|c| c.row));
                (i, self.rerank(rows, queries[i], cands, &excluded[i], allow, k))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .for_each(|(i, r)| results[i] = r);
        Ok(results)
    }

    /// The exact top-k of one query from a candidate set: `candidates` (rows
    /// whose approximation may reach the k-th best; eligible already) plus
    /// every eligible row outside the bound's domain, scored with the exact
    /// path's f32 cosine; `None`: every eligible row (the query is outside
    /// the bound's domain). Eligible: present, allowed, not in `excluded`
    /// (sorted). Shared by [`QuantizedTable::top_k`] and the CUDA backend's
    /// batched top-k, whose device computes the candidates.
    pub(crate) fn rerank(
        &self,
        rows: &[f32],
        query: &[f32],
        candidates: Option<impl Iterator<Item = u32>>,
        excluded: &[u32],
        allow: Option<&RowMask>,
        k: usize,
    ) -> Vec<Scored> {
        let eligible =
            |row: u32| allow.is_none_or(|m| m.contains(row as usize)) && excluded.binary_search(&row).is_err();
        let mut scored: Vec<Scored> = match candidates {
            Some(cands) => cands
                .chain(self.unbounded.iter().copied().filter(|&r| eligible(r)))
                .map(|row| self.exact(rows, query, row))
                .collect(),
            None => (0..self.rows as u32)
                .filter(|&r| self.contains(r as usize) && eligible(r))
                .map(|row| self.exact(rows, query, row))
                .collect(),
        };
        best_k(&mut scored, k)
    }

    /// What the CUDA backend's batched top-k scans (kernels/src/cuda/topk.rs):
    /// the codes as the `Line` words (16 per line: word r = row r's four
    /// codes; ceil(dim / 4) lines per block of 16 rows), and one scale per
    /// row slot, NaN where the scan must not consider the row (absent, or
    /// outside the bound's domain: re-ranked always by
    /// [`QuantizedTable::rerank`]).
    pub(crate) fn device_table(&self) -> DeviceTable {
        let words = self
            .lines
            .iter()
            .flat_map(|line| line.0.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        let scales =
            self.scales.iter().enumerate().map(|(r, &s)| if self.scanned.contains(r) { s } else { f32::NAN }).collect();
        DeviceTable { words, scales }
    }

    /// A query quantised for the scan, or `None` where the bound does not
    /// apply (then every eligible row is re-ranked). The device quantises
    /// its queries itself; its test compares with this.
    #[cfg(test)]
    pub(crate) fn quantize_query(&self, query: &[f32]) -> Option<QueryCodes> {
        quantize_query(query, self.groups, &self.bound)
    }

    /// The table-wide terms and constants of [`QuantizedTable::quantize_query`]
    /// for `dim`-value queries, for a device that quantises queries itself
    /// (see [`bound::QUERY_BOUND_TERMS`]).
    pub(crate) fn query_bound_terms(&self) -> [f64; bound::QUERY_BOUND_TERMS] {
        bound::query_bound_terms(&self.bound, self.dim)
    }

    /// Rows of block `b` that the scan may return under `allow`.
    #[inline]
    fn live_bits(&self, b: usize, allow: Option<&RowMask>) -> u16 {
        mask_bits(&self.scanned, b) & allow.map_or(u16::MAX, |m| mask_bits(m, b))
    }

    fn exact(&self, rows: &[f32], query: &[f32], row: u32) -> Scored {
        let r = row as usize;
        Scored { item: row, score: cosine(query, &rows[r * self.dim..(r + 1) * self.dim], self.norms[r]) }
    }

    /// One pass over the blocks for all lanes, in parallel over block ranges;
    /// per lane, the merged candidates.
    fn scan(&self, lanes: &[Lane<'_>], k: usize, allow: Option<&RowMask>) -> Vec<Vec<select::Candidate>> {
        if lanes.is_empty() {
            return Vec::new();
        }
        let path = scan_path();
        let blocks = self.scales.len() / BLOCK_ROWS;
        // Each lane's best threshold so far across all tasks: a task that
        // starts late begins where the others got to instead of at −∞.
        let shared: Vec<SharedThreshold> = lanes.iter().map(|_| SharedThreshold::new()).collect();
        let parts: Vec<Vec<Selection>> = (0..blocks.div_ceil(BLOCKS_PER_TASK))
            .into_par_iter()
            .map(|task| {
                let first = task * BLOCKS_PER_TASK;
                let end = (first + BLOCKS_PER_TASK).min(blocks);
                let mut sels: Vec<Selection> = lanes.iter().map(|l| Selection::new(k, l.codes.twice_bound)).collect();
                let mut b = first;
                while b < end {
                    // Skip only whole runs of blocks with no live row: skipping
                    // single blocks of a scattered mask breaks the hardware
                    // prefetcher's stream (measured: 3.5× slower at 10 % allowed).
                    if b.is_multiple_of(SKIP_SPAN)
                        && (b..(b + SKIP_SPAN).min(end)).all(|s| self.live_bits(s, allow) == 0)
                    {
                        b += SKIP_SPAN;
                        continue;
                    }
                    let live = self.live_bits(b, allow);
                    if b.is_multiple_of(SHARE_EVERY) {
                        for (sel, shared) in sels.iter_mut().zip(&shared) {
                            sel.raise(shared.get());
                        }
                    }
                    let lines = &self.lines[b * self.groups..(b + 1) * self.groups];
                    let scales: &[f32; BLOCK_ROWS] =
                        self.scales[b * BLOCK_ROWS..(b + 1) * BLOCK_ROWS].try_into().expect("16 scales per block");
                    let chunks = lanes.chunks(QUERIES_PER_PASS).zip(sels.chunks_mut(QUERIES_PER_PASS));
                    for (c, (chunk, sel)) in chunks.enumerate() {
                        let raised = match chunk.len() {
                            4 => pass::<4>(path, lines, scales, b, live, chunk, sel),
                            3 => pass::<3>(path, lines, scales, b, live, chunk, sel),
                            2 => pass::<2>(path, lines, scales, b, live, chunk, sel),
                            _ => pass::<1>(path, lines, scales, b, live, chunk, sel),
                        };
                        if raised {
                            for (i, sel) in sel.iter().enumerate() {
                                shared[c * QUERIES_PER_PASS + i].raise(sel.threshold());
                            }
                        }
                    }
                    b += 1;
                }
                sels
            })
            .collect();
        let mut per_lane: Vec<Vec<Selection>> = lanes.iter().map(|_| Vec::with_capacity(parts.len())).collect();
        for part in parts {
            for (lane, sel) in per_lane.iter_mut().zip(part) {
                lane.push(sel);
            }
        }
        per_lane.into_par_iter().map(Selection::merge).collect()
    }
}

/// Quantises row `x` into slot `r` of a block's `lines`; returns its exact
/// norm, its scale and its bound (`None`: outside the bound's domain).
fn encode_row(x: &[f32], r: usize, lines: &mut [Line]) -> (f32, f32, Option<RowBound>) {
    let norm = item_norm(x);
    let mut codes = vec![0i8; lines.len() * 4];
    let rc = quantize_row(x, norm, &mut codes[..x.len()]);
    for (line, c) in lines.iter_mut().zip(codes.chunks_exact(4)) {
        for (byte, &code) in line.0[4 * r..4 * r + 4].iter_mut().zip(c) {
            *byte = (i16::from(code) + 128) as u8;
        }
    }
    (norm, rc.scale, rc.bound)
}

/// One block of rows quantised (in parallel, before it joins the table).
struct EncodedBlock {
    lines: Vec<Line>,
    scales: [f32; BLOCK_ROWS],
    norms: Vec<f32>,
    bounds: Vec<Option<RowBound>>,
}

/// A query's part of a scan.
struct Lane<'a> {
    codes: &'a QueryCodes,
    excluded: &'a [u32],
}

/// A lane's threshold shared by the tasks of a scan (f32 bits; only rises).
/// Any task's threshold is valid for all: it is the k-th best approximation
/// among some rows minus 2W, at most the k-th best among all rows minus 2W.
struct SharedThreshold(AtomicU32);

impl SharedThreshold {
    fn new() -> Self {
        SharedThreshold(AtomicU32::new(f32::NEG_INFINITY.to_bits()))
    }

    #[inline]
    fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn raise(&self, threshold: f32) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            (threshold > f32::from_bits(old)).then_some(threshold.to_bits())
        });
    }
}

/// The 16 bits of block `b` in `mask` (0 past its end).
#[inline]
fn mask_bits(mask: &RowMask, b: usize) -> u16 {
    let bit = b * BLOCK_ROWS;
    let word_bits = usize::BITS as usize;
    if bit >= mask.len() {
        return 0;
    }
    let word = mask.as_slice().get(bit / word_bits).copied().unwrap_or(0);
    let bits = (word >> (bit % word_bits)) as u16;
    // Bits past the mask's length are not rows of it.
    let valid = mask.len() - bit;
    if valid < BLOCK_ROWS { bits & ((1u16 << valid) - 1) } else { bits }
}

/// One block for up to four lanes: the kernel, then the rows that reached
/// their lane's threshold (present, allowed, not excluded) into its
/// selection. True when a lane's threshold rose.
#[inline]
fn pass<const Q: usize>(
    path: ScanPath,
    lines: &[Line],
    scales: &[f32; BLOCK_ROWS],
    block: usize,
    live: u16,
    lanes: &[Lane<'_>],
    sels: &mut [Selection],
) -> bool {
    let mut raised = false;
    let queries: [&QueryCodes; Q] = std::array::from_fn(|i| lanes[i].codes);
    let thresholds: [f32; Q] = std::array::from_fn(|i| sels[i].threshold());
    let mut out = [[0.0f32; BLOCK_ROWS]; Q];
    let masks = block_masks(path, lines, scales, queries, thresholds, &mut out);
    for i in 0..Q {
        let mut m = masks[i] & live;
        while m != 0 {
            let r = m.trailing_zeros() as usize;
            m &= m - 1;
            let row = (block * BLOCK_ROWS + r) as u32;
            // The threshold may have risen since the kernel compared.
            if out[i][r] >= sels[i].threshold() && lanes[i].excluded.binary_search(&row).is_err() {
                raised |= sels[i].push(out[i][r], row);
            }
        }
    }
    raised
}

/// The best `k` of `scored` by [`better`], ordered.
fn best_k(scored: &mut Vec<Scored>, k: usize) -> Vec<Scored> {
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, better);
        scored.truncate(k);
    }
    scored.sort_unstable_by(better);
    std::mem::take(scored)
}

impl std::fmt::Debug for QuantizedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedTable")
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .field("unbounded", &self.unbounded.len())
            .finish_non_exhaustive()
    }
}
