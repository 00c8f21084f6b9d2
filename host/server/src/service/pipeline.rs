//! The tenant's plugin pipeline: built (its retrieval filter checked against
//! the catalog, every stage compiled, checked and its config accepted by the
//! plugin) once per activation through edgerec-runtime, run per request on
//! the blocking pool over the model's candidates with the catalog columns
//! the stages declared, gathered from the snapshot the request pinned.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use edgerec_catalog::{CompiledFilter, Filter};
use edgerec_kernels::Scored;
use edgerec_runtime::{
    CompileProcess, CompiledPlugin, Event, GatheredCandidates, LimitMaxima, Limits, OnError, Pipeline, PipelineError,
    PluginError, RequestContext, Runtime, RuntimeConfig, StageStatus,
};
use serde_json::Value;

use super::catalog::{CatalogReader, CatalogView};
use super::encode::Engine;
use super::{Error, Result};
use crate::config::ServerConfig;
use crate::error_code::ErrorCode;
use crate::store::{OnErrorPolicy, PipelineRecord, StageSpec, Store};
use crate::timing::stage_done;

/// What the plugins may know about the request.
pub struct RequestInfo {
    /// Tenant name.
    pub tenant: String,
    /// Shopper, when known.
    pub user: Option<String>,
    /// Items wanted.
    pub k: usize,
    /// Request time (unix s).
    pub now: i64,
    /// Request attributes.
    pub attributes: Vec<(String, String)>,
    /// Kept history: (model item id, action, ts), oldest first.
    pub history: Vec<(u32, String, i64)>,
}

/// An activated pipeline version, ready to run.
pub struct ActivePipeline {
    /// Version (0 = none activated).
    pub version: u32,
    /// The hard filters as stored (for listings).
    pub filter: Filter,
    /// The same, checked against the catalog: retrieval keeps only the rows
    /// it lets through (`None`: no filter).
    pub retrieve: Option<Arc<CompiledFilter>>,
    /// Stages as configured (names and versions for traces and metrics).
    pub specs: Vec<StageSpec>,
    /// The runtime's pipeline.
    pub pipeline: Pipeline,
}

impl ActivePipeline {
    /// No stages: the model's ranking unchanged.
    pub fn empty() -> Self {
        ActivePipeline {
            version: 0,
            filter: Filter::default(),
            retrieve: None,
            specs: Vec::new(),
            pipeline: Pipeline::default(),
        }
    }
}

/// What one stage did, for `explain` (and for the error of a failed stage).
#[derive(Clone, Debug)]
pub struct StageSummary {
    /// `plugin@version`.
    pub stage: String,
    /// `ran`, `skipped` (failed, on_error = skip: candidates passed unchanged) or `failed`.
    pub status: String,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Candidates in.
    pub input_len: usize,
    /// Candidates out.
    pub output_len: usize,
    /// External ids of the items it dropped.
    pub removed: Vec<String>,
    /// Kept items whose relative position it changed.
    pub moved: usize,
    /// Fuel (≈ wasm instructions) used.
    pub fuel: u64,
    /// Wall time of the call in microseconds.
    pub micros: f64,
    /// The stage's log lines (`level: message`), bounded by its limits.
    pub logs: Vec<String>,
    /// Log lines the stage wrote beyond its limits.
    pub logs_dropped: u64,
}

/// The pipeline's result.
pub struct Outcome {
    /// Version that ran.
    pub version: u32,
    /// Candidates, best first.
    pub items: Vec<Scored>,
    /// Reason codes per kept candidate (aligned with `items`).
    pub reasons: Vec<Vec<String>>,
    /// Per-stage trace.
    pub trace: Vec<StageSummary>,
    /// The shared store could not be reached: the stages saw the catalog as
    /// this host last heard of it.
    pub degraded: bool,
}

/// The plugin runtime plus compiled components by content hash, so that
/// activating a version that reuses a component costs no compile.
pub struct PluginHost {
    runtime: Runtime,
    compiled: Mutex<HashMap<String, Arc<CompiledPlugin>>>,
}

fn invalid_plugin(error: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::InvalidPlugin, format!("the plugin was refused: {error}"))
}

fn invalid_pipeline(message: String) -> Error {
    Error::new(ErrorCode::InvalidPipeline, message)
}

impl PluginHost {
    /// A runtime whose compiled artifacts are cached under the data
    /// directory; uploads are compiled by `compiler` when given (bounded,
    /// cancellable child processes), else in this process.
    pub fn new(
        config: &ServerConfig,
        data_dir: &std::path::Path,
        compiler: Option<CompileProcess>,
    ) -> anyhow::Result<Self> {
        let config = RuntimeConfig {
            cache_dir: Some(data_dir.join("plugin-cache")),
            max_upload_bytes: config.max_plugin_bytes,
            compile_timeout_ms: config.plugin_compile_timeout_ms,
            compile_memory_bytes: config.plugin_compile_memory_bytes,
            ..RuntimeConfig::default()
        };
        let mut runtime = Runtime::new(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(compiler) = compiler {
            runtime = runtime.with_compile_process(compiler);
        }
        Ok(PluginHost { runtime, compiled: Mutex::new(HashMap::new()) })
    }

    /// Compiles and checks an upload for `tenant` (world, sample run);
    /// returns its content hash. A compile process stops as soon as
    /// `abandoned` is set.
    pub fn check(&self, bytes: &[u8], tenant: &str, abandoned: &AtomicBool) -> Result<String> {
        // The sample run is the uploading tenant's own: a plugin that behaves
        // only for other tenants' names is caught here (and the per-call
        // limits stop it anyway).
        let sample = RequestContext::new(tenant);
        let plugin = self.runtime.compile_cancellable(None, bytes, &sample, abandoned).map_err(|e| match e {
            PluginError::CompileBound { .. } => invalid_plugin(format!(
                "{e} (this server's bounds: plugin_compile_timeout_ms, plugin_compile_memory_bytes)"
            )),
            e => invalid_plugin(e),
        })?;
        let hash = plugin.hash().to_string();
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner).insert(hash.clone(), plugin);
        Ok(hash)
    }

    fn plugin(&self, store: &dyn Store, tenant: &str, digest: &str) -> Result<Arc<CompiledPlugin>> {
        if let Some(plugin) = self.compiled.lock().unwrap_or_else(PoisonError::into_inner).get(digest) {
            return Ok(plugin.clone());
        }
        let bytes = store
            .blob(tenant, digest)?
            .ok_or_else(|| Error::internal("loading a plugin", format!("component {digest} missing from the store")))?;
        let plugin = self.runtime.compile(&bytes).map_err(invalid_plugin)?;
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner).insert(digest.to_string(), plugin.clone());
        Ok(plugin)
    }
}

/// The limits of a stage that sets none: the runtime's for the plugin's
/// language, with the server's deadline (for JavaScript at least the
/// language's own: an interpreter needs it).
pub fn stage_defaults(config: &ServerConfig, language: Option<&str>) -> Limits {
    let defaults = Limits::for_language(language);
    let deadline_us = match language {
        None => config.plugin_deadline_us,
        Some(_) => config.plugin_deadline_us.max(defaults.deadline_us),
    };
    Limits { deadline_us, ..defaults }
}

/// The most a stage may ask for (the OpenAPI document declares the same).
pub fn stage_maxima(config: &ServerConfig) -> LimitMaxima {
    let maxima = LimitMaxima::default();
    LimitMaxima { deadline_us: maxima.deadline_us.max(config.plugin_deadline_us), ..maxima }
}

/// Builds a pipeline version: its retrieval filter checked against the
/// tenant's catalog, every stage's plugin compiled (or reused) and its config
/// accepted by the plugin, before anything is activated.
pub fn build(
    plugins: &PluginHost,
    store: &dyn Store,
    config: &ServerConfig,
    tenant: &str,
    catalog: &CatalogReader,
    record: &PipelineRecord,
) -> Result<ActivePipeline> {
    let retrieve = match record.retrieve.is_empty() {
        true => None,
        false => {
            let compiled = record.retrieve.compile(&catalog.view().snapshot).map_err(|e| {
                Error::new(
                    ErrorCode::FilterMismatch,
                    format!(
                        "retrieve.where: {e} (filters read the tenant's catalog as upserted; upsert items with the attribute first)"
                    ),
                )
            })?;
            Some(Arc::new(compiled))
        }
    };
    let versions = store.plugins(tenant)?;
    let mut stages = Vec::with_capacity(record.stages.len());
    for (index, spec) in record.stages.iter().enumerate() {
        let version =
            versions.iter().find(|p| p.name == spec.plugin && Some(p.version) == spec.version).ok_or_else(|| {
                invalid_pipeline(format!(
                    "stage {index}: plugin {:?} version {:?} is not uploaded",
                    spec.plugin, spec.version
                ))
            })?;
        let plugin = plugins.plugin(store, tenant, &version.digest)?;
        let stage_config = match &spec.config {
            Value::Null => Vec::new(),
            other => serde_json::to_vec(other).map_err(|e| Error::internal("encoding a stage config", e))?,
        };
        let on_error = match spec.on_error {
            OnErrorPolicy::Fail => OnError::Fail,
            OnErrorPolicy::Skip => OnError::Skip,
        };
        let defaults = stage_defaults(config, plugin.language());
        let maxima = stage_maxima(config);
        let limits = match &spec.limits {
            Some(given) => given.resolve(&defaults, &maxima),
            None => defaults.check(&maxima).map(|()| defaults),
        }
        .map_err(|e| invalid_pipeline(format!("stage {index} ({}): limits: {e}", spec.plugin)))?;
        let stage = plugins
            .runtime
            .stage(plugin, stage_config, on_error, limits)
            .map_err(|e| invalid_pipeline(format!("stage {index} ({}@{}): {e}", spec.plugin, version.version)))?;
        stages.push(stage);
    }
    Ok(ActivePipeline {
        version: record.version,
        filter: record.retrieve.clone(),
        retrieve,
        specs: record.stages.clone(),
        pipeline: Pipeline { stages },
    })
}

/// Runs the pipeline over the candidates (model ids) with the columns of
/// the catalog version the request pinned, and returns them re-ranked.
/// `store_away`: the shared store cannot be reached (the catalog may lag).
#[allow(clippy::too_many_arguments)]
pub fn run(
    plugins: &PluginHost,
    engine: &Engine,
    active: &ActivePipeline,
    catalog: &CatalogView,
    info: &RequestInfo,
    candidates: Vec<Scored>,
    explain: bool,
    store_away: bool,
) -> Result<Outcome> {
    if active.pipeline.stages.is_empty() {
        let reasons = vec![Vec::new(); candidates.len()];
        return Ok(Outcome { version: active.version, items: candidates, reasons, trace: Vec::new(), degraded: false });
    }
    let span = tracing::info_span!("plugins", pipeline_version = active.version, stages = active.specs.len());
    let _entered = span.enter();
    let start = Instant::now();
    let external = |id: u64| engine.items.external(id as u32).unwrap_or("").to_string();
    let required = active.pipeline.required_columns();
    let rows: Vec<u32> = candidates.iter().map(|c| c.item).collect();
    // Candidates are the model's rows, the snapshot's row space.
    let columns = catalog
        .snapshot
        .gather(&required, &rows)
        .map_err(|e| Error::internal("gathering the candidates' columns", e))?;
    let degraded = store_away && !required.is_empty();
    let batch = GatheredCandidates {
        ids: candidates.iter().map(|c| c.item as u64).collect(),
        scores: candidates.iter().map(|c| c.score).collect(),
        columns,
    };
    let ctx = RequestContext {
        tenant: info.tenant.clone(),
        user: info.user.clone(),
        k: info.k as u32,
        now: info.now,
        attributes: info.attributes.iter().cloned().collect::<BTreeMap<_, _>>(),
        recent_events: info
            .history
            .iter()
            .map(|(item, action, ts)| Event { item: *item as u64, action: action.clone(), ts: *ts })
            .collect(),
    };
    let result = plugins.runtime.run_pipeline_gathered(&active.pipeline, &ctx, batch);
    let (outcome, traces) = match result {
        Ok(outcome) => {
            let traces = outcome.stages.clone();
            (Some(outcome), traces)
        }
        Err(PipelineError::StageFailed { trace, .. }) => (None, trace),
        Err(PipelineError::Input(e)) => return Err(Error::internal("building the candidate batch", e)),
    };
    let mut trace = Vec::with_capacity(traces.len());
    for t in &traces {
        let spec = &active.specs[t.stage];
        let stage = format!("{}@{}", spec.plugin, spec.version.unwrap_or(0));
        let (status, failure) = match &t.status {
            StageStatus::Ran => ("ran", None),
            StageStatus::Skipped { failure } => ("skipped", Some(failure.to_string())),
            StageStatus::Failed { failure } => ("failed", Some(failure.to_string())),
        };
        tracing::info!(tenant = %info.tenant, stage = %stage, status, fuel = t.report.fuel_used, wall_us = t.report.wall_us, "plugin stage");
        for line in &t.report.logs {
            tracing::info!(tenant = %info.tenant, stage = %stage, level = %line.level, message = %line.message, "plugin log");
        }
        if t.report.logs_dropped > 0 {
            metrics::counter!("edgerec_plugin_log_lines_dropped_total", "tenant" => info.tenant.clone(), "stage" => spec.plugin.clone())
                .increment(t.report.logs_dropped);
        }
        let (tenant_label, stage_label) = (info.tenant.clone(), spec.plugin.clone());
        metrics::histogram!("edgerec_plugin_seconds", "tenant" => tenant_label.clone(), "stage" => stage_label.clone())
            .record(t.report.wall_us / 1e6);
        metrics::counter!("edgerec_plugin_fuel_total", "tenant" => tenant_label.clone(), "stage" => stage_label.clone())
            .increment(t.report.fuel_used);
        if failure.is_some() {
            if status == "skipped" {
                metrics::counter!("edgerec_plugin_skips_total", "tenant" => tenant_label.clone(), "stage" => stage_label.clone())
                    .increment(1);
            }
            metrics::counter!("edgerec_plugin_errors_total", "tenant" => tenant_label, "stage" => stage_label)
                .increment(1);
        }
        if explain || failure.is_some() {
            trace.push(StageSummary {
                stage,
                status: status.to_string(),
                failure,
                input_len: t.input_len,
                output_len: t.output_len,
                removed: t.removed.iter().map(|&id| external(id)).collect(),
                moved: t.moved,
                fuel: t.report.fuel_used,
                micros: t.report.wall_us,
                logs: t.report.logs.iter().map(|l| format!("{}: {}", l.level, l.message)).collect(),
                logs_dropped: t.report.logs_dropped,
            });
        }
    }
    stage_done("plugins", start);
    let Some(outcome) = outcome else {
        let failed = trace.last().map(|t| format!("{}: {}", t.stage, t.failure.clone().unwrap_or_default()));
        return Err(Error::new(
            ErrorCode::PluginFailed,
            format!(
                "a stage with on_error = fail failed ({}); fix or roll back the pipeline",
                failed.unwrap_or_default()
            ),
        ));
    };
    let items = outcome.candidates.iter().map(|c| Scored { item: c.id as u32, score: c.score }).collect();
    let reasons = outcome.candidates.into_iter().map(|c| c.reasons).collect();
    Ok(Outcome { version: active.version, items, reasons, trace, degraded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_javascript_stage_gets_the_interpreter_defaults_and_a_native_one_the_servers() {
        let config = crate::config::ServerConfig { plugin_deadline_us: 2_000, ..Default::default() };
        let native = stage_defaults(&config, None);
        assert_eq!((native.deadline_us, native.fuel), (2_000, Limits::default().fuel));
        let js = stage_defaults(&config, Some("js"));
        assert_eq!((js.deadline_us, js.fuel), (50_000, 750_000_000));
        let generous = crate::config::ServerConfig { plugin_deadline_us: 80_000, ..Default::default() };
        assert_eq!(stage_defaults(&generous, Some("js")).deadline_us, 80_000);
        assert!(js.check(&stage_maxima(&config)).is_ok(), "the JS defaults are within the maxima");
    }
}
