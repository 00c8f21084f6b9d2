//! The device timing table of kernels/cuda/check.sh: encode throughput
//! (users/s, achieved TFLOP/s against the measured f32 FMA peak) and top-k
//! over 3,953 / 131,263 / 1,000,000 items (achieved GB/s against the
//! measured device-to-device copy bandwidth). Wall-clock times of whole
//! backend calls (upload, kernels, download), best of several runs.

use std::time::Instant;

use edgerec_kernels::backend::Backend;
use edgerec_kernels::{Event, Model, ModelConfig, UserHistory};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{device_or_skip, history};

/// FLOPs of encoding one user of n events (the dense math only).
fn encode_flops(c: &ModelConfig, n: usize) -> f64 {
    let (d, h, w, a) = (c.d_model as f64, c.num_heads as f64, c.uvqk_width() as f64, c.attn_width() as f64);
    let n = n as f64;
    let pairs = n * (n + 1.0) / 2.0;
    c.num_layers as f64 * (2.0 * n * d * w + 2.0 * pairs * h * (c.d_qk + c.d_v) as f64 + 2.0 * n * a * d)
}

fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: workspace growth, JIT, caches
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

pub fn run() {
    let Some(probe) = device_or_skip(Model::random(ModelConfig::ml_1m(3953), 1).unwrap(), "cuda_timing_table") else {
        return;
    };
    probe.set_poison_outputs(false);
    let roofs = probe.measure_roofs().expect("roofs");
    println!("device: {}", probe.device_name());
    println!("measured roofs: f32 FMA {:.1} TFLOP/s, d2d copy {:.0} GB/s", roofs.fma_tflops, roofs.copy_gbps);
    println!("{:<34} {:>10} {:>12} {:>10} {:>8}", "workload", "ms/call", "rate", "achieved", "of roof");
    let mut rng = ChaCha8Rng::seed_from_u64(99);

    for (name, cfg, users, len) in [
        ("encode ML-1M 4096u x 200ev", ModelConfig::ml_1m(3953), 4096, 200),
        ("encode ML-1M 4096u x 20ev", ModelConfig::ml_1m(3953), 4096, 20),
        ("encode ML-20M 4096u x 200ev", ModelConfig::ml_20m(131_263), 4096, 200),
        ("encode ML-1M 1u x 200ev", ModelConfig::ml_1m(3953), 1, 200),
    ] {
        let model = Model::random(cfg.clone(), 2).unwrap();
        let Some(gpu) = device_or_skip(model, name) else { return };
        gpu.set_poison_outputs(false);
        let hist: Vec<(Vec<Event>, i64)> = (0..users).map(|_| history(&mut rng, len, cfg.num_items)).collect();
        let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
        let secs = best_secs(3, || {
            gpu.encode_batch(&batch).expect("encode");
        });
        let tflops = encode_flops(&cfg, len) * users as f64 / secs / 1e12;
        println!(
            "{:<34} {:>10.3} {:>9.0} u/s {:>7.2} TF {:>7.1}%",
            name,
            secs * 1e3,
            users as f64 / secs,
            tflops,
            100.0 * tflops / roofs.fma_tflops
        );
    }

    for items in [3953usize, 131_263, 1_000_000] {
        let cfg = ModelConfig::ml_1m(items);
        let model = Model::random(cfg.clone(), 3).unwrap();
        let Some(gpu) = device_or_skip(model, "top_k") else { return };
        gpu.set_poison_outputs(false);
        for users in [1usize, 64] {
            let emb: Vec<Vec<f32>> = (0..users).map(|u| gpu.model().item_row(1 + u as u32).to_vec()).collect();
            let secs = best_secs(5, || {
                gpu.top_k_batch(&emb, 10, &[]).expect("top-k");
            });
            // Each user's pass reads the whole table once (rows + norms).
            let bytes = users as f64 * items as f64 * (cfg.d_model + 1) as f64 * 4.0;
            let gbps = bytes / secs / 1e9;
            println!(
                "{:<34} {:>10.3} {:>7.0} q/s {:>7.0} GB/s {:>6.1}%",
                format!("top-10 V={items} {users}u"),
                secs * 1e3,
                users as f64 / secs,
                gbps,
                100.0 * gbps / roofs.copy_gbps
            );
        }
    }
}
