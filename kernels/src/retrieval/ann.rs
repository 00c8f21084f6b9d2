//! Approximate top-k over an item table: an HNSW graph (the `usearch` crate)
//! over the unit-length rows, its proposals re-scored with the exact path's
//! f32 cosine.
//!
//! The graph ranks by the cosine of the query with each row, which orders
//! rows as the exact path's `dot(q, x) / max(‖x‖, 1e-6)` does for a fixed
//! query. It proposes `k + oversample` rows; those are scored with
//! [`crate::score`]'s arithmetic and the best `k` returned, so every returned
//! score is the one the exact path gives the same row, and an ANN answer
//! differs from the exact one only by rows the graph did not propose.
//!
//! Filters and exclusions are applied inside the graph walk (a predicate on
//! the row), so a filtered search still returns `k` rows when `k` pass. When
//! few rows pass (see [`AnnOptions::scan_below`]) the index scores those rows
//! directly instead of walking a graph that is mostly filtered out; when the
//! walk still comes back short, it retries with a wider walk and then scores
//! every eligible row: "k when k pass" always holds.
//!
//! Concurrency: searches take `&self` and may run from any number of threads
//! (at most [`AnnOptions::max_concurrent_searches`] at once inside the graph;
//! more wait their turn); updates take `&mut self`.

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{RetrievalError, RowMask, best_k};
use crate::model::{Model, item_norm};
use crate::score::{NORM_FLOOR, Scored, cosine};

/// How an [`AnnIndex`] stores the unit-length rows inside its graph (the
/// walk's distances use them; returned scores are always exact f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnStorage {
    /// 4 bytes per value.
    F32,
    /// IEEE half precision: 2 bytes per value.
    F16,
    /// One signed byte per value (the unit row times 127).
    I8,
}

/// Tuning of an [`AnnIndex`]. The defaults reach recall@10 0.99 against the
/// exact path on a hash-random table of 10⁵ rows × 50; at 10⁶ rows that
/// takes `expansion_search` 1024 (docs/perf/retrieval.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnOptions {
    /// Links per node in the graph (HNSW's M): more raises recall, memory
    /// and build time.
    pub connectivity: usize,
    /// Candidates kept while linking a new row (HNSW's ef_construction).
    pub expansion_add: usize,
    /// Candidates kept while searching (HNSW's ef); a search asking for more
    /// rows than this keeps that many instead.
    pub expansion_search: usize,
    /// Rows proposed beyond `k` and re-scored exactly: covers the ranking
    /// error of a lossy [`AnnStorage`].
    pub oversample: usize,
    /// How the graph stores the rows.
    pub storage: AnnStorage,
    /// Searches that may walk the graph at the same time (each holds one
    /// of the graph's search contexts); callers beyond wait. Raised to the
    /// rayon pool's size when smaller.
    pub max_concurrent_searches: usize,
    /// A search whose eligible rows (present, allowed, not excluded) number
    /// at most this fraction of the present rows, in 1/1024ths, scores those
    /// rows directly instead of walking the graph: a filtered walk visits
    /// about 1/fraction times the nodes of an unfiltered one to collect its
    /// candidates, while the direct scan costs the fraction times a full one.
    pub scan_below: usize,
}

impl Default for AnnOptions {
    fn default() -> Self {
        AnnOptions {
            connectivity: 32,
            expansion_add: 128,
            expansion_search: 256,
            oversample: 10,
            storage: AnnStorage::I8,
            max_concurrent_searches: 64,
            scan_below: 384,
        }
    }
}

/// Widening factor of the retry when a filtered walk comes back short.
const RETRY_WIDEN: usize = 8;
/// Capacity of a fresh or grown graph, in rows, at least.
const MIN_CAPACITY: usize = 1024;

/// An HNSW index over a table's rows, answering in the exact path's terms:
/// rows numbered from 0, [`Scored`] results with exact f32 cosine scores,
/// best first, ties by the smaller row.
///
/// Like [`super::QuantizedTable`], the index does not keep the f32 rows the
/// scores are computed from: every search takes them, and they must be the
/// rows the index was built from and updated with.
pub struct AnnIndex {
    dim: usize,
    rows: usize,
    present: RowMask,
    live: usize,
    graph: Index,
    options: AnnOptions,
    contexts: usize,
    searches: Slots,
}

impl AnnIndex {
    /// An index of the row-major matrix `rows` (`rows.len() / dim` rows,
    /// all present), built with every thread of the rayon pool.
    pub fn build(dim: usize, rows: &[f32], options: AnnOptions) -> Result<Self, RetrievalError> {
        if dim == 0 {
            return Err(RetrievalError::ZeroDimension);
        }
        if !rows.len().is_multiple_of(dim) {
            return Err(RetrievalError::Dimension { dim, got: rows.len() % dim });
        }
        let n = rows.len() / dim;
        if u32::try_from(n).is_err() {
            return Err(RetrievalError::RowOutOfRange { row: n, rows: u32::MAX as usize });
        }
        let mut index = AnnIndex::empty(dim, options)?;
        index.reserve(n)?;
        rows.par_chunks_exact(dim).enumerate().try_for_each(|(r, x)| index.add(r, x))?;
        index.rows = n;
        index.present.grow(n);
        index.present.insert_range(..);
        index.live = n;
        Ok(index)
    }

    /// The index of a model's item embeddings, row = item id, row 0 (the
    /// padding row) removed: searches over `model.weights.item_emb` then
    /// answer as [`crate::score::top_k`] does, up to the rows the graph
    /// misses.
    pub fn from_model(model: &Model, options: AnnOptions) -> Result<Self, RetrievalError> {
        let mut index = AnnIndex::build(model.config.d_model, &model.weights.item_emb, options)?;
        index.remove_row(0)?;
        Ok(index)
    }

    /// Reads an index written by [`AnnIndex::save`] for the table `rows` of
    /// dimension `dim`; `options` give the search-time settings (the graph's
    /// own are the saved ones). Refused when the file's dimension differs or
    /// it holds rows past the table's end: rebuild with [`AnnIndex::build`].
    pub fn load(path: &Path, dim: usize, rows: &[f32], options: AnnOptions) -> Result<Self, RetrievalError> {
        let mut index = AnnIndex::empty(dim, options)?;
        let file = path.to_str().ok_or_else(|| RetrievalError::Index {
            action: "load",
            reason: format!("{} is not UTF-8: pass a UTF-8 path", path.display()),
        })?;
        index.graph.load(file).map_err(|e| index_error("load", e))?;
        if index.graph.dimensions() != dim {
            return Err(RetrievalError::Index {
                action: "load",
                reason: format!(
                    "{} holds vectors of {} values, the table has {dim}: rebuild the index",
                    path.display(),
                    index.graph.dimensions()
                ),
            });
        }
        if !rows.len().is_multiple_of(dim) {
            return Err(RetrievalError::Dimension { dim, got: rows.len() % dim });
        }
        let n = rows.len() / dim;
        index.rows = n;
        index.present.grow(n);
        for r in 0..n {
            if index.graph.contains(r as u64) {
                index.present.insert(r);
            }
        }
        index.live = index.present.count_ones(..);
        if index.live != index.graph.size() {
            return Err(RetrievalError::Index {
                action: "load",
                reason: format!(
                    "{} holds {} rows, {} of them inside the table's {n}: it was built from another table; rebuild the index",
                    path.display(),
                    index.graph.size(),
                    index.live
                ),
            });
        }
        index.apply_search_options()?;
        Ok(index)
    }

    /// Writes the graph to `path` (read back by [`AnnIndex::load`]).
    pub fn save(&self, path: &Path) -> Result<(), RetrievalError> {
        let file = path.to_str().ok_or_else(|| RetrievalError::Index {
            action: "save",
            reason: format!("{} is not UTF-8: pass a UTF-8 path", path.display()),
        })?;
        self.graph.save(file).map_err(|e| index_error("save", e))
    }

    /// An empty index of dimension `dim`.
    pub fn empty(dim: usize, options: AnnOptions) -> Result<Self, RetrievalError> {
        if dim == 0 {
            return Err(RetrievalError::ZeroDimension);
        }
        let graph = Index::new(&IndexOptions {
            dimensions: dim,
            metric: MetricKind::Cos,
            quantization: match options.storage {
                AnnStorage::F32 => ScalarKind::F32,
                AnnStorage::F16 => ScalarKind::F16,
                AnnStorage::I8 => ScalarKind::I8,
            },
            connectivity: options.connectivity,
            expansion_add: options.expansion_add,
            expansion_search: options.expansion_search,
            multi: false,
        })
        .map_err(|e| index_error("create", e))?;
        let contexts = options.max_concurrent_searches.max(rayon::current_num_threads()).max(1);
        let mut index = AnnIndex {
            dim,
            rows: 0,
            present: RowMask::new(),
            live: 0,
            graph,
            options,
            contexts,
            searches: Slots::new(contexts),
        };
        index.reserve(0)?;
        Ok(index)
    }

    /// The dimension of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row slots (present or removed).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the index has no row slots.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether `row` is present (may be returned by a search).
    pub fn contains(&self, row: usize) -> bool {
        self.present.contains(row)
    }

    /// The options the index was built with.
    pub fn options(&self) -> &AnnOptions {
        &self.options
    }

    /// Sets the search width (HNSW's ef) of later searches: wider walks
    /// raise recall and latency.
    pub fn set_expansion_search(&mut self, expansion: usize) {
        self.options.expansion_search = expansion;
        self.graph.change_expansion_search(expansion);
    }

    /// Bytes held by the graph (links and stored vectors).
    pub fn size_bytes(&self) -> usize {
        self.graph.memory_usage() + self.present.as_slice().len() * 8
    }

    /// Sets row `row` to `values` and marks it present (re-linked in the
    /// graph when it was present); `row == len()` appends. The caller
    /// updates its f32 matrix alike.
    pub fn set_row(&mut self, row: usize, values: &[f32]) -> Result<(), RetrievalError> {
        if values.len() != self.dim {
            return Err(RetrievalError::Dimension { dim: self.dim, got: values.len() });
        }
        if row > self.rows || u32::try_from(row).is_err() {
            return Err(RetrievalError::RowOutOfRange { row, rows: self.rows });
        }
        if row == self.rows {
            self.reserve(row + 1)?;
            self.rows = row + 1;
            self.present.grow(self.rows);
        }
        self.remove_row(row)?;
        self.add(row, values)?;
        self.present.insert(row);
        self.live += 1;
        Ok(())
    }

    /// Marks `row` absent: no search returns it until [`AnnIndex::set_row`]
    /// sets it again (its node stays in the graph as a waypoint and is
    /// reused by the next added row). Rows out of range are ignored.
    pub fn remove_row(&mut self, row: usize) -> Result<(), RetrievalError> {
        if self.present.contains(row) {
            self.graph.remove(row as u64).map_err(|e| index_error("remove a row from", e))?;
            self.present.set(row, false);
            self.live -= 1;
        }
        Ok(())
    }

    /// The top-k of one query, as [`super::QuantizedTable::top_k`] defines
    /// it (present rows, `exclude` skipped, only rows in `allow` when given,
    /// best first, ties by the smaller row, exact f32 scores), up to the
    /// rows the graph does not propose. Returns `k` rows whenever `k` rows
    /// are eligible.
    pub fn search(
        &self,
        rows: &[f32],
        query: &[f32],
        k: usize,
        exclude: &[u32],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Scored>, RetrievalError> {
        self.check_rows(rows)?;
        if query.len() != self.dim {
            return Err(RetrievalError::Dimension { dim: self.dim, got: query.len() });
        }
        let mut excluded = exclude.to_vec();
        excluded.sort_unstable();
        excluded.dedup();
        self.search_one(rows, query, k, &excluded, allow)
    }

    /// [`AnnIndex::search`] for a batch of queries, in parallel over the
    /// rayon pool; `exclude` is empty or one list per query.
    pub fn search_batch(
        &self,
        rows: &[f32],
        queries: &[&[f32]],
        k: usize,
        exclude: &[&[u32]],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Vec<Scored>>, RetrievalError> {
        self.check_rows(rows)?;
        if let Some(q) = queries.iter().find(|q| q.len() != self.dim) {
            return Err(RetrievalError::Dimension { dim: self.dim, got: q.len() });
        }
        if !exclude.is_empty() && exclude.len() != queries.len() {
            return Err(RetrievalError::ExclusionCount { lists: exclude.len(), queries: queries.len() });
        }
        queries
            .par_iter()
            .enumerate()
            .map(|(i, q)| {
                let mut excluded = exclude.get(i).map_or_else(Vec::new, |e| e.to_vec());
                excluded.sort_unstable();
                excluded.dedup();
                self.search_one(rows, q, k, &excluded, allow)
            })
            .collect()
    }

    fn check_rows(&self, rows: &[f32]) -> Result<(), RetrievalError> {
        if rows.len() != self.rows * self.dim {
            return Err(RetrievalError::Rows { rows: self.rows, dim: self.dim, got: rows.len() });
        }
        Ok(())
    }

    /// One query; `excluded` sorted and free of duplicates.
    fn search_one(
        &self,
        rows: &[f32],
        query: &[f32],
        k: usize,
        excluded: &[u32],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Scored>, RetrievalError> {
        let eligible_row = |r: usize| {
            self.present.contains(r)
                && allow.is_none_or(|m| m.contains(r))
                && excluded.binary_search(&(r as u32)).is_err()
        };
        let allowed = allow.map_or(self.live, |m| self.present.intersection_count(m));
        let eligible = allowed
            - excluded
                .iter()
                .filter(|&&r| self.present.contains(r as usize) && allow.is_none_or(|m| m.contains(r as usize)))
                .count();
        let want = k.min(eligible);
        if want == 0 {
            return Ok(Vec::new());
        }
        if eligible * 1024 <= self.live * self.options.scan_below {
            let mut scored: Vec<Scored> =
                self.present.ones().filter(|&r| eligible_row(r)).map(|r| self.exact(rows, query, r as u64)).collect();
            return Ok(best_k(&mut scored, k));
        }
        let unit = unit(query);
        let filtered = allow.is_some() || !excluded.is_empty();
        let mut count = k + self.options.oversample;
        loop {
            let proposed = {
                let _context = self.searches.take();
                if filtered {
                    self.graph.filtered_search(&unit, count, |key| eligible_row(key as usize))
                } else {
                    self.graph.search(&unit, count)
                }
                .map_err(|e| index_error("search", e))?
            };
            if proposed.keys.len() >= want {
                let mut scored: Vec<Scored> = proposed.keys.iter().map(|&key| self.exact(rows, query, key)).collect();
                return Ok(best_k(&mut scored, k));
            }
            if count >= eligible {
                break;
            }
            count = (count * RETRY_WIDEN).min(eligible);
        }
        // The walk did not reach enough eligible rows (a filter that cuts
        // the graph apart): score them all, so that k pass means k returned.
        let mut scored: Vec<Scored> =
            self.present.ones().filter(|&r| eligible_row(r)).map(|r| self.exact(rows, query, r as u64)).collect();
        Ok(best_k(&mut scored, k))
    }

    /// The exact path's score of `row` (its f32 cosine with `query`).
    fn exact(&self, rows: &[f32], query: &[f32], row: u64) -> Scored {
        let r = row as usize;
        let x = &rows[r * self.dim..(r + 1) * self.dim];
        Scored { item: row as u32, score: cosine(query, x, item_norm(x)) }
    }

    /// Links row `r` (values `x`) into the graph.
    fn add(&self, r: usize, x: &[f32]) -> Result<(), RetrievalError> {
        self.graph.add(r as u64, &unit(x)).map_err(|e| index_error("add a row to", e))
    }

    /// Makes room for `rows` rows (grown geometrically) and reserves the
    /// graph's search contexts.
    fn reserve(&mut self, rows: usize) -> Result<(), RetrievalError> {
        let capacity = self.graph.capacity();
        if rows <= capacity && capacity > 0 {
            return Ok(());
        }
        let grown = rows.max(capacity * 2).max(MIN_CAPACITY);
        self.graph.reserve_capacity_and_threads(grown, self.contexts).map_err(|e| index_error("grow", e))
    }

    /// Loading replaces the graph's settings with the file's: restores the
    /// search width and the contexts of these options.
    fn apply_search_options(&mut self) -> Result<(), RetrievalError> {
        self.graph.change_expansion_search(self.options.expansion_search);
        let capacity = self.graph.capacity().max(self.graph.size()).max(MIN_CAPACITY);
        self.graph.reserve_capacity_and_threads(capacity, self.contexts).map_err(|e| index_error("load", e))
    }
}

/// `x / max(‖x‖, 1e-6)`, the direction the exact path ranks by.
fn unit(x: &[f32]) -> Vec<f32> {
    let norm = item_norm(x).max(NORM_FLOOR);
    x.iter().map(|v| v / norm).collect()
}

fn index_error(action: &'static str, e: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Index { action, reason: e.to_string() }
}

/// A counting semaphore over the graph's search contexts: usearch refuses
/// a search when all are taken, so callers past the limit wait instead.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One taken context, given back on drop.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Slots { free: Mutex::new(n), freed: Condvar::new() }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .field("present", &self.live)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
