//! Model versions uploaded through the API. A bundle is a tar of the
//! engine's model directory (`config.json`, `model.safetensors`,
//! `items.json`: what `edgerec train` and `edgerec model import` write); the
//! store keeps it under its digest, and each host unpacks it once into a
//! content-addressed directory of its own (`data_dir/models/DIGEST`), its
//! cache, from which the model loads.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use edgerec_kernels::Model;
use edgerec_kernels::item_map::ItemMap;

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use super::store::ModelVersion;

/// The files of a bundle, each required once, nothing else.
const FILES: [&str; 3] = ["config.json", "model.safetensors", "items.json"];

fn invalid(message: String) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidModel,
        format!(
            "{message}; a model bundle is a tar of config.json, model.safetensors and items.json (e.g. `tar -cf model.tar -C MODEL_DIR config.json model.safetensors items.json`)"
        ),
    )
}

/// Unpacks a bundle into `dir` (which must not exist yet). Refuses links,
/// paths outside the bundle's top level, unknown and missing files.
pub fn unpack(bytes: &[u8], dir: &Path) -> Result<(), ApiError> {
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    let entries = archive.entries().map_err(|e| invalid(format!("the body is not a tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("the tar archive is damaged ({e})")))?;
        let path = entry.path().map_err(|e| invalid(format!("a tar entry has no readable path ({e})")))?.into_owned();
        let parts: Vec<Component> = path.components().filter(|c| !matches!(c, Component::CurDir)).collect();
        let kind = entry.header().entry_type();
        if kind.is_dir() && parts.is_empty() {
            continue;
        }
        let name = match parts.as_slice() {
            [Component::Normal(name)] => name.to_str().and_then(|n| FILES.iter().find(|f| **f == n).copied()),
            _ => None,
        };
        let Some(name) = name.filter(|_| kind.is_file()) else {
            return Err(invalid(format!("the bundle holds {:?}, which is not one of its three files", path)));
        };
        if files.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!("the bundle holds {name} twice")));
        }
        let mut content = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut content).map_err(|e| invalid(format!("{name} cannot be read ({e})")))?;
        files.push((name, content));
    }
    let missing: Vec<&str> = FILES.iter().copied().filter(|f| !files.iter().any(|(n, _)| n == f)).collect();
    if !missing.is_empty() {
        return Err(invalid(format!("the bundle lacks {}", missing.join(", "))));
    }
    std::fs::create_dir_all(dir).map_err(|e| ApiError::internal("unpacking a model bundle", e))?;
    for (name, content) in files {
        std::fs::write(dir.join(name), content).map_err(|e| ApiError::internal("unpacking a model bundle", e))?;
    }
    Ok(())
}

/// Where this host keeps the bundle `digest` unpacked.
fn bundle_dir(app: &AppState, digest: &str) -> PathBuf {
    app.config.data_dir.join("models").join(digest)
}

/// A bundle unpacked in this host's cache.
pub struct Unpacked {
    /// Its directory.
    pub dir: PathBuf,
    /// Whether this call unpacked it (it was not cached before): a caller
    /// whose upload is refused removes only what it made.
    pub made_now: bool,
}

/// Unpacks `bytes` (the bundle `digest`) into this host's cache unless it
/// is there already. Written beside and renamed into place, so a directory
/// that exists is complete.
pub fn unpack_cached(app: &AppState, digest: &str, bytes: &[u8]) -> Result<Unpacked, ApiError> {
    let dir = bundle_dir(app, digest);
    if dir.is_dir() {
        return Ok(Unpacked { dir, made_now: false });
    }
    let staging = dir.with_extension(format!("partial-{}", super::auth::new_key_id()));
    let unpacked = unpack(bytes, &staging).and_then(|()| {
        std::fs::rename(&staging, &dir).or_else(|e| {
            // Another request unpacked the same bundle first.
            if dir.is_dir() { Ok(()) } else { Err(ApiError::internal("unpacking a model bundle", e)) }
        })
    });
    let _ = std::fs::remove_dir_all(&staging);
    unpacked.map(|()| Unpacked { dir, made_now: true })
}

/// Loads a stored model version, from this host's cache or the store.
pub fn load_version(app: &AppState, tenant: &str, version: &ModelVersion) -> Result<(Model, ItemMap), ApiError> {
    let dir = bundle_dir(app, &version.digest);
    let dir = if dir.is_dir() {
        dir
    } else {
        let bytes = app.store.blob(tenant, &version.digest)?.ok_or_else(|| {
            ApiError::internal(
                "loading a model version",
                format!("the bundle of model version {:?} is missing from the store", version.version),
            )
        })?;
        unpack_cached(app, &version.digest, &bytes)?.dir
    };
    let source = dir.to_str().ok_or_else(|| ApiError::internal("loading a model version", "a non-UTF-8 data_dir"))?;
    super::tenants::load_model(source)
}
