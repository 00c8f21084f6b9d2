//! `edgerec plugin new|build|run|check|push`: the partners' local loop, and `edgerec bench plugins`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use edgerec_runtime::{
    CallReport, CandidateBatch, CompiledPlugin, Limits, RequestContext, Runtime, RuntimeConfig, StageFailure,
    StageOutput,
};
use serde::Deserialize;

/// `edgerec bench plugins`: the price of the sandbox (3-stage first-party
/// pipeline, wasmtime against the same rules as native Rust, same run).
#[derive(Args)]
pub struct BenchPluginsArgs {
    /// Candidates per call.
    #[arg(long, default_value_t = 500)]
    candidates: usize,
    /// Timed runs of each measurement (after 10% warm-up).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Instead: the cost of a JS plugin next to Rust — `boost` ported to TypeScript, built
    /// (`plugins/boost-ts/dist/boost-ts.wasm`, see its README) and run against the Rust `boost`.
    #[arg(long, value_name = "BOOST_TS_WASM")]
    js: Option<PathBuf>,
}

/// Runs `edgerec bench plugins` and prints its table.
pub fn bench_plugins(args: BenchPluginsArgs) -> Result<()> {
    if let Some(file) = &args.js {
        return super::plugin_js_bench::bench_js(file, args.candidates, args.iterations);
    }
    let options = edgerec_bench::BenchOptions { candidates: args.candidates, iterations: args.iterations };
    let report = edgerec_bench::run_plugin_bench(options).context("the plugin benchmark failed")?;
    print!("{report}");
    Ok(())
}

/// Work with plugin components locally.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project (Rust or TypeScript) that builds on its own: example rule, test, sample request.
    New(super::plugin_new::NewArgs),
    /// Build a plugin project (cargo or npm) and run `plugin check` on the component.
    Build(super::plugin_build::BuildArgs),
    /// Upload a component to a server (operator token from EDGEREC_OPERATOR_TOKEN) and optionally activate it.
    Push(super::plugin_push::PushArgs),
    /// Run a plugin on a request file; print its output, fuel, memory, time, logs and each limit's pass/fail.
    Run(RunArgs),
    /// Say whether a file is a component of the edgerec:plugin world and what it declares.
    Check(CheckArgs),
}

/// `edgerec plugin run`.
#[derive(Args)]
pub struct RunArgs {
    /// The plugin component (`target/wasm32-wasip2/release/NAME.wasm`).
    file: PathBuf,
    /// The request: `{"context": {"tenant": ..., "k": ..., "now": ..., "recent_events": [...]},
    /// "candidates": {"ids": [...], "scores": [...], "columns": [{"name", "type", "values"}]}}`.
    #[arg(long)]
    input: PathBuf,
    /// The stage config (JSON); none = the plugin's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Limits to apply (JSON, any subset of deadline_us, fuel, memory_bytes,
    /// max_reason_bytes, max_log_lines, max_log_bytes); none = the server's defaults.
    #[arg(long)]
    limits: Option<PathBuf>,
    /// Print the output and report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `edgerec plugin check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The plugin component.
    file: PathBuf,
    /// Also ask which columns it reads with this stage config (JSON file).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A request file for `plugin run`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    #[serde(default = "local_context")]
    context: RequestContext,
    candidates: CandidateBatch,
}

fn local_context() -> RequestContext {
    RequestContext::new("local")
}

/// Runs a plugin subcommand.
pub fn plugin(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::Run(args) => run(args),
        PluginCommand::Check(args) => check_file(&args.file, args.config.as_deref()),
        PluginCommand::New(args) => super::plugin_new::new(args),
        PluginCommand::Build(args) => super::plugin_build::build(args),
        PluginCommand::Push(args) => super::plugin_push::push(args),
    }
}

/// A runtime with the compiled-plugin cache under the system temp directory,
/// so that re-running an unchanged plugin skips Cranelift.
fn local_runtime() -> Result<Runtime> {
    let cache_dir = std::env::temp_dir().join("edgerec-plugin-cache");
    // The server's upload cap, so that a local check accepts exactly what an upload would.
    let max_upload_bytes = edgerec_server::config::ServerConfig::default().max_plugin_bytes;
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir), max_upload_bytes, ..RuntimeConfig::default() })
        .context("starting the plugin runtime")
}

fn compile(runtime: &Runtime, file: &Path) -> Result<Arc<CompiledPlugin>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned());
    runtime.compile_named(name.as_deref(), &bytes).with_context(|| format!("{} is not a usable plugin", file.display()))
}

fn read_optional(path: Option<&Path>) -> Result<Vec<u8>> {
    match path {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        None => Ok(Vec::new()),
    }
}

/// `edgerec plugin check FILE [--config CONFIG]`: compiles, checks the world,
/// runs the sample input and prints what the component declares.
pub fn check_file(file: &Path, config: Option<&Path>) -> Result<()> {
    let runtime = local_runtime()?;
    let plugin = compile(&runtime, file)?;
    println!("{}: a component of the edgerec:plugin@0.1.0 `plugin` world", file.display());
    let cap = edgerec_server::config::ServerConfig::default().max_plugin_bytes;
    println!("  size:          {} bytes (a server's default upload cap: {} MiB)", plugin.size(), cap >> 20);
    if plugin.size() > cap {
        println!(
            "  warning:       over the default upload cap: a server refuses it unless its max_plugin_bytes is raised"
        );
    }
    println!("  sha256:        {}", plugin.hash());
    let how = if plugin.from_cache() { "loaded from the cache" } else { "compiled" };
    println!("  {how} in {:.1} ms", plugin.compile_time().as_secs_f64() * 1e3);
    println!("  sample input:  passed");
    println!("  columns read with the default config: {:?}", plugin.declared_columns());
    if let Some(path) = config {
        let config = read_optional(Some(path))?;
        let (columns, _) = runtime.columns(&plugin, &config, &Limits::for_language(plugin.language()));
        match columns {
            Ok(Ok(columns)) => println!("  columns read with {}: {columns:?}", path.display()),
            Ok(Err(message)) => bail!("the plugin refuses the config {}: {message}", path.display()),
            Err(failure) => bail!("the plugin failed while reading the config: {failure}"),
        }
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let request: RequestFile = serde_json::from_slice(&read_optional(Some(&args.input))?)
        .with_context(|| format!("{} is not a request file (see `edgerec plugin run --help`)", args.input.display()))?;
    let config = read_optional(args.config.as_deref())?;
    let runtime = local_runtime()?;
    let plugin = compile(&runtime, &args.file)?;
    // A server gives a stage without `limits` its language's defaults.
    let limits: Limits = match &args.limits {
        Some(path) => serde_json::from_slice(&read_optional(Some(path))?)
            .with_context(|| format!("{} is not a limits file", path.display()))?,
        None => Limits::for_language(plugin.language()),
    };
    let (result, report) = runtime.call(&plugin, &request.context, &config, &request.candidates, &limits);
    if args.json {
        let output = match &result {
            Ok(output) => serde_json::json!({ "output": output }),
            Err(failure) => serde_json::json!({ "failure": failure }),
        };
        println!("{}", serde_json::json!({ "result": output, "report": report, "limits": limits }));
    } else {
        print_result(&request.candidates, &result);
        print_report(&report, &limits, &result, request.candidates.len(), runtime.config().max_wasm_stack);
    }
    match result {
        Ok(_) => Ok(()),
        Err(failure) => bail!("the plugin failed: {failure}"),
    }
}

fn print_result(batch: &CandidateBatch, result: &Result<StageOutput, StageFailure>) {
    let Ok(output) = result else { return };
    println!("output: {} of {} candidates", output.order.len(), batch.len());
    println!("{:>5} {:>6} {:>14} {:>12} {:>12}  reason", "rank", "index", "id", "score in", "score out");
    for (rank, &index) in output.order.iter().enumerate() {
        let score_in = batch.scores[index as usize];
        let score_out = output.scores.as_ref().map_or(score_in, |s| s[rank]);
        let reason = output.reasons.as_ref().map_or("", |r| r[rank].as_str());
        println!("{rank:>5} {index:>6} {:>14} {score_in:>12.6} {score_out:>12.6}  {reason}", batch.ids[index as usize]);
    }
    let kept: std::collections::HashSet<u32> = output.order.iter().copied().collect();
    let dropped: Vec<u64> =
        (0..batch.len() as u32).filter(|i| !kept.contains(i)).map(|i| batch.ids[i as usize]).collect();
    if !dropped.is_empty() {
        println!("dropped ids: {dropped:?}");
    }
}

fn print_report(
    report: &CallReport,
    limits: &Limits,
    result: &Result<StageOutput, StageFailure>,
    n: usize,
    stack_bytes: usize,
) {
    let failure = result.as_ref().err();
    let verdict = |failed: bool| if failed { "FAIL" } else { "pass" };
    println!();
    for line in &report.logs {
        println!("log [{}] {}", line.level, line.message);
    }
    println!("{:<13} {:>24}   {:<22} result", "limit", "used", "cap");
    let fuel_failed = matches!(failure, Some(StageFailure::FuelExhausted { .. }));
    println!("{:<13} {:>24}   {:<22} {}", "instructions", report.fuel_used, limits.fuel, verdict(fuel_failed));
    let time_failed = matches!(failure, Some(StageFailure::DeadlineExceeded { .. }));
    let time = format!("{:.0} µs (inst. {:.0} µs)", report.wall_us, report.instantiate_us);
    println!(
        "{:<13} {:>24}   {:<22} {}",
        "wall time",
        time,
        format!("{} µs", limits.deadline_us),
        verdict(time_failed)
    );
    let memory_failed = matches!(failure, Some(StageFailure::MemoryLimit { .. }));
    let memory = format!("{:.2} MiB", report.peak_memory_bytes as f64 / 1048576.0);
    let cap = format!("{:.2} MiB", limits.memory_bytes as f64 / 1048576.0);
    println!("{:<13} {:>24}   {:<22} {}", "peak memory", memory, cap, verdict(memory_failed));
    let stack_failed = matches!(failure, Some(StageFailure::StackOverflow));
    let cap = format!("{} KiB (engine-wide)", stack_bytes >> 10);
    println!("{:<13} {:>24}   {:<22} {}", "stack", "-", cap, verdict(stack_failed));
    let output_failed = matches!(failure, Some(StageFailure::InvalidOutput { .. }));
    let used = match result {
        Ok(o) => format!("{} entries", o.order.len()),
        Err(_) => "-".into(),
    };
    let cap = format!("≤ {n}, reasons ≤ {} B", limits.max_reason_bytes);
    println!("{:<13} {:>24}   {:<22} {}", "output", used, cap, verdict(output_failed));
    let logs = format!("{} kept, {} dropped", report.logs.len(), report.logs_dropped);
    let cap = format!("{} lines, {} B", limits.max_log_lines, limits.max_log_bytes);
    println!("{:<13} {:>24}   {:<22} {}", "log", logs, cap, verdict(report.logs_dropped > 0));
    if let Some(failure) = failure {
        println!("\nthe stage failed: {failure}");
    }
}
