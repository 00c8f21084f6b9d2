//! The disk cache of compiled plugins, keyed by content hash + the engine's
//! compatibility hash (wasmtime version and every setting that changes code).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
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

    /// Writes the artifact atomically and durably: a uniquely named temp file
    /// in the same directory (two threads or processes compiling the same
    /// plugin never share one), fsynced, renamed over the final name, then
    /// the directory fsynced so that the rename itself survives a crash. A
    /// reader sees the old file, no file or the whole new one.
    pub fn store(&self, content_hash: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let mut tmp = tempfile::Builder::new().prefix(".cwasm-").suffix(".tmp").tempfile_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(content_hash)).map_err(|e| e.error)?;
        sync_dir(&self.dir)
    }
}

/// Fsyncs a directory (its entries: a rename into it). Directories cannot be
/// opened as files on Windows, where the rename is durable on its own.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) { std::fs::File::open(dir)?.sync_all() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_atomically_and_loads_back_leaving_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = DiskCache::open(dir.path(), &engine).unwrap();
        let component = Component::new(&engine, "(component)").unwrap();
        // Two writers of the same artifact at once: unique temp names, one file.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| cache.store("abc", &component).unwrap());
            }
        });
        assert!(cache.load(&engine, "abc").is_some());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("abc-") && names[0].ends_with(".cwasm"), "{names:?}");
    }
}
