//! `edgerec plugin run FILE --input REQUEST`: one call through the real
//! runtime, with each limit's use beside its cap.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use edgerec_runtime::{CallReport, CandidateBatch, Limits, RequestContext, StageFailure, StageOutput};
use serde::Deserialize;

use super::{compile, local_runtime, read_optional};

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

/// Runs `edgerec plugin run`.
pub fn run(args: RunArgs) -> Result<()> {
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
