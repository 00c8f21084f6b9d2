//! The Parquet event log: columns found by name, string and integer ids,
//! seconds and TIMESTAMP columns, compressed pages, nulls as counted bad rows,
//! and clear errors for a missing column or a file that is not Parquet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgerec_train::data::{Action, Format, read_events, resolve_dataset};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One column's values: `None` is a null (the column must be OPTIONAL).
enum Column {
    Text(Vec<Option<&'static str>>),
    Int(Vec<Option<i64>>),
}

/// Writes one row group with the columns in schema order.
fn write_parquet(path: &Path, schema: &str, columns: Vec<Column>, compression: Compression) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(compression).build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in columns {
        let mut out = group.next_column().unwrap().expect("a column per schema field");
        match column {
            Column::Text(values) => {
                let present: Vec<ByteArray> = values.iter().flatten().map(|v| ByteArray::from(*v)).collect();
                let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                out.typed::<ByteArrayType>().write_batch(&present, Some(&levels), None).unwrap();
            }
            Column::Int(values) => {
                let present: Vec<i64> = values.iter().flatten().copied().collect();
                let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                out.typed::<Int64Type>().write_batch(&present, Some(&levels), None).unwrap();
            }
        }
        out.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn string_ids_seconds_and_actions_with_snappy_pages_and_null_rows_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(&dir, "events.parquet");
    write_parquet(
        &file,
        "message events { OPTIONAL BYTE_ARRAY user_id (UTF8); OPTIONAL BYTE_ARRAY sku (UTF8); OPTIONAL INT64 ts; OPTIONAL BYTE_ARRAY event_type (UTF8); }",
        vec![
            Column::Text(vec![Some("u1"), Some("u1"), None, Some("u2"), Some("u2")]),
            Column::Text(vec![Some("sku-7"), Some("sku-9"), Some("sku-1"), Some("sku-7"), Some("sku-3")]),
            Column::Int(vec![Some(1_700_000_000), Some(1_700_000_060), Some(5), None, Some(1_700_000_100)]),
            Column::Text(vec![Some("view"), Some("purchase"), None, Some("view"), None]),
        ],
        Compression::SNAPPY,
    );
    assert_eq!(Format::detect(&file), Format::EventsParquet);
    let log = read_events(&file, Format::detect(&file)).unwrap();
    let got: Vec<(&str, &str, i64, Action)> =
        log.events.iter().map(|e| (e.user.as_str(), e.item.as_str(), e.ts, e.action)).collect();
    assert_eq!(
        got,
        [
            ("u1", "sku-7", 1_700_000_000, Action::View),
            ("u1", "sku-9", 1_700_000_060, Action::Purchase),
            ("u2", "sku-3", 1_700_000_100, Action::View)
        ]
    );
    assert_eq!(log.bad_rows, 2);
    assert_eq!((log.bad_examples[0].line, log.bad_examples[0].reason.as_str()), (3, "null user id"));
    assert_eq!((log.bad_examples[1].line, log.bad_examples[1].reason.as_str()), (4, "null timestamp"));
    // A directory holding events.parquet is found like events.csv.
    assert_eq!(resolve_dataset(dir.path()).unwrap().events, file);
}

#[test]
fn integer_ids_and_millisecond_timestamps_with_zstd_pages() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(&dir, "log.parquet");
    write_parquet(
        &file,
        "message events { REQUIRED INT64 user; REQUIRED INT64 item; REQUIRED INT64 timestamp (TIMESTAMP(MILLIS,true)); }",
        vec![
            Column::Int(vec![Some(42), Some(42)]),
            Column::Int(vec![Some(1193), Some(661)]),
            Column::Int(vec![Some(978_300_760_999), Some(978_302_109_000)]),
        ],
        Compression::ZSTD(Default::default()),
    );
    let log = read_events(&file, Format::EventsParquet).unwrap();
    let got: Vec<(&str, &str, i64)> = log.events.iter().map(|e| (e.user.as_str(), e.item.as_str(), e.ts)).collect();
    assert_eq!(got, [("42", "1193", 978_300_760), ("42", "661", 978_302_109)], "milliseconds truncate to seconds");
    assert_eq!(log.bad_rows, 0);
}

#[test]
fn a_missing_column_and_a_file_that_is_not_parquet_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(&dir, "no_ts.parquet");
    write_parquet(
        &file,
        "message events { REQUIRED BYTE_ARRAY user (UTF8); REQUIRED BYTE_ARRAY item (UTF8); }",
        vec![Column::Text(vec![Some("u")]), Column::Text(vec![Some("i")])],
        Compression::UNCOMPRESSED,
    );
    let err = read_events(&file, Format::EventsParquet).unwrap_err().to_string();
    assert!(err.contains("no timestamp column") && err.contains("\"user\", \"item\""), "{err}");

    let fake = path(&dir, "fake.parquet");
    std::fs::write(&fake, "user,item,timestamp\nu,i,1\n").unwrap();
    let err = read_events(&fake, Format::detect(&fake)).unwrap_err().to_string();
    assert!(err.contains("not a readable Parquet file"), "{err}");
}
