//! The cost model of the CUDA kernels: for a workload, the bytes each kernel
//! must move through device memory and the FLOPs it must do, and the time
//! that implies on a stated device at a stated efficiency. The check script
//! prints it beside the measured per-kernel times, so that the first device
//! run checks predictions, not just numbers.
//!
//! "Must move": every input read once and every output written once (the
//! compulsory traffic), not what the kernels happen to read today: a kernel
//! that reads a table once per user shows up as measured ≫ predicted.
//! FLOPs count multiply-adds as 2 and the dense math only (LayerNorm, SiLU,
//! softmax-free attention weights and norms as a handful of FLOPs per element).

use std::fmt::Write;
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::encode::encode_batch;
use crate::error::BackendError;
use crate::history::UserHistory;
use crate::history::random_history;
use crate::model::Model;
use crate::score::top_k;

use super::CudaBackend;

/// One kernel's compulsory traffic and arithmetic for a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelCost {
    /// The kernel's name in its `.cu` file.
    pub kernel: &'static str,
    /// Bytes it must read and write.
    pub bytes: f64,
    /// Floating-point operations it must do.
    pub flops: f64,
}

/// A device's roofs as the cost model assumes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceModel {
    /// Name, for reports.
    pub name: &'static str,
    /// Peak device-memory bandwidth, bytes/s.
    pub bytes_per_sec: f64,
    /// Peak f32 (CUDA-core, non-tensor) FMA rate, FLOP/s.
    pub flops_per_sec: f64,
    /// The fraction of either peak the prediction assumes is reached.
    pub efficiency: f64,
}

/// H100 SXM5 (datasheet: 3.35 TB/s HBM3, 67 TFLOP/s f32 non-tensor) at 60 %
/// of either peak: what a well-tuned memory-bound or FMA-bound kernel reaches.
pub const H100_SXM: DeviceModel = DeviceModel {
    name: "H100 SXM (3.35 TB/s, 67 TFLOP/s f32) at 60 %",
    bytes_per_sec: 3.35e12,
    flops_per_sec: 67e12,
    efficiency: 0.6,
};

impl KernelCost {
    /// Predicted seconds on `device`: the slower of moving the bytes and
    /// doing the FLOPs at the stated efficiency (a roofline).
    pub fn predicted_secs(&self, device: &DeviceModel) -> f64 {
        let memory = self.bytes / (device.bytes_per_sec * device.efficiency);
        let math = self.flops / (device.flops_per_sec * device.efficiency);
        memory.max(math)
    }
}

const F32: f64 = 4.0;

/// Operations per row and user of `quant_chunk_kth`'s ranking: a 32-lane
/// bitonic network (15 compare-exchange steps, two shuffles and a compare
/// each) and eight 5-step binary searches (a load and a compare each).
pub const RANK_OPS: f64 = 15.0 * 3.0 + 8.0 * 5.0 * 2.0;

/// Costs of one full encode of users with `lengths` events each (windows of
/// at most L rows), summed over the layers: the kernels of
/// `CudaBackend::encode_batch`. The last layer's attention and output
/// projection cover each user's newest row only (gathered by `gather_rows`);
/// its u|v|q|k product covers every row (the keys and values are kept).
pub fn encode_costs(config: &ModelConfig, lengths: &[usize]) -> Vec<KernelCost> {
    let c = config;
    let windows: Vec<f64> = lengths.iter().map(|&n| n.min(c.max_seq_len) as f64).collect();
    let rows: f64 = windows.iter().sum();
    let pairs: f64 = windows.iter().map(|n| n * (n + 1.0) / 2.0).sum();
    let users = lengths.len() as f64;
    let (d, w, a, h) = (c.d_model as f64, c.uvqk_width() as f64, c.attn_width() as f64, c.num_heads as f64);
    let (dqk, dv, layers) = (c.d_qk as f64, c.d_v as f64, c.num_layers as f64);
    // Every layer but the last computes every query row; the last one the
    // newest row of each user, attending to all of its `rows` keys.
    let (q_rows, att_pairs) = (rows * (layers - 1.0) + users, pairs * (layers - 1.0) + rows);
    vec![
        // Item and position rows in, x out; ids and positions.
        KernelCost { kernel: "embed_rows", bytes: 3.0 * rows * d * F32 + 8.0 * rows, flops: 2.0 * rows * d },
        // x and W in, uvqk out; LN (~5 per element) and SiLU (~4 per output).
        KernelCost {
            kernel: "ln_gemm_silu",
            bytes: layers * F32 * (rows * d + d * w + rows * w),
            flops: layers * (2.0 * rows * d * w + 5.0 * rows * d + 4.0 * rows * w),
        },
        // The last layer's newest rows of uvqk and x, read and written once.
        KernelCost { kernel: "gather_rows", bytes: 2.0 * users * (w + d) * F32, flops: 0.0 },
        // q and O of the query rows, k and v of every row; q·k and A·v per
        // causal pair and head, ~10 per pair and head for the bias, SiLU and
        // scaling.
        KernelCost {
            kernel: "hstu_attention",
            bytes: F32 * h * (q_rows * (dqk + dv) + layers * rows * (dqk + dv)) + 8.0 * rows * layers,
            flops: att_pairs * h * (2.0 * dqk + 2.0 * dv + 10.0),
        },
        // O and the gate u in, W in, x read and written; LN and the gate.
        KernelCost {
            kernel: "gated_ln_gemm_resid",
            bytes: F32 * (q_rows * (2.0 * a + 2.0 * d) + layers * a * d),
            flops: q_rows * (2.0 * a * d + 6.0 * a + 2.0 * d),
        },
        // One row per user in, normalised out.
        KernelCost { kernel: "l2norm_rows", bytes: 2.0 * users * d * F32, flops: 3.0 * users * d },
    ]
}

/// Costs of one top-k call for `users` embeddings over the quantised
/// catalog (`score_topk.cu`, `chunk` rows per block): the queries quantised
/// on the device, then two passes that each
/// read the table (int8 codes and a scale per row) once for the whole batch,
/// the int8 dot products of every (user, row) in each pass (counted as 2
/// operations per multiply-add, on the f32 roof: an upper bound, the integer
/// path is faster), the per-chunk ranking ([`RANK_OPS`] per row and user),
/// and the candidates (about 4k per user) written and read back.
pub fn top_k_costs(config: &ModelConfig, users: usize, k: usize, chunk: usize) -> Vec<KernelCost> {
    let (d, v, b) = (config.d_model as f64, config.num_items as f64, users as f64);
    let groups = config.d_model.div_ceil(4) as f64;
    let chunks = config.num_items.div_ceil(chunk) as f64;
    let table = v * (4.0 * groups + F32);
    let queries = b * (groups + 2.0) * 4.0;
    vec![
        // Each query read where the encode left it (D floats), its codes,
        // correction, scale, 2W and domain flag written; about 10 f64
        // operations per value (counted on the f32 roof: f64 is slower, but
        // this is a few thousand operations per user).
        KernelCost { kernel: "quant_query", bytes: b * d * F32 + queries + 2.0 * b * F32, flops: 10.0 * b * d },
        KernelCost {
            kernel: "quant_chunk_kth",
            bytes: table + queries + b * chunks * F32,
            flops: 2.0 * b * v * d + b * v * RANK_OPS,
        },
        KernelCost { kernel: "quant_threshold", bytes: b * chunks * F32 + 2.0 * b * F32, flops: b * chunks },
        KernelCost {
            kernel: "quant_select",
            bytes: table + queries + b * 4.0 * k as f64 * 4.0,
            flops: 2.0 * b * v * d,
        },
    ]
}

/// The cost model at the device shapes (the check script's timing
/// workloads): one line per kernel, then each workload's sum.
pub fn device_shape_table(device: &DeviceModel) -> String {
    let chunk = CudaBackend::top_k_chunk();
    let ml1m = ModelConfig::ml_1m(3953);
    let ml20m = ModelConfig::ml_20m(131_263);
    let wide = ModelConfig::ml_1m(1_000_000);
    let sets: [(&str, Vec<KernelCost>); 5] = [
        ("encode ML-1M 4096u x 200ev", encode_costs(&ml1m, &[200; 4096])),
        ("encode ML-1M 4096u x 20ev", encode_costs(&ml1m, &[20; 4096])),
        ("encode ML-20M 4096u x 200ev", encode_costs(&ml20m, &[200; 4096])),
        ("top-10 V=1M 64u", top_k_costs(&wide, 64, 10, chunk)),
        ("top-10 V=1M 1u", top_k_costs(&wide, 1, 10, chunk)),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "cost model at the device shapes, predicted on {}", device.name);
    let _ = writeln!(out, "| workload | kernel | MB | GFLOP | bound | predicted ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (workload, costs) in &sets {
        let mut total = 0.0;
        for c in costs {
            let t = c.predicted_secs(device);
            total += t;
            let bound = if c.bytes / device.bytes_per_sec >= c.flops / device.flops_per_sec { "memory" } else { "FMA" };
            let _ = writeln!(
                out,
                "| {workload} | {} | {:.1} | {:.2} | {bound} | {:.3} |",
                c.kernel,
                c.bytes / 1e6,
                c.flops / 1e9,
                t * 1e3
            );
        }
        let _ = writeln!(out, "| {workload} | (sum) | | | | {:.3} |", total * 1e3);
    }
    out
}

/// The report of `edgerec bench kernels --backend cuda|cuda-emu`: the
/// backend's parity with the CPU engine on a small ML-1M-shaped workload
/// (8 users × 50 events; top-10 of 3,953 items for 4 users), each kernel's
/// measured time there beside the cost model for the same workload, and the
/// cost model at the device shapes. On `cuda-emu` the times are the
/// emulator's: they show the harness works, not the kernels' speed.
pub fn report(backend: &CudaBackend) -> Result<String, BackendError> {
    let model: &Arc<Model> = &backend.model;
    let c = &model.config;
    let mut out = String::new();
    let _ = writeln!(out, "backend {} on {}", backend.backend_name(), backend.device_name());
    if backend.backend_name() == "cuda-emu" {
        let _ = writeln!(out, "emulator rounding: {}", super::fp_contract_note());
    }
    let hist: Vec<_> = (0..8).map(|u| random_history(c.num_items, 50, 100 + u)).collect();
    let users: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let want = encode_batch(model, &users).map_err(BackendError::Input)?;
    backend.set_profiling(true);
    let got = backend.encode_users(&users);
    let encode_times = backend.take_kernel_times();
    let got = got?;
    let encode_diff = got
        .iter()
        .zip(&want)
        .flat_map(|(g, w)| g.iter().zip(w).map(|(a, b)| (a - b).abs()))
        .fold(0.0f32, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) });
    let embeddings: Vec<Vec<f32>> = got.iter().take(4).cloned().collect();
    let lists = backend.top_k_device(&embeddings, 10, &[]);
    let top_k_times = backend.take_kernel_times();
    backend.set_profiling(false);
    let lists = lists?;
    let (mut score_diff, mut same_ids) = (0.0f32, true);
    for (e, list) in embeddings.iter().zip(&lists) {
        let cpu = top_k(model, e, 10, &[]);
        same_ids &= cpu.iter().map(|s| s.item).eq(list.iter().map(|s| s.item));
        for (a, b) in cpu.iter().zip(list) {
            score_diff = score_diff.max((a.score - b.score).abs());
        }
    }
    let _ = writeln!(
        out,
        "parity with the CPU engine: encode 8 users x 50 events max |diff| {encode_diff:.1e}; \
         top-10 of {} items for 4 users: scores max |diff| {score_diff:.1e}, ids {}",
        c.num_items,
        if same_ids { "identical" } else { "differ (ties?)" }
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "per kernel on this workload (each launch synchronised), predicted on {}", H100_SXM.name);
    let _ = writeln!(out, "| kernel | launches | measured ms | MB | GFLOP | predicted ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let lengths: Vec<usize> = hist.iter().map(|(e, _)| e.len()).collect();
    let costs: Vec<KernelCost> = encode_costs(c, &lengths)
        .into_iter()
        .chain(top_k_costs(c, embeddings.len(), 10, CudaBackend::top_k_chunk()))
        .collect();
    for t in encode_times.iter().chain(&top_k_times) {
        match costs.iter().find(|k| k.kernel == t.kernel) {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {:.2} | {:.4} | {:.4} |",
                    t.kernel,
                    t.launches,
                    t.seconds * 1e3,
                    k.bytes / 1e6,
                    k.flops / 1e9,
                    k.predicted_secs(&H100_SXM) * 1e3
                );
            }
            None => {
                let _ = writeln!(out, "| {} | {} | {:.3} | | | |", t.kernel, t.launches, t.seconds * 1e3);
            }
        }
    }
    let _ = writeln!(out);
    out.push_str(&device_shape_table(&H100_SXM));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_scale_as_the_math_says() {
        let c = ModelConfig::ml_1m(3953);
        let one = encode_costs(&c, &[200]);
        let two = encode_costs(&c, &[200, 200]);
        for (a, b) in one.iter().zip(&two) {
            assert!(b.flops >= 2.0 * a.flops * 0.99 && b.flops <= 2.0 * a.flops * 1.01, "{}", a.kernel);
        }
        // Attention FLOPs grow with the square of the length, GEMMs linearly.
        let short = encode_costs(&c, &[100]);
        let att = |v: &[KernelCost]| v.iter().find(|k| k.kernel == "hstu_attention").map_or(0.0, |k| k.flops);
        let gemm = |v: &[KernelCost]| v.iter().find(|k| k.kernel == "ln_gemm_silu").map_or(0.0, |k| k.flops);
        assert!(att(&one) / att(&short) > 3.9 && att(&one) / att(&short) < 4.1);
        assert!(gemm(&one) / gemm(&short) > 1.9 && gemm(&one) / gemm(&short) < 2.1);
        // The last layer attends from the newest row only: with one layer,
        // attention grows linearly with the length.
        let mut c1 = c.clone();
        c1.num_layers = 1;
        let (one_1, short_1) = (encode_costs(&c1, &[200]), encode_costs(&c1, &[100]));
        assert!(att(&one_1) / att(&short_1) > 1.9 && att(&one_1) / att(&short_1) < 2.1);
        // Lengths beyond L are windows of L.
        assert_eq!(encode_costs(&c, &[c.max_seq_len + 50]), encode_costs(&c, &[c.max_seq_len]));
        // The table is read once per batch: 64 users cost far less than 64 × one user's bytes.
        let scan =
            |users| top_k_costs(&c, users, 10, 256).iter().find(|k| k.kernel == "quant_chunk_kth").map(|k| k.bytes);
        let (t1, t64) = (scan(1).unwrap_or(0.0), scan(64).unwrap_or(0.0));
        assert!(t1 > 0.0);
        assert!(t64 < 2.0 * t1, "{t1} {t64}");
        // A memory-bound kernel's prediction is its bytes over the derated bandwidth.
        let k = KernelCost { kernel: "x", bytes: 2.01e9, flops: 1.0 };
        assert!((k.predicted_secs(&H100_SXM) - 2.01e9 / (3.35e12 * 0.6)).abs() < 1e-12);
    }

    #[test]
    fn the_report_shows_parity_kernel_times_and_predictions_on_the_emulator() {
        let model = Model::random(ModelConfig::ml_1m(3953), 1).unwrap();
        let b = CudaBackend::emulated(Arc::new(model)).unwrap();
        let text = report(&b).unwrap();
        assert!(text.contains("backend cuda-emu"), "{text}");
        assert!(text.contains("ids identical"), "{text}");
        for kernel in
            ["embed_rows", "ln_gemm_silu", "gather_rows", "hstu_attention", "gated_ln_gemm_resid", "quant_chunk_kth"]
        {
            assert!(text.contains(&format!("| {kernel} | ")), "{kernel} missing: {text}");
        }
        assert!(text.contains("| encode ML-20M 4096u x 200ev | (sum) |"), "{text}");
    }
}
