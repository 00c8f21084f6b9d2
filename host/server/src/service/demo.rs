//! The embedded default: the `demo` tenant with the bundled demo model
//! (`examples/demo/model`), the demo catalog (`examples/demo/catalog.jsonl`)
//! and the default pipeline of first-party plugins
//! ([`super::first_party::default_stages`]), created on first start so
//! that `edgerec serve` alone gives a working recommender.

use anyhow::Context;

use super::access::Operator;
use super::app::AppState;
use super::{Error, first_party, items, tenants};
use crate::clock::now_unix;
use crate::error_code::ErrorCode;
use crate::ids::secret_hash;
use crate::store::{ApiKeyRecord, RetrievalMode, TenantRecord};

const CATALOG: &str = include_str!("../../../../examples/demo/catalog.jsonl");

/// Creates the demo tenant on first start; applies `EDGEREC_DEMO_API_KEY`
/// (which then replaces the demo's keys). A generated key is printed once,
/// on creation; a key given through the environment is never printed.
pub fn ensure(app: &AppState) -> anyhow::Result<()> {
    let operator = Operator::start_up();
    let env_key = std::env::var("EDGEREC_DEMO_API_KEY").ok().filter(|k| !k.is_empty());
    let fail = |what: &str, e: Error| anyhow::anyhow!("demo tenant: {what}: {}", e.report());
    if app.has_tenant("demo") {
        if let Some(key) = env_key {
            let hash = secret_hash(&key);
            let mut record =
                app.store.tenant("demo")?.ok_or_else(|| anyhow::anyhow!("demo tenant: missing from the store"))?;
            if record.keys.len() != 1 || record.keys[0].sha256 != hash {
                record.keys = vec![ApiKeyRecord { id: "env".into(), sha256: hash, created_at: now_unix() }];
                app.store.put_tenant(&record)?;
                app.set_tenant_keys("demo", &record.keys);
            }
        }
        return Ok(());
    }
    let (keys, shown) = match env_key {
        Some(key) => (vec![ApiKeyRecord { id: "env".into(), sha256: secret_hash(&key), created_at: now_unix() }], None),
        None => {
            let (key, record) = tenants::issue_key();
            (vec![record], Some(key))
        }
    };
    let record = TenantRecord {
        name: "demo".into(),
        model: "demo".into(),
        backend: None,
        retrieval: RetrievalMode::Exact,
        keys,
        created_at: now_unix(),
        legacy_api_key: None,
    };
    match tenants::create(app, &operator, record) {
        Ok(()) => {}
        // Another host on the same shared store created it first: serve theirs.
        Err(e) if e.code() == ErrorCode::Conflict => {
            tenants::sync(app, "demo").map_err(|e| fail("load", e))?;
            return Ok(());
        }
        Err(e) => return Err(fail("create", e)),
    }
    if let Some(key) = shown {
        println!("demo tenant API key (shown once, store it): {key}");
    }
    let mut catalog = Vec::new();
    for (number, line) in CATALOG.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("catalog.jsonl line {}", number + 1))?;
        let id = value["id"].as_str().with_context(|| format!("catalog.jsonl line {}: no id", number + 1))?;
        catalog.push((id.to_string(), value["attributes"].clone()));
    }
    let demo = app.tenant(&operator, "demo").map_err(|e| fail("load", e))?;
    items::write(app, &demo, &catalog).map_err(|e| fail("catalog", e))?;
    // Every first-party plugin, the ones the default pipeline leaves out too,
    // so that the demo lists them all.
    for (name, _) in edgerec_runtime::first_party::all() {
        first_party::ensure_stored(app, "demo", &[], name).map_err(|e| fail(name, e))?;
    }
    tenants::activate(app, &demo, first_party::default_stages()).map_err(|e| fail("default pipeline", e))?;
    tracing::info!(items = catalog.len(), "demo tenant created");
    Ok(())
}
