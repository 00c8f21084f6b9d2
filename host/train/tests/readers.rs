//! Readers: every format, `.xz`, bad rows counted with their reasons.

use std::io::Write;

use edgerec_train::data::{Action, Format, read_catalog, read_events, resolve_dataset};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn movielens_dat_reads_rows_and_counts_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109\nbroken line\n2::x::4::notatime\n\n3::10::4::978300000\r\n",
    );
    let log = read_events(&path, Format::detect(&path)).unwrap();
    assert_eq!(log.events.len(), 3);
    assert_eq!(log.events[0].user, "1");
    assert_eq!(log.events[0].item, "1193");
    assert_eq!(log.events[0].ts, 978300760);
    assert_eq!(log.events[2].ts, 978300000, "CRLF is stripped");
    assert_eq!(log.bad_rows, 2);
    assert_eq!(log.bad_examples[0].line, 3);
    assert!(log.bad_examples[0].reason.contains("4 fields"), "{:?}", log.bad_examples);
    assert!(log.bad_examples[1].reason.contains("notatime"), "{:?}", log.bad_examples);
}

#[test]
fn u_data_is_tab_separated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\n");
    assert_eq!(Format::detect(&path), Format::MovieLens100k);
    let log = read_events(&path, Format::MovieLens100k).unwrap();
    assert_eq!(log.events.len(), 2);
    assert_eq!((log.events[1].user.as_str(), log.events[1].item.as_str(), log.events[1].ts), ("186", "302", 891717742));
    assert_eq!(log.bad_rows, 1);
}

#[test]
fn ratings_csv_skips_the_header_and_reads_the_fourth_column() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(dir.path(), "ratings.csv", "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,3,4.0,-5\r\n");
    let log = read_events(&path, Format::detect(&path)).unwrap();
    assert_eq!(log.events.len(), 1);
    assert_eq!(log.events[0].ts, 964982703);
    assert_eq!(log.bad_rows, 1);
    assert!(log.bad_examples[0].reason.contains("negative"));
}

#[test]
fn event_log_reads_actions_and_rejects_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "events.csv",
        "user,item,timestamp,action\nu1,sku-1,100,view\nu1,sku-1,105,cart\nu2,sku-2,90,PURCHASE\nu2,sku-3,95,teleport\nu3,sku-4,96\n\"u,4\",sku-5,97,view\n,sku-6,98,view\n",
    );
    let log = read_events(&path, Format::EventsCsv).unwrap();
    let actions: Vec<Action> = log.events.iter().map(|e| e.action).collect();
    assert_eq!(actions, [Action::View, Action::Cart, Action::Purchase, Action::View, Action::View]);
    assert_eq!(log.events[4].user, "u,4", "quoted fields keep their commas");
    assert_eq!(log.bad_rows, 2, "{:?}", log.bad_examples);
    assert!(log.bad_examples.iter().any(|b| b.reason.contains("teleport")));
    assert!(log.bad_examples.iter().any(|b| b.reason.contains("empty")));
}

#[test]
fn a_file_of_garbage_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "events.csv", "a,b,c\nd,e,f\n");
    let err = read_events(&path, Format::EventsCsv).unwrap_err().to_string();
    assert!(err.contains("no usable row"), "{err}");
}

#[test]
fn xz_files_are_read_directly_and_corrupt_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"1::10::5::100\n1::20::5::200\n";
    let mut compressed = Vec::new();
    lzma_rs::xz_compress(&mut &text[..], &mut compressed).unwrap();
    let path = dir.path().join("ratings.dat.xz");
    std::fs::File::create(&path).unwrap().write_all(&compressed).unwrap();
    let log = read_events(&path, Format::detect(&path)).unwrap();
    assert_eq!(log.events.len(), 2);
    let bad = write(dir.path(), "u.data.xz", "not xz at all");
    let err = read_events(&bad, Format::MovieLens100k).unwrap_err().to_string();
    assert!(err.contains(".xz"), "{err}");
}

#[test]
fn catalogs_and_dataset_directories_resolve() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ratings.dat", "1::10::5::100\n");
    write(dir.path(), "movies.dat", "10::Toy Story (1995)::Animation\n2::Jumanji (1995)::Adventure\n");
    let files = resolve_dataset(dir.path()).unwrap();
    assert!(files.events.ends_with("ratings.dat"));
    assert_eq!(read_catalog(files.catalog.as_ref().unwrap()).unwrap(), ["10", "2"]);
    let jsonl = write(dir.path(), "catalog.jsonl", "{\"id\":\"sku-1\",\"attributes\":{}}\n\n{\"id\":\"sku-2\"}\n");
    assert_eq!(read_catalog(&jsonl).unwrap(), ["sku-1", "sku-2"]);
    let broken = write(dir.path(), "broken.jsonl", "{\"name\":\"no id\"}\n");
    assert!(read_catalog(&broken).unwrap_err().to_string().contains("\"id\""));
    let missing = resolve_dataset(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("EDGEREC_DATA_DIR"), "{missing}");
}
