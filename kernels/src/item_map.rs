//! `items.json` beside `config.json`: the mapping between external item ids
//! (whatever the catalog uses, e.g. `"sku-00042"`) and the model's dense ids
//! 1..=V. `external_ids[i]` is model item `i + 1`. A model directory without
//! `items.json` uses the identity mapping (external id = decimal model id).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the id mapping inside a model directory.
pub const ITEMS_FILE: &str = "items.json";

/// An `items.json` that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum ItemMapError {
    /// The file could not be read or written.
    // The cause is part of the message, not a `source()`, so anyhow's `{:#}`
    // prints it once.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not `{"external_ids": [...]}` with unique, non-empty strings.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what is expected.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsFile {
    external_ids: Vec<String>,
}

/// Bidirectional mapping external id ↔ model id (1-based; 0 is padding).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemMap {
    external_ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl ItemMap {
    /// An empty mapping (grow it with [`ItemMap::push`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The identity mapping for `num_items` items: external `"7"` is model id 7.
    pub fn identity(num_items: usize) -> Self {
        let mut map = Self::new();
        for id in 1..=num_items {
            map.push(&id.to_string());
        }
        map
    }

    /// Builds a mapping from external ids in model-id order; duplicates and
    /// empty ids are rejected because they would make ids ambiguous.
    pub fn from_external_ids(external_ids: Vec<String>) -> Result<Self, String> {
        let mut map = Self::new();
        for (i, id) in external_ids.into_iter().enumerate() {
            if id.is_empty() {
                return Err(format!("external id number {} is empty", i + 1));
            }
            if map.index.contains_key(&id) {
                return Err(format!("external id {id:?} appears twice"));
            }
            map.push(&id);
        }
        Ok(map)
    }

    /// Parses the text of an `items.json` (`{"external_ids": [...]}`).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: ItemsFile = serde_json::from_str(text)
            .map_err(|e| format!("expected {{\"external_ids\": [\"id-of-item-1\", ...]}}: {e}"))?;
        Self::from_external_ids(file.external_ids)
    }

    /// Loads `items.json` from a model directory; without the file, the
    /// identity mapping over the model's `num_items` (read from `config.json`).
    pub fn load(model_dir: &Path) -> Result<Self, ItemMapError> {
        let path = model_dir.join(ITEMS_FILE);
        if !path.exists() {
            let config = crate::ModelConfig::load(&model_dir.join(crate::model::CONFIG_FILE)).map_err(|e| {
                ItemMapError::Invalid {
                    path: path.clone(),
                    message: format!("no items.json, and the identity mapping needs config.json: {e}"),
                }
            })?;
            return Ok(Self::identity(config.num_items));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| ItemMapError::Io { path: path.clone(), error: source })?;
        Self::from_json(&text).map_err(|message| ItemMapError::Invalid { path, message })
    }

    /// Writes `items.json` into a model directory (created if absent).
    pub fn save(&self, model_dir: &Path) -> Result<(), ItemMapError> {
        std::fs::create_dir_all(model_dir)
            .map_err(|source| ItemMapError::Io { path: model_dir.to_path_buf(), error: source })?;
        let path = model_dir.join(ITEMS_FILE);
        let file = ItemsFile { external_ids: self.external_ids.clone() };
        let text = serde_json::to_string(&file).expect("strings serialise");
        std::fs::write(&path, text + "\n").map_err(|source| ItemMapError::Io { path, error: source })
    }

    /// The external id of model item `id` (1..=len), `None` for 0 or out of range.
    pub fn external(&self, id: u32) -> Option<&str> {
        let index = (id as usize).checked_sub(1)?;
        self.external_ids.get(index).map(String::as_str)
    }

    /// The model id of an external id, `None` when the catalog does not hold it.
    pub fn internal(&self, external: &str) -> Option<u32> {
        self.index.get(external).copied()
    }

    /// Number of mapped items (V).
    pub fn len(&self) -> usize {
        self.external_ids.len()
    }

    /// True when no item is mapped.
    pub fn is_empty(&self) -> bool {
        self.external_ids.is_empty()
    }

    /// Returns the model id of `external`, appending it as id `len + 1` when
    /// new; existing ids never change, so a grown model keeps its old rows.
    pub fn push(&mut self, external: &str) -> u32 {
        if let Some(&id) = self.index.get(external) {
            return id;
        }
        self.external_ids.push(external.to_string());
        let id = self.external_ids.len() as u32;
        self.index.insert(external.to_string(), id);
        id
    }

    /// External ids in model-id order (`[i]` is model item `i + 1`).
    pub fn external_ids(&self) -> &[String] {
        &self.external_ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_ids_stable_when_growing() {
        let mut map = ItemMap::new();
        assert_eq!(map.push("sku-b"), 1);
        assert_eq!(map.push("sku-a"), 2);
        assert_eq!(map.push("sku-b"), 1, "an existing id is returned, not duplicated");
        let dir = tempfile::tempdir().unwrap();
        map.save(dir.path()).unwrap();
        let mut loaded = ItemMap::load(dir.path()).unwrap();
        assert_eq!(loaded, map);
        assert_eq!(loaded.push("sku-c"), 3);
        assert_eq!(loaded.internal("sku-a"), Some(2));
        assert_eq!(loaded.external(1), Some("sku-b"));
        assert_eq!(loaded.external(0), None);
        assert_eq!(loaded.external(4), None);
        assert_eq!(loaded.internal("nope"), None);
    }

    #[test]
    fn rejects_duplicates_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ITEMS_FILE), r#"{"external_ids": ["a", "a"]}"#).unwrap();
        let err = ItemMap::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
        std::fs::write(dir.path().join(ITEMS_FILE), r#"["a"]"#).unwrap();
        let err = ItemMap::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("external_ids"), "{err}");
    }

    #[test]
    fn absent_file_means_identity_over_the_config() {
        let dir = tempfile::tempdir().unwrap();
        crate::ModelConfig::research(5, 4, 1, 1, 4, 8).save(&dir.path().join("config.json")).unwrap();
        let map = ItemMap::load(dir.path()).unwrap();
        assert_eq!(map.len(), 5);
        assert_eq!(map.internal("3"), Some(3));
        assert_eq!(map.external(5), Some("5"));
    }
}
