//! The HSTU forward on the device for a jagged batch of users: one launch
//! per kernel per layer for the whole batch. Mirrors kernels/src/forward.rs
//! `forward` (rows `first..n` of each user are the query rows; keys and
//! values of rows `0..first` come from a per-user cache). As on the CPU, the
//! last layer's attention and output projection run for each user's newest
//! row only (gathered into `[users, …]` buffers); its u|v|q|k product and
//! key/value scatter still cover every row.

use crate::error::BackendError;
use crate::history::Event;

use super::CudaBackend;
use super::launch::{Arg, DevBuf, Shape, dyn_smem_bytes, launch};
use super::shapes::{ATT_QB, ATT_THREADS, GEMM_BM, GEMM_BN, GEMM_THREADS, ROWS_THREADS, SCATTER_THREADS};
use super::signatures::Kernel;
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
    /// The backend's pool of per-user caches, `[layers][capacity][L][H·dqk | H·dv]`
    /// (see `kv_pool.rs`), job u in slot `slots[u]`: the query rows' keys and
    /// values are written to their rows, then rows `0..n` are read.
    Pool {
        /// The pool's buffer.
        cache: &'a DevBuf<f32>,
        /// Slots per layer in it.
        capacity: usize,
        /// Each job's slot.
        slots: &'a [usize],
    },
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
    /// `u` for user u: the newest rows' compact index (and one attention block each).
    ident: usize,
    /// `n - 1` for user u: the newest row's position in the window.
    newest: usize,
}

impl Plan {
    /// `slots`: each job's slot in a cache store and the rows per slot (L),
    /// `None` when transient.
    fn new(jobs: &[Job<'_>], slots: Option<(&[usize], usize)>) -> (Self, Sections) {
        let b = jobs.len();
        let rows: usize = jobs.iter().map(|j| j.events.len() - j.first).sum();
        let blocks: usize = jobs.iter().map(|j| (j.events.len() - j.first).div_ceil(ATT_QB as usize)).sum();
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
            ident: 6 * b + 2 * blocks + 2 * rows,
            newest: 7 * b + 2 * blocks + 2 * rows,
        };
        let mut meta = vec![0i32; s.newest + b];
        let mut items = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows + 2 * b);
        let (mut row, mut blk) = (0usize, 0usize);
        for (u, job) in jobs.iter().enumerate() {
            let n = job.events.len();
            meta[s.q_off + u] = row as i32;
            meta[s.q_first + u] = job.first as i32;
            meta[s.n_rows + u] = n as i32;
            // Transient keys live in the call's own rows, where row `first` is at q_off.
            meta[s.kv_off + u] = match slots {
                Some((of, l)) => (of[u] * l) as i32,
                None => row as i32 - job.first as i32,
            };
            meta[s.ts_off + u] = ts.len() as i32;
            meta[s.last_row + u] = (row + n - job.first - 1) as i32;
            meta[s.ident + u] = u as i32;
            meta[s.newest + u] = n as i32 - 1;
            ts.extend(job.events.iter().map(|e| e.ts));
            ts.push(job.query_time);
            for row0 in (job.first..n).step_by(ATT_QB as usize) {
                meta[s.blk_user + blk] = u as i32;
                meta[s.blk_row0 + blk] = row0 as i32;
                blk += 1;
            }
            for (t, e) in job.events.iter().enumerate().skip(job.first) {
                meta[s.pos + row] = t as i32;
                meta[s.kv_dst + row] = slots.map_or(0, |(of, l)| of[u] * l + t) as i32;
                items.push(e.item);
                row += 1;
            }
        }
        (Plan { meta, items, ts, rows, users: b, blocks }, s)
    }
}

fn gemm_grid(m: usize, n: usize) -> Shape {
    Shape::new((n.div_ceil(GEMM_BN as usize) as u32, m.div_ceil(GEMM_BM as usize) as u32, 1), GEMM_THREADS)
}

impl CudaBackend {
    /// Fills `buf[..len]` with NaN when poisoning is on (a test aid).
    pub(super) fn poison<T: super::launch::DeviceType>(&self, buf: &DevBuf<T>, len: usize) -> Result<(), BackendError> {
        if !self.poison_outputs() || len == 0 {
            return Ok(());
        }
        let args = [buf.arg(), Arg::I64(len.min(buf.len()) as i64), Arg::U32(POISON)];
        launch(self.launcher(), Kernel::FillU32, &Shape::cover(len, ROWS_THREADS), &args)
    }

    /// Runs every layer for `jobs` (at most MAX_ROWS_PER_LAUNCH query rows in
    /// total; a cache store names each job's slot) and returns each user's
    /// L2-normalised last row.
    pub(crate) fn forward_jobs(
        &self,
        ws: &mut Workspace,
        jobs: &[Job<'_>],
        store: KvStore<'_>,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let c = &self.model.config;
        let l = self.launcher();
        let slots = match &store {
            KvStore::Transient => None,
            KvStore::Pool { slots, .. } => Some((*slots, c.max_seq_len)),
        };
        let (plan, s) = Plan::new(jobs, slots);
        let w = &self.weights;
        let (d, h, dqk, dv) = (c.d_model, c.num_heads, c.d_qk, c.d_v);
        let (width, attn_w) = (c.uvqk_width(), c.attn_width());
        let (v_col, q_col, k_col) = (attn_w, 2 * attn_w, 2 * attn_w + h * dqk);
        let (kw, vw) = (h * dqk, h * dv);
        let m = plan.rows;

        let meta = &*ws.meta.upload(l, &plan.meta)?;
        let items = &*ws.items.upload(l, &plan.items)?;
        let ts = &*ws.ts.upload(l, &plan.ts)?;
        let x = &*ws.x.at_least(l, m * d)?;
        let uvqk = &*ws.uvqk.at_least(l, m * width)?;
        let attn = &*ws.attn.at_least(l, m * attn_w)?;
        let out = &*ws.out.at_least(l, plan.users * d)?;
        let x_last = &*ws.x_last.at_least(l, plan.users * d)?;
        let uvqk_last = &*ws.uvqk_last.at_least(l, plan.users * width)?;
        self.poison(x_last, plan.users * d)?;
        self.poison(uvqk_last, plan.users * width)?;
        self.poison(x, m * d)?;
        self.poison(uvqk, m * width)?;
        self.poison(attn, m * attn_w)?;
        self.poison(out, plan.users * d)?;
        let sec = |start: usize| meta.arg_at(start);

        // x = sqrt(D)·E[item] + P[pos]
        let (m_i, d_i, width_i, attn_i) = (m as i32, d as i32, width as i32, attn_w as i32);
        launch(
            l,
            Kernel::EmbedRows,
            &Shape::cover(m * d, ROWS_THREADS),
            &[
                w.item_emb.arg(),
                w.pos_emb.arg(),
                items.arg(),
                sec(s.pos)?,
                Arg::I32(m_i),
                Arg::I32(d_i),
                Arg::F32((d as f32).sqrt()),
                x.arg(),
            ],
        )?;

        let (big_n, alpha, inv_n) = (c.attn_normalizer as i32, c.alpha, 1.0 / c.attn_normalizer as f32);
        let max_rows = c.max_seq_len;
        // One layer of a cache store: every slot's L rows.
        let layer_kv = match &store {
            KvStore::Transient => 0,
            KvStore::Pool { capacity, .. } => capacity * max_rows * (kw + vw),
        };
        for (layer_index, layer) in w.layers.iter().enumerate() {
            // uvqk = SiLU(LN(x) · W_uvqk)
            launch(
                l,
                Kernel::LnGemmSilu,
                &gemm_grid(m, width),
                &[
                    x.arg(),
                    Arg::I32(d_i),
                    layer.uvqk.arg(),
                    Arg::I32(m_i),
                    Arg::I32(d_i),
                    Arg::I32(width_i),
                    uvqk.arg(),
                    Arg::I32(width_i),
                ],
            )?;
            // Keys and values: the uvqk rows themselves, or their slots in the cache.
            let (k_base, v_base, kv_stride) = match &store {
                KvStore::Transient => (uvqk.arg_at(k_col)?, uvqk.arg_at(v_col)?, width_i),
                KvStore::Pool { cache, .. } => {
                    let base = layer_index * layer_kv;
                    // Every dst row slot·L + t (t < L) lies inside this layer's part of the cache.
                    launch(
                        l,
                        Kernel::ScatterKv,
                        &Shape::new((m as u32, 1, 1), SCATTER_THREADS),
                        &[
                            uvqk.arg(),
                            Arg::I32(width_i),
                            Arg::I32(k_col as i32),
                            Arg::I32(v_col as i32),
                            Arg::I32(kw as i32),
                            Arg::I32(vw as i32),
                            sec(s.kv_dst)?,
                            Arg::I32(m_i),
                            cache.arg_at(base)?,
                        ],
                    )?;
                    (cache.arg_at(base)?, cache.arg_at(base + kw)?, (kw + vw) as i32)
                }
            };
            // The last layer: only each user's newest row goes on, gathered
            // (its q and u, and its x for the residual).
            let newest_only = layer_index + 1 == w.layers.len();
            let users_i = plan.users as i32;
            if newest_only {
                let gather = Shape::new((plan.users as u32, 1, 1), SCATTER_THREADS);
                for (src, ld, dst) in [(uvqk, width_i, uvqk_last), (x, d_i, x_last)] {
                    let args = [
                        src.arg(),
                        Arg::I32(ld),
                        sec(s.last_row)?,
                        Arg::I32(users_i),
                        Arg::I32(ld),
                        dst.arg(),
                        Arg::I32(ld),
                    ];
                    launch(l, Kernel::GatherRows, &gather, &args)?;
                }
            }
            // (q rows, attention blocks, their user and first row, each user's
            // q offset and first query row)
            let (q_rows, blocks, blk_user, blk_row0, q_off, q_first) = if newest_only {
                (uvqk_last, plan.users, s.ident, s.newest, s.ident, s.newest)
            } else {
                (uvqk, plan.blocks, s.blk_user, s.blk_row0, s.q_off, s.q_first)
            };
            // O = causal SiLU attention with rab.
            let shape = Shape {
                grid: (blocks as u32, h as u32, 1),
                block: ATT_THREADS,
                dyn_smem: dyn_smem_bytes(Kernel::HstuAttention, c) as u32,
            };
            launch(
                l,
                Kernel::HstuAttention,
                &shape,
                &[
                    q_rows.arg_at(q_col)?,
                    Arg::I32(width_i),
                    k_base,
                    v_base,
                    Arg::I32(kv_stride),
                    sec(blk_user)?,
                    sec(blk_row0)?,
                    sec(q_off)?,
                    sec(q_first)?,
                    sec(s.n_rows)?,
                    sec(s.kv_off)?,
                    ts.arg(),
                    sec(s.ts_off)?,
                    w.thresholds.arg(),
                    layer.pos_w.arg(),
                    layer.ts_w.arg(),
                    Arg::I32(big_n),
                    Arg::F32(alpha),
                    Arg::F32(inv_n),
                    Arg::I32(h as i32),
                    attn.arg(),
                ],
            )?;
            // x += (u ⊙ LN(O)) · W_o + b_o
            let (rows_i, gate, residual) = if newest_only { (users_i, uvqk_last, x_last) } else { (m_i, uvqk, x) };
            launch(
                l,
                Kernel::GatedLnGemmResid,
                &gemm_grid(rows_i as usize, d),
                &[
                    attn.arg(),
                    Arg::I32(attn_i),
                    gate.arg(),
                    Arg::I32(width_i),
                    layer.o_w.arg(),
                    layer.o_b.arg(),
                    Arg::I32(rows_i),
                    Arg::I32(attn_i),
                    Arg::I32(d_i),
                    residual.arg(),
                    Arg::I32(d_i),
                ],
            )?;
        }
        launch(
            l,
            Kernel::L2normRows,
            &Shape::cover(plan.users * 32, ROWS_THREADS),
            &[x_last.arg(), Arg::I32(d_i), sec(s.ident)?, Arg::I32(plan.users as i32), out.arg()],
        )?;
        let host = super::launch::download(l, out, 0, plan.users * d)?;
        let embeddings: Vec<Vec<f32>> = host.chunks_exact(d).map(<[f32]>::to_vec).collect();
        // They stay on the device too, for the top-k that scores them.
        ws.resident.keep(l, out, &embeddings)?;
        Ok(embeddings)
    }
}
