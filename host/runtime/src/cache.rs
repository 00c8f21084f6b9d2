//! The disk cache of compiled plugins, keyed by content hash + the engine's
//! compatibility hash (wasmtime version and every setting that changes code).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components on disk, `<content sha256>-<engine hash>.cwasm`.
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: String,
}

impl DiskCache {
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache { dir: dir.to_owned(), engine_key: format!("{:016x}", hasher.finish()) })
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir.join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// The cached artifact, if present and loadable (a bad file is ignored and recompiled).
    pub fn load(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(content_hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` below from `Component::serialize`
        // of an engine with the same compatibility hash (it is in the name);
        // wasmtime re-checks version and settings in the header. The cache
        // directory belongs to this process's operator, like the binary itself.
        unsafe { Component::deserialize_file(engine, &path) }.ok()
    }

    /// Writes the artifact atomically (temp file + rename).
    pub fn store(&self, content_hash: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let path = self.path(content_hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }
}
