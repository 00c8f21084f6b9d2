//! The device timing table of kernels/cuda/check.sh: encode throughput
//! (users/s, achieved TFLOP/s against the measured f32 FMA peak) and top-k
//! over 3,953 / 131,263 / 1,000,000 items (GB/s of compulsory traffic — the
//! table read once per call — against the measured device-to-device copy
//! bandwidth). Wall-clock times of whole backend calls (upload, kernels,
//! download), best of several runs. Then the per-kernel table: each kernel's
//! synchronised time beside the cost model's bytes, FLOPs and predicted time
//! (`edgerec_kernels::cuda::cost`), and the cost model at the device shapes.
//! Under the emulator (`EDGEREC_CHECK_EMU=1`) the shapes are small, the
//! roofs are not measured and the times are the emulator's (they check the
//! harness, not the kernels' speed).

use std::time::Instant;

use edgerec_kernels::backend::Backend;
use edgerec_kernels::{Event, Model, ModelConfig, UserHistory};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use edgerec_kernels::cuda::cost::{H100_SXM, KernelCost, device_shape_table, encode_costs, top_k_costs};
use edgerec_kernels::cuda::{CudaBackend, Roofs};

use super::{device_or_skip, emu_mode, history, sized};

/// FLOPs of encoding one user of n events: the cost model's (the last
/// layer computes its newest row only).
fn encode_flops(c: &ModelConfig, n: usize) -> f64 {
    encode_costs(c, &[n]).iter().map(|k| k.flops).sum()
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
    println!("device: {}", probe.device_name());
    let roofs = if emu_mode() {
        println!(
            "roofs: not measured on the emulator ({}); ratios below use nominal 1 TFLOP/s, 1 TB/s",
            edgerec_kernels::cuda::fp_contract_note()
        );
        Roofs { fma_tflops: 1.0, copy_gbps: 1000.0 }
    } else {
        probe.measure_roofs().expect("roofs")
    };
    println!("measured roofs: f32 FMA {:.1} TFLOP/s, d2d copy {:.0} GB/s", roofs.fma_tflops, roofs.copy_gbps);
    println!("{:<34} {:>10} {:>12} {:>10} {:>8}", "workload", "ms/call", "rate", "achieved", "of roof");
    let mut rng = ChaCha8Rng::seed_from_u64(99);

    let workloads = [
        ("encode ML-1M 4096u x 200ev", ModelConfig::ml_1m(3953), 4096, 200),
        ("encode ML-1M 4096u x 20ev", ModelConfig::ml_1m(3953), 4096, 20),
        ("encode ML-20M 4096u x 200ev", ModelConfig::ml_20m(131_263), 4096, 200),
        ("encode ML-1M 1u x 200ev", ModelConfig::ml_1m(3953), 1, 200),
    ];
    let emu_workloads = [("encode ML-1M 4u x 20ev", ModelConfig::ml_1m(3953), 4, 20)];
    for (name, cfg, users, len) in sized(&workloads[..], &emu_workloads[..]).iter().cloned() {
        let model = Model::random(cfg.clone(), 2).unwrap();
        let Some(gpu) = device_or_skip(model, name) else { return };
        gpu.set_poison_outputs(false);
        let hist: Vec<(Vec<Event>, i64)> = (0..users).map(|_| history(&mut rng, len, cfg.num_items)).collect();
        let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
        let secs = best_secs(sized(3, 1), || {
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

    for &items in sized(&[3953usize, 131_263, 1_000_000][..], &[3953][..]) {
        let cfg = ModelConfig::ml_1m(items);
        let model = Model::random(cfg.clone(), 3).unwrap();
        let Some(gpu) = device_or_skip(model, "top_k") else { return };
        gpu.set_poison_outputs(false);
        for &users in sized(&[1usize, 64][..], &[1, 4][..]) {
            let emb: Vec<Vec<f32>> = (0..users).map(|u| gpu.model().item_row(1 + u as u32).to_vec()).collect();
            let secs = best_secs(sized(5, 1), || {
                gpu.top_k_batch(&emb, 10, &[]).expect("top-k");
            });
            // Compulsory traffic as the cost model counts it: the quantised
            // table twice per call (two passes), whatever the users.
            let bytes: f64 = top_k_costs(&cfg, users, 10, CudaBackend::top_k_chunk()).iter().map(|k| k.bytes).sum();
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

    per_kernel_tables(&roofs, &mut rng);
}

/// One kernel's row: its measured time beside the cost model.
fn kernel_row(roofs: &Roofs, cost: Option<&KernelCost>, name: &str, launches: u64, secs: f64) {
    let Some(cost) = cost else {
        println!(
            "{name:<22} {launches:>6} {:>10.3} {:>9} {:>8} {:>16} {:>16} {:>10} {:>9}",
            secs * 1e3,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        );
        return;
    };
    let gbps = cost.bytes / secs / 1e9;
    let gflops = cost.flops / secs / 1e9;
    let predicted = cost.predicted_secs(&H100_SXM);
    println!(
        "{name:<22} {launches:>6} {:>10.3} {:>9.1} {:>8.2} {:>8.0} ({:>5.1}%) {:>8.0} ({:>5.1}%) {:>10.3} {:>8.1}x",
        secs * 1e3,
        cost.bytes / 1e6,
        cost.flops / 1e9,
        gbps,
        100.0 * gbps / roofs.copy_gbps,
        gflops,
        100.0 * gflops / (roofs.fma_tflops * 1e3),
        predicted * 1e3,
        secs / predicted
    );
}

/// Per-kernel synchronised times of one encode and one top-k call against
/// the cost model, then the cost model alone at the device shapes.
fn per_kernel_tables(roofs: &Roofs, rng: &mut ChaCha8Rng) {
    println!();
    println!("per kernel (each launch synchronised; bytes/FLOPs: the cost model's compulsory work)");
    println!(
        "{:<22} {:>6} {:>10} {:>9} {:>8} {:>16} {:>16} {:>10} {:>9}",
        "kernel", "calls", "ms", "MB", "GFLOP", "GB/s (of copy)", "GFLOP/s (of FMA)", "pred. ms", "meas/pred"
    );
    println!("(predicted: {})", H100_SXM.name);
    let (users, len) = sized((1024usize, 200usize), (4, 20));
    let cfg = ModelConfig::ml_1m(3953);
    let model = Model::random(cfg.clone(), 4).unwrap();
    let Some(gpu) = device_or_skip(model, "per-kernel") else { return };
    gpu.set_poison_outputs(false);
    let hist: Vec<(Vec<Event>, i64)> = (0..users).map(|_| history(rng, len, cfg.num_items)).collect();
    let batch: Vec<UserHistory<'_>> = hist.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    gpu.encode_batch(&batch).expect("encode"); // warm-up
    gpu.set_profiling(true);
    gpu.encode_batch(&batch).expect("encode");
    let lengths: Vec<usize> = hist.iter().map(|(e, _)| e.len()).collect();
    let costs = encode_costs(&cfg, &lengths);
    println!("-- encode ML-1M {users}u x {len}ev");
    for t in gpu.take_kernel_times() {
        kernel_row(roofs, costs.iter().find(|c| c.kernel == t.kernel), t.kernel, t.launches, t.seconds);
    }
    let (items, users) = sized((1_000_000usize, 64usize), (3953, 4));
    let cfg = ModelConfig::ml_1m(items);
    let model = Model::random(cfg.clone(), 5).unwrap();
    let Some(gpu) = device_or_skip(model, "per-kernel top-k") else { return };
    gpu.set_poison_outputs(false);
    let emb: Vec<Vec<f32>> = (0..users).map(|u| gpu.model().item_row(1 + u as u32).to_vec()).collect();
    gpu.top_k_batch(&emb, 10, &[]).expect("top-k"); // warm-up
    gpu.set_profiling(true);
    gpu.top_k_batch(&emb, 10, &[]).expect("top-k");
    let costs = top_k_costs(&cfg, users, 10, CudaBackend::top_k_chunk());
    println!("-- top-10 V={items} {users}u");
    for t in gpu.take_kernel_times() {
        kernel_row(roofs, costs.iter().find(|c| c.kernel == t.kernel), t.kernel, t.launches, t.seconds);
    }

    println!();
    print!("{}", device_shape_table(&H100_SXM));
}
