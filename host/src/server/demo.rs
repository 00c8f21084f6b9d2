//! The embedded default: the `demo` tenant with the bundled demo model
//! (`examples/demo/model`), the demo catalog (`examples/demo/catalog.jsonl`)
//! and a default pipeline of first-party plugins, created on first start so
//! that `edgerec serve` alone gives a working recommender.

use anyhow::Context;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Model, ModelConfig, Weights};
use serde_json::json;

use super::state::AppState;
use super::store::{StageSpec, TenantRecord, now_unix};
use super::tenants;

const CONFIG: &str = include_str!("../../../examples/demo/model/config.json");
const WEIGHTS: &[u8] = include_bytes!("../../../examples/demo/model/model.safetensors");
const ITEMS: &str = include_str!("../../../examples/demo/model/items.json");
const CATALOG: &str = include_str!("../../../examples/demo/catalog.jsonl");

/// The bundled demo model and its item map.
pub fn model() -> anyhow::Result<(Model, ItemMap)> {
    let config = ModelConfig::from_json(CONFIG).context("bundled config.json")?;
    let weights = Weights::from_safetensors(&config, WEIGHTS).context("bundled model.safetensors")?;
    let model = Model::new(config, weights).context("bundled model")?;
    let items = ItemMap::from_json(ITEMS).map_err(|e| anyhow::anyhow!("bundled items.json: {e}"))?;
    Ok((model, items))
}

/// The default pipeline: in stock only, no recent purchases, at most two
/// items per category in the top k.
fn default_stages() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("in-stock", json!({"attribute": "stock", "min": 1})),
        ("exclude-recent", json!({"actions": ["purchase"], "window_seconds": 2_592_000})),
        ("diversity", json!({"attribute": "category", "max_per_group": 2})),
    ]
}

/// Creates the demo tenant on first start; applies `EDGEREC_DEMO_API_KEY`.
pub fn ensure(app: &AppState) -> anyhow::Result<()> {
    let env_key = std::env::var("EDGEREC_DEMO_API_KEY").ok().filter(|k| !k.is_empty());
    if let Ok(demo) = app.tenant("demo") {
        if let Some(key) = env_key.filter(|k| *k != demo.record.api_key) {
            let record = TenantRecord { api_key: key, ..demo.record.clone() };
            app.store.put_tenant(&record)?;
            app.tenants.write().expect("tenant map lock").remove("demo");
            tenants::load_all(app)?;
        }
        return Ok(());
    }
    let fail = |what: &str, e: super::error::ApiError| anyhow::anyhow!("demo tenant: {what}: {}", e.message);
    let record = TenantRecord {
        name: "demo".into(),
        model: "demo".into(),
        api_key: env_key.unwrap_or_else(|| tenants::new_secret("ek")),
        created_at: now_unix(),
    };
    tenants::create(app, record).map_err(|e| fail("create", e))?;
    let mut items = Vec::new();
    for (number, line) in CATALOG.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("catalog.jsonl line {}", number + 1))?;
        let id = value["id"].as_str().with_context(|| format!("catalog.jsonl line {}: no id", number + 1))?;
        items.push((id.to_string(), value["attributes"].clone()));
    }
    app.store.upsert_items("demo", &items)?;
    for (name, bytes) in edgerec_runtime::first_party::all() {
        let digest = app.plugins.check(bytes).map_err(|e| fail(name, e))?;
        app.store.add_plugin("demo", name, &digest, bytes)?;
    }
    let stages = default_stages()
        .into_iter()
        .map(|(plugin, config)| StageSpec {
            plugin: plugin.into(),
            version: None,
            config,
            on_error: "skip".into(),
            limits: None,
        })
        .collect();
    let demo = app.tenant("demo").map_err(|e| fail("load", e))?;
    tenants::activate(app, &demo, stages).map_err(|e| fail("default pipeline", e))?;
    tracing::info!(items = items.len(), "demo tenant created");
    Ok(())
}
