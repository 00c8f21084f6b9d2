//! Cosine top-k over the whole catalog on the device: one scoring pass with
//! a block top-k per chunk of items, then merge passes until one list per
//! user is left. Mirrors kernels/src/score.rs `top_k`.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use crate::backend::BackendError;
use crate::score::{Scored, top_k};

use super::CudaBackend;
use super::device::{TOPK_CHUNK, TOPK_THREADS, dev_err};

/// Largest k served on the device: each merge pass must shrink the
/// candidates (TOPK_CHUNK / k ≥ 4). Larger k is served by the CPU scorer.
pub const MAX_DEVICE_K: usize = TOPK_CHUNK / 4;
/// Candidate memory budget per scoring launch (bounds the users per launch).
const CANDIDATE_BYTES: usize = 256 << 20;
/// Id of an empty candidate slot (TOPK_NONE in score_topk.cu).
const NONE: u32 = u32::MAX;

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
            // Beyond what the block sort can merge: the exact CPU path.
            return Ok(embeddings.iter().enumerate().map(|(i, e)| top_k(&self.model, e, k, excl_of(i))).collect());
        }
        let v = self.model.config.num_items;
        let chunks = v.div_ceil(TOPK_CHUNK);
        let per_user = chunks * k * 8;
        let batch = (CANDIDATE_BYTES / per_user).clamp(1, 4096);
        let mut out = Vec::with_capacity(embeddings.len());
        for start in (0..embeddings.len()).step_by(batch) {
            let end = (start + batch).min(embeddings.len());
            out.extend(self.top_k_group(&embeddings[start..end], k, &(start..end).map(excl_of).collect::<Vec<_>>())?);
        }
        Ok(out)
    }

    fn top_k_group(&self, embeddings: &[Vec<f32>], k: usize, exclude: &[&[u32]]) -> Result<Vec<Vec<Scored>>, BackendError> {
        let c = &self.model.config;
        let (d, v, b) = (c.d_model, c.num_items, embeddings.len());
        let stream = &self.device.stream;
        let kern = &self.device.kernels;
        let mut ws = self.workspace();
        let ws = &mut *ws;

        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let mut excl = Vec::new();
        let mut excl_off = vec![0i32];
        for list in exclude {
            let mut sorted: Vec<u32> = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            excl.extend(sorted);
            excl_off.push(excl.len() as i32);
        }
        let users = ws.users.upload(stream, &flat)?;
        let excl_dev = ws.excl.upload(stream, &excl)?;
        let excl_off_dev = ws.excl_off.upload(stream, &excl_off)?;

        let chunks = v.div_ceil(TOPK_CHUNK);
        let mut count = chunks * k;
        let [s0, s1] = &mut ws.cand_score;
        let [i0, i1] = &mut ws.cand_id;
        let (mut score_a, mut id_a) = (s0.at_least(stream, b * count)?, i0.at_least(stream, b * count)?);
        let cap_b = b * (count.div_ceil(TOPK_CHUNK) * k).max(k);
        let (mut score_b, mut id_b) = (s1.at_least(stream, cap_b)?, i1.at_least(stream, cap_b)?);
        self.poison_candidates(score_a, b * count)?;
        self.poison_candidates(id_a, b * count)?;

        {
            let (v_i, d_i, k_i) = (v as i32, d as i32, k as i32);
            let mut l = stream.launch_builder(&kern.score_chunk_topk);
            l.arg(&self.weights.item_emb).arg(&self.weights.item_norms).arg(&v_i).arg(&d_i);
            l.arg(&*users).arg(&*excl_dev).arg(&*excl_off_dev).arg(&k_i).arg(&*score_a).arg(&*id_a);
            let cfg = LaunchConfig {
                grid_dim: (chunks as u32, b as u32, 1),
                block_dim: (TOPK_THREADS, 1, 1),
                shared_mem_bytes: (4 * d) as u32,
            };
            // SAFETY: matches score_chunk_topk in score_topk.cu; outputs hold b·chunks·k.
            unsafe { l.launch(cfg) }.map_err(dev_err("score_chunk_topk"))?;
        }
        // Merge until one sorted list of k per user remains.
        while chunks > 1 && count > k {
            let groups = count.div_ceil(TOPK_CHUNK);
            self.poison_candidates(score_b, b * groups * k)?;
            let (count_i, k_i) = (count as i32, k as i32);
            let mut l = stream.launch_builder(&kern.topk_merge);
            l.arg(&*score_a).arg(&*id_a).arg(&count_i).arg(&k_i).arg(&*score_b).arg(&*id_b);
            let cfg = LaunchConfig { grid_dim: (groups as u32, b as u32, 1), block_dim: (TOPK_THREADS, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: matches topk_merge in score_topk.cu; input holds b·count, output b·groups·k.
            unsafe { l.launch(cfg) }.map_err(dev_err("topk_merge"))?;
            std::mem::swap(&mut score_a, &mut score_b);
            std::mem::swap(&mut id_a, &mut id_b);
            count = groups * k;
        }
        let scores = stream.clone_dtoh(&score_a.slice(..b * count)).map_err(dev_err("download"))?;
        let ids = stream.clone_dtoh(&id_a.slice(..b * count)).map_err(dev_err("download"))?;
        Ok((0..b)
            .map(|u| {
                (0..k)
                    .map(|t| (scores[u * count + t], ids[u * count + t]))
                    .take_while(|&(_, id)| id != NONE)
                    .map(|(score, item)| Scored { item, score })
                    .collect()
            })
            .collect())
    }

    fn poison_candidates<T>(&self, buf: &cudarc::driver::CudaSlice<T>, len: usize) -> Result<(), BackendError> {
        self.poison(buf, len)
    }
}
