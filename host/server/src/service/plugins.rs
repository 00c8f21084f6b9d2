//! A tenant's plugin components: uploads (compiled and checked, then
//! stored as a new immutable version) and deletions of unused versions.

use super::app::AppState;
use super::first_party;
use super::jobs::Abandoned;
use super::{Error, Result};
use crate::error_code::ErrorCode;
use crate::store::{PluginDeletion, PluginVersion};

/// Checks a component may be stored as plugin `name`: first-party names hold
/// only the first-party components, and a component that declares a name
/// (the SDK writes it) is uploaded under it unless the operator replaces.
fn check_plugin_name(
    app: &AppState,
    tenant: &str,
    name: &str,
    bytes: &[u8],
    declared: Option<&str>,
    replace: bool,
) -> Result<()> {
    let conflict = |message: String| Error::new(ErrorCode::Conflict, message);
    if let Some(official) = first_party::component(name) {
        if official != bytes {
            return Err(conflict(format!(
                "plugin name {name:?} is reserved for the first-party component; upload yours under a name of its own"
            )));
        }
        return Ok(());
    }
    if replace {
        return Ok(());
    }
    match declared {
        Some(declared) if declared != name => Err(conflict(format!(
            "the component declares itself as plugin {declared:?} but is uploaded as {name:?}: upload it as {declared:?}, or add ?replace=true to store it as {name:?} anyway"
        ))),
        Some(_) => Ok(()),
        None => {
            let previous = app.store.plugins(tenant)?.into_iter().filter(|p| p.name == name).max_by_key(|p| p.version);
            match previous.and_then(|p| p.declared_name.map(|d| (p.version, d))) {
                Some((version, before)) => Err(conflict(format!(
                    "plugin {name:?} version {version} declares the name {before:?} and this component declares none: is it the same plugin? Add ?replace=true to store it as {name:?} anyway"
                ))),
                None => Ok(()),
            }
        }
    }
}

/// Compiles and checks an upload, then stores it as plugin `name` of
/// `tenant` (the same bytes again give the same version). Blocks: run it
/// as a job. Stores nothing when its request was `abandoned` meanwhile.
pub fn upload(
    app: &AppState,
    tenant: &str,
    name: &str,
    bytes: &[u8],
    replace: bool,
    abandoned: &Abandoned,
) -> Result<PluginVersion> {
    let checked = app.plugins.check(bytes, tenant, abandoned.flag());
    // The deadline answered the client while the compile ran (and the
    // compile process was stopped): nobody learns the version, so none is
    // stored.
    if abandoned.is_set() {
        return Err(Error::new(ErrorCode::Timeout, "the upload was abandoned; its check was discarded"));
    }
    let digest = checked?;
    let declared = edgerec_runtime::declared_name(bytes);
    check_plugin_name(app, tenant, name, bytes, declared.as_deref(), replace)?;
    Ok(app.store.add_plugin(tenant, name, &digest, bytes, declared.as_deref())?)
}

/// Deletes a plugin version no pipeline version uses (404 unknown_plugin
/// when there is none; 409 naming the pipeline versions that use it).
pub fn delete_version(app: &AppState, tenant: &str, name: &str, version: u32) -> Result<()> {
    match app.store.delete_plugin_version(tenant, name, version)? {
        PluginDeletion::Deleted => Ok(()),
        PluginDeletion::NotFound => Err(Error::new(
            ErrorCode::UnknownPlugin,
            format!("plugin {name:?} has no version {version}; GET …/plugins lists the versions"),
        )),
        PluginDeletion::InUse(pipelines) => Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "plugin {name:?} version {version} is used by pipeline versions {pipelines:?} (kept for rollback); it can be deleted when none uses it"
            ),
        )),
    }
}
