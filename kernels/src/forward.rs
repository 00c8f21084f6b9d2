//! The numeric core of the CPU forward: the HSTU layers of `HSTU.md` over
//! the rows `start..n` of each user's kept window, given the per-layer keys
//! and values of rows `0..start`. A full encode is `start = 0`; an
//! incremental one recomputes only the tail.
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
    let Scratch { x, normed, uvqk, out, buckets, gaps, pos, attn: attn_scratch } = s;
    grow(x, rows * d);
    grow(normed, rows * d);
    grow(uvqk, rows * width);
    grow(out, rows * attn);
    grow(buckets, bucket_len);
    grow(gaps, longest);
    grow(pos, 2 * big_n - 1 + POS_PAD);
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

    for (l, layer) in model.weights.layers.iter().enumerate() {
        normed.copy_from_slice(x);
        layer_norm_rows(normed, d, d, rows, LN_EPS, None);
        gemm(
            uvqk,
            width,
            Mat { data: normed, ld: d },
            Mat { data: &layer.uvqk, ld: width },
            (rows, d, width),
            Epilogue::Silu,
        );

        pos[..2 * big_n - 1].copy_from_slice(&layer.pos_w);
        pos[2 * big_n - 1..].fill(0.0);
        for (u, (&r0, &b0)) in users.iter_mut().zip(row_off.iter().zip(&bucket_off)) {
            let n = u.events.len();
            let user_rows = n - u.start;
            let cache = &mut u.kv[l];
            for row in uvqk[r0 * width..(r0 + user_rows) * width].chunks_exact(width) {
                cache.keys.extend_from_slice(&row[k_off..k_off + h * dqk]);
                cache.values.extend_from_slice(&row[v_off..v_off + attn]);
            }
            for head in 0..h {
                let args = Attn {
                    q: Mat { data: &uvqk[r0 * width + q_off + head * dqk..], ld: width },
                    keys: Mat { data: &cache.keys[head * dqk..], ld: h * dqk },
                    values: Mat { data: &cache.values[head * dv..], ld: attn },
                    buckets: &buckets[b0..b0 + user_rows * padded(n)],
                    pos,
                    ts_w: &layer.ts_w,
                    start: u.start,
                    n,
                    d_qk: dqk,
                    d_v: dv,
                    big_n,
                    alpha: c.alpha,
                };
                attention_head(&args, &mut out[r0 * attn + head * dv..], attn, attn_scratch);
            }
        }
        // y = u ⊙ LN(O), then x += y · W_o + b_o.
        layer_norm_rows(out, attn, attn, rows, LN_EPS, Some(Mat { data: uvqk, ld: width }));
        gemm(
            x,
            d,
            Mat { data: out, ld: attn },
            Mat { data: &layer.o_w, ld: d },
            (rows, attn, d),
            Epilogue::AddBias(&layer.o_b),
        );
    }

    users
        .iter()
        .zip(&row_off)
        .map(|(u, &r0)| {
            let last_row = r0 + u.events.len() - u.start - 1;
            let mut last = x[last_row * d..(last_row + 1) * d].to_vec();
            let norm = dot(&last, &last).sqrt().max(NORM_FLOOR);
            last.iter_mut().for_each(|v| *v /= norm);
            last
        })
        .collect()
}
