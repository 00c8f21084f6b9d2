//! Tenant life cycle: creation (model loaded, stored, registered), loading
//! every tenant at start, pipeline and model activation and rollback (built
//! or loaded, stored, then swapped), and bringing a tenant in line with a
//! shared store another host changed ([`sync`]).

use std::sync::{Arc, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Backend, BackendChoice, Model};

use super::access::Operator;
use super::app::{AppState, Tenant};
use super::bundles;
use super::catalog::CatalogReader;
use super::encode::{self, Engine, user_cache};
use super::first_party;
use super::pipeline::{self, ActivePipeline};
use super::scheduler::Scheduler;
use super::{Error, Result};
use crate::clock::now_unix;
use crate::error_code::ErrorCode;
use crate::ids::{new_key_id, new_secret, secret_hash};
use crate::store::{ApiKeyRecord, ModelVersion, PipelineRecord, PipelineSpec, RetrievalMode, TenantRecord};

/// The backend a tenant is served with: its record's choice, else the
/// server's. Under `auto`, the log says which backend serves and, on the CPU,
/// why CUDA was refused.
pub fn tenant_backend(app: &AppState, record: &TenantRecord, model: &Arc<Model>) -> Result<Arc<dyn Backend>> {
    let choice = match &record.backend {
        Some(name) => name.parse::<BackendChoice>().map_err(Error::bad_request)?,
        None => app.config.backend,
    };
    let selected = edgerec_kernels::open_backend(choice, model.clone()).map_err(|e| {
        Error::new(
            ErrorCode::BackendUnavailable,
            format!("tenant {:?}: {e}; choose another backend (cpu always runs)", record.name),
        )
    })?;
    match &selected.cuda_refused {
        Some(why) => {
            tracing::info!(tenant = %record.name, backend = selected.backend.name(), %why, "serving on the CPU: CUDA was refused")
        }
        None => tracing::info!(tenant = %record.name, backend = selected.backend.name(), "backend selected"),
    }
    Ok(Arc::from(selected.backend))
}

/// A tenant's engine: its model (the base model or an uploaded version),
/// the backend serving it and the item map, with the pipeline to start with.
struct Loaded {
    model: Arc<Model>,
    backend: Arc<dyn Backend>,
    items: Arc<ItemMap>,
    catalog: CatalogReader,
    model_version: Option<String>,
    pipeline: ActivePipeline,
}

/// The tenant's catalog over `items`' rows, read whole from the store.
/// Callers that replace a serving tenant hold its catalog write lock from
/// here until the registration.
fn load_catalog(app: &AppState, name: &str, items: &Arc<ItemMap>) -> Result<CatalogReader> {
    let config = &app.config;
    CatalogReader::load(
        app.store.clone(),
        name,
        items.clone(),
        config.catalog_memory_bytes,
        config.known_items_cache_bytes,
    )
}

/// Registers a tenant; with `shared`, the pipeline and activation lock of
/// the tenant it replaces (a model swap), so that an activation racing the
/// swap lands in the pipeline the new one serves.
fn register(app: &AppState, record: TenantRecord, loaded: Loaded, shared: Option<&Tenant>) {
    app.insert_tenant(assemble(app, record, loaded, shared));
}

fn assemble(app: &AppState, record: TenantRecord, loaded: Loaded, shared: Option<&Tenant>) -> Tenant {
    let config = &app.config;
    let (pipeline, activation, catalog_writes) = match shared {
        Some(old) => (old.pipeline.clone(), old.activation.clone(), old.catalog_writes.clone()),
        None => (Arc::new(ArcSwap::from_pointee(loaded.pipeline)), Arc::default(), Arc::default()),
    };
    let engine = Arc::new(Engine {
        tenant: record.name.clone(),
        model: loaded.model,
        backend: loaded.backend,
        items: loaded.items,
        // A new model starts with an empty cache: no encoder state of the old
        // model is ever used with the new one.
        cache: user_cache(config.cache_bytes),
        catalog: loaded.catalog,
        ann: ArcSwapOption::empty(),
    });
    if record.retrieval == RetrievalMode::Ann {
        encode::build_ann(&engine);
    }
    // The served pipeline's retrieval filter, kept current in the new catalog.
    if let Some(filter) = &pipeline.load().retrieve {
        engine.catalog.register_filter(filter);
    }
    let scheduler = Scheduler::new(
        engine.clone(),
        app.store.clone(),
        app.encode_slots.clone(),
        config.max_batch,
        config.max_wait_us,
        config.candidates,
    );
    Tenant {
        record,
        engine,
        model_version: loaded.model_version,
        scheduler,
        pipeline,
        activation,
        catalog_writes,
        read_share: match shared {
            Some(old) => old.read_share.clone(),
            None => Arc::new(tokio::sync::Semaphore::new(config.tenant_catalog_read_concurrency.max(1))),
        },
        plugin_share: match shared {
            Some(old) => old.plugin_share.clone(),
            None => Arc::new(tokio::sync::Semaphore::new(config.tenant_plugin_permits())),
        },
    }
}

/// Builds a pipeline version of tenant `name` with the server's plugin
/// host, its retrieval filter checked against `catalog`.
fn build_pipeline(
    app: &AppState,
    name: &str,
    catalog: &CatalogReader,
    record: &PipelineRecord,
) -> Result<ActivePipeline> {
    pipeline::build(&app.plugins, app.store.as_ref(), &app.config, name, catalog, record)
}

/// The engine serving `tenant` now (a model swap replaces the one it holds).
fn current_engine(app: &AppState, tenant: &Tenant) -> Arc<Engine> {
    app.lookup_tenant(&tenant.record.name).map_or_else(|_| tenant.engine.clone(), |t| t.engine.clone())
}

/// Swaps `active` in. Its retrieval filter's mask is made and kept current
/// in the catalog first, so that the first request on it finds it ready.
/// Callers hold the tenant's activation lock (model swaps take it too).
fn serve_pipeline(app: &AppState, tenant: &Tenant, active: ActivePipeline) {
    if let Some(filter) = &active.retrieve {
        current_engine(app, tenant).catalog.register_filter(filter);
    }
    tenant.pipeline.store(Arc::new(active));
}

/// A new storefront key: the key itself (shown once) and its stored record.
pub fn issue_key() -> (String, ApiKeyRecord) {
    let key = new_secret("ek");
    let record = ApiKeyRecord { id: new_key_id(), sha256: secret_hash(&key), created_at: now_unix() };
    (key, record)
}

/// Creates a tenant (409 conflict when the name is taken).
pub fn create(app: &AppState, _operator: &Operator, record: TenantRecord) -> Result<()> {
    let (model, items) = bundles::load_model(&record.model)?;
    let (model, items) = (Arc::new(model), Arc::new(items));
    let backend = tenant_backend(app, &record, &model)?;
    if !app.store.create_tenant(&record)? {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("a tenant named {:?} exists already; pick another name", record.name),
        ));
    }
    let catalog = load_catalog(app, &record.name, &items)?;
    let loaded = Loaded { model, backend, items, catalog, model_version: None, pipeline: ActivePipeline::empty() };
    register(app, record, loaded, None);
    Ok(())
}

/// Loads every stored tenant with its active pipeline (at start). A tenant
/// that cannot load is registered as unavailable with the reason, so that the
/// others serve; plain keys of older versions are hashed and rewritten.
pub fn load_all(app: &AppState) -> anyhow::Result<()> {
    for mut record in app.store.tenants()? {
        let name = record.name.clone();
        if let Some(plain) = record.legacy_api_key.take() {
            record.keys.push(ApiKeyRecord { id: new_key_id(), sha256: secret_hash(&plain), created_at: now_unix() });
            app.store.put_tenant(&record)?;
            tracing::info!(tenant = %name, "stored API key replaced by its hash");
        }
        match load_one(app, &record) {
            Ok(loaded) => {
                tracing::info!(
                    tenant = %name, pipeline_version = loaded.pipeline.version,
                    model_version = loaded.model_version.as_deref().unwrap_or("base"), "tenant loaded"
                );
                register(app, record, loaded, None);
            }
            Err(reason) => {
                tracing::error!(tenant = %name, %reason, "tenant unavailable: it could not be loaded; the others serve");
                app.insert_unavailable(&record, reason);
            }
        }
    }
    Ok(())
}

fn load_one(app: &AppState, record: &TenantRecord) -> Result<Loaded, String> {
    let (model, items, model_version) = load_active_model(app, record).map_err(|e| e.report())?;
    let backend = tenant_backend(app, record, &model).map_err(|e| e.report())?;
    let catalog = load_catalog(app, &record.name, &items).map_err(|e| format!("catalog: {}", e.report()))?;
    let (active, versions) = app.store.pipelines(&record.name).map_err(|e| e.to_string())?;
    let pipeline = match active.and_then(|v| versions.into_iter().find(|p| p.version == v)) {
        Some(pipeline) => {
            build_pipeline(app, &record.name, &catalog, &pipeline).map_err(|e| format!("pipeline: {}", e.report()))?
        }
        None => ActivePipeline::empty(),
    };
    Ok(Loaded { model, backend, items, catalog, model_version, pipeline })
}

/// The tenant's active model: the stored version activated last, else its base model.
fn load_active_model(app: &AppState, record: &TenantRecord) -> Result<(Arc<Model>, Arc<ItemMap>, Option<String>)> {
    let (active, versions) = app.store.models(&record.name)?;
    let (model, items) = match &active {
        Some(name) => {
            let version = versions.iter().find(|v| &v.version == name).ok_or_else(|| {
                Error::internal("loading the active model", format!("model version {name:?} is active but not stored"))
            })?;
            bundles::load_version(app, &record.name, version)?
        }
        None => bundles::load_model(&record.model)?,
    };
    Ok((Arc::new(model), Arc::new(items), active))
}

/// Serves the tenant's active model as stored now (after an activation or
/// rollback here or on another host): the new model, backend and item map
/// replace the old ones in one swap of the tenant; requests in flight finish
/// on the model they started with. Callers hold the tenant's activation lock.
pub fn swap_model(app: &AppState, tenant: &Tenant) -> Result<()> {
    let name = &tenant.record.name;
    let record = stored_record(app, tenant)?;
    let (model, items, model_version) = load_active_model(app, &record)?;
    if model_version == tenant.model_version {
        return Ok(());
    }
    let backend = tenant_backend(app, &record, &model)?;
    let _writes = tenant.catalog_writes.lock().unwrap_or_else(PoisonError::into_inner);
    let catalog = load_catalog(app, name, &items)?;
    let loaded = Loaded { model, backend, items, catalog, model_version, pipeline: ActivePipeline::empty() };
    tracing::info!(tenant = %name, model_version = loaded.model_version.as_deref().unwrap_or("base"), "model swapped");
    metrics::counter!("edgerec_model_activations_total", "tenant" => name.clone()).increment(1);
    register(app, record, loaded, Some(tenant));
    Ok(())
}

/// Activates a stored model version: loaded and checked before the active
/// pointer moves, then swapped in (404 unknown_model when there is none).
pub fn activate_model(app: &AppState, tenant: &Tenant, version: &str) -> Result<ModelVersion> {
    let name = &tenant.record.name;
    let unknown = || {
        Error::new(
            ErrorCode::UnknownModel,
            format!("tenant {name:?} has no model version {version:?}; upload it with PUT …/models/{version}"),
        )
    };
    let (_, versions) = app.store.models(name)?;
    let target = versions.into_iter().find(|v| v.version == version).ok_or_else(unknown)?;
    let (model, items) = bundles::load_version(app, name, &target)?;
    let (model, items) = (Arc::new(model), Arc::new(items));
    let record = stored_record(app, tenant)?;
    let backend = tenant_backend(app, &record, &model)?;
    let _writes = tenant.catalog_writes.lock().unwrap_or_else(PoisonError::into_inner);
    let catalog = load_catalog(app, name, &items)?;
    app.store.activate_model(name, version)?.ok_or_else(unknown)?;
    let version_name = Some(version.to_string());
    let loaded =
        Loaded { model, backend, items, catalog, model_version: version_name, pipeline: ActivePipeline::empty() };
    register(app, record, loaded, Some(tenant));
    metrics::counter!("edgerec_model_activations_total", "tenant" => name.clone()).increment(1);
    tracing::info!(tenant = %name, model_version = version, "model version activated");
    Ok(target)
}

/// Returns to the model active before the last activation (the base model
/// after the first); 409 when no model version was activated.
pub fn rollback_model(app: &AppState, tenant: &Tenant) -> Result<Option<String>> {
    let active = app.store.rollback_model(&tenant.record.name)?.ok_or_else(|| {
        Error::new(ErrorCode::Conflict, "no model version was activated: there is nothing to roll back")
    })?;
    swap_model(app, tenant)?;
    Ok(active)
}

/// Brings a tenant in line with the store after another host changed it:
/// loads it when it is new here (or could not load before), takes its keys,
/// and builds and swaps the active pipeline when another version is active.
/// Serialised with this host's own changes of the tenant (its activation lock).
pub fn sync(app: &AppState, name: &str) -> Result<()> {
    let Ok(tenant) = app.lookup_tenant(name) else {
        let Some(record) = app.store.tenant(name)? else { return Ok(()) };
        match load_one(app, &record) {
            // Unless this host registered it meanwhile (it created the tenant
            // itself): that registration is newer than the record read above.
            Ok(loaded) => {
                if app.insert_tenant_unless_ready(assemble(app, record, loaded, None)) {
                    tracing::info!(tenant = %name, "tenant loaded (changed on another host)");
                }
            }
            Err(reason) => app.insert_unavailable(&record, reason),
        }
        return Ok(());
    };
    // Read under the lock: a record read before a local key change and
    // applied after it would take the new key away again.
    let _serial = tenant.activation.blocking_lock();
    let Some(record) = app.store.tenant(name)? else { return Ok(()) };
    app.set_tenant_keys(name, &record.keys);
    if app.store.models(name)?.0 != tenant.model_version {
        swap_model(app, &tenant)?;
    }
    let (active, versions) = app.store.pipelines(name)?;
    let wanted = active.unwrap_or(0);
    if tenant.pipeline.load().version != wanted {
        let pipeline = match versions.iter().find(|p| p.version == wanted) {
            Some(record) => build_pipeline(app, name, &current_engine(app, &tenant).catalog, record)?,
            None => ActivePipeline::empty(),
        };
        serve_pipeline(app, &tenant, pipeline);
        tracing::info!(tenant = %name, version = wanted, "pipeline swapped (changed on another host)");
    }
    Ok(())
}

/// Re-reads a tenant's whole catalog into its snapshot (after the shared
/// store was away: the upserts of other hosts it missed).
pub fn reload_catalog(app: &AppState, name: &str) -> Result<()> {
    let Ok(tenant) = app.lookup_tenant(name) else { return Ok(()) };
    let _writes = tenant.catalog_writes.lock().unwrap_or_else(PoisonError::into_inner);
    current_engine(app, &tenant).catalog.reload()
}

/// The tenant's record as stored now (keys change after registration).
pub fn stored_record(app: &AppState, tenant: &Tenant) -> Result<TenantRecord> {
    let name = &tenant.record.name;
    app.store
        .tenant(name)?
        .ok_or_else(|| Error::internal("reading the tenant", format!("tenant {name} vanished from the store")))
}

/// Adds a storefront key to a tenant; returns the key (shown once) and its
/// record. Callers serialise key changes per tenant (its activation lock).
pub fn add_key(app: &AppState, tenant: &Tenant) -> Result<(String, ApiKeyRecord)> {
    let (key, key_record) = issue_key();
    let mut record = stored_record(app, tenant)?;
    record.keys.push(key_record.clone());
    app.store.put_tenant(&record)?;
    app.set_tenant_keys(&record.name, &record.keys);
    Ok((key, key_record))
}

/// Revokes a key by id (404 when the tenant has no such key).
pub fn revoke_key(app: &AppState, tenant: &Tenant, id: &str) -> Result<()> {
    let mut record = stored_record(app, tenant)?;
    let before = record.keys.len();
    record.keys.retain(|k| k.id != id);
    if record.keys.len() == before {
        return Err(Error::new(
            ErrorCode::UnknownKey,
            format!("tenant {:?} has no key {id:?}; list its keys with GET …/keys", record.name),
        ));
    }
    app.store.put_tenant(&record)?;
    app.set_tenant_keys(&record.name, &record.keys);
    Ok(())
}

/// Resolves, checks, stores and activates a new pipeline version. A stage
/// naming a first-party plugin stores its embedded component for the tenant
/// first, when the tenant does not hold it yet (see [`first_party`]).
pub fn activate(app: &AppState, tenant: &Tenant, spec: impl Into<PipelineSpec>) -> Result<PipelineRecord> {
    let PipelineSpec { retrieve, mut stages } = spec.into();
    let name = &tenant.record.name;
    let mut plugins = app.store.plugins(name)?;
    for stage in &stages {
        if let Some(stored) = first_party::ensure_stored(app, name, &plugins, &stage.plugin)? {
            plugins.push(stored);
        }
    }
    for (index, stage) in stages.iter_mut().enumerate() {
        let versions: Vec<u32> = plugins.iter().filter(|p| p.name == stage.plugin).map(|p| p.version).collect();
        let version = match stage.version {
            Some(v) if versions.contains(&v) => v,
            Some(v) => {
                return Err(Error::new(
                    ErrorCode::UnknownPlugin,
                    format!("stage {index}: plugin {:?} has no version {v} (versions: {versions:?})", stage.plugin),
                ));
            }
            None => *versions.iter().max().ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownPlugin,
                    format!(
                        "stage {index}: no plugin named {:?}; upload it with PUT …/plugins/{}",
                        stage.plugin, stage.plugin
                    ),
                )
            })?,
        };
        stage.version = Some(version);
    }
    // Built (compiled, config checked) before anything is stored or swapped.
    let candidate = PipelineRecord { version: 0, retrieve: retrieve.clone(), stages: stages.clone(), created_at: 0 };
    let mut active = build_pipeline(app, name, &current_engine(app, tenant).catalog, &candidate)?;
    let record = app.store.add_pipeline(name, PipelineSpec { retrieve, stages })?;
    active.version = record.version;
    serve_pipeline(app, tenant, active);
    metrics::counter!("edgerec_pipeline_activations_total", "tenant" => name.clone()).increment(1);
    tracing::info!(tenant = %name, version = record.version, "pipeline activated");
    Ok(record)
}

/// Activates a stored pipeline version (404 unknown_pipeline_version when
/// there is none of that number).
pub fn activate_version(app: &AppState, tenant: &Tenant, version: u32) -> Result<PipelineRecord> {
    let name = &tenant.record.name;
    let (_, versions) = app.store.pipelines(name)?;
    let unknown = || {
        Error::new(
            ErrorCode::UnknownPipelineVersion,
            format!("tenant {name:?} has no pipeline version {version}; GET …/pipeline lists the versions"),
        )
    };
    let target = versions.into_iter().find(|p| p.version == version).ok_or_else(unknown)?;
    // Built before the pointer moves: a version that no longer builds changes nothing.
    let active = build_pipeline(app, name, &current_engine(app, tenant).catalog, &target)?;
    let record = app.store.activate_pipeline(name, version)?.ok_or_else(unknown)?;
    serve_pipeline(app, tenant, active);
    metrics::counter!("edgerec_pipeline_activations_total", "tenant" => name.clone()).increment(1);
    tracing::info!(tenant = %name, version, "pipeline version activated");
    Ok(record)
}

/// Activates the default pipeline ([`first_party::default_stages`]) for a
/// tenant, serialised with its other activations. Blocks: call it from a job.
pub fn activate_default(app: &AppState, tenant: &Tenant) -> Result<PipelineRecord> {
    let _serial = tenant.activation.blocking_lock();
    activate(app, tenant, first_party::default_stages())
}

/// Returns to the previously active version (409 when there is none).
pub fn rollback(app: &AppState, tenant: &Tenant) -> Result<PipelineRecord> {
    let name = &tenant.record.name;
    let no_previous = || Error::new(ErrorCode::Conflict, "there is no previous pipeline version to roll back to");
    let target = app.store.rollback_target(name)?.ok_or_else(no_previous)?;
    // Built before anything is committed: a version that no longer builds
    // leaves the store and the served pipeline as they were.
    let active = build_pipeline(app, name, &current_engine(app, tenant).catalog, &target)?;
    let record = app.store.rollback(name)?.ok_or_else(no_previous)?;
    if record.version != target.version {
        return Err(Error::internal(
            "the rollback",
            format!("the store rolled back to {} while {} was built", record.version, target.version),
        ));
    }
    serve_pipeline(app, tenant, active);
    tracing::info!(tenant = %name, version = record.version, "pipeline rolled back");
    Ok(record)
}
