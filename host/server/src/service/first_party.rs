//! The first-party plugins (`in-stock`, `boost`, `diversity`,
//! `exclude-recent`, embedded in `edgerec_runtime::first_party`) for every
//! tenant, and the default pipeline built of them.
//!
//! A first-party plugin is stored in a tenant's own store on first use (a
//! pipeline naming it), like an upload of the embedded bytes: pipeline
//! versions keep pinning a stored plugin version, rollback and restart read
//! the bytes that version was activated with (a later server whose embedded
//! component changed adds a new version; the old one stays for rollback),
//! other hosts on a shared store find the bytes in the store, and listing or
//! deleting unused versions works as for any plugin. Storing it at tenant
//! creation instead would leave the tenants created before out.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::AtomicBool;

use serde_json::json;

use super::Result;
use super::app::AppState;
use crate::ids::content_digest;
use crate::store::{OnErrorPolicy, PluginVersion, StageSpec};

/// The name `POST /v1/tenants` accepts in `"pipeline"` for [`default_stages`].
pub const DEFAULT_PIPELINE: &str = "default";

/// The default pipeline (the demo tenant's, and a new tenant's that asks for
/// `"pipeline": "default"`): in stock only, no recent purchases, at most two
/// items per category in the top k. Each stage takes the plugin's latest
/// version and fails open.
pub fn default_stages() -> Vec<StageSpec> {
    [
        ("in-stock", json!({"attribute": "stock", "min": 1})),
        ("exclude-recent", json!({"actions": ["purchase"], "window_seconds": 2_592_000})),
        ("diversity", json!({"attribute": "category", "max_per_group": 2})),
    ]
    .into_iter()
    .map(|(plugin, config)| StageSpec {
        plugin: plugin.into(),
        version: None,
        config,
        on_error: OnErrorPolicy::Skip,
        limits: None,
    })
    .collect()
}

/// The embedded component of first-party plugin `name`, if it is one.
pub fn component(name: &str) -> Option<&'static [u8]> {
    edgerec_runtime::first_party::all().into_iter().find(|(n, _)| *n == name).map(|(_, bytes)| bytes)
}

/// The embedded components' digests by name, computed once.
static DIGESTS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    edgerec_runtime::first_party::all().into_iter().map(|(name, bytes)| (name, content_digest(bytes))).collect()
});

/// Stores the embedded component of first-party plugin `name` as a version
/// of `tenant`'s plugin `name` unless one of `stored` (the tenant's plugin
/// versions) holds it already; returns the version stored now. Other names
/// are not touched (`None`). Checked like an upload first. Blocks: call it
/// from a job.
pub fn ensure_stored(
    app: &AppState,
    tenant: &str,
    stored: &[PluginVersion],
    name: &str,
) -> Result<Option<PluginVersion>> {
    let (Some(bytes), Some(digest)) = (component(name), DIGESTS.get(name)) else { return Ok(None) };
    if stored.iter().any(|p| p.name == name && &p.digest == digest) {
        return Ok(None);
    }
    let checked = app.plugins.check(bytes, tenant, &AtomicBool::new(false))?;
    let declared = edgerec_runtime::declared_name(bytes);
    let version = app.store.add_plugin(tenant, name, &checked, bytes, declared.as_deref())?;
    tracing::info!(tenant, plugin = name, version = version.version, "first-party plugin stored for the tenant");
    Ok(Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pipeline_names_only_first_party_plugins_with_objects_for_configs() {
        let stages = default_stages();
        assert_eq!(
            stages.iter().map(|s| s.plugin.as_str()).collect::<Vec<_>>(),
            ["in-stock", "exclude-recent", "diversity"]
        );
        assert!(stages.iter().all(|s| component(&s.plugin).is_some() && s.config.is_object() && s.version.is_none()));
        assert!(component("price-floor").is_none());
    }

    #[test]
    fn digests_are_the_runtimes_content_hashes() {
        let runtime = edgerec_runtime::Runtime::new(edgerec_runtime::RuntimeConfig::default()).expect("runtime");
        let compiled = runtime.compile(edgerec_runtime::first_party::IN_STOCK).expect("in-stock compiles");
        assert_eq!(DIGESTS["in-stock"], compiled.hash());
        assert_ne!(DIGESTS["in-stock"], DIGESTS["boost"]);
    }
}
