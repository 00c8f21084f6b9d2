//! Model versions uploaded through the API. A bundle is a tar of the
//! engine's model directory (`config.json`, `model.safetensors`,
//! `items.json`: what `edgerec train` and `edgerec model import` write); the
//! store keeps it under its digest, and each host unpacks it once into a
//! content-addressed directory of its own (`data_dir/models/DIGEST`), its
//! cache, from which the model loads.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Model, ModelConfig, Weights};
use sha2::{Digest, Sha256};

use super::app::AppState;
use super::jobs::Abandoned;
use super::{Error, Result};
use crate::error_code::ErrorCode;
use crate::store::{ModelAdd, ModelVersion};

/// The files of a bundle, each required once, nothing else.
const FILES: [&str; 3] = ["config.json", "model.safetensors", "items.json"];

fn invalid(message: String) -> Error {
    Error::new(
        ErrorCode::InvalidModel,
        format!(
            "{message}; a model bundle is a tar of config.json, model.safetensors and items.json (e.g. `tar -cf model.tar -C MODEL_DIR config.json model.safetensors items.json`)"
        ),
    )
}

/// Unpacks a bundle into `dir` (which must not exist yet). Refuses links,
/// paths outside the bundle's top level, unknown and missing files, and an
/// entry whose header declares more bytes than `max_bytes` or than the
/// bundle holds, before anything is allocated for it.
pub fn unpack(bytes: &[u8], dir: &Path, max_bytes: usize) -> Result<()> {
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
        // The header's size is the sender's claim: checked against what can
        // be true before it sizes an allocation (2^62 aborted the process).
        let declared = entry.size();
        let possible = bytes.len().min(max_bytes) as u64;
        if declared > possible {
            return Err(invalid(format!(
                "{name}'s tar header declares {declared} bytes, more than the bundle's {} bytes (and the server's max_model_bytes, {max_bytes})",
                bytes.len()
            )));
        }
        let mut content = Vec::with_capacity(declared as usize);
        entry
            .by_ref()
            .take(declared)
            .read_to_end(&mut content)
            .map_err(|e| invalid(format!("{name} cannot be read ({e})")))?;
        files.push((name, content));
    }
    let missing: Vec<&str> = FILES.iter().copied().filter(|f| !files.iter().any(|(n, _)| n == f)).collect();
    if !missing.is_empty() {
        return Err(invalid(format!("the bundle lacks {}", missing.join(", "))));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::internal("unpacking a model bundle", e))?;
    for (name, content) in files {
        std::fs::write(dir.join(name), content).map_err(|e| Error::internal("unpacking a model bundle", e))?;
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
pub fn unpack_cached(app: &AppState, digest: &str, bytes: &[u8]) -> Result<Unpacked> {
    let dir = bundle_dir(app, digest);
    if dir.is_dir() {
        return Ok(Unpacked { dir, made_now: false });
    }
    let staging = dir.with_extension(format!("partial-{}", crate::ids::new_key_id()));
    let unpacked = unpack(bytes, &staging, app.config.max_model_bytes).and_then(|()| {
        std::fs::rename(&staging, &dir).or_else(|e| {
            // Another request unpacked the same bundle first.
            if dir.is_dir() { Ok(()) } else { Err(Error::internal("unpacking a model bundle", e)) }
        })
    });
    let _ = std::fs::remove_dir_all(&staging);
    unpacked.map(|()| Unpacked { dir, made_now: true })
}

/// Loads a stored model version, from this host's cache or the store.
pub fn load_version(app: &AppState, tenant: &str, version: &ModelVersion) -> Result<(Model, ItemMap)> {
    let dir = bundle_dir(app, &version.digest);
    let dir = if dir.is_dir() {
        dir
    } else {
        let bytes = app.store.blob(tenant, &version.digest)?.ok_or_else(|| {
            Error::internal(
                "loading a model version",
                format!("the bundle of model version {:?} is missing from the store", version.version),
            )
        })?;
        unpack_cached(app, &version.digest, &bytes)?.dir
    };
    let source = dir.to_str().ok_or_else(|| Error::internal("loading a model version", "a non-UTF-8 data_dir"))?;
    load_model(source)
}

/// Checks an uploaded bundle (unpacked into this host's cache, loaded) and
/// stores it as `version` of `tenant`: the same bundle again is the same
/// version, another bundle under a stored version a 409. Blocks: run it as
/// a job. Stores nothing, and keeps no copy it made, when its request was
/// `abandoned` meanwhile.
pub fn upload(
    app: &AppState,
    tenant: &str,
    version: &str,
    bytes: &[u8],
    abandoned: &Abandoned,
) -> Result<ModelVersion> {
    let digest = format!("{:x}", Sha256::digest(bytes));
    let taken = |existing: &ModelVersion| {
        Error::new(
            ErrorCode::Conflict,
            format!(
                "model version {version:?} holds another bundle (sha256 {}, uploaded at {}); versions are immutable: upload this one under a new version",
                existing.digest, existing.uploaded_at
            ),
        )
    };
    // A version that is taken is refused before the bundle costs a
    // directory or a load.
    let (_, stored) = app.store.models(tenant)?;
    if let Some(existing) = stored.iter().find(|v| v.version == version && v.digest != digest) {
        return Err(taken(existing));
    }
    let unpacked = unpack_cached(app, &digest, bytes)?;
    let dir = &unpacked.dir;
    let source = dir.to_str().ok_or_else(|| Error::internal("checking a model bundle", "non-UTF-8 path"))?;
    if let Err(error) = load_model(source) {
        // A bundle that does not load never will: keep no copy of it.
        let _ = std::fs::remove_dir_all(dir);
        return Err(error);
    }
    // The deadline answered the client while the bundle was checked:
    // nobody learns the version, so none is stored.
    if abandoned.is_set() {
        if unpacked.made_now {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(Error::new(ErrorCode::Timeout, "the upload was abandoned; its check was discarded"));
    }
    match app.store.add_model(tenant, version, &digest, bytes)? {
        ModelAdd::Added(stored) | ModelAdd::Unchanged(stored) => Ok(stored),
        ModelAdd::Taken(existing) => {
            // Another upload took the version meanwhile: keep no copy of
            // this bundle unless it was cached before (another version's).
            if unpacked.made_now {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(taken(&existing))
        }
    }
}

/// Loads a tenant's model: `"demo"` is the bundled demo, anything else a model directory.
pub fn load_model(source: &str) -> Result<(Model, ItemMap)> {
    if source == "demo" {
        return demo_model().map_err(|e| Error::internal("loading the bundled demo model", e));
    }
    let dir = Path::new(source);
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorCode::UnknownModel,
            format!(
                "no model directory at {source:?} on the server; give \"demo\" or a directory with config.json, model.safetensors and items.json (`edgerec model import` or `edgerec train` write one)"
            ),
        ));
    }
    let invalid = |what: String| {
        Error::new(
            ErrorCode::InvalidModel,
            format!(
                "model {source:?}: {what}; give \"demo\" or a directory with config.json, model.safetensors and items.json"
            ),
        )
    };
    check_declared_size(dir).map_err(invalid)?;
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

const CONFIG: &str = include_str!("../../../../examples/demo/model/config.json");
const WEIGHTS: &[u8] = include_bytes!("../../../../examples/demo/model/model.safetensors");
const ITEMS: &str = include_str!("../../../../examples/demo/model/items.json");

/// The bundled demo model and its item map.
pub fn demo_model() -> anyhow::Result<(Model, ItemMap)> {
    let config = ModelConfig::from_json(CONFIG).context("bundled config.json")?;
    let weights = Weights::from_safetensors(&config, WEIGHTS).context("bundled model.safetensors")?;
    let model = Model::new(config, weights).context("bundled model")?;
    let items = ItemMap::from_json(ITEMS).map_err(|e| anyhow::anyhow!("bundled items.json: {e}"))?;
    Ok((model, items))
}

/// Largest `config.json` read: a model's configuration is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// Checks what a model directory's `config.json` declares against the size
/// of its `model.safetensors`, before any tensor is enumerated or built: a
/// 40 KB bundle declaring `num_layers: 1e10` grew memory without end.
/// Every declared float32 must be in the file, so a declaration larger than
/// the file is refused in constant time, whatever its numbers.
pub fn check_declared_size(dir: &Path) -> Result<(), String> {
    let config_path = dir.join("config.json");
    let config_len = std::fs::metadata(&config_path).map_err(|e| format!("config.json cannot be read ({e})"))?.len();
    if config_len > MAX_CONFIG_BYTES {
        return Err(format!(
            "config.json is {config_len} bytes; a model configuration takes at most {MAX_CONFIG_BYTES}"
        ));
    }
    let config = edgerec_kernels::ModelConfig::load(&config_path).map_err(|e| e.to_string())?;
    let weights_len = std::fs::metadata(dir.join("model.safetensors"))
        .map_err(|e| format!("model.safetensors cannot be read ({e})"))?
        .len();
    match declared_weight_bytes(&config) {
        Some(needed) if needed <= weights_len => Ok(()),
        needed => Err(format!(
            "config.json declares {} of float32 weights (d_model {}, num_layers {}, num_heads {}, num_items {}, …) but model.safetensors holds {weights_len} bytes: the configuration does not belong to these weights",
            needed.map_or_else(|| "more than 2^64 bytes".to_string(), |n| format!("{n} bytes")),
            config.d_model,
            config.num_layers,
            config.num_heads,
            config.num_items
        )),
    }
}

/// Bytes of every tensor a configuration declares (the engine's shape table:
/// item and position embeddings, then per layer uvqk, o_w, o_b, pos_w,
/// ts_w), or `None` past `u64`.
fn declared_weight_bytes(c: &edgerec_kernels::ModelConfig) -> Option<u64> {
    let [d, n, heads, d_qk, d_v, items, buckets, layers] =
        [c.d_model, c.attn_normalizer, c.num_heads, c.d_qk, c.d_v, c.num_items, c.num_time_buckets, c.num_layers]
            .map(|v| v as u64);
    let uvqk_width = heads.checked_mul(d_v.checked_add(d_qk)?)?.checked_mul(2)?;
    let per_layer = [
        d.checked_mul(uvqk_width)?,
        heads.checked_mul(d_v)?.checked_mul(d)?,
        d,
        n.checked_mul(2)?.checked_sub(1)?,
        buckets.checked_add(1)?,
    ]
    .into_iter()
    .try_fold(0u64, u64::checked_add)?;
    let values = items
        .checked_add(1)?
        .checked_mul(d)?
        .checked_add(n.checked_mul(d)?)?
        .checked_add(layers.checked_mul(per_layer)?)?;
    values.checked_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_size_is_the_engines_and_a_lie_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = edgerec_kernels::ModelConfig::research(30, 32, 2, 2, 16, 50);
        let model = edgerec_kernels::Model::random(config.clone(), 1).unwrap();
        model.save(dir.path()).unwrap();
        let weights = std::fs::metadata(dir.path().join("model.safetensors")).unwrap().len();
        let declared = declared_weight_bytes(&config).unwrap();
        // The file holds the tensors plus a small JSON header.
        assert!(declared <= weights && weights - declared < 4096, "{declared} vs {weights}");
        assert_eq!(check_declared_size(dir.path()), Ok(()));

        let mut text: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        text["num_layers"] = serde_json::json!(10_000_000_000u64);
        std::fs::write(dir.path().join("config.json"), text.to_string()).unwrap();
        let error = check_declared_size(dir.path()).unwrap_err();
        assert!(error.contains("num_layers 10000000000"), "{error}");
        text["num_layers"] = serde_json::json!(2);
        text["num_items"] = serde_json::json!(u32::MAX as u64 - 1);
        text["d_model"] = serde_json::json!(u64::MAX / 2);
        std::fs::write(dir.path().join("config.json"), text.to_string()).unwrap();
        assert!(check_declared_size(dir.path()).unwrap_err().contains("more than 2^64"));
    }
}
