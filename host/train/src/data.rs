//! Readers: MovieLens `ratings.dat` (`::`), ML-100K `u.data` (tab),
//! ml-latest `ratings.csv`, and a generic event log
//! (`user,item,timestamp[,action]`) as CSV or Parquet ([`parquet_log`]).
//! `.xz` files are decompressed in memory.
//! Bad rows are counted and kept as examples, never silently dropped.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::error::TrainError;

pub mod parquet_log;

/// What a shopper did with an item (MovieLens ratings are `View`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Looked at / rated the item.
    View,
    /// Added it to the cart.
    Cart,
    /// Bought it.
    Purchase,
}

impl Action {
    /// Parses `view|cart|purchase` (case-insensitive); `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "view" | "click" => Some(Action::View),
            "cart" | "add_to_cart" | "addtocart" => Some(Action::Cart),
            "purchase" | "buy" | "transaction" => Some(Action::Purchase),
            _ => None,
        }
    }

    /// The lowercase name written to event logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Cart => "cart",
            Action::Purchase => "purchase",
        }
    }
}

/// One interaction as read from a file, ids still external.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// External user id.
    pub user: String,
    /// External item id.
    pub item: String,
    /// Unix seconds.
    pub ts: i64,
    /// What happened (`View` for rating files).
    pub action: Action,
}

/// The supported input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `user::item::rating::ts` (ML-1M, ML-10M `ratings.dat`).
    MovieLensDat,
    /// `user\titem\trating\tts` (ML-100K `u.data`).
    MovieLens100k,
    /// `userId,movieId,rating,timestamp` with a header (ml-latest `ratings.csv`).
    MovieLensCsv,
    /// `user,item,timestamp[,action]`, header optional.
    EventsCsv,
    /// The same columns in a Parquet file, found by name.
    EventsParquet,
}

impl Format {
    /// Guesses the format from the file name (`.xz` ignored).
    pub fn detect(path: &Path) -> Format {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = name.strip_suffix(".xz").unwrap_or(name);
        if name.ends_with(".dat") {
            Format::MovieLensDat
        } else if name == "u.data" {
            Format::MovieLens100k
        } else if name == "ratings.csv" {
            Format::MovieLensCsv
        } else if name.ends_with(".parquet") {
            Format::EventsParquet
        } else {
            Format::EventsCsv
        }
    }
}

/// A row that could not be used, with the reason (kept for the report).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BadRow {
    /// 1-based line number in the (decompressed) file; the row number for Parquet.
    pub line: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// Everything read from one file.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    /// The good rows, in file order.
    pub events: Vec<LogEvent>,
    /// Number of rejected rows.
    pub bad_rows: usize,
    /// The first few rejected rows (at most [`MAX_BAD_EXAMPLES`]).
    pub bad_examples: Vec<BadRow>,
}

/// How many rejected rows are kept verbatim for the report.
pub const MAX_BAD_EXAMPLES: usize = 10;

impl EventLog {
    /// Counts a rejected row, keeping the first few verbatim.
    pub(crate) fn reject(&mut self, line: usize, reason: String) {
        self.bad_rows += 1;
        if self.bad_examples.len() < MAX_BAD_EXAMPLES {
            self.bad_examples.push(BadRow { line, reason });
        }
    }
}

/// Opens a file, decompressing it in memory when its name ends in `.xz`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, TrainError> {
    let io = |source| TrainError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "xz") {
        lzma_rs::xz_decompress(&mut reader, &mut out).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            message: format!("not a valid .xz file ({e}); decompress it or fix the file"),
        })?;
    } else {
        reader.read_to_end(&mut out).map_err(io)?;
    }
    Ok(out)
}

/// Reads an event file in the given format.
pub fn read_events(path: &Path, format: Format) -> Result<EventLog, TrainError> {
    let bytes = read_bytes(path)?;
    match format {
        Format::MovieLensDat => Ok(parse_separated(&bytes, "::")),
        Format::MovieLens100k => Ok(parse_separated(&bytes, "\t")),
        Format::MovieLensCsv | Format::EventsCsv => parse_csv(path, &bytes, format),
        Format::EventsParquet => parquet_log::parse_parquet(path, bytes),
    }
}

/// Parses `user SEP item SEP rating SEP ts` lines (ratings are ignored: all kept, as the protocol says).
pub fn parse_separated(bytes: &[u8], separator: &str) -> EventLog {
    let mut log = EventLog::default();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        // Latin-1 titles never occur in ratings files; a non-UTF-8 row is a bad row.
        let Ok(text) = std::str::from_utf8(line) else {
            log.reject(line_no, "not UTF-8".into());
            continue;
        };
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(separator).collect();
        if fields.len() < 4 {
            log.reject(line_no, format!("expected 4 fields separated by {separator:?}, got {}", fields.len()));
            continue;
        }
        match parse_row(fields[0], fields[1], fields[3], None) {
            Ok(event) => log.events.push(event),
            Err(reason) => log.reject(line_no, reason),
        }
    }
    log
}

/// One row's fields to an event, or the reason it is unusable.
pub(crate) fn parse_row(user: &str, item: &str, ts: &str, action: Option<&str>) -> Result<LogEvent, String> {
    let (user, item) = (user.trim(), item.trim());
    if user.is_empty() || item.is_empty() {
        return Err("empty user or item id".into());
    }
    let ts_text = ts.trim();
    // Some exports write timestamps as floats ("978300760.0"); accept whole values only.
    let ts = ts_text
        .parse::<i64>()
        .ok()
        .or_else(|| ts_text.parse::<f64>().ok().filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| format!("timestamp {ts_text:?} is not whole unix seconds"))?;
    if ts < 0 {
        return Err(format!("negative timestamp {ts}"));
    }
    let action = match action.map(str::trim).filter(|a| !a.is_empty()) {
        None => Action::View,
        Some(text) => {
            Action::parse(text).ok_or_else(|| format!("unknown action {text:?} (expected view|cart|purchase)"))?
        }
    };
    Ok(LogEvent { user: user.to_string(), item: item.to_string(), ts, action })
}

fn parse_csv(path: &Path, bytes: &[u8], format: Format) -> Result<EventLog, TrainError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut log = EventLog::default();
    // Column positions: ratings.csv is user,item,rating,ts; event logs user,item,ts[,action].
    let (ts_col, action_col) = match format {
        Format::MovieLensCsv => (3, None),
        _ => (2, Some(3)),
    };
    for (index, record) in reader.records().enumerate() {
        let line_no = index + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                log.reject(line_no, format!("malformed CSV: {e}"));
                continue;
            }
        };
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if index == 0 && record.get(ts_col).is_some_and(|f| f.trim().parse::<f64>().is_err()) {
            continue; // a header row
        }
        if record.len() <= ts_col {
            log.reject(line_no, format!("expected at least {} columns, got {}", ts_col + 1, record.len()));
            continue;
        }
        let action = action_col.and_then(|c| record.get(c));
        match parse_row(&record[0], &record[1], &record[ts_col], action) {
            Ok(event) => log.events.push(event),
            Err(reason) => log.reject(line_no, reason),
        }
    }
    if log.events.is_empty() && log.bad_rows > 0 {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            message: format!("no usable row ({} bad, first: {:?})", log.bad_rows, log.bad_examples.first()),
        });
    }
    Ok(log)
}

/// Reads a catalog's item ids: ML-1M `movies.dat` (`id::title::genres`),
/// ML-100K `u.item` (`id|title|...`), ml-latest `movies.csv`, or a
/// `catalog.jsonl` (`{"id": ...}` per line). Ids keep file order.
pub fn read_catalog(path: &Path) -> Result<Vec<String>, TrainError> {
    let bytes = read_bytes(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".xz").unwrap_or(name);
    let bad = |message: String| TrainError::Data { path: path.to_path_buf(), message };
    let mut ids = Vec::new();
    if name.ends_with(".jsonl") {
        for (i, line) in bytes.lines().enumerate() {
            let line = line.map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(format!("line {}: not JSON: {e}", i + 1)))?;
            let id = value
                .get("id")
                .and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())))
                .ok_or_else(|| bad(format!("line {}: no string \"id\" field", i + 1)))?;
            ids.push(id);
        }
    } else if name.ends_with(".csv") {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(&bytes[..]);
        for record in reader.records() {
            let record = record.map_err(|e| bad(format!("malformed CSV: {e}")))?;
            if let Some(id) = record.get(0).map(str::trim).filter(|s| !s.is_empty()) {
                ids.push(id.to_string());
            }
        }
    } else {
        // movies.dat / u.item are latin-1: only the leading numeric id matters.
        let separator: &[u8] = if name.ends_with(".dat") { b"::" } else { b"|" };
        for line in bytes.split(|&b| b == b'\n') {
            let Some(end) = line.windows(separator.len()).position(|w| w == separator) else { continue };
            let id = String::from_utf8_lossy(&line[..end]).trim().to_string();
            if !id.is_empty() {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err(bad("the catalog holds no item id".into()));
    }
    Ok(ids)
}

/// Where a dataset directory keeps its ratings and catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFiles {
    /// The events/ratings file.
    pub events: PathBuf,
    /// The catalog file, when one was found.
    pub catalog: Option<PathBuf>,
}

/// Resolves `--data`: a file is taken as is (catalog looked up beside it); a
/// directory is searched for the MovieLens or storefront file names.
pub fn resolve_dataset(path: &Path) -> Result<DatasetFiles, TrainError> {
    let find = |dir: &Path, names: &[&str]| -> Option<PathBuf> {
        names.iter().flat_map(|n| [dir.join(n), dir.join(format!("{n}.xz"))]).find(|p| p.is_file())
    };
    let (dir, events) = if path.is_dir() {
        let mut events = find(path, &["ratings.dat", "u.data", "ratings.csv", "events.csv", "events.parquet"]);
        if events.is_none() {
            // The shared ML-1M copy holds a complete-history subset named ratings_users*.dat.xz.
            let mut subsets: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ratings") && (n.ends_with(".dat") || n.ends_with(".dat.xz")))
                })
                .collect();
            subsets.sort();
            events = subsets.into_iter().next();
        }
        let events = events.ok_or_else(|| TrainError::Data {
            path: path.to_path_buf(),
            message:
                "no ratings.dat, u.data, ratings.csv, events.csv or events.parquet (optionally .xz) in this directory"
                    .into(),
        })?;
        (path.to_path_buf(), events)
    } else if path.is_file() {
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
    } else {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            message: "no such file or directory (set EDGEREC_DATA_DIR or pass the dataset path)".into(),
        });
    };
    let catalog = find(&dir, &["movies.dat", "u.item", "movies.csv", "catalog.jsonl"]);
    Ok(DatasetFiles { events, catalog })
}
