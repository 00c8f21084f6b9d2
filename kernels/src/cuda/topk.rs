//! Cosine top-k over the whole catalog on the device: one scoring pass with
//! a block top-k per chunk of items, then merge passes until one list per
//! user is left. Mirrors kernels/src/score.rs `top_k`.

use crate::error::BackendError;
use crate::score::{Scored, top_k};

use super::CudaBackend;
use super::launch::{Arg, Shape, download, dyn_smem_bytes, launch};
use super::shapes::{TOPK_CHUNK, TOPK_THREADS};
use super::signatures::Kernel;

/// Largest k served on the device: each merge pass must shrink the
/// candidates (TOPK_CHUNK / k ≥ 4). Larger k is served by the CPU scorer.
pub const MAX_DEVICE_K: usize = TOPK_CHUNK as usize / 4;
/// TOPK_CHUNK as a count.
const CHUNK: usize = TOPK_CHUNK as usize;
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
        let chunks = v.div_ceil(CHUNK);
        let per_user = chunks * k * 8;
        let batch = (CANDIDATE_BYTES / per_user).clamp(1, 4096);
        let mut out = Vec::with_capacity(embeddings.len());
        for start in (0..embeddings.len()).step_by(batch) {
            let end = (start + batch).min(embeddings.len());
            out.extend(self.top_k_group(&embeddings[start..end], k, &(start..end).map(excl_of).collect::<Vec<_>>())?);
        }
        Ok(out)
    }

    fn top_k_group(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        let c = &self.model.config;
        let (d, v, b) = (c.d_model, c.num_items, embeddings.len());
        let l = self.launcher();
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
        let users = &*ws.users.upload(l, &flat)?;
        let excl_dev = &*ws.excl.upload(l, &excl)?;
        let excl_off_dev = &*ws.excl_off.upload(l, &excl_off)?;

        let chunks = v.div_ceil(CHUNK);
        let mut count = chunks * k;
        let [s0, s1] = &mut ws.cand_score;
        let [i0, i1] = &mut ws.cand_id;
        let (mut score_a, mut id_a) = (&*s0.at_least(l, b * count)?, &*i0.at_least(l, b * count)?);
        let groups_b = if chunks > 1 && count > k { count.div_ceil(CHUNK) * k } else { k };
        let (mut score_b, mut id_b) = (&*s1.at_least(l, b * groups_b)?, &*i1.at_least(l, b * groups_b)?);
        self.poison(score_a, b * count)?;
        self.poison(id_a, b * count)?;

        // Outputs hold b·chunks·k candidates.
        let shape = Shape {
            grid: (chunks as u32, b as u32, 1),
            block: TOPK_THREADS,
            dyn_smem: dyn_smem_bytes(Kernel::ScoreChunkTopk, c) as u32,
        };
        launch(
            l,
            Kernel::ScoreChunkTopk,
            &shape,
            &[
                self.weights.item_emb.arg(),
                self.weights.item_norms.arg(),
                Arg::I32(v as i32),
                Arg::I32(d as i32),
                users.arg(),
                excl_dev.arg(),
                excl_off_dev.arg(),
                Arg::I32(k as i32),
                score_a.arg(),
                id_a.arg(),
            ],
        )?;
        // Merge until one sorted list of k per user remains.
        while chunks > 1 && count > k {
            let groups = count.div_ceil(CHUNK);
            self.poison(score_b, b * groups * k)?;
            self.poison(id_b, b * groups * k)?;
            // Input holds b·count candidates, output b·groups·k.
            launch(
                l,
                Kernel::TopkMerge,
                &Shape::new((groups as u32, b as u32, 1), TOPK_THREADS),
                &[score_a.arg(), id_a.arg(), Arg::I32(count as i32), Arg::I32(k as i32), score_b.arg(), id_b.arg()],
            )?;
            std::mem::swap(&mut score_a, &mut score_b);
            std::mem::swap(&mut id_a, &mut id_b);
            count = groups * k;
        }
        let scores = download(l, score_a, 0, b * count)?;
        let ids = download(l, id_a, 0, b * count)?;
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
}
