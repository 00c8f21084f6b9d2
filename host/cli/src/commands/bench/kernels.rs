//! `edgerec bench kernels` (the measurement is `edgerec_bench::kernels`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use edgerec_bench::kernels::{Row, bench_shape, sgemm_gflops};
use edgerec_kernels::{Model, ModelConfig};

use crate::engine_args::BackendArg;

/// Arguments of `edgerec bench kernels`.
#[derive(Args)]
pub struct BenchArgs {
    /// Seconds spent measuring each figure.
    #[arg(long, default_value_t = 1.5)]
    seconds_per_figure: f64,
    /// Users in the throughput batch.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// cpu: the CPU engine's figures against the sgemm roof; cuda or
    /// cuda-emu: the CUDA kernels' parity with the CPU engine, each kernel's
    /// measured time and the cost model's bytes, FLOPs and predicted H100
    /// time (kernels/src/cuda/cost.rs).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

/// `edgerec bench kernels`: prints the table of figures and their ratio to
/// the one-thread sgemm roof measured in this run.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if !(args.seconds_per_figure > 0.0 && args.seconds_per_figure.is_finite()) || args.users == 0 {
        bail!("--seconds-per-figure must be a positive number and --users at least 1");
    }
    if let BackendArg::Cuda | BackendArg::CudaEmu = args.backend {
        let model = Arc::new(Model::random(ModelConfig::ml_1m(3953), 1)?);
        let backend = match args.backend {
            BackendArg::CudaEmu => edgerec_kernels::cuda::CudaBackend::emulated(model)?,
            _ => edgerec_kernels::cuda::CudaBackend::new(model)?,
        };
        print!("{}", edgerec_kernels::cuda::cost::report(&backend)?);
        return Ok(());
    }
    if let BackendArg::Auto = args.backend {
        bail!("--backend auto is not a benchmark target: name cpu, cuda or cuda-emu");
    }
    let budget = Duration::from_secs_f64(args.seconds_per_figure);
    let roof = sgemm_gflops(512, 512, 512, budget);
    let threads = edgerec_bench::kernels::threads();
    println!("sgemm roof (gemm crate, 1 thread, 512×512×512): {roof:.1} GFLOP/s; rayon threads: {threads}");
    println!("ratio = GFLOP/s ÷ (roof × threads used)");
    println!();
    println!("| shape | figure | value | GFLOP/s | threads | ratio to roof |");
    println!("|---|---|---|---|---|---|");
    let shapes = [("ML-1M base", ModelConfig::ml_1m(3953)), ("ML-20M base", ModelConfig::ml_20m(131_263))];
    for (name, config) in shapes {
        let model = Model::random(config, 1)?;
        let rows: Vec<Row> = bench_shape(name, &model, args.users, budget)?;
        for row in rows {
            println!("{}", row.table_line(roof));
        }
    }
    Ok(())
}
