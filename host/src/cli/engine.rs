//! `edgerec encode`, `recommend`, `model random` and `bench kernels`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use edgerec_kernels::bench::{Row, bench_shape, sgemm_gflops};
use edgerec_kernels::item_map::{ITEMS_FILE, ItemMap};
use edgerec_kernels::{Backend, BackendChoice, Event, Model, ModelConfig, UserHistory, kept_window, select_backend};
use serde::Deserialize;

/// Where the model is, the request, and which backend serves it.
#[derive(Args)]
pub struct EncodeArgs {
    /// Model directory (config.json + model.safetensors).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Request JSON: {"events":[{"item":ID,"ts":UNIX_SECONDS},…],"query_time":UNIX_SECONDS}.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Engine: auto (CUDA when it loads, else CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
}

/// Arguments of `edgerec recommend`.
#[derive(Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    request: EncodeArgs,
    /// How many items to return.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Also return items already in the kept history window (excluded by default,
    /// as the reference's evaluation does).
    #[arg(long)]
    no_exclude_history: bool,
}

/// `--backend` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// CUDA when it loads, else the CPU (the log says why CUDA was refused).
    Auto,
    /// The CPU engine.
    Cpu,
    /// The CUDA kernels on a GPU; an error when none can run.
    Cuda,
    /// The CUDA kernels on the CPU emulator (tests and checks; slow).
    CudaEmu,
}

impl From<BackendArg> for BackendChoice {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
            BackendArg::CudaEmu => BackendChoice::CudaEmu,
        }
    }
}

/// `edgerec model …`.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a model with seeded random weights (benchmarks, smoke tests).
    Random(RandomArgs),
    /// Import a checkpoint of another trainer (the reference's research HSTU).
    Import(super::import::ImportArgs),
    /// Upload a model directory to a server as a model version (and activate it).
    Push(super::model_push::ModelPushArgs),
}

/// Named model shapes of the public benchmark table.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shape {
    /// D=50, 2 layers, 1 head of 50, L=200 (V defaults to 3953).
    #[value(name = "ml-1m")]
    Ml1m,
    /// D=256, 4 layers, 4 heads of 64, L=200 (V defaults to 131263).
    #[value(name = "ml-20m")]
    Ml20m,
    /// D=64, 4 layers, 4 heads of 16, L=50 (needs --num-items).
    Books,
    /// Every dimension from the flags below.
    Custom,
}

/// Arguments of `edgerec model random`.
#[derive(Args)]
pub struct RandomArgs {
    /// Model shape.
    #[arg(long, value_enum)]
    shape: Shape,
    /// V, the number of items (ids 1..=V).
    #[arg(long)]
    num_items: Option<usize>,
    /// D (custom shape).
    #[arg(long)]
    d_model: Option<usize>,
    /// Number of layers (custom shape).
    #[arg(long)]
    num_layers: Option<usize>,
    /// Number of heads (custom shape).
    #[arg(long)]
    num_heads: Option<usize>,
    /// Query/key dimension per head (custom shape).
    #[arg(long)]
    d_qk: Option<usize>,
    /// Value dimension per head (custom shape; defaults to --d-qk).
    #[arg(long)]
    d_v: Option<usize>,
    /// L, the longest history kept (custom shape).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// N, the attention normalizer (custom shape; defaults to L + 11).
    #[arg(long)]
    attn_normalizer: Option<usize>,
    /// Seed of the weights (same seed and shape, same model).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory to write (created if absent).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

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

/// The request file of `encode` / `recommend`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    events: Vec<RequestEvent>,
    query_time: i64,
}

/// One event of the request file. `action` (event type) is accepted and not
/// used by the research model; it is room for models that take it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEvent {
    item: u32,
    ts: i64,
    #[serde(default)]
    #[allow(dead_code)]
    action: Option<serde_json::Value>,
}

/// A validated request with the backend that will serve it.
struct Prepared {
    backend: Box<dyn Backend>,
    events: Vec<Event>,
    query_time: i64,
}

fn read_request(path: &Path) -> anyhow::Result<(Vec<Event>, i64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read input file {}", path.display()))?;
    let request: Request = serde_json::from_str(&text).with_context(|| {
        format!(
            "input file {} is not a valid request (expected {{\"events\":[{{\"item\":ID,\"ts\":UNIX_SECONDS}},…],\"query_time\":UNIX_SECONDS}})",
            path.display()
        )
    })?;
    let events = request.events.iter().map(|e| Event { item: e.item, ts: e.ts }).collect();
    Ok((events, request.query_time))
}

/// Reads and validates everything before choosing a backend, so a bad
/// request prints exactly one line (the error), not a backend log line too.
fn prepare(args: &EncodeArgs) -> anyhow::Result<Prepared> {
    let (events, query_time) = read_request(&args.input)?;
    let model =
        Model::load(&args.model).with_context(|| format!("cannot load model directory {}", args.model.display()))?;
    kept_window(&model.config, &events, query_time)
        .with_context(|| format!("invalid request in {}", args.input.display()))?;
    let backend = open_backend(args.backend.into(), Arc::new(model))?;
    Ok(Prepared { backend, events, query_time })
}

/// Selects the backend and logs one stderr line saying which one serves.
fn open_backend(choice: BackendChoice, model: Arc<Model>) -> anyhow::Result<Box<dyn Backend>> {
    let backend = match choice {
        BackendChoice::Auto => match select_backend(BackendChoice::Cuda, model.clone()) {
            Ok(cuda) => {
                eprintln!("edgerec: serving with the {} backend (auto)", cuda.name());
                return Ok(cuda);
            }
            Err(why) => {
                let cpu = select_backend(BackendChoice::Cpu, model)?;
                eprintln!("edgerec: serving with the {} backend (auto; {why})", cpu.name());
                return Ok(cpu);
            }
        },
        explicit => select_backend(explicit, model)?,
    };
    eprintln!("edgerec: serving with the {} backend", backend.name());
    Ok(backend)
}

fn encode_one(prepared: &Prepared) -> anyhow::Result<Vec<f32>> {
    let user = UserHistory { events: &prepared.events, query_time: prepared.query_time };
    let mut out = prepared.backend.encode_batch(&[user])?;
    out.pop().context("the backend returned no embedding for the one user")
}

/// `edgerec encode`: prints `{"embedding":[…]}`.
pub fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    let embedding = encode_one(&prepared)?;
    println!("{}", serde_json::json!({ "embedding": embedding }));
    Ok(())
}

/// `edgerec recommend`: prints `{"items":[{"item":ID,"score":S},…]}`, best
/// first; when the model directory has an `items.json`, each item also
/// carries its catalog id as `"external"`.
pub fn recommend(args: RecommendArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args.request)?;
    let external_ids = if args.request.model.join(ITEMS_FILE).exists() {
        Some(
            ItemMap::load(&args.request.model)
                .with_context(|| format!("cannot read the id mapping of {}", args.request.model.display()))?,
        )
    } else {
        None
    };
    let embedding = encode_one(&prepared)?;
    let model = prepared.backend.model();
    let exclude: Vec<u32> = if args.no_exclude_history {
        Vec::new()
    } else {
        edgerec_kernels::kept_items(model, &prepared.events, prepared.query_time)?
    };
    let mut lists = prepared.backend.top_k_batch(&[embedding], args.k, &[&exclude])?;
    let items: Vec<serde_json::Value> = lists
        .pop()
        .unwrap_or_default()
        .iter()
        .map(|s| match external_ids.as_ref().and_then(|map| map.external(s.item)) {
            Some(external) => serde_json::json!({ "item": s.item, "external": external, "score": s.score }),
            None => serde_json::json!({ "item": s.item, "score": s.score }),
        })
        .collect();
    println!("{}", serde_json::json!({ "items": items }));
    Ok(())
}

/// `edgerec model …`.
pub fn model(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Random(args) => random_model(args),
        ModelCommand::Import(args) => super::import::import(args),
        ModelCommand::Push(args) => super::model_push::push(args),
    }
}

fn random_config(args: &RandomArgs) -> anyhow::Result<ModelConfig> {
    let need = |value: Option<usize>, flag: &str| -> anyhow::Result<usize> {
        value.with_context(|| format!("--shape {:?} needs {flag}", args.shape))
    };
    let config = match args.shape {
        Shape::Ml1m => ModelConfig::ml_1m(args.num_items.unwrap_or(3953)),
        Shape::Ml20m => ModelConfig::ml_20m(args.num_items.unwrap_or(131_263)),
        Shape::Books => ModelConfig::books(need(args.num_items, "--num-items")?),
        Shape::Custom => {
            let d_qk = need(args.d_qk, "--d-qk")?;
            let mut c = ModelConfig::research(
                need(args.num_items, "--num-items")?,
                need(args.d_model, "--d-model")?,
                need(args.num_layers, "--num-layers")?,
                need(args.num_heads, "--num-heads")?,
                d_qk,
                need(args.max_seq_len, "--max-seq-len")?,
            );
            c.d_v = args.d_v.unwrap_or(d_qk);
            if let Some(n) = args.attn_normalizer {
                c.attn_normalizer = n;
            }
            c
        }
    };
    if !matches!(args.shape, Shape::Custom) {
        let custom_only = [
            ("--d-model", args.d_model),
            ("--num-layers", args.num_layers),
            ("--num-heads", args.num_heads),
            ("--d-qk", args.d_qk),
            ("--d-v", args.d_v),
            ("--max-seq-len", args.max_seq_len),
            ("--attn-normalizer", args.attn_normalizer),
        ];
        if let Some((flag, _)) = custom_only.iter().find(|(_, v)| v.is_some()) {
            bail!("{flag} applies to --shape custom only; --shape {:?} fixes the dimensions", args.shape);
        }
    }
    config.validate()?;
    Ok(config)
}

fn random_model(args: RandomArgs) -> anyhow::Result<()> {
    let config = random_config(&args)?;
    let model = Model::random(config, args.seed)?;
    model.save(&args.out).with_context(|| format!("cannot write the model to {}", args.out.display()))?;
    eprintln!(
        "edgerec: wrote a random {} model (V = {}, seed {}) to {}",
        args.shape.to_possible_value().expect("no skipped variants").get_name(),
        model.config.num_items,
        args.seed,
        args.out.display()
    );
    Ok(())
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
    let threads = edgerec_kernels::bench::threads();
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
            println!(
                "| {} | {} | {} | {:.2} | {} | {:.2} |",
                row.shape,
                row.what,
                row.value,
                row.gflops,
                row.threads,
                row.gflops / (roof * row.threads as f64)
            );
        }
    }
    Ok(())
}
