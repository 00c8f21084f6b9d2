//! Approximate top-k for catalogs past the exact scan: an HNSW graph
//! (Malkov & Yashunin) over the items' unit-normalised rows, from `hnsw_rs`.
//!
//! The graph only proposes candidates: each query asks it for more rows than
//! it returns (`ef_search`), and the proposals are re-scored with the exact
//! path's own f32 cosine (`score::cosine`) and ordered as the exact
//! scan orders them. So every score an answer carries is exact; only which
//! rows were found is approximate (recall@10 against
//! [`crate::QuantizedTable::top_k`] on the same queries: `cargo run --release
//! -p edgerec-bench --example bench_ann`).
//!
//! Rows change without a rebuild: [`AnnIndex::set_row`] links the new vector
//! into the graph (the old node stays, found under the same row and re-scored
//! with the row's current values), [`AnnIndex::remove_row`] hides a row from
//! every answer. [`AnnIndex::stale_fraction`] says when a rebuild would pay.
//! The graph is not persisted: it is rebuilt from the model when a tenant
//! loads, off the request path.

use hnsw_rs::prelude::{DataId, Distance, FilterT, Hnsw};
use rayon::prelude::*;

use crate::model::{Model, item_norm};
use crate::retrieval::{RetrievalError, RowMask};
use crate::score::{Scored, better, cosine};

/// How the graph is built and searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnConfig {
    /// Links per node and layer (HNSW's `M`). More: better recall, more
    /// memory (about 8 bytes a link) and a slower build.
    pub max_connections: usize,
    /// Candidates explored per insertion (`ef_construction`).
    pub ef_construction: usize,
    /// Candidates explored per query (`ef`), at least `k`: the recall knob.
    pub ef_search: usize,
}

impl Default for AnnConfig {
    /// `M` 24, `ef_construction` 200, `ef` 160, chosen for recall@10 of
    /// 0.99 on random 50-dimensional tables (the hardest case: no cluster
    /// structure); the `bench_ann` example of edgerec-bench measures it.
    fn default() -> Self {
        AnnConfig { max_connections: 24, ef_construction: 200, ef_search: 160 }
    }
}

/// `1 − cos` between unit vectors, never negative (rounding can make a dot
/// of unit vectors exceed 1).
struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        (1.0 - dot).max(0.0)
    }
}

/// An HNSW index over a table's rows (row r = item r for a model's table).
pub struct AnnIndex {
    dim: usize,
    config: AnnConfig,
    graph: Hnsw<'static, f32, UnitCosine>,
    /// The exact path's f32 norm of every row (re-scoring).
    norms: Vec<f32>,
    /// Rows an answer may hold: present and not removed.
    present: RowMask,
    /// Nodes in the graph whose row was updated or removed since.
    stale: usize,
    /// Nodes in the graph.
    nodes: usize,
}

impl AnnIndex {
    /// Builds the graph over `rows` (`dim` values each; all present), in
    /// parallel. Minutes for a million rows on two cores: build it off the
    /// request path.
    pub fn new(dim: usize, rows: &[f32], config: AnnConfig) -> Result<Self, RetrievalError> {
        if dim == 0 {
            return Err(RetrievalError::ZeroDimension);
        }
        if !rows.len().is_multiple_of(dim) {
            return Err(RetrievalError::Dimension { dim, got: rows.len() % dim });
        }
        let n = rows.len() / dim;
        let layers = 16.min((n.max(2) as f32).ln().ceil() as usize);
        let graph = Hnsw::new(config.max_connections, n.max(1), layers, config.ef_construction, UnitCosine);
        let unit: Vec<Vec<f32>> = rows.par_chunks(dim).map(unit_vector).collect();
        let items: Vec<(&[f32], usize)> = unit.iter().enumerate().map(|(row, v)| (v.as_slice(), row)).collect();
        graph.parallel_insert_slice(&items);
        let norms = rows.par_chunks(dim).map(item_norm).collect();
        let mut present = RowMask::with_capacity(n);
        present.insert_range(..);
        Ok(AnnIndex { dim, config, graph, norms, present, stale: 0, nodes: n })
    }

    /// The index of a model's item embeddings, row = item id, row 0 (the
    /// padding row) removed: its answers are [`crate::score::top_k`]'s, up
    /// to recall.
    pub fn from_model(model: &Model, config: AnnConfig) -> Self {
        let mut index = AnnIndex::new(model.config.d_model, &model.weights.item_emb, config)
            .expect("a loaded model's table has V+1 rows of D");
        index.remove_row(0);
        index
    }

    /// The settings it was built with.
    pub fn config(&self) -> AnnConfig {
        self.config
    }

    /// Rows in the table (present or not).
    pub fn len(&self) -> usize {
        self.norms.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// The share of the graph's nodes that no longer stand for their row's
    /// current values (updated or removed rows): recall drifts down as it
    /// grows; rebuild past a few tenths.
    pub fn stale_fraction(&self) -> f64 {
        self.stale as f64 / self.nodes.max(1) as f64
    }

    /// Sets row `row` (an existing row, or the next one, `len()`) to
    /// `values`; the caller's f32 table must hold the same values.
    pub fn set_row(&mut self, row: usize, values: &[f32]) -> Result<(), RetrievalError> {
        if values.len() != self.dim {
            return Err(RetrievalError::Dimension { dim: self.dim, got: values.len() });
        }
        if row > self.norms.len() {
            return Err(RetrievalError::RowOutOfRange { row, rows: self.norms.len() });
        }
        if row == self.norms.len() {
            self.norms.push(0.0);
            self.present.grow(row + 1);
        } else {
            self.stale += 1;
        }
        self.norms[row] = item_norm(values);
        self.graph.insert_slice((&unit_vector(values), row));
        self.nodes += 1;
        self.present.insert(row);
        Ok(())
    }

    /// Hides row `row` from every answer (a no-op past the end).
    pub fn remove_row(&mut self, row: usize) {
        if row < self.norms.len() && self.present.contains(row) {
            self.present.set(row, false);
            self.stale += 1;
        }
    }

    /// For query i, about the `k` present rows with the highest
    /// `dot(q, x) / max(‖x‖, 1e-6)`, best first (exact scores, the exact
    /// scan's tie order), rows in `exclude[i]` skipped (`exclude` is empty or
    /// one list per query), and only rows in `allow` when given. `rows` is
    /// the caller's f32 table, as for [`crate::QuantizedTable::top_k`].
    ///
    /// A very selective `allow` (a small share of the rows) leaves the graph
    /// few paths: scan such queries exactly instead.
    pub fn top_k(
        &self,
        rows: &[f32],
        queries: &[&[f32]],
        k: usize,
        exclude: &[&[u32]],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Vec<Scored>>, RetrievalError> {
        if rows.len() != self.norms.len() * self.dim {
            return Err(RetrievalError::Rows { rows: self.norms.len(), dim: self.dim, got: rows.len() });
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
        let ef = self.config.ef_search.max(k);
        Ok(queries
            .par_iter()
            .enumerate()
            .map(|(i, query)| {
                let mut excluded = exclude.get(i).map_or_else(Vec::new, |e| e.to_vec());
                excluded.sort_unstable();
                let filter = Eligible { present: &self.present, allow, excluded: &excluded };
                let found = self.graph.search_filter(&unit_vector(query), ef, ef, Some(&filter));
                let mut scored: Vec<Scored> = found
                    .iter()
                    .map(|n| n.d_id)
                    .filter(|&row| filter.hnsw_filter(&row))
                    .map(|row| {
                        let x = &rows[row * self.dim..(row + 1) * self.dim];
                        Scored { item: row as u32, score: cosine(query, x, self.norms[row]) }
                    })
                    .collect();
                // An updated row is in the graph twice: keep it once.
                scored.sort_unstable_by_key(|s| s.item);
                scored.dedup_by_key(|s| s.item);
                scored.sort_unstable_by(better);
                scored.truncate(k);
                scored
            })
            .collect())
    }
}

/// The rows a query may return.
struct Eligible<'a> {
    present: &'a RowMask,
    allow: Option<&'a RowMask>,
    excluded: &'a [u32],
}

impl FilterT for Eligible<'_> {
    fn hnsw_filter(&self, row: &DataId) -> bool {
        self.present.contains(*row)
            && self.allow.is_none_or(|m| m.contains(*row))
            && u32::try_from(*row).is_ok_and(|r| self.excluded.binary_search(&r).is_err())
    }
}

/// `v / ‖v‖` (a zero vector stays zero).
fn unit_vector(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() }
}
