//! The embedded default: the `demo` tenant with the bundled demo model, the
//! demo catalog and a default pipeline of first-party plugins, created on
//! first start so that `edgerec serve` alone gives a working recommender.

use edgerec_kernels::Model;
use edgerec_kernels::item_map::ItemMap;

use super::state::AppState;
use super::store::{TenantRecord, now_unix};
use super::tenants;

/// The bundled demo model and its item map.
pub fn model() -> anyhow::Result<(Model, ItemMap)> {
    anyhow::bail!("the bundled demo model is not in this build yet")
}

/// Creates the demo tenant on first start; applies `EDGEREC_DEMO_API_KEY`.
pub fn ensure(app: &AppState) -> anyhow::Result<()> {
    let env_key = std::env::var("EDGEREC_DEMO_API_KEY").ok().filter(|k| !k.is_empty());
    if let Ok(demo) = app.tenant("demo") {
        if let Some(key) = env_key.filter(|k| *k != demo.record.api_key) {
            let record = TenantRecord { api_key: key, ..demo.record.clone() };
            app.store.put_tenant(&record)?;
            tenants::load_all(app)?;
        }
        return Ok(());
    }
    let record = TenantRecord {
        name: "demo".into(),
        model: "demo".into(),
        api_key: env_key.unwrap_or_else(|| tenants::new_secret("ek")),
        created_at: now_unix(),
    };
    tenants::create(app, record).map_err(|e| anyhow::anyhow!("creating the demo tenant: {}", e.message))?;
    Ok(())
}
