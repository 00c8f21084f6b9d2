//! A plain, readable HSTU forward in f64 with straight loops, written from
//! `HSTU.md` and independent of the fast path: the oracle of the parity tests.

#![allow(dead_code)]
// Straight index loops on purpose: the oracle reads like the math.
#![allow(clippy::needless_range_loop)]

use edgerec_kernels::{Event, Model};

/// The rab time bucket, in float32 as the reference computes it.
pub fn bucket(delta: i64, num_buckets: usize, div: f32) -> usize {
    let gap = (delta as f32).abs().max(1.0);
    let b = (gap.ln() / div) as i64; // truncation, like `.long()`
    b.clamp(0, num_buckets as i64) as usize
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn layer_norm(v: &[f64]) -> Vec<f64> {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    v.iter().map(|x| (x - mean) / (var + 1e-6).sqrt()).collect()
}

/// Stable time sort, keep the last L: the request as the model sees it.
pub fn kept(model: &Model, events: &[Event]) -> Vec<Event> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.ts);
    let l = model.config.max_seq_len;
    let start = sorted.len().saturating_sub(l);
    sorted[start..].to_vec()
}

/// The L2-normalised user embedding, f64 throughout (weights widened).
pub fn encode(model: &Model, events: &[Event], query_time: i64) -> Vec<f64> {
    let c = &model.config;
    let w = &model.weights;
    let ev = kept(model, events);
    let n = ev.len();
    let (d, h, dqk, dv, big_n) = (c.d_model, c.num_heads, c.d_qk, c.d_v, c.attn_normalizer);
    let width = c.uvqk_width();

    // x_t = sqrt(D)·E[item_t] + P[t]
    let mut x = vec![vec![0.0f64; d]; n];
    for t in 0..n {
        for f in 0..d {
            let e = w.item_emb[ev[t].item as usize * d + f] as f64;
            let p = w.pos_emb[t * d + f] as f64;
            x[t][f] = (d as f64).sqrt() * e + p;
        }
    }

    for layer in &w.layers {
        // u | v | q | k = SiLU(LN(x) · W)
        let mut proj = vec![vec![0.0f64; width]; n];
        for t in 0..n {
            let xn = layer_norm(&x[t]);
            for col in 0..width {
                let mut s = 0.0;
                for f in 0..d {
                    s += xn[f] * layer.uvqk[f * width + col] as f64;
                }
                proj[t][col] = silu(s);
            }
        }
        let u = |t: usize, i: usize| proj[t][i];
        let v = |t: usize, hd: usize, i: usize| proj[t][h * dv + hd * dv + i];
        let q = |t: usize, hd: usize, i: usize| proj[t][2 * h * dv + hd * dqk + i];
        let k = |t: usize, hd: usize, i: usize| proj[t][2 * h * dv + h * dqk + hd * dqk + i];

        let mut new_x = x.clone();
        for i in 0..n {
            let next_ts = if i + 1 < n { ev[i + 1].ts } else { query_time };
            let mut o = vec![0.0f64; h * dv];
            for hd in 0..h {
                for j in 0..=i {
                    let mut qk = 0.0;
                    for f in 0..dqk {
                        qk += q(i, hd, f) * k(j, hd, f);
                    }
                    let rab = layer.pos_w[big_n - 1 + j - i] as f64
                        + layer.ts_w[bucket(next_ts - ev[j].ts, c.num_time_buckets, c.time_bucket_div)] as f64;
                    let a = silu(c.alpha as f64 * qk + rab) / big_n as f64;
                    for f in 0..dv {
                        o[hd * dv + f] += a * v(j, hd, f);
                    }
                }
            }
            let on = layer_norm(&o);
            let y: Vec<f64> = (0..h * dv).map(|f| u(i, f) * on[f]).collect();
            for out in 0..d {
                let mut s = layer.o_b[out] as f64;
                for f in 0..h * dv {
                    s += y[f] * layer.o_w[f * d + out] as f64;
                }
                new_x[i][out] += s;
            }
        }
        x = new_x;
    }
    let last = &x[n - 1];
    let norm = last.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
    last.iter().map(|v| v / norm).collect()
}

/// max_i |a_i − b_i| / max_i |b_i|: the error relative to the largest
/// component (a near-zero component has no meaningful relative error).
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max) / scale
}
