//! `edgerec bench plugins --js FILE`: the cost of a JavaScript plugin next to
//! Rust. FILE is `boost` ported to TypeScript (`plugins/boost-ts`, built with
//! jco's QuickJS backend); it runs against the first-party Rust `boost` on the
//! same random batch and config, through the same runtime and limits, and the
//! two outputs must agree before anything is printed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use edgerec_runtime::{
    CandidateBatch, Column, ColumnValues, CompiledPlugin, Limits, RequestContext, Runtime, RuntimeConfig, first_party,
};

/// The boost config of the comparison: every action and the five column types.
pub const BOOST_CONFIG: &str = r#"{"rules": [
    {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 1.5}},
    {"name": "cheap", "attribute": "price", "op": "lt", "value": 20, "action": {"add": 0.05}},
    {"attribute": "stock", "op": "le", "value": 2, "action": {"multiply": 0.5}},
    {"name": "clearance", "attribute": "tags", "op": "contains", "value": "clearance", "action": "bury"},
    {"name": "sponsored", "attribute": "sponsored", "op": "eq", "value": true, "action": {"pin": 0}}
]}"#;

/// `n` candidates with random scores and five attribute columns (one of each
/// type), about 5% missing values; the same seed gives the same batch.
pub fn random_batch(n: usize, seed: u64) -> CandidateBatch {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut unit = move || (next() >> 11) as f64 / (1u64 << 53) as f64;
    let brands = ["acme", "zeta", "nova", "orbit"];
    let tags = ["clearance", "new", "eco", "gift"];
    let ids = (0..n as u64).map(|i| 1000 + i * 7).collect();
    let scores = (0..n).map(|_| unit() as f32).collect();
    let mut column = |make: &mut dyn FnMut(f64) -> ColumnValuesRow| -> Vec<ColumnValuesRow> {
        (0..n).map(|_| if unit() < 0.05 { ColumnValuesRow::Missing } else { make(unit()) }).collect()
    };
    let price = column(&mut |u| ColumnValuesRow::F64(5.0 + 100.0 * u));
    let stock = column(&mut |u| ColumnValuesRow::I64((u * 10.0) as i64));
    let sponsored = column(&mut |u| ColumnValuesRow::Bool(u < 0.03));
    let brand = column(&mut |u| ColumnValuesRow::Str(brands[(u * 4.0) as usize % 4].to_owned()));
    let tag = column(&mut |u| {
        let k = (u * 16.0) as usize;
        ColumnValuesRow::List((0..4).filter(|b| k & (1 << b) != 0).map(|b| tags[b].to_owned()).collect())
    });
    CandidateBatch {
        ids,
        scores,
        columns: vec![
            Column {
                name: "price".into(),
                values: ColumnValues::F64(price.iter().map(ColumnValuesRow::f64).collect()),
            },
            Column {
                name: "stock".into(),
                values: ColumnValues::I64(stock.iter().map(ColumnValuesRow::i64).collect()),
            },
            Column {
                name: "sponsored".into(),
                values: ColumnValues::Bool(sponsored.iter().map(ColumnValuesRow::bool).collect()),
            },
            Column {
                name: "brand".into(),
                values: ColumnValues::String(brand.iter().map(ColumnValuesRow::str).collect()),
            },
            Column {
                name: "tags".into(),
                values: ColumnValues::StringList(tag.iter().map(ColumnValuesRow::list).collect()),
            },
        ],
    }
}

/// One generated cell.
enum ColumnValuesRow {
    Missing,
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

impl ColumnValuesRow {
    fn f64(&self) -> Option<f64> {
        if let ColumnValuesRow::F64(v) = self { Some(*v) } else { None }
    }
    fn i64(&self) -> Option<i64> {
        if let ColumnValuesRow::I64(v) = self { Some(*v) } else { None }
    }
    fn bool(&self) -> Option<bool> {
        if let ColumnValuesRow::Bool(v) = self { Some(*v) } else { None }
    }
    fn str(&self) -> Option<String> {
        if let ColumnValuesRow::Str(v) = self { Some(v.clone()) } else { None }
    }
    fn list(&self) -> Option<Vec<String>> {
        if let ColumnValuesRow::List(v) = self { Some(v.clone()) } else { None }
    }
}

/// What one plugin cost.
struct Cost {
    size: usize,
    compile_ms: f64,
    instantiate_us: f64,
    median_us: f64,
    p99_us: f64,
    fuel: u64,
    memory: u64,
    columns_fuel: u64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn measure(
    runtime: &Runtime,
    plugin: &Arc<CompiledPlugin>,
    batch: &CandidateBatch,
    iterations: usize,
    limits: &Limits,
) -> Result<(Cost, edgerec_runtime::StageOutput)> {
    let ctx = RequestContext::new("bench");
    let config = BOOST_CONFIG.as_bytes();
    let (columns, columns_report) = runtime.columns(plugin, config, limits);
    match columns {
        Ok(Ok(_)) => {}
        Ok(Err(message)) => bail!("{} refuses the config: {message}", plugin.name()),
        Err(failure) => bail!("{} failed reading the config: {failure}", plugin.name()),
    }
    let (first, _) = runtime.call(plugin, &ctx, config, batch, limits);
    let output = first.map_err(|f| anyhow::anyhow!("{} failed: {f}", plugin.name()))?;
    for _ in 0..iterations / 10 {
        let _ = runtime.call(plugin, &ctx, config, batch, limits);
    }
    let (mut wall, mut inst) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    let (mut fuel, mut memory) = (0, 0);
    for _ in 0..iterations {
        let (result, report) = runtime.call(plugin, &ctx, config, batch, limits);
        result.map_err(|f| anyhow::anyhow!("{} failed: {f}", plugin.name()))?;
        wall.push(report.wall_us);
        inst.push(report.instantiate_us);
        fuel = report.fuel_used;
        memory = memory.max(report.peak_memory_bytes);
    }
    wall.sort_by(f64::total_cmp);
    inst.sort_by(f64::total_cmp);
    let cost = Cost {
        size: plugin.size(),
        compile_ms: plugin.compile_time().as_secs_f64() * 1e3,
        instantiate_us: percentile(&inst, 0.5),
        median_us: percentile(&wall, 0.5),
        p99_us: percentile(&wall, 0.99),
        fuel,
        memory,
        columns_fuel: columns_report.fuel_used,
    };
    Ok((cost, output))
}

/// Runs the comparison and prints its table. `max_upload_bytes` is the
/// server's upload cap (the CLI passes its default), so that the JS
/// component is accepted exactly when an upload would be.
pub fn bench_js(file: &Path, candidates: usize, iterations: usize, max_upload_bytes: usize) -> Result<()> {
    let js_bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // No disk cache: the compile column is Cranelift's real time.
    let runtime = Runtime::new(RuntimeConfig { max_upload_bytes, ..RuntimeConfig::default() }).context("runtime")?;
    let started = Instant::now();
    let rust = runtime.compile_named(Some("boost"), first_party::BOOST).context("compiling the Rust boost")?;
    let js = runtime
        .compile_named(Some("boost-ts"), &js_bytes)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    let batch = random_batch(candidates, 7);
    // Caps that neither plugin can reach, so that both finish and the table
    // shows what each used; the defaults are printed below it for comparison.
    let limits = Limits { deadline_us: 30_000_000, fuel: 50_000_000_000, ..Limits::default() };
    let (rust_cost, rust_out) = measure(&runtime, &rust, &batch, iterations, &limits)?;
    let (js_cost, js_out) = measure(&runtime, &js, &batch, iterations, &limits)?;
    if rust_out != js_out {
        bail!("the two plugins disagree on the benchmark batch: this is not a port of boost (or a bug)");
    }
    println!(
        "boost, Rust vs TypeScript (jco QuickJS), {candidates} candidates, 5 rules, {iterations} calls each, fresh instance per call"
    );
    println!("outputs: identical ({} kept)\n", rust_out.order.len());
    println!(
        "{:<16} {:>10} {:>10} {:>12} {:>20} {:>10} {:>12} {:>14}",
        "plugin", "size", "compile", "instantiate", "call median / p99", "fuel", "memory", "columns() fuel"
    );
    for (name, c) in [("Rust", &rust_cost), ("TypeScript/qjs", &js_cost)] {
        println!(
            "{:<16} {:>7.0} KB {:>7.2} s {:>9.0} µs {:>20} {:>8.2} M {:>8.2} MiB {:>14}",
            name,
            c.size as f64 / 1e3,
            c.compile_ms / 1e3,
            c.instantiate_us,
            format!("{:.0} / {:.0} µs", c.median_us, c.p99_us),
            c.fuel as f64 / 1e6,
            c.memory as f64 / 1048576.0,
            c.columns_fuel
        );
    }
    let native = Limits::default();
    let js = Limits::for_language(Some("js"));
    println!(
        "\nJS / Rust: {:.1}x size, {:.1}x call time, {:.1}x fuel.",
        js_cost.size as f64 / rust_cost.size as f64,
        js_cost.median_us / rust_cost.median_us,
        js_cost.fuel as f64 / rust_cost.fuel.max(1) as f64,
    );
    for (language, d, cost) in [("native", &native, &rust_cost), ("js", &js, &js_cost)] {
        println!(
            "default limits ({language}): {} µs, {} M fuel, {} MiB: this call uses {:.0}% of the deadline (p99), {:.0}% of the fuel, {:.0}% of the memory",
            d.deadline_us,
            d.fuel / 1_000_000,
            d.memory_bytes >> 20,
            100.0 * cost.p99_us / d.deadline_us as f64,
            100.0 * cost.fuel as f64 / d.fuel as f64,
            100.0 * cost.memory as f64 / d.memory_bytes as f64
        );
    }
    println!("(total {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
