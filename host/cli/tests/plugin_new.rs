//! `edgerec plugin new|build|run` for Rust, as a new partner runs them: a
//! project made in a temporary directory outside the workspace builds for
//! wasm32-wasip2 on its own (vendored SDK, standalone manifests), passes the
//! upload check, and its sample gives the answer its rule promises.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgerec(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgerec"))
        .args(args)
        .current_dir(dir)
        // One target directory for every run of this test: a rebuild is incremental.
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .expect("the binary runs")
}

fn shared_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new-target")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_new_rust_plugin_builds_checks_and_runs_outside_the_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    assert!(!tmp.path().canonicalize().unwrap().starts_with(&workspace), "the project must live outside the workspace");

    let out = edgerec(&["plugin", "new", "demo-rule"], tmp.path());
    assert!(out.status.success(), "plugin new failed: {}", text(&out));
    let project = tmp.path().join("demo-rule");
    for file in
        ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "src/lib.rs", "request.json", "config.json", "README.md"]
    {
        assert!(project.join(file).is_file(), "{file} is missing");
    }
    // The vendored SDK is the whole of sdk/src and sdk/wit, with no workspace inheritance left.
    let sdk = workspace.join("sdk");
    assert_eq!(names(&project.join("vendor/edgerec-sdk/src")), names(&sdk.join("src")));
    assert_eq!(names(&project.join("vendor/edgerec-sdk/wit")), names(&sdk.join("wit")));
    for manifest in ["Cargo.toml", "vendor/edgerec-sdk/Cargo.toml"] {
        let text = std::fs::read_to_string(project.join(manifest)).unwrap();
        assert!(!text.contains("workspace = true") && !text.contains(".workspace"), "{manifest} inherits: {text}");
    }
    // The project builds with the workspace's wasm settings (2 MiB initial memory).
    assert_eq!(
        std::fs::read_to_string(project.join(".cargo/config.toml")).unwrap(),
        std::fs::read_to_string(workspace.join(".cargo/config.toml")).unwrap()
    );
    // A second `new` into the same place refuses instead of overwriting.
    let again = edgerec(&["plugin", "new", "demo-rule"], tmp.path());
    assert!(!again.status.success() && text(&again).contains("not empty"), "{}", text(&again));
    let bad = edgerec(&["plugin", "new", "Bad Name"], tmp.path());
    assert!(!bad.status.success() && text(&bad).contains("invalid"), "{}", text(&bad));

    // The rule's own unit tests pass natively.
    let test = Command::new(env!("CARGO"))
        .args(["test", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .unwrap();
    assert!(test.status.success(), "cargo test in the new project failed: {}", text(&test));

    // Build + check in one step.
    let build = edgerec(&["plugin", "build"], &project);
    let log = text(&build);
    assert!(build.status.success(), "plugin build failed: {log}");
    assert!(log.contains("sample input:  passed"), "{log}");
    assert!(log.contains(r#"columns read with "#) && log.contains(r#"["price", "on_sale"]"#), "{log}");
    let artifact = shared_target().join("wasm32-wasip2/release/demo_rule.wasm");
    assert!(artifact.is_file());

    // The sample: 5 candidates, floor 20, sale boost 1.5 (see the template's request.json).
    // A deadline a loaded CI machine cannot trip (the limits are reported, not under test).
    std::fs::write(project.join("limits.json"), r#"{"deadline_us": 5000000}"#).unwrap();
    let run = edgerec(
        &[
            "plugin",
            "run",
            artifact.to_str().unwrap(),
            "--input",
            "request.json",
            "--config",
            "config.json",
            "--limits",
            "limits.json",
            "--json",
        ],
        &project,
    );
    assert!(run.status.success(), "plugin run failed: {}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let output = &report["result"]["output"];
    // Kept: index 1 (35.0, not on sale), 3 (49.9, on sale: 0.74 × 1.5), 4 (22.0, sale unknown);
    // dropped: 0 (12.5 < 20) and 2 (no price).
    assert_eq!(output["order"], serde_json::json!([3, 1, 4]));
    let scores: Vec<f32> = serde_json::from_value(output["scores"].clone()).unwrap();
    let expected = [0.74f32 * 1.5, 0.85, 0.6];
    for (got, want) in scores.iter().zip(expected) {
        assert!((got - want).abs() <= 1e-6, "{scores:?} vs {expected:?}");
    }
    assert_eq!(output["reasons"], serde_json::json!(["on-sale", "", ""]));
    assert!(report["report"]["fuel_used"].as_u64().unwrap() > 0);
    assert_eq!(report["report"]["logs"][0]["message"], "kept 3 of 5 candidates");
}

/// The limits table of the partner guide states the defaults the code has
/// (the runtime's `Limits`/`RuntimeConfig`, the server's config keys).
#[test]
fn the_guides_limits_table_matches_the_defaults() {
    let guide = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/README.md")).unwrap();
    let row = |label: &str| -> String {
        guide
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("sdk/README.md has no limits row for {label}"))
            .to_owned()
    };
    let limits = edgerec_runtime::Limits::default();
    let js = edgerec_runtime::Limits::for_language(Some("js"));
    let runtime = edgerec_runtime::RuntimeConfig::default();
    let help = Command::new(env!("CARGO_BIN_EXE_edgerec")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let key = |name: &str| -> u64 {
        let line = help.lines().find(|l| l.trim_start().starts_with(&format!("{name} = "))).expect(name);
        line.split('=').nth(1).unwrap().trim().parse().unwrap()
    };
    assert_eq!(key("plugin_deadline_us"), limits.deadline_us, "the server's stage deadline is the runtime's default");
    let checks = [
        ("wall-clock deadline", format!("{} ms", limits.deadline_us / 1000)),
        ("fuel", format!("{} M", limits.fuel / 1_000_000)),
        ("linear memory", format!("{} MiB", limits.memory_bytes >> 20)),
        ("wasm stack", format!("{} KiB", runtime.max_wasm_stack >> 10)),
        ("output", format!("reasons ≤ {} KiB", limits.max_reason_bytes >> 10)),
        ("log", format!("{} lines, {} KiB", limits.max_log_lines, limits.max_log_bytes >> 10)),
        ("upload size", format!("{} MiB", key("max_plugin_bytes") >> 20)),
        ("wall-clock deadline", format!("JavaScript: {} ms", js.deadline_us / 1000)),
        ("fuel", format!("JavaScript: {} M", js.fuel / 1_000_000)),
    ];
    for (label, stated) in checks {
        let line = row(label);
        assert!(line.contains(&stated), "sdk/README.md says {line:?}; the default is {stated}");
    }
}
