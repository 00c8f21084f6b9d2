//! The generic event log as Parquet: columns `user`, `item`, `timestamp`
//! and an optional `action`, found by name (common spellings accepted, see
//! [`USER_COLUMNS`] and friends). Ids may be strings or integers; the
//! timestamp unix seconds as an integer, or a Parquet TIMESTAMP (millis or
//! micros, truncated to seconds). A row with a null or unusable value is a
//! bad row, counted with its reason like a bad CSV line.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use super::{EventLog, LogEvent, parse_row};
use crate::error::TrainError;

/// Accepted names of the user column (case-insensitive).
pub const USER_COLUMNS: &[&str] = &["user", "user_id", "userid", "visitorid"];
/// Accepted names of the item column (case-insensitive).
pub const ITEM_COLUMNS: &[&str] = &["item", "item_id", "itemid", "movieid", "product_id", "sku"];
/// Accepted names of the timestamp column (case-insensitive).
pub const TIMESTAMP_COLUMNS: &[&str] = &["timestamp", "ts", "time", "event_time"];
/// Accepted names of the optional action column (case-insensitive).
pub const ACTION_COLUMNS: &[&str] = &["action", "event", "event_type"];

/// Which column of the file holds what.
struct Columns {
    user: usize,
    item: usize,
    timestamp: usize,
    action: Option<usize>,
}

fn find(names: &[String], wanted: &[&str]) -> Option<usize> {
    names.iter().position(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
}

/// Reads a Parquet event log already in memory (`.xz` was undone by the caller).
pub fn parse_parquet(path: &Path, bytes: Vec<u8>) -> Result<EventLog, TrainError> {
    let bad_file = |message: String| TrainError::Data { path: path.to_path_buf(), message };
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).map_err(|e| {
        bad_file(format!(
            "not a readable Parquet file ({e}); write it with pyarrow, polars, DuckDB or Spark, or pass a CSV event log"
        ))
    })?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let missing = |what: &str, wanted: &[&str]| {
        bad_file(format!("no {what} column (looked for {wanted:?}; the file has {names:?}); rename the column"))
    };
    let columns = Columns {
        user: find(&names, USER_COLUMNS).ok_or_else(|| missing("user", USER_COLUMNS))?,
        item: find(&names, ITEM_COLUMNS).ok_or_else(|| missing("item", ITEM_COLUMNS))?,
        timestamp: find(&names, TIMESTAMP_COLUMNS).ok_or_else(|| missing("timestamp", TIMESTAMP_COLUMNS))?,
        action: find(&names, ACTION_COLUMNS),
    };
    let rows = reader.get_row_iter(None).map_err(|e| bad_file(format!("cannot read rows: {e}")))?;
    let mut log = EventLog::default();
    for (index, row) in rows.enumerate() {
        let row_no = index + 1;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                // A corrupt page ends the file for the row reader: report it as an error, not a silent cut.
                return Err(bad_file(format!(
                    "row {row_no} cannot be decoded ({e}); {} rows were read before it",
                    log.events.len()
                )));
            }
        };
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, field)| field).collect();
        match event_of(&fields, &columns) {
            Ok(event) => log.events.push(event),
            Err(reason) => log.reject(row_no, reason),
        }
    }
    if log.events.is_empty() && log.bad_rows > 0 {
        return Err(bad_file(format!("no usable row ({} bad, first: {:?})", log.bad_rows, log.bad_examples.first())));
    }
    Ok(log)
}

fn event_of(fields: &[&Field], columns: &Columns) -> Result<LogEvent, String> {
    let user = id_text(fields[columns.user], "user")?;
    let item = id_text(fields[columns.item], "item")?;
    let ts = seconds(fields[columns.timestamp])?;
    let action = match columns.action.map(|c| fields[c]) {
        None | Some(Field::Null) => None,
        Some(Field::Str(text)) => Some(text.as_str()),
        Some(other) => return Err(format!("action {other} is not a string")),
    };
    parse_row(&user, &item, &ts.to_string(), action)
}

fn id_text(field: &Field, what: &str) -> Result<String, String> {
    match field {
        Field::Str(text) => Ok(text.clone()),
        Field::Byte(v) => Ok(v.to_string()),
        Field::Short(v) => Ok(v.to_string()),
        Field::Int(v) => Ok(v.to_string()),
        Field::Long(v) => Ok(v.to_string()),
        Field::UByte(v) => Ok(v.to_string()),
        Field::UShort(v) => Ok(v.to_string()),
        Field::UInt(v) => Ok(v.to_string()),
        Field::ULong(v) => Ok(v.to_string()),
        Field::Null => Err(format!("null {what} id")),
        other => Err(format!("{what} id {other} is neither a string nor an integer")),
    }
}

fn seconds(field: &Field) -> Result<i64, String> {
    match field {
        Field::Int(v) => Ok(i64::from(*v)),
        Field::Long(v) => Ok(*v),
        Field::UInt(v) => Ok(i64::from(*v)),
        Field::ULong(v) => i64::try_from(*v).map_err(|_| format!("timestamp {v} is out of range")),
        Field::TimestampMillis(ms) => Ok(ms.div_euclid(1_000)),
        Field::TimestampMicros(us) => Ok(us.div_euclid(1_000_000)),
        Field::Double(v) if v.is_finite() && v.fract() == 0.0 => Ok(*v as i64),
        Field::Null => Err("null timestamp".into()),
        other => Err(format!("timestamp {other} is not whole unix seconds or a Parquet TIMESTAMP")),
    }
}
