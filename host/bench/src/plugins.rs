//! The price of the sandbox, measured.
//!
//! The benchmark: a 3-stage pipeline of first-party
//! plugins (in-stock → boost → diversity) over N candidates with 4 attribute
//! columns, through the runtime and as the same Rust code called natively, in
//! the same run. Printed by `edgerec bench plugins` (and the `bench-plugins`
//! example); never asserted.

use std::fmt;
use std::time::{Duration, Instant};

use edgerec_plugin_boost::Boost;
use edgerec_plugin_diversity::Diversity;
use edgerec_plugin_in_stock::InStock;
use edgerec_sdk::{Candidates, Context, Plugin};

use edgerec_runtime::{
    CandidateBatch, Column, ColumnValues, Limits, OnError, Pipeline, PipelineError, PluginError, RequestContext,
    Runtime, RuntimeConfig, StageFailure, first_party,
};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A first-party plugin did not compile or set up.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Instantiation failed.
    #[error("instantiating: {0}")]
    Instantiate(StageFailure),
    /// The native run failed.
    #[error("native run: {0}")]
    Native(String),
}

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Candidates per call (the issue's figure: 500).
    pub candidates: usize,
    /// Timed runs of each measurement (after 10% warm-up).
    pub iterations: usize,
}

/// Median and p99 of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// Median.
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// The measured figures.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The options used.
    pub options: BenchOptions,
    /// The whole sandboxed pipeline per call (encoding, 3 instantiations, calls, validation).
    pub sandbox: Spread,
    /// Each stage's wall time with its fuel: (name, spread, fuel).
    pub stages: Vec<(String, Spread, u64)>,
    /// Instantiating one plugin and dropping it.
    pub instantiate: Spread,
    /// The same three rules as native Rust.
    pub native: Spread,
    /// Whether both produced the same item order.
    pub same_result: bool,
    /// The runtime settings that matter for speed, as `name=value` pairs.
    pub settings: String,
}

const BOOST: &str = r#"{"rules": [
    {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 1.5}},
    {"name": "cheap", "attribute": "price", "op": "lt", "value": 20, "action": {"add": 0.05}}
]}"#;
const DIVERSITY: &str = r#"{"attribute": "category", "max_per_group": 2, "top": 10}"#;

/// Runs the benchmark (seconds to a minute, most of it Cranelift compiling the three plugins).
pub fn run_plugin_bench(options: BenchOptions) -> Result<BenchReport, BenchError> {
    if options.candidates == 0 || options.iterations == 0 {
        return Err(BenchError::Options("candidates and iterations must be at least 1".into()));
    }
    // EDGEREC_PERF_MAP=1: name the plugins' compiled code for `perf`.
    // EDGEREC_KEEP_RESIDENT=BYTES: the pool's per-slot resident memory (0 = unmap on reset).
    let perf_map = std::env::var_os("EDGEREC_PERF_MAP").is_some_and(|v| v == "1");
    let defaults = RuntimeConfig::default();
    let keep_resident_bytes = match std::env::var("EDGEREC_KEEP_RESIDENT") {
        Ok(v) => {
            v.parse().map_err(|_| BenchError::Options(format!("EDGEREC_KEEP_RESIDENT={v} is not a byte count")))?
        }
        Err(_) => defaults.keep_resident_bytes,
    };
    // EDGEREC_FUEL=0: no fuel metering (to measure its cost; never in the server).
    let fuel_metering = std::env::var_os("EDGEREC_FUEL").is_none_or(|v| v != "0");
    let runtime = Runtime::new(RuntimeConfig { perf_map, keep_resident_bytes, fuel_metering, ..defaults })?;
    let in_stock = runtime.compile_named(Some("in-stock"), first_party::IN_STOCK)?;
    let boost = runtime.compile_named(Some("boost"), first_party::BOOST)?;
    let diversity = runtime.compile_named(Some("diversity"), first_party::DIVERSITY)?;
    // Generous deadline: a benchmark on a loaded machine must not turn into failures.
    let limits = Limits { deadline_us: 1_000_000, ..Limits::default() };
    let stage = |p, config: &str| runtime.stage(p, config.as_bytes().to_vec(), OnError::Fail, limits);
    let pipeline =
        Pipeline { stages: vec![stage(in_stock, "")?, stage(boost.clone(), BOOST)?, stage(diversity, DIVERSITY)?] };
    let batch = random_batch(options.candidates, 7);
    let ctx = RequestContext::new("bench");
    let warmup = (options.iterations / 10).max(1);

    let mut sandbox = Vec::with_capacity(options.iterations);
    let mut per_stage: [Vec<Duration>; 3] = Default::default();
    let mut fuel = [0u64; 3];
    let mut sandbox_ids = Vec::new();
    for i in 0..warmup + options.iterations {
        let started = Instant::now();
        let outcome = runtime.run_pipeline(&pipeline, &ctx, &batch)?;
        let elapsed = started.elapsed();
        if i >= warmup {
            sandbox.push(elapsed);
            for (s, trace) in outcome.stages.iter().enumerate().take(3) {
                per_stage[s].push(Duration::from_secs_f64(trace.report.wall_us / 1e6));
                fuel[s] = trace.report.fuel_used;
            }
        }
        sandbox_ids = outcome.candidates.iter().map(|c| c.id).collect::<Vec<_>>();
    }
    let mut instantiate = Vec::with_capacity(options.iterations);
    for i in 0..warmup + options.iterations {
        let took = runtime.instantiate_only(&boost).map_err(BenchError::Instantiate)?;
        if i >= warmup {
            instantiate.push(took);
        }
    }
    let natively = NativePipeline::new(&batch)?;
    let mut native = Vec::with_capacity(options.iterations);
    let mut native_ids = Vec::new();
    for i in 0..warmup + options.iterations {
        let started = Instant::now();
        let ids = std::hint::black_box(natively.run()?);
        if i >= warmup {
            native.push(started.elapsed());
        }
        native_ids = ids;
    }
    let names = ["in-stock", "boost", "diversity"];
    Ok(BenchReport {
        options,
        sandbox: spread(&mut sandbox),
        stages: (0..3).map(|s| (names[s].to_owned(), spread(&mut per_stage[s]), fuel[s])).collect(),
        instantiate: spread(&mut instantiate),
        settings: format!("fuel_metering={fuel_metering} keep_resident_bytes={keep_resident_bytes}"),
        native: spread(&mut native),
        same_result: sandbox_ids == native_ids,
    })
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, s: &Spread| {
            writeln!(f, "{label:<46} {:>10.1} {:>10.1}", us(s.median), us(s.p99))
        };
        writeln!(
            f,
            "3-stage pipeline (in-stock -> boost -> diversity), {} candidates, 4 attribute columns, {} runs",
            self.options.candidates, self.options.iterations
        )?;
        writeln!(f, "runtime: {}", self.settings)?;
        writeln!(f, "{:<46} {:>10} {:>10}", "", "median us", "p99 us")?;
        row(f, "sandboxed pipeline, per call (wasmtime)", &self.sandbox)?;
        for (name, s, fuel) in &self.stages {
            row(f, &format!("  stage {name} (fuel {fuel})"), s)?;
        }
        row(f, "instantiation alone (one plugin)", &self.instantiate)?;
        row(f, "native Rust, same 3 rules", &self.native)?;
        writeln!(
            f,
            "sandbox / native: {:.1}x at the median, {:.1}x at p99; same result: {}",
            us(self.sandbox.median) / us(self.native.median).max(1e-3),
            us(self.sandbox.p99) / us(self.native.p99).max(1e-3),
            if self.same_result { "yes" } else { "NO" }
        )
    }
}

fn spread(samples: &mut [Duration]) -> Spread {
    let (median, p99) = quantiles(samples);
    Spread { median, p99 }
}

/// Median and p99 (sorts in place).
fn quantiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// The same three plugins' code, called as native Rust on the SDK's types,
/// with the same gathering between stages the runtime does.
struct NativePipeline {
    candidates: Candidates,
    in_stock: <InStock as Plugin>::Config,
    boost: <Boost as Plugin>::Config,
    diversity: <Diversity as Plugin>::Config,
    ctx: Context,
}

impl NativePipeline {
    fn new(batch: &CandidateBatch) -> Result<Self, BenchError> {
        let mut candidates = Candidates::new(batch.ids.clone(), batch.scores.clone());
        for column in &batch.columns {
            candidates = match &column.values {
                ColumnValues::Bool(v) => candidates.with_bool(&column.name, v.clone()),
                ColumnValues::F64(v) => candidates.with_f64(&column.name, v.clone()),
                ColumnValues::I64(v) => candidates.with_i64(&column.name, v.clone()),
                ColumnValues::String(v) => {
                    candidates.with_string(&column.name, v.iter().map(|s| s.as_deref()).collect())
                }
                ColumnValues::StringList(_) => {
                    return Err(BenchError::Native("the benchmark batch has no list columns".into()));
                }
            };
        }
        Ok(NativePipeline {
            candidates,
            in_stock: parse("")?,
            boost: parse(BOOST)?,
            diversity: parse(DIVERSITY)?,
            ctx: Context::new("bench"),
        })
    }

    fn run(&self) -> Result<Vec<u64>, BenchError> {
        let fail = |e: edgerec_sdk::Error| BenchError::Native(e.0);
        let out = InStock::run(&self.ctx, &self.in_stock, &self.candidates).map_err(fail)?;
        let after_stock = self.candidates.select(out.order());
        let out = Boost::run(&self.ctx, &self.boost, &after_stock).map_err(fail)?;
        let mut after_boost = after_stock.select(out.order());
        if let Some(scores) = out.scores() {
            after_boost = after_boost.with_scores(scores.to_vec());
        }
        let out = Diversity::run(&self.ctx, &self.diversity, &after_boost).map_err(fail)?;
        Ok(out.order().iter().map(|&i| after_boost.ids()[i as usize]).collect())
    }
}

/// A stage config for native use (the generic `parse_config`, errors as `BenchError`).
fn parse<C: serde::de::DeserializeOwned + Default>(json: &str) -> Result<C, BenchError> {
    edgerec_sdk::parse_config(json.as_bytes()).map_err(|e| BenchError::Native(e.0))
}

/// Seeded random candidates: `in_stock` bool, `price` f64, `category` and
/// `brand` strings, ~5% missing values.
fn random_batch(n: usize, seed: u64) -> CandidateBatch {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut unit = move || (next() >> 11) as f64 / (1u64 << 53) as f64;
    let categories = ["shoes", "shirts", "hats", "bags", "socks", "coats"];
    let brands = ["acme", "zeta", "nova", "orbit"];
    let mut present = Vec::new();
    let mut values = Vec::new();
    for _ in 0..n * 5 {
        present.push(unit() >= 0.05);
        values.push(unit());
    }
    let value = |i: usize, c: usize| present[i * 5 + c].then_some(values[i * 5 + c]);
    let pick = |x: f64, options: &[&str]| options[(x * options.len() as f64) as usize % options.len()].to_owned();
    CandidateBatch {
        ids: (0..n as u64).map(|i| 1000 + i * 7).collect(),
        scores: (0..n).map(|i| values[i * 5] as f32).collect(),
        columns: vec![
            Column {
                name: "in_stock".into(),
                values: ColumnValues::Bool((0..n).map(|i| value(i, 1).map(|x| x < 0.75)).collect()),
            },
            Column {
                name: "price".into(),
                values: ColumnValues::F64((0..n).map(|i| value(i, 2).map(|x| 5.0 + 100.0 * x)).collect()),
            },
            Column {
                name: "category".into(),
                values: ColumnValues::String((0..n).map(|i| value(i, 3).map(|x| pick(x, &categories))).collect()),
            },
            Column {
                name: "brand".into(),
                values: ColumnValues::String((0..n).map(|i| value(i, 4).map(|x| pick(x, &brands))).collect()),
            },
        ],
    }
}
