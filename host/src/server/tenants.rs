//! Tenant life cycle: creation (model loaded, stored, registered), loading
//! every tenant at start, pipeline activation and rollback (store, then swap).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::StatusCode;
use edgerec_kernels::Model;
use edgerec_kernels::item_map::ItemMap;
use rand::Rng;

use super::error::ApiError;
use super::pipeline::{self, ActivePipeline};
use super::state::{AppState, Tenant};
use super::store::{PipelineRecord, StageSpec, TenantRecord};

/// A random secret: `prefix_` then 32 hex characters (128 bits).
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// Loads a tenant's model: `"demo"` is the bundled demo, anything else a model directory.
pub fn load_model(source: &str) -> Result<(Model, ItemMap), ApiError> {
    if source == "demo" {
        return super::demo::model().map_err(|e| ApiError::internal("loading the bundled demo model", e));
    }
    let dir = Path::new(source);
    let invalid = |what: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_model",
            format!("model {source:?}: {what}; give \"demo\" or a directory with config.json, model.safetensors and items.json"),
        )
    };
    let model = Model::load(dir).map_err(|e| invalid(e.to_string()))?;
    let items = ItemMap::load(dir).map_err(|e| invalid(e.to_string()))?;
    if items.len() != model.config.num_items {
        return Err(invalid(format!(
            "items.json maps {} items but the model has {}",
            items.len(),
            model.config.num_items
        )));
    }
    Ok((model, items))
}

fn register(app: &AppState, record: TenantRecord, model: Model, items: ItemMap, active: ActivePipeline) {
    app.insert_tenant(Tenant {
        record,
        model: Arc::new(model),
        items: Arc::new(items),
        pipeline: ArcSwap::from_pointee(active),
        activation: tokio::sync::Mutex::new(()),
    });
}

/// Creates a tenant (409 conflict when the name is taken).
pub fn create(app: &AppState, record: TenantRecord) -> Result<(), ApiError> {
    let (model, items) = load_model(&record.model)?;
    if !app.store.create_tenant(&record)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a tenant named {:?} exists already; pick another name", record.name),
        ));
    }
    register(app, record, model, items, ActivePipeline::empty());
    Ok(())
}

/// Loads every stored tenant with its active pipeline (at start).
pub fn load_all(app: &AppState) -> anyhow::Result<()> {
    for record in app.store.tenants()? {
        let name = record.name.clone();
        let (model, items) =
            load_model(&record.model).map_err(|e| anyhow::anyhow!("tenant {name}: {}", e.message))?;
        let (active, versions) = app.store.pipelines(&name)?;
        let pipeline = match active.and_then(|v| versions.into_iter().find(|p| p.version == v)) {
            Some(record) => pipeline::build(app, &name, &record)
                .map_err(|e| anyhow::anyhow!("tenant {name}: pipeline: {}", e.message))?,
            None => ActivePipeline::empty(),
        };
        tracing::info!(tenant = %name, pipeline_version = pipeline.version, "tenant loaded");
        register(app, record, model, items, pipeline);
    }
    Ok(())
}

/// Resolves, checks, stores and activates a new pipeline version.
pub fn activate(app: &AppState, tenant: &Tenant, mut stages: Vec<StageSpec>) -> Result<PipelineRecord, ApiError> {
    let name = &tenant.record.name;
    let plugins = app.store.plugins(name)?;
    for (index, stage) in stages.iter_mut().enumerate() {
        if !matches!(stage.on_error.as_str(), "skip" | "fail") {
            return Err(invalid_pipeline(format!("stage {index}: on_error must be \"skip\" or \"fail\", not {:?}", stage.on_error)));
        }
        let versions: Vec<u32> = plugins.iter().filter(|p| p.name == stage.plugin).map(|p| p.version).collect();
        let version = match stage.version {
            Some(v) if versions.contains(&v) => v,
            Some(v) => return Err(invalid_pipeline(format!("stage {index}: plugin {:?} has no version {v} (versions: {versions:?})", stage.plugin))),
            None => *versions.iter().max().ok_or_else(|| {
                invalid_pipeline(format!("stage {index}: no plugin named {:?}; upload it with PUT …/plugins/{}", stage.plugin, stage.plugin))
            })?,
        };
        stage.version = Some(version);
    }
    // Built (compiled, config checked) before anything is stored or swapped.
    let candidate = PipelineRecord { version: 0, stages: stages.clone(), created_at: 0 };
    let mut active = pipeline::build(app, name, &candidate)?;
    let record = app.store.add_pipeline(name, stages)?;
    active.version = record.version;
    tenant.pipeline.store(Arc::new(active));
    metrics::counter!("edgerec_pipeline_activations_total", "tenant" => name.clone()).increment(1);
    tracing::info!(tenant = %name, version = record.version, "pipeline activated");
    Ok(record)
}

/// Returns to the previously active version (409 when there is none).
pub fn rollback(app: &AppState, tenant: &Tenant) -> Result<PipelineRecord, ApiError> {
    let name = &tenant.record.name;
    let record = app.store.rollback(name)?.ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "conflict", "there is no previous pipeline version to roll back to")
    })?;
    let active = pipeline::build(app, name, &record)?;
    tenant.pipeline.store(Arc::new(active));
    tracing::info!(tenant = %name, version = record.version, "pipeline rolled back");
    Ok(record)
}

fn invalid_pipeline(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_pipeline", message)
}
