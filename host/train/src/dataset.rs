//! A dataset ready to train on: read, mapped to model ids, sequenced, split.

use std::path::{Path, PathBuf};

use edgerec_kernels::item_map::ItemMap;
use serde::Serialize;

use crate::data::{BadRow, Format, read_catalog, read_events, resolve_dataset};
use crate::error::TrainError;
use crate::split::{SequenceStats, Split, UserSequence, build_sequences, leave_last_out};

/// What was read and what was rejected (part of every report).
#[derive(Clone, Debug, Serialize)]
pub struct DataSummary {
    /// The events file.
    pub events_file: PathBuf,
    /// The catalog file, if one fixed the item set.
    pub catalog_file: Option<PathBuf>,
    /// Good rows read.
    pub rows: usize,
    /// Rejected rows.
    pub bad_rows: usize,
    /// The first rejected rows.
    pub bad_examples: Vec<BadRow>,
    /// Mapping statistics.
    pub sequences: SequenceStats,
    /// Users.
    pub users: usize,
    /// Catalog size V.
    pub items: usize,
    /// Users with fewer than 3 events (trained on, not evaluated).
    pub too_short_users: usize,
}

/// Sequences, split, id mapping and the summary.
pub struct Dataset {
    /// Per user, oldest first.
    pub sequences: Vec<UserSequence>,
    /// Leave-last-out split.
    pub split: Split,
    /// External ↔ model ids.
    pub items: ItemMap,
    /// What was read.
    pub summary: DataSummary,
}

/// Loads `path` (file or dataset directory). The item set is, in order of
/// precedence: `items` (an existing model's mapping, grown when `grow`), the
/// catalog beside the data (every id in movies.dat / u.item / catalog.jsonl),
/// or the items seen in the events.
pub fn load_dataset(
    path: &Path,
    format: Option<Format>,
    items: Option<ItemMap>,
    grow: bool,
) -> Result<Dataset, TrainError> {
    let files = resolve_dataset(path)?;
    let format = format.unwrap_or_else(|| Format::detect(&files.events));
    let log = read_events(&files.events, format)?;
    let (mut map, grow, catalog_file) = match items {
        Some(map) => (map, grow, None),
        None => match &files.catalog {
            Some(catalog) => {
                let mut ids = read_catalog(catalog)?;
                // MovieLens ids are numbers: keep numeric order so model ids follow the file's ids.
                if ids.iter().all(|i| i.parse::<u64>().is_ok()) {
                    ids.sort_by_key(|i| i.parse::<u64>().unwrap_or(0));
                    ids.dedup();
                }
                let map = ItemMap::from_external_ids(ids)
                    .map_err(|message| TrainError::Data { path: catalog.clone(), message })?;
                (map, false, Some(catalog.clone()))
            }
            None => (ItemMap::new(), true, None),
        },
    };
    let (sequences, stats) = build_sequences(&log.events, &mut map, grow, true);
    if sequences.is_empty() {
        return Err(TrainError::Data {
            path: files.events.clone(),
            message: "no usable event: nothing to train or evaluate on".into(),
        });
    }
    let split = leave_last_out(&sequences);
    let summary = DataSummary {
        events_file: files.events,
        catalog_file,
        rows: log.events.len(),
        bad_rows: log.bad_rows,
        bad_examples: log.bad_examples,
        sequences: stats,
        users: sequences.len(),
        items: map.len(),
        too_short_users: split.too_short,
    };
    Ok(Dataset { sequences, split, items: map, summary })
}
