//! The numeric core of the CPU forward: the HSTU layers of `HSTU.md` over
//! the rows `start..n` of each user's kept window, given the per-layer keys
//! and values of rows `0..start`. A full encode is `start = 0`; an
//! incremental one recomputes only the tail. On the last layer only each
//! user's newest row is read (the embedding), so that layer's attention and
//! output projection run for that row alone; its keys and values are still
//! computed and kept for every row (later appends attend to them).
//!
//! Several users can go through one call (a group): their query rows are
//! stacked, so each projection (LayerNorm → u|v|q|k → SiLU, and the output
//! projection) is one product over all of them, and only the attention runs
//! per user. The products are the tiles of [`crate::microkernel`], whose
//! per-row result does not depend on the other rows: a group's embeddings
//! are bit-identical to encoding its users one by one.
//!
//! All intermediate buffers live in one per-thread arena that grows to the
//! largest group seen and is reused, so the hot loop allocates nothing but
//! the keys/values it must keep and the returned embeddings.

use std::cell::RefCell;

use crate::history::Event;
use crate::microkernel::{
    Attn, AttnScratch, Epilogue, Mat, POS_PAD, attention_head, bucket_row, dot, gemm, grow, layer_norm_rows, padded,
};
use crate::model::Model;

/// LayerNorm epsilon of the reference (no gain, no bias).
const LN_EPS: f32 = 1e-6;
/// On the last layer, u and q are computed for the newest rows only when the
/// users average more than this many query rows (see `forward_in`).
const SPLIT_MIN_ROWS_PER_USER: usize = 2;
/// Floor of the final L2 norm, as in the reference.
const NORM_FLOOR: f32 = 1e-6;
/// `i64::MIN.unsigned_abs() as f32`.
const TWO_POW_63: f32 = 9_223_372_036_854_775_808.0;

/// Keys and values of one layer for the rows computed so far, row-major
/// (`[rows, H·d_qk]` and `[rows, H·d_v]`, heads contiguous).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LayerKv {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// One user of a forward group: the sorted kept window, the query time, the
/// first row to compute, and the per-layer cache (rows `0..start` on entry,
/// `0..n` on exit).
pub(crate) struct UserRows<'a> {
    pub events: &'a [Event],
    pub query_time: i64,
    pub start: usize,
    pub kv: &'a mut [LayerKv],
}

/// The per-thread arena of [`forward_group`].
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    uvqk: Vec<f32>,
    out: Vec<f32>,
    buckets: Vec<u32>,
    gaps: Vec<f32>,
    pos: Vec<f32>,
    attn: AttnScratch,
    /// The newest row of each user's residual stream on the last layer.
    last_x: Vec<f32>,
    /// `LN(last_x)`.
    last_normed: Vec<f32>,
    /// u|v|q|k of each user's newest row on the last layer (only u and q are read).
    last_uvqk: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs every layer over the rows `start..n` of `events` (the sorted kept
/// window). On entry `kv[l]` holds the keys and values of rows `0..start`; on
/// exit of rows `0..n`. Returns the L2-normalised output of the newest row.
pub(crate) fn forward(model: &Model, events: &[Event], query_time: i64, start: usize, kv: &mut [LayerKv]) -> Vec<f32> {
    let mut users = [UserRows { events, query_time, start, kv }];
    let mut out = forward_group(model, &mut users);
    out.pop().unwrap_or_default()
}

/// [`forward`] for several users at once, their rows stacked (see the module
/// comment); one embedding per user, in order.
pub(crate) fn forward_group(model: &Model, users: &mut [UserRows<'_>]) -> Vec<Vec<f32>> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => forward_in(model, users, &mut scratch),
        // Only if a forward ever ran inside another on this thread.
        Err(_) => forward_in(model, users, &mut Scratch::default()),
    })
}

fn forward_in(model: &Model, users: &mut [UserRows<'_>], s: &mut Scratch) -> Vec<Vec<f32>> {
    let c = &model.config;
    let (d, h, dqk, dv) = (c.d_model, c.num_heads, c.d_qk, c.d_v);
    let (width, attn) = (c.uvqk_width(), c.attn_width());
    let (q_off, k_off, v_off) = (2 * attn, 2 * attn + h * dqk, attn);
    let big_n = c.attn_normalizer;
    for u in users.iter() {
        debug_assert!(u.start < u.events.len() && u.events.len() <= c.max_seq_len && u.kv.len() == c.num_layers);
    }
    // Offsets of each user's rows in the stacked buffers, and of its buckets.
    let mut row_off = Vec::with_capacity(users.len() + 1);
    let mut bucket_off = Vec::with_capacity(users.len() + 1);
    let (mut rows, mut bucket_len, mut longest) = (0, 0, 0);
    for u in users.iter() {
        row_off.push(rows);
        bucket_off.push(bucket_len);
        let n = u.events.len();
        rows += n - u.start;
        bucket_len += (n - u.start) * padded(n);
        longest = longest.max(n);
    }
    let Scratch { x, normed, uvqk, out, buckets, gaps, pos, attn: attn_scratch, last_x, last_normed, last_uvqk } = s;
    grow(x, rows * d);
    grow(normed, rows * d);
    grow(uvqk, rows * width);
    grow(out, rows * attn);
    grow(buckets, bucket_len);
    grow(gaps, longest);
    grow(pos, 2 * big_n - 1 + POS_PAD);
    grow(last_x, users.len() * d);
    grow(last_normed, users.len() * d);
    grow(last_uvqk, users.len() * width);
    let (x, normed, uvqk, out) =
        (&mut x[..rows * d], &mut normed[..rows * d], &mut uvqk[..rows * width], &mut out[..rows * attn]);

    let scale = (d as f32).sqrt();
    for (u, (&r0, &b0)) in users.iter().zip(row_off.iter().zip(&bucket_off)) {
        // x_t = sqrt(D)·E[item_t] + P[t].
        for (t, event) in u.events.iter().enumerate().skip(u.start) {
            let dst = &mut x[(r0 + t - u.start) * d..(r0 + t - u.start + 1) * d];
            let item = model.item_row(event.item);
            let p = &model.weights.pos_emb[t * d..(t + 1) * d];
            for ((o, e), p) in dst.iter_mut().zip(item).zip(p) {
                *o = scale * e + p;
            }
        }
        // Time buckets of the query rows against every key j ≤ i (row i
        // uses ts[i+1], the newest row the query time), zero past the
        // diagonal: once per request, shared by all layers.
        let n = u.events.len();
        let ldn = padded(n);
        for i in u.start..n {
            let next_ts = u.events.get(i + 1).map_or(u.query_time, |e| e.ts);
            for (g, e) in gaps.iter_mut().zip(&u.events[..=i]) {
                // |Δ| as f32, as `time_bucket` converts it (i64 → f32 is one
                // instruction, u64 → f32 a branchy sequence on x86-64).
                *g = next_ts.wrapping_sub(e.ts).checked_abs().map_or(TWO_POW_63, |gap| gap as f32);
            }
            let row = &mut buckets[b0 + (i - u.start) * ldn..b0 + (i - u.start + 1) * ldn];
            bucket_row(c, &gaps[..=i], &mut row[..=i]);
            row[i + 1..].fill(0);
        }
    }

    // Only each user's newest row of the last layer is read (the embedding):
    // on that layer, u and q (and then the attention and the output
    // projection) are computed for those rows alone, while v and k are
    // computed and kept for every row (later appends attend to them).
    // (A model has at least one layer: `ModelConfig::validate`.)
    let last_layer = model.weights.layers.len().saturating_sub(1);
    let b = users.len();
    for (l, layer) in model.weights.layers.iter().enumerate() {
        let newest_only = l == last_layer;
        normed.copy_from_slice(x);
        layer_norm_rows(normed, d, d, rows, LN_EPS, None);
        let a = Mat { data: normed, ld: d };
        // Splitting the product pays where users have many query rows; for
        // an append's one or two rows per user the extra calls cost more
        // than the u and q columns they skip (measured on ML-20M appends).
        if newest_only && rows > SPLIT_MIN_ROWS_PER_USER * b {
            // v and k of every row; u and q of the newest rows, stacked
            // (each weight column is read once either way).
            for (col, cols) in [(v_off, attn), (k_off, h * dqk)] {
                let w = Mat { data: &layer.uvqk[col..], ld: width };
                gemm(&mut uvqk[col..], width, a, w, (rows, d, cols), Epilogue::Silu);
            }
            for (ui, (u, &r0)) in users.iter().zip(&row_off).enumerate() {
                let newest = r0 + u.events.len() - u.start - 1;
                last_x[ui * d..(ui + 1) * d].copy_from_slice(&x[newest * d..(newest + 1) * d]);
                last_normed[ui * d..(ui + 1) * d].copy_from_slice(&normed[newest * d..(newest + 1) * d]);
            }
            let last_a = Mat { data: &last_normed[..b * d], ld: d };
            for (col, cols) in [(0, attn), (q_off, h * dqk)] {
                let w = Mat { data: &layer.uvqk[col..], ld: width };
                gemm(&mut last_uvqk[col..b * width], width, last_a, w, (b, d, cols), Epilogue::Silu);
            }
        } else {
            gemm(uvqk, width, a, Mat { data: &layer.uvqk, ld: width }, (rows, d, width), Epilogue::Silu);
            if newest_only {
                for (ui, (u, &r0)) in users.iter().zip(&row_off).enumerate() {
                    let newest = r0 + u.events.len() - u.start - 1;
                    last_x[ui * d..(ui + 1) * d].copy_from_slice(&x[newest * d..(newest + 1) * d]);
                    last_uvqk[ui * width..(ui + 1) * width]
                        .copy_from_slice(&uvqk[newest * width..(newest + 1) * width]);
                }
            }
        }

        pos[..2 * big_n - 1].copy_from_slice(&layer.pos_w);
        pos[2 * big_n - 1..].fill(0.0);
        for (ui, (u, (&r0, &b0))) in users.iter_mut().zip(row_off.iter().zip(&bucket_off)).enumerate() {
            let n = u.events.len();
            let user_rows = n - u.start;
            let cache = &mut u.kv[l];
            for row in uvqk[r0 * width..(r0 + user_rows) * width].chunks_exact(width) {
                cache.keys.extend_from_slice(&row[k_off..k_off + h * dqk]);
                cache.values.extend_from_slice(&row[v_off..v_off + attn]);
            }
            // The query rows `first..n`: their q rows, and where their outputs go.
            let (first, q_rows, o_row) = if newest_only {
                (n - 1, Mat { data: &last_uvqk[ui * width..], ld: width }, ui)
            } else {
                (u.start, Mat { data: &uvqk[r0 * width..], ld: width }, r0)
            };
            let ldn = padded(n);
            for head in 0..h {
                let args = Attn {
                    q: Mat { data: &q_rows.data[q_off + head * dqk..], ld: width },
                    keys: Mat { data: &cache.keys[head * dqk..], ld: h * dqk },
                    values: Mat { data: &cache.values[head * dv..], ld: attn },
                    buckets: &buckets[b0 + (first - u.start) * ldn..b0 + user_rows * ldn],
                    pos,
                    ts_w: &layer.ts_w,
                    start: first,
                    n,
                    d_qk: dqk,
                    d_v: dv,
                    big_n,
                    alpha: c.alpha,
                };
                attention_head(&args, &mut out[o_row * attn + head * dv..], attn, attn_scratch);
            }
        }
        // y = u ⊙ LN(O), then x += y · W_o + b_o.
        let (o_rows, gate, residual) = if newest_only {
            (b, Mat { data: &last_uvqk[..b * width], ld: width }, &mut last_x[..b * d])
        } else {
            (rows, Mat { data: uvqk, ld: width }, &mut x[..])
        };
        let out = &mut out[..o_rows * attn];
        layer_norm_rows(out, attn, attn, o_rows, LN_EPS, Some(gate));
        let w_o = Mat { data: &layer.o_w, ld: d };
        gemm(residual, d, Mat { data: out, ld: attn }, w_o, (o_rows, attn, d), Epilogue::AddBias(&layer.o_b));
    }

    last_x[..b * d]
        .chunks_exact(d)
        .map(|row| {
            let mut last = row.to_vec();
            let norm = dot(&last, &last).sqrt().max(NORM_FLOOR);
            last.iter_mut().for_each(|v| *v /= norm);
            last
        })
        .collect()
}
