//! The HSTU forward on the device for a jagged batch of users: one launch
//! per kernel per layer for the whole batch. Mirrors kernels/src/forward.rs
//! `forward` (rows `first..n` of each user are the query rows; keys and
//! values of rows `0..first` come from a per-user cache).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::backend::BackendError;
use crate::history::Event;

use super::CudaBackend;
use super::device::{ATT_QB, ATT_THREADS, GEMM_THREADS, GEMM_TILE, dev_err};
use super::workspace::Workspace;

/// Most query rows encoded per group of launches; bounds the workspace
/// (ML-20M: 128 Ki rows · 1024 uvqk columns · 4 B = 512 MiB).
pub(crate) const MAX_ROWS_PER_LAUNCH: usize = 128 * 1024;

/// Bit pattern of the NaN that poisons buffers in checked runs.
const POISON: u32 = 0x7fc0_0000;

/// One user's part of a forward: the sorted kept window, the query time and
/// the first row to compute (rows before it have cached keys/values).
pub(crate) struct Job<'a> {
    pub events: &'a [Event],
    pub query_time: i64,
    pub first: usize,
}

/// Where the attention finds keys and values.
pub(crate) enum KvStore<'a> {
    /// Stateless batch: straight from the uvqk buffer of the same call.
    Transient,
    /// One user's cache, `[layers][L][H·dqk | H·dv]`: the query rows' keys
    /// and values are written to their slots, then rows `0..n` are read.
    Cache(&'a mut CudaSlice<f32>),
}

/// Host-side index arrays of one group of jobs, packed into one i32 upload.
struct Plan {
    meta: Vec<i32>,
    items: Vec<u32>,
    ts: Vec<i64>,
    rows: usize,
    users: usize,
    blocks: usize,
}

/// Offsets of the sections of `Plan::meta`.
struct Sections {
    q_off: usize,
    q_first: usize,
    n_rows: usize,
    kv_off: usize,
    ts_off: usize,
    last_row: usize,
    blk_user: usize,
    blk_row0: usize,
    pos: usize,
    kv_dst: usize,
}

impl Plan {
    fn new(jobs: &[Job<'_>], cached: bool) -> (Self, Sections) {
        let b = jobs.len();
        let rows: usize = jobs.iter().map(|j| j.events.len() - j.first).sum();
        let blocks: usize = jobs.iter().map(|j| (j.events.len() - j.first).div_ceil(ATT_QB)).sum();
        let s = Sections {
            q_off: 0,
            q_first: b,
            n_rows: 2 * b,
            kv_off: 3 * b,
            ts_off: 4 * b,
            last_row: 5 * b,
            blk_user: 6 * b,
            blk_row0: 6 * b + blocks,
            pos: 6 * b + 2 * blocks,
            kv_dst: 6 * b + 2 * blocks + rows,
        };
        let mut meta = vec![0i32; s.kv_dst + rows];
        let mut items = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows + 2 * b);
        let (mut row, mut blk) = (0usize, 0usize);
        for (u, job) in jobs.iter().enumerate() {
            let n = job.events.len();
            meta[s.q_off + u] = row as i32;
            meta[s.q_first + u] = job.first as i32;
            meta[s.n_rows + u] = n as i32;
            // Transient keys live in the call's own rows, where row `first` is at q_off.
            meta[s.kv_off + u] = if cached { 0 } else { row as i32 - job.first as i32 };
            meta[s.ts_off + u] = ts.len() as i32;
            meta[s.last_row + u] = (row + n - job.first - 1) as i32;
            ts.extend(job.events.iter().map(|e| e.ts));
            ts.push(job.query_time);
            for row0 in (job.first..n).step_by(ATT_QB) {
                meta[s.blk_user + blk] = u as i32;
                meta[s.blk_row0 + blk] = row0 as i32;
                blk += 1;
            }
            for (t, e) in job.events.iter().enumerate().skip(job.first) {
                meta[s.pos + row] = t as i32;
                meta[s.kv_dst + row] = t as i32;
                items.push(e.item);
                row += 1;
            }
        }
        (Plan { meta, items, ts, rows, users: b, blocks }, s)
    }
}

fn grid_1d(n: usize, threads: u32) -> LaunchConfig {
    let blocks = n.div_ceil(threads as usize).clamp(1, 65535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

fn gemm_grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(GEMM_TILE) as u32, m.div_ceil(GEMM_TILE) as u32, 1),
        block_dim: (GEMM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// Fills `buf[..len]` with NaN when poisoning is on (a test aid).
    pub(super) fn poison(&self, buf: &CudaSlice<impl Sized>, len: usize) -> Result<(), BackendError> {
        if !self.poison_outputs() || len == 0 {
            return Ok(());
        }
        let n = len as i64;
        let stream = &self.device.stream;
        let mut launch = stream.launch_builder(&self.device.kernels.fill_u32);
        launch.arg(buf).arg(&n).arg(&POISON);
        // SAFETY: fill_u32(unsigned*, long long, unsigned) writes n ≤ buf.len() 4-byte elements.
        unsafe { launch.launch(grid_1d(len, 256)) }.map_err(dev_err("fill_u32"))?;
        Ok(())
    }

    /// Runs every layer for `jobs` (at most MAX_ROWS_PER_LAUNCH query rows in
    /// total; a cache store holds exactly one job) and returns each user's
    /// L2-normalised last row.
    pub(crate) fn forward_jobs(
        &self,
        ws: &mut Workspace,
        jobs: &[Job<'_>],
        mut store: KvStore<'_>,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let cached = matches!(store, KvStore::Cache(_));
        debug_assert!(!cached || jobs.len() == 1);
        let c = &self.model.config;
        let (plan, s) = Plan::new(jobs, cached);
        let stream = &self.device.stream;
        let k = &self.device.kernels;
        let w = &self.weights;
        let (d, h, dqk, dv) = (c.d_model, c.num_heads, c.d_qk, c.d_v);
        let (width, attn_w) = (c.uvqk_width(), c.attn_width());
        let (v_col, q_col, k_col) = (attn_w, 2 * attn_w, 2 * attn_w + h * dqk);
        let (kw, vw) = (h * dqk, h * dv);
        let m = plan.rows;

        let meta = ws.meta.upload(stream, &plan.meta)?;
        let items = ws.items.upload(stream, &plan.items)?;
        let ts = ws.ts.upload(stream, &plan.ts)?;
        let x = ws.x.at_least(stream, m * d)?;
        let uvqk = ws.uvqk.at_least(stream, m * width)?;
        let attn = ws.attn.at_least(stream, m * attn_w)?;
        let out = ws.out.at_least(stream, plan.users * d)?;
        self.poison(x, m * d)?;
        self.poison(uvqk, m * width)?;
        self.poison(attn, m * attn_w)?;
        self.poison(out, plan.users * d)?;
        let sec = |start: usize, len: usize| meta.slice(start..start + len);

        // x = sqrt(D)·E[item] + P[pos]
        {
            let (pos, rows_i, d_i, scale) = (sec(s.pos, m), m as i32, d as i32, (d as f32).sqrt());
            let mut l = stream.launch_builder(&k.embed_rows);
            l.arg(&w.item_emb).arg(&w.pos_emb).arg(&*items).arg(&pos).arg(&rows_i).arg(&d_i).arg(&scale).arg(&*x);
            // SAFETY: signature embed_rows(const float*, const float*, const unsigned*, const int*, int, int, float, float*).
            unsafe { l.launch(grid_1d(m * d, 256)) }.map_err(dev_err("embed_rows"))?;
        }

        let (m_i, d_i, width_i, attn_i) = (m as i32, d as i32, width as i32, attn_w as i32);
        let (big_n, alpha, inv_n, heads) = (c.attn_normalizer as i32, c.alpha, 1.0 / c.attn_normalizer as f32, h as i32);
        let max_rows = c.max_seq_len;
        for (layer_index, layer) in w.layers.iter().enumerate() {
            // uvqk = SiLU(LN(x) · W_uvqk)
            {
                let mut l = stream.launch_builder(&k.ln_gemm_silu);
                l.arg(&*x).arg(&d_i).arg(&layer.uvqk).arg(&m_i).arg(&d_i).arg(&width_i).arg(&*uvqk).arg(&width_i);
                // SAFETY: ln_gemm_silu(const float* A, int lda, const float* W, int M, int K, int N, float* C, int ldc).
                unsafe { l.launch(gemm_grid(m, width)) }.map_err(dev_err("ln_gemm_silu"))?;
            }
            // Keys and values: the uvqk rows themselves, or their slots in the cache.
            let layer_kv = max_rows * (kw + vw);
            let (k_base, v_base, kv_stride) = match &mut store {
                KvStore::Transient => (uvqk.slice(k_col..), uvqk.slice(v_col..), width_i),
                KvStore::Cache(cache) => {
                    let base = layer_index * layer_kv;
                    {
                        let (kc, vc, kw_i, vw_i) = (k_col as i32, v_col as i32, kw as i32, vw as i32);
                        let dst = sec(s.kv_dst, m);
                        let layer_cache = cache.slice(base..base + layer_kv);
                        let mut l = stream.launch_builder(&k.scatter_kv);
                        l.arg(&*uvqk).arg(&width_i).arg(&kc).arg(&vc).arg(&kw_i).arg(&vw_i).arg(&dst).arg(&m_i).arg(&layer_cache);
                        let cfg = LaunchConfig { grid_dim: (m as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
                        // SAFETY: scatter_kv(const float*, int, int, int, int, int, const int*, int, float*);
                        // every dst row < L lies inside this layer's slice.
                        unsafe { l.launch(cfg) }.map_err(dev_err("scatter_kv"))?;
                    }
                    (cache.slice(base..base + layer_kv), cache.slice(base + kw..base + layer_kv), (kw + vw) as i32)
                }
            };
            // O = causal SiLU attention with rab.
            {
                let q_base = uvqk.slice(q_col..);
                let (bu, br) = (sec(s.blk_user, plan.blocks), sec(s.blk_row0, plan.blocks));
                let (qo, qf, nr, ko, to) = (
                    sec(s.q_off, plan.users),
                    sec(s.q_first, plan.users),
                    sec(s.n_rows, plan.users),
                    sec(s.kv_off, plan.users),
                    sec(s.ts_off, plan.users),
                );
                let mut l = stream.launch_builder(&k.hstu_attention);
                l.arg(&q_base).arg(&width_i).arg(&k_base).arg(&v_base).arg(&kv_stride);
                l.arg(&bu).arg(&br).arg(&qo).arg(&qf).arg(&nr).arg(&ko).arg(&*ts).arg(&to);
                l.arg(&w.thresholds).arg(&layer.pos_w).arg(&layer.ts_w).arg(&big_n);
                l.arg(&alpha).arg(&inv_n).arg(&heads).arg(&*attn);
                let cfg = LaunchConfig {
                    grid_dim: (plan.blocks as u32, h as u32, 1),
                    block_dim: (ATT_THREADS, 1, 1),
                    shared_mem_bytes: self.device.attention_smem,
                };
                // SAFETY: argument list matches hstu_attention in hstu_attention.cu; every
                // index it forms is bounded by the plan (rows < n ≤ L, heads < H).
                unsafe { l.launch(cfg) }.map_err(dev_err("hstu_attention"))?;
            }
            // x += (u ⊙ LN(O)) · W_o + b_o
            {
                let mut l = stream.launch_builder(&k.gated_ln_gemm_resid);
                l.arg(&*attn).arg(&attn_i).arg(&*uvqk).arg(&width_i).arg(&layer.o_w).arg(&layer.o_b);
                l.arg(&m_i).arg(&attn_i).arg(&d_i).arg(&*x).arg(&d_i);
                // SAFETY: gated_ln_gemm_resid(const float* A, int lda, const float* G, int ldg,
                // const float* W, const float* bias, int M, int K, int N, float* C, int ldc).
                unsafe { l.launch(gemm_grid(m, d)) }.map_err(dev_err("gated_ln_gemm_resid"))?;
            }
        }
        {
            let (last, users_i) = (sec(s.last_row, plan.users), plan.users as i32);
            let mut l = stream.launch_builder(&k.l2norm_rows);
            l.arg(&*x).arg(&d_i).arg(&last).arg(&users_i).arg(&*out);
            // SAFETY: l2norm_rows(const float*, int, const int*, int, float*), one warp per user.
            unsafe { l.launch(grid_1d(plan.users * 32, 256)) }.map_err(dev_err("l2norm_rows"))?;
        }
        let host = stream.clone_dtoh(&out.slice(..plan.users * d)).map_err(dev_err("download"))?;
        Ok(host.chunks_exact(d).map(<[f32]>::to_vec).collect())
    }
}
