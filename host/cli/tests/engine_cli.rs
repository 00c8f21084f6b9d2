//! The real `edgerec` binary: `model random`, `encode`, `recommend`, and one
//! clear stderr line with a non-zero exit for every bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgerec_kernels::{Event, Model, encode};

fn edgerec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgerec")).args(args).output().expect("the binary runs")
}

/// A small random custom model written by the CLI itself (V = 40, L = 8).
fn write_model(dir: &Path) -> PathBuf {
    let out = dir.join("model");
    let run = edgerec(&[
        "model",
        "random",
        "--shape",
        "custom",
        "--num-items",
        "40",
        "--d-model",
        "12",
        "--num-layers",
        "2",
        "--num-heads",
        "2",
        "--d-qk",
        "5",
        "--d-v",
        "3",
        "--max-seq-len",
        "8",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "model random failed: {}", String::from_utf8_lossy(&run.stderr));
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `encode` on `input` and checks a failure with one `error:` line containing `needle`.
fn assert_rejected(model: &Path, input: &Path, needle: &str) {
    for command in ["encode", "recommend"] {
        let out = edgerec(&[
            command,
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--backend",
            "cpu",
        ]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{command} accepted a bad input: {err}");
        assert_eq!(err.lines().count(), 1, "{command}: expected one stderr line, got:\n{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{command}: {err:?} does not name {needle:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn encode_and_recommend_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = write_model(dir.path());
    let input = write(
        dir.path(),
        "user.json",
        r#"{"events":[{"item":3,"ts":200},{"item":9,"ts":100,"action":"click"},{"item":3,"ts":250},{"item":17,"ts":250}],"query_time":400}"#,
    );
    let out = edgerec(&[
        "encode",
        "--model",
        model_dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "auto",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("backend"), "no backend log line: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f32> = serde_json::from_value(json["embedding"].clone()).unwrap();
    let model = Model::load(&model_dir).unwrap();
    let events = [
        Event { item: 3, ts: 200 },
        Event { item: 9, ts: 100 },
        Event { item: 3, ts: 250 },
        Event { item: 17, ts: 250 },
    ];
    assert_eq!(got, encode(&model, &events, 400).unwrap());

    let out = edgerec(&[
        "recommend",
        "--model",
        model_dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--k",
        "5",
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let ids: Vec<u64> = items.iter().map(|i| i["item"].as_u64().unwrap()).collect();
    assert!(ids.iter().all(|id| ![3, 9, 17].contains(id)), "history item recommended: {ids:?}");
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not best first: {scores:?}");

    // With exclusion off and k beyond the catalog, every item comes back.
    let out = edgerec(&[
        "recommend",
        "--model",
        model_dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--k",
        "1000",
        "--no-exclude-history",
        "--backend",
        "cpu",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 40);
}

#[test]
fn random_models_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(&dir.path().join("a"));
    let b = write_model(&dir.path().join("b"));
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    let out = edgerec(&["model", "random", "--shape", "books", "--out", dir.path().join("c").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--num-items"), "{}", stderr(&out));
}

#[test]
fn bad_inputs_exit_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let d = dir.path();
    assert_rejected(&model, &write(d, "malformed.json", r#"{"events":[{"item":1,"ts":5}"#), "not a valid request");
    assert_rejected(
        &model,
        &write(d, "wrongtype.json", r#"{"events":[{"item":"x","ts":5}],"query_time":9}"#),
        "not a valid request",
    );
    assert_rejected(
        &model,
        &write(d, "item0.json", r#"{"events":[{"item":0,"ts":5}],"query_time":9}"#),
        "item id 0 is outside",
    );
    assert_rejected(
        &model,
        &write(d, "item41.json", r#"{"events":[{"item":41,"ts":5}],"query_time":9}"#),
        "item id 41 is outside the model's catalog 1..=40",
    );
    assert_rejected(&model, &write(d, "empty.json", r#"{"events":[],"query_time":9}"#), "no events");
    assert_rejected(
        &model,
        &write(d, "early.json", r#"{"events":[{"item":2,"ts":50},{"item":3,"ts":10}],"query_time":20}"#),
        "query_time 20 is before the last event",
    );
    assert_rejected(&model, &d.join("missing.json"), "cannot read input file");
    let good = write(d, "good.json", r#"{"events":[{"item":2,"ts":5}],"query_time":9}"#);
    assert_rejected(&d.join("no-such-model"), &good, "cannot load model directory");
    let broken = d.join("broken-model");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(model.join("config.json"), broken.join("config.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not safetensors").unwrap();
    assert_rejected(&broken, &good, "cannot load model directory");
}

#[test]
fn cuda_backend_when_not_built_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let good = write(dir.path(), "good.json", r#"{"events":[{"item":2,"ts":5}],"query_time":9}"#);
    let out = edgerec(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        good.to_str().unwrap(),
        "--backend",
        "cuda",
    ]);
    // A CUDA build on a machine with a GPU may serve; otherwise it must say why not.
    if !out.status.success() {
        assert!(stderr(&out).contains("cuda"), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn recommend_names_catalog_ids_when_the_model_has_an_id_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = write_model(dir.path());
    let input =
        write(dir.path(), "user.json", r#"{"events":[{"item":3,"ts":200},{"item":9,"ts":300}],"query_time":400}"#);
    let run = |model: &Path| -> Vec<serde_json::Value> {
        let out = edgerec(&[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--k",
            "4",
            "--backend",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["items"].as_array().unwrap().clone()
    };
    // No items.json: model ids only.
    assert!(run(&model_dir).iter().all(|i| i.get("external").is_none()));
    // With one, each model id i carries external_ids[i-1].
    let ids: Vec<String> = (1..=40).map(|i| format!("sku-{:03}", 100 - i)).collect();
    std::fs::write(model_dir.join("items.json"), serde_json::json!({ "external_ids": ids }).to_string()).unwrap();
    let items = run(&model_dir);
    assert_eq!(items.len(), 4);
    for item in &items {
        let id = item["item"].as_u64().unwrap() as usize;
        assert_eq!(item["external"], serde_json::json!(ids[id - 1]), "{item}");
    }
    // A broken mapping is a clear error, not silently ignored.
    std::fs::write(model_dir.join("items.json"), "{not json").unwrap();
    let out = edgerec(&[
        "recommend",
        "--model",
        model_dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read the id mapping"), "{}", stderr(&out));
}
