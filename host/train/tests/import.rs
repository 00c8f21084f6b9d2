//! Importing reference (research HSTU) checkpoints: the fixture written by the
//! reference's own code reproduces its embeddings; transposed or missing
//! tensors, a wrong file-name description and a non-zip file are clear errors.
//!
//! The bad checkpoints are written here, in PyTorch's own format (a stored zip
//! with `archive/data.pkl` and one raw little-endian storage per tensor), by a
//! small pickle writer: no binary is committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgerec_kernels::encode::encode;
use edgerec_kernels::history::Event;
use edgerec_train::import::{ImportError, ImportOptions, import_gr_research, import_to_dir, parse_description};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FIXTURE: &str = "../../../shared/fixtures/gr-checkpoint";
const FIXTURE_NAME: &str =
    "HSTU-b2-h2-dqk8-dv10-lsilu0.2-d0.2-l2-ssl-t0.05-n128-ddp2-b128-lr0.001-wu0-wd0-2025-01-01_ep3";

fn fixture_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    if dir.join(FIXTURE_NAME).is_file() {
        Some(dir)
    } else {
        eprintln!("SKIP: the reference checkpoint fixture is not at {} (shared/fixtures/gr-checkpoint)", dir.display());
        None
    }
}

#[test]
fn the_fixture_reproduces_the_references_embeddings() {
    let Some(dir) = fixture_dir() else { return };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let imported = import_to_dir(&dir.join(FIXTURE_NAME), &ImportOptions::default(), None, out.path()).unwrap();
    let model = edgerec_kernels::Model::load(out.path()).unwrap();
    assert_eq!(model.config, imported.model.config);
    let shape = &expected["shape"];
    for key in [
        "d_model",
        "num_heads",
        "d_qk",
        "d_v",
        "num_layers",
        "max_seq_len",
        "num_items",
        "attn_normalizer",
        "num_time_buckets",
    ] {
        let config = serde_json::to_value(&model.config).unwrap();
        assert_eq!(config[key], shape[key], "config field {key}");
    }
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut lengths = Vec::new();
    for case in cases {
        let events: Vec<Event> = case["input"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Event { item: e["item"].as_u64().unwrap() as u32, ts: e["ts"].as_i64().unwrap() })
            .collect();
        lengths.push(events.len());
        let query_time = case["input"]["query_time"].as_i64().unwrap();
        let want: Vec<f64> = case["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = encode(&model, &events, query_time).unwrap();
        let diff: f64 = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
        let rel = diff / norm;
        eprintln!("{} events: relative L2 error {rel:.2e}", events.len());
        assert!(rel <= 1e-5, "{} events: relative L2 error {rel:e} > 1e-5", events.len());
    }
    assert_eq!(lengths, vec![1, 16, 67], "the three cases: 1 event, 16, more than L");
}

// ---- a minimal writer of PyTorch checkpoints (protocol-2 pickle in a stored zip) ----

struct Pickle(Vec<u8>);

impl Pickle {
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn tuple_of(&mut self, values: &[usize]) {
        self.0.push(b'(');
        for &v in values {
            self.int(v);
        }
        self.0.push(b't');
    }
}

/// A tensor to write: key, shape, row-major values.
type Entry = (String, Vec<usize>, Vec<f32>);

/// Writes `{"epoch": 3, "model_state_dict": {...}, "optimizer_state_dict": {}}` as torch.save does.
fn write_checkpoint(path: &Path, entries: &[Entry]) {
    let mut p = Pickle(vec![0x80, 2, b'}', b'(']);
    p.str("epoch");
    p.int(3);
    p.str("model_state_dict");
    p.0.extend_from_slice(b"}(");
    for (i, (name, shape, values)) in entries.iter().enumerate() {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.0.push(b'(');
        // The storage: a persistent id ('storage', FloatStorage, key, 'cpu', numel).
        p.0.push(b'(');
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str(&i.to_string());
        p.str("cpu");
        p.int(values.len());
        p.0.extend_from_slice(b"tQ");
        p.int(0);
        p.tuple_of(shape);
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        p.tuple_of(&strides);
        p.0.push(0x89);
        p.global("collections", "OrderedDict");
        p.0.extend_from_slice(b")R");
        p.0.extend_from_slice(b"tR");
    }
    p.0.push(b'u');
    p.str("optimizer_state_dict");
    p.0.push(b'}');
    p.0.extend_from_slice(b"u.");
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&p.0).unwrap();
    for (i, (_, _, values)) in entries.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
        for v in values {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// The fixture's shape (D 24, 2 layers, 2 heads, dqk 8, dv 10, N 61) over 50 items, random weights.
fn random_entries(seed: u64) -> Vec<Entry> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rand = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-scale..scale)).collect() };
    let (d, v, n, h, dqk, dv) = (24, 50, 61, 2, 8, 10);
    let mut e: Vec<Entry> = vec![
        ("module._embedding_module._item_emb.weight".into(), vec![v + 1, d], rand((v + 1) * d, 0.5)),
        ("module._input_features_preproc._pos_emb.weight".into(), vec![n, d], rand(n * d, 0.3)),
        ("module._attn_mask".into(), vec![n, n], vec![1.0; n * n]),
    ];
    for i in 0..2 {
        let p = format!("module._hstu._attention_layers.{i}.");
        e.push((format!("{p}_uvqk"), vec![d, 2 * h * (dv + dqk)], rand(d * 2 * h * (dv + dqk), 0.3)));
        e.push((format!("{p}_rel_attn_bias._ts_w"), vec![129], rand(129, 0.5)));
        e.push((format!("{p}_rel_attn_bias._pos_w"), vec![2 * n - 1], rand(2 * n - 1, 0.5)));
        e.push((format!("{p}_o.weight"), vec![d, h * dv], rand(d * h * dv, 0.3)));
        e.push((format!("{p}_o.bias"), vec![d], rand(d, 0.1)));
    }
    e
}

fn written(dir: &Path, name: &str, entries: &[Entry]) -> PathBuf {
    let path = dir.join(name);
    write_checkpoint(&path, entries);
    path
}

#[test]
fn a_written_checkpoint_imports_with_o_transposed_and_the_padding_row_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let entries = random_entries(1);
    let path = written(dir.path(), FIXTURE_NAME, &entries);
    let model = import_gr_research(&path, &ImportOptions::default(), None).unwrap().model;
    let c = &model.config;
    assert_eq!(
        (c.d_model, c.num_layers, c.num_heads, c.d_qk, c.d_v, c.max_seq_len, c.attn_normalizer, c.num_items),
        (24, 2, 2, 8, 10, 50, 61, 50)
    );
    let get = |key: &str| &entries.iter().find(|e| e.0 == key).unwrap().2;
    let o = get("module._hstu._attention_layers.1._o.weight");
    for out in 0..24 {
        for inp in 0..20 {
            assert_eq!(model.weights.layers[1].o_w[inp * 24 + out], o[out * 20 + inp]);
        }
    }
    assert_eq!(&model.weights.layers[0].uvqk, get("module._hstu._attention_layers.0._uvqk"));
    assert!(model.weights.item_emb[..24].iter().all(|&v| v == 0.0));
    assert_eq!(&model.weights.item_emb[24..], &get("module._embedding_module._item_emb.weight")[24..]);
    // --max-seq-len overrides L (N stays the table's).
    let short =
        import_gr_research(&path, &ImportOptions { max_seq_len: Some(20), ..Default::default() }, None).unwrap().model;
    assert_eq!((short.config.max_seq_len, short.config.attn_normalizer), (20, 61));
}

fn error_of(path: &Path, opts: &ImportOptions) -> String {
    match import_gr_research(path, opts, None) {
        Ok(_) => panic!("{} imported but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_transposed_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["_o.weight", "_uvqk"] {
        let mut entries = random_entries(2);
        let entry = entries.iter_mut().find(|e| e.0 == format!("module._hstu._attention_layers.1.{key}")).unwrap();
        entry.1.reverse();
        let path = written(dir.path(), FIXTURE_NAME, &entries);
        let message = error_of(&path, &ImportOptions::default());
        assert!(message.contains(key) && message.contains("transposed"), "{message}");
    }
}

#[test]
fn a_missing_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "module._hstu._attention_layers.1._o.bias",
        "module._input_features_preproc._pos_emb.weight",
        "module._hstu._attention_layers.0._rel_attn_bias._ts_w",
    ] {
        let entries: Vec<Entry> = random_entries(3).into_iter().filter(|e| e.0 != key).collect();
        let path = written(dir.path(), FIXTURE_NAME, &entries);
        let message = error_of(&path, &ImportOptions::default());
        assert!(message.contains("missing tensor") && message.contains(key), "{message}");
    }
}

#[test]
fn a_wrong_or_absent_description_is_a_clear_error_and_flags_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries = random_entries(4);
    // Heads that do not fit the tensors.
    let path = written(dir.path(), "HSTU-b2-h3-dqk8-dv10-x_ep1", &entries);
    let message = error_of(&path, &ImportOptions::default());
    assert!(message.contains("description is wrong") && message.contains("--heads"), "{message}");
    // A layer count that is not the checkpoint's.
    let path = written(dir.path(), "HSTU-b4-h2-dqk8-dv10-x_ep1", &entries);
    let message = error_of(&path, &ImportOptions::default());
    assert!(message.contains("b4") && message.contains("2"), "{message}");
    // No description at all: name the flags.
    let path = written(dir.path(), "checkpoint.pt", &entries);
    let message = error_of(&path, &ImportOptions::default());
    assert!(message.contains("--heads"), "{message}");
    let flags = ImportOptions { num_heads: Some(2), d_qk: Some(8), d_v: Some(10), max_seq_len: None };
    let model = import_gr_research(&path, &flags, None).unwrap().model;
    assert_eq!((model.config.num_heads, model.config.d_qk, model.config.d_v), (2, 8, 10));
    // Flags win over the file name.
    let path = written(dir.path(), "HSTU-b2-h3-dqk8-dv10-x_ep1", &entries);
    assert!(import_gr_research(&path, &flags, None).is_ok());
}

#[test]
fn a_non_zip_file_and_a_missing_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FIXTURE_NAME);
    std::fs::write(&path, b"this is not a torch checkpoint\n").unwrap();
    let message = error_of(&path, &ImportOptions::default());
    assert!(message.contains("not a readable PyTorch checkpoint"), "{message}");
    let err = import_gr_research(&dir.path().join("absent"), &ImportOptions::default(), None).err().unwrap();
    assert!(matches!(err, ImportError::Unreadable { .. }), "{err}");
}

#[test]
fn the_item_file_must_cover_the_item_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), FIXTURE_NAME, &random_entries(5));
    let items = dir.path().join("items.txt");
    std::fs::write(&items, (1..=49).map(|i| format!("sku-{i}\n")).collect::<String>()).unwrap();
    let err = import_gr_research(&path, &ImportOptions::default(), Some(&items)).err().unwrap();
    assert!(err.to_string().contains("maps 49 items") && err.to_string().contains("50"), "{err}");
    std::fs::write(&items, (1..=50).map(|i| format!("sku-{i}\n")).collect::<String>()).unwrap();
    let out = dir.path().join("model");
    let imported = import_to_dir(&path, &ImportOptions::default(), Some(&items), &out).unwrap();
    assert_eq!(imported.items.unwrap().external(7), Some("sku-7"));
    assert!(out.join("items.json").is_file());
}

#[test]
fn descriptions_are_parsed_from_the_file_name() {
    let d = parse_description(FIXTURE_NAME).unwrap();
    assert_eq!((d.num_layers, d.num_heads, d.d_qk, d.d_v), (Some(2), Some(2), Some(8), Some(10)));
    assert!(parse_description("model.pt").is_none());
}

#[test]
fn finetune_starts_from_an_imported_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), FIXTURE_NAME, &random_entries(6));
    let model_dir = dir.path().join("imported");
    import_to_dir(&path, &ImportOptions::default(), None, &model_dir).unwrap();
    // Events over the imported ids 1..=50 (no items.json: the identity mapping) and a few new items.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut csv = String::from("user,item,timestamp\n");
    for user in 0..40 {
        let mut ts = 1_000_000_000 + user * 1000;
        for _ in 0..12 {
            ts += rng.random_range(1..100_000);
            csv += &format!("u{user},{},{ts}\n", rng.random_range(1..=55));
        }
    }
    let data = dir.path().join("events.csv");
    std::fs::write(&data, csv).unwrap();
    let mut opts = edgerec_train::train::Preset::Ml1m.options();
    opts.epochs = 1;
    opts.batch_size = 16;
    opts.num_negatives = 8;
    let out = dir.path().join("ft");
    let report = edgerec_train::report::finetune(&model_dir, &data, None, &opts, &out, false).unwrap();
    assert_eq!(report.old_items, 50);
    assert_eq!(report.new_items, 5);
    let tuned = edgerec_kernels::Model::load(&out.join("model")).unwrap();
    assert_eq!((tuned.config.num_heads, tuned.config.d_qk, tuned.config.d_v, tuned.config.num_items), (2, 8, 10, 55));
}
