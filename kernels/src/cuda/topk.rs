//! Exact cosine top-k for a batch of users on the device, over the quantised
//! item table (`crate::retrieval::QuantizedTable`, uploaded with the
//! weights): the kernels of `score_topk.cu` read the table once per batch
//! per pass (two passes: each chunk's k-th approximation, then the
//! candidates above each user's threshold), and the host re-ranks the
//! candidates with the CPU retrieval's own exact code
//! (`QuantizedTable::rerank`). The result is score.rs `top_k`'s: same items,
//! same f32 scores, ties by the smaller id.

use crate::error::BackendError;
use crate::retrieval::RowMask;
use crate::score::{Scored, top_k};

use super::CudaBackend;
use super::launch::{Arg, Shape, download, dyn_smem_bytes, launch};
use super::shapes::{ROWS_THREADS, TOPK_THREADS};
use super::signatures::Kernel;

/// Largest k served on the device: a chunk's k-th best approximation (of
/// its TOPK_THREADS rows) prunes only while k is well below the chunk size.
/// Larger k is served by the CPU scorer inside the same call.
pub const MAX_DEVICE_K: usize = TOPK_THREADS as usize / 4;
/// Users per group of launches: bounds the [users, chunks] k-th buffer and
/// the length of one launch (each block loops over the group's users).
const USERS_PER_LAUNCH: usize = 256;

/// Candidate slots per user: the candidates are the rows whose
/// approximation is within 2W of a k-th best (k plus the rows near the
/// threshold); a user with more is served on the CPU.
fn capacity(k: usize) -> usize {
    8 * k + 256
}

impl CudaBackend {
    /// Top-k for every embedding; `exclude` is empty or one list per embedding.
    pub(crate) fn top_k_device(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        let no_exclusions: &[u32] = &[];
        let excl_of = |i: usize| exclude.get(i).copied().unwrap_or(no_exclusions);
        if k == 0 || embeddings.is_empty() {
            return Ok(vec![Vec::new(); embeddings.len()]);
        }
        if k > MAX_DEVICE_K {
            return Ok(embeddings.iter().enumerate().map(|(i, e)| top_k(&self.model, e, k, excl_of(i))).collect());
        }
        let mut out = Vec::with_capacity(embeddings.len());
        for start in (0..embeddings.len()).step_by(USERS_PER_LAUNCH) {
            let end = (start + USERS_PER_LAUNCH).min(embeddings.len());
            let lists: Vec<&[u32]> = (start..end).map(excl_of).collect();
            out.extend(self.top_k_group(&embeddings[start..end], k, &lists)?);
        }
        Ok(out)
    }

    /// The filtered top-k on the host from the backend's copy of the
    /// quantised table (see `Backend::top_k_allowed`).
    pub(crate) fn top_k_host_allowed(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: &RowMask,
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        let queries: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
        self.table
            .top_k(&self.model.weights.item_emb, &queries, k, exclude, Some(allow))
            .map_err(|e| BackendError::InvalidCall(e.to_string()))
    }

    fn top_k_group(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        let table = &self.table;
        let item_rows = &self.model.weights.item_emb;
        let excluded: Vec<Vec<u32>> = exclude
            .iter()
            .map(|list| {
                let mut sorted = list.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                sorted
            })
            .collect();
        let candidates = self.scan_candidates(embeddings, &excluded, k)?;
        Ok(embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let cands = candidates[i].as_ref().map(|c| c.iter().copied());
                table.rerank(item_rows, e, cands, &excluded[i], None, k)
            })
            .collect())
    }

    /// The device passes for every query: per user, the candidate rows, or
    /// `None` when there were more than the capacity or the query is outside
    /// the bound's domain (then every row is re-ranked: exact, slower). The
    /// queries are quantised on the device (`quant_query`), from the rows the
    /// encode left there where they match.
    fn scan_candidates(
        &self,
        embeddings: &[Vec<f32>],
        excluded: &[Vec<u32>],
        k: usize,
    ) -> Result<Vec<Option<Vec<u32>>>, BackendError> {
        let c = &self.model.config;
        let l = self.launcher();
        let mut ws = self.workspace();
        let ws = &mut *ws;
        let w = &self.weights;
        let b = embeddings.len();
        let d = c.d_model;
        let slots = w.table_scales.len();
        let groups = d.div_ceil(4);
        let chunks = slots.div_ceil(TOPK_THREADS as usize);
        let cap = capacity(k);

        let (mut rows, mut staged) = (Vec::with_capacity(b), Vec::new());
        for e in embeddings {
            match ws.resident.find(e) {
                Some(row) => rows.push(row as i32),
                None => {
                    rows.push(-1 - (staged.len() / d) as i32);
                    staged.extend_from_slice(e);
                }
            }
        }
        self.staged_queries.fetch_add((staged.len() / d) as u64, std::sync::atomic::Ordering::Relaxed);
        let (mut excl, mut excl_off) = (Vec::new(), vec![0i32]);
        for list in excluded {
            excl.extend_from_slice(list);
            excl_off.push(excl.len() as i32);
        }
        let terms: Vec<u64> = self.table.query_bound_terms().iter().map(|t| t.to_bits()).collect();
        let q_row = &*ws.q_row.upload(l, &rows)?;
        let q_staged = &*ws.q_staged.upload(l, &staged)?;
        let q_terms = &*ws.q_terms.upload(l, &terms)?;
        let resident = match ws.resident.buffer() {
            Some(buf) => buf,
            // No encode yet: every query is staged, and the kernel never reads this.
            None => q_staged,
        };
        let q_codes = &*ws.q_codes.at_least(l, b * groups)?;
        let q_corr = &*ws.q_corr.at_least(l, b)?;
        let q_scale = &*ws.q_scale.at_least(l, b)?;
        let twice = &*ws.twice_bound.at_least(l, b)?;
        let q_ok = &*ws.q_ok.at_least(l, b)?;
        self.poison(q_codes, b * groups)?;
        self.poison(q_corr, b)?;
        self.poison(q_scale, b)?;
        self.poison(twice, b)?;
        self.poison(q_ok, b)?;
        let args = [
            resident.arg(),
            q_staged.arg(),
            q_row.arg(),
            Arg::I32(b as i32),
            Arg::I32(d as i32),
            Arg::I32(groups as i32),
            q_terms.arg(),
            q_codes.arg(),
            q_corr.arg(),
            q_scale.arg(),
            twice.arg(),
            q_ok.arg(),
        ];
        launch(l, Kernel::QuantQuery, &Shape::cover(b, ROWS_THREADS), &args)?;

        let excl = &*ws.excl.upload(l, &excl)?;
        let excl_off = &*ws.excl_off.upload(l, &excl_off)?;
        let kth = &*ws.kth.at_least(l, b * chunks)?;
        let thr = &*ws.thr.at_least(l, b)?;
        let count = &*ws.cand_count.at_least(l, b)?;
        let cand = &*ws.cand.at_least(l, b * cap)?;
        self.poison(kth, b * chunks)?;
        self.poison(thr, b)?;
        self.poison(cand, b * cap)?;
        let zero = [count.arg(), Arg::I64(b as i64), Arg::U32(0)];
        launch(l, Kernel::FillU32, &Shape::cover(b, ROWS_THREADS), &zero)?;

        let scan = Shape {
            grid: (chunks as u32, 1, 1),
            block: TOPK_THREADS,
            dyn_smem: dyn_smem_bytes(Kernel::QuantChunkKth, c) as u32,
        };
        let table_args = [
            w.table_words.arg(),
            w.table_scales.arg(),
            Arg::I32(slots as i32),
            Arg::I32(groups as i32),
            q_codes.arg(),
            q_corr.arg(),
            q_scale.arg(),
            Arg::I32(b as i32),
            excl.arg(),
            excl_off.arg(),
        ];
        // kth holds b·chunks values.
        let mut args = table_args.to_vec();
        args.extend([Arg::I32(k as i32), kth.arg()]);
        launch(l, Kernel::QuantChunkKth, &scan, &args)?;
        let args = [kth.arg(), Arg::I32(chunks as i32), twice.arg(), thr.arg()];
        launch(l, Kernel::QuantThreshold, &Shape::new((b as u32, 1, 1), TOPK_THREADS), &args)?;
        // cand holds b·cap rows.
        let mut args = table_args.to_vec();
        args.extend([thr.arg(), Arg::I32(cap as i32), count.arg(), cand.arg()]);
        launch(l, Kernel::QuantSelect, &scan, &args)?;

        let counts = download(l, count, 0, b)?;
        let ok = download(l, q_ok, 0, b)?;
        let rows = download(l, cand, 0, b * cap)?;
        Ok(counts
            .iter()
            .zip(&ok)
            .enumerate()
            .map(|(u, (&n, &ok))| (ok == 1 && n as usize <= cap).then(|| rows[u * cap..u * cap + n as usize].to_vec()))
            .collect())
    }
}
