//! What `encode` and `recommend` share: the model, the request file and the
//! `--backend` choice (also `serve`'s), read and checked before a backend opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use edgerec_kernels::{Backend, BackendChoice, Event, Model, UserHistory, kept_window};
use serde::Deserialize;

/// Where the model is, the request, and which backend serves it.
#[derive(Args)]
pub struct EncodeArgs {
    /// Model directory (config.json + model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Request JSON: {"events":[{"item":ID,"ts":UNIX_SECONDS},…],"query_time":UNIX_SECONDS}.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Engine: auto (CUDA when it loads, else CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
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
pub struct Prepared {
    /// The backend that serves the request.
    pub backend: Box<dyn Backend>,
    /// The request's events, in the file's order.
    pub events: Vec<Event>,
    /// The request's query time.
    pub query_time: i64,
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
pub fn prepare(args: &EncodeArgs) -> anyhow::Result<Prepared> {
    let (events, query_time) = read_request(&args.input)?;
    let model =
        Model::load(&args.model).with_context(|| format!("cannot load model directory {}", args.model.display()))?;
    kept_window(&model.config, &events, query_time)
        .with_context(|| format!("invalid request in {}", args.input.display()))?;
    let backend = open_backend_announced(args.backend.into(), Arc::new(model))?;
    Ok(Prepared { backend, events, query_time })
}

/// Opens the backend (the choice `edgerec_kernels::open_backend` makes) and
/// logs one stderr line saying which one serves, and under `auto` why CUDA
/// was refused.
fn open_backend_announced(choice: BackendChoice, model: Arc<Model>) -> anyhow::Result<Box<dyn Backend>> {
    let selected = edgerec_kernels::open_backend(choice, model)?;
    let name = selected.backend.name();
    match (choice, &selected.cuda_refused) {
        (BackendChoice::Auto, Some(why)) => eprintln!("edgerec: serving with the {name} backend (auto; {why})"),
        (BackendChoice::Auto, None) => eprintln!("edgerec: serving with the {name} backend (auto)"),
        _ => eprintln!("edgerec: serving with the {name} backend"),
    }
    Ok(selected.backend)
}

/// Encodes the one user of a prepared request.
pub fn encode_one(prepared: &Prepared) -> anyhow::Result<Vec<f32>> {
    let user = UserHistory { events: &prepared.events, query_time: prepared.query_time };
    let mut out = prepared.backend.encode_batch(&[user])?;
    out.pop().context("the backend returned no embedding for the one user")
}
