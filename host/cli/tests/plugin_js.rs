//! JavaScript/TypeScript plugins (jco's QuickJS backend) through the real
//! runtime: `boost` ported to TypeScript (`plugins/boost-ts`) answers exactly
//! as the Rust `boost` on random batches; a hostile JS plugin is stopped by
//! the same limits as a Rust one; `edgerec plugin new --lang js` builds,
//! checks and runs outside the workspace.
//!
//! Needs Node.js and npm (`.ci/run` installs them); without them each test
//! prints SKIP and passes. The npm packages are installed once into the
//! gitignored `sdk/js/node_modules` from the committed `package-lock.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use edgerec_runtime::{
    CandidateBatch, Column, ColumnValues, CompiledPlugin, Limits, RequestContext, Runtime, RuntimeConfig, StageFailure,
    first_party,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `sdk/js/node_modules` ready (`npm ci` once), or `None` with a SKIP line when Node/npm are missing.
fn js_tools(test: &str) -> Option<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        for tool in ["node", "npm"] {
            match Command::new(tool).arg("--version").output() {
                Ok(out) if out.status.success() => {}
                _ => {
                    return Err(format!("`{tool}` is not installed (apt-get install nodejs npm)"));
                }
            }
        }
        let sdk_js = repo().join("sdk/js");
        if !sdk_js.join("node_modules/.bin/jco").exists() {
            let out =
                Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&sdk_js).output().unwrap();
            assert!(out.status.success(), "npm ci in sdk/js failed: {}", text(&out));
        }
        Ok(sdk_js.join("node_modules"))
    });
    match ready {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// A content hash of the files a component is built from, to skip unchanged rebuilds.
fn stamp(inputs: &[PathBuf]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for path in inputs {
        for b in std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn sdk_inputs() -> Vec<PathBuf> {
    let r = repo();
    vec![r.join("sdk/js/src/index.ts"), r.join("sdk/wit/plugin.wit"), r.join("sdk/js/package-lock.json")]
}

/// Builds (or reuses) a component: `build` writes `out`, rerun only when `inputs` change.
fn cached(out: &Path, inputs: Vec<PathBuf>, build: impl FnOnce()) -> Vec<u8> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let stamp_file = out.with_extension("stamp");
    let now = stamp(&inputs);
    if !(out.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == now)) {
        build();
        std::fs::write(&stamp_file, &now).unwrap();
    }
    std::fs::read(out).unwrap()
}

/// `plugins/boost-ts` built by its own `npm run build`.
fn boost_ts_bytes() -> Vec<u8> {
    let dir = repo().join("plugins/boost-ts");
    let mut inputs = sdk_inputs();
    inputs.extend([dir.join("src/boost.ts"), dir.join("package.json")]);
    cached(&dir.join("dist/boost-ts.wasm"), inputs, || {
        let out = Command::new("npm").args(["run", "build"]).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "npm run build in plugins/boost-ts failed: {}", text(&out));
    })
}

/// `host/test-programs/js/hostile.ts`, built with the same jco flags.
fn hostile_js_bytes(node_modules: &Path) -> Vec<u8> {
    let source = repo().join("host/test-programs/js/hostile.ts");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-js.wasm");
    let mut inputs = sdk_inputs();
    inputs.push(source.clone());
    cached(&out, inputs, || {
        let built = Command::new(node_modules.join(".bin/jco"))
            .arg("componentize")
            .arg(&source)
            .args(["--wit", "sdk/wit", "--world-name", "plugin", "--backend", "qjs", "--backend-qjs-disable-async"])
            .arg("--bundle-config")
            .arg(repo().join("sdk/js/bundle.config.mjs"))
            .arg("-o")
            .arg(&out)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(built.status.success(), "building hostile.ts failed: {}", text(&built));
    })
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgerec-plugin-cache");
        Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir), max_upload_bytes: 16 << 20, ..Default::default() })
            .unwrap()
    })
}

fn compile(name: &str, bytes: &[u8]) -> Arc<CompiledPlugin> {
    runtime().compile_named(Some(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Room for a loaded CI machine: the deadline is not under test here.
fn relaxed() -> Limits {
    Limits { deadline_us: 5_000_000, ..Limits::default() }
}

/// For the comparison: QuickJS interprets, so boost in TypeScript needs far
/// more fuel and time than the Rust one (see `edgerec bench plugins --js`);
/// what is under test here is the answer, not the cost.
fn roomy() -> Limits {
    Limits { deadline_us: 30_000_000, fuel: 50_000_000_000, ..Limits::default() }
}

/// xorshift64*: random but reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// ~8% missing.
    fn maybe<T>(&mut self, value: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        if self.below(12) == 0 { None } else { Some(value(self)) }
    }
}

/// `n` candidates, five columns (one of each type), missing values, ties in scores.
fn random_batch(n: usize, seed: u64) -> CandidateBatch {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let brands = ["acme", "zeta", "nova", "orbit", "acme-outlet"];
    let tags = ["clearance", "new", "eco", "gift"];
    let ids = (0..n as u64).map(|i| 5000 + i * 3).collect();
    // Scores on a coarse grid so that ties (and the sort's stability) matter.
    let scores = (0..n).map(|_| rng.below(40) as f32 / 40.0).collect();
    let price = (0..n).map(|_| rng.maybe(|r| (5.0 + 100.0 * r.unit()).round())).collect();
    let stock = (0..n).map(|_| rng.maybe(|r| r.below(8) as i64 - 1)).collect();
    let sponsored = (0..n).map(|_| rng.maybe(|r| r.below(15) == 0)).collect();
    let brand = (0..n).map(|_| rng.maybe(|r| brands[r.below(5) as usize].to_owned())).collect();
    let tag = (0..n)
        .map(|_| rng.maybe(|r| tags.iter().filter(|_| r.below(3) == 0).map(|t| t.to_string()).collect()))
        .collect();
    CandidateBatch {
        ids,
        scores,
        columns: vec![
            Column { name: "price".into(), values: ColumnValues::F64(price) },
            Column { name: "stock".into(), values: ColumnValues::I64(stock) },
            Column { name: "sponsored".into(), values: ColumnValues::Bool(sponsored) },
            Column { name: "brand".into(), values: ColumnValues::String(brand) },
            Column { name: "tags".into(), values: ColumnValues::StringList(tag) },
        ],
    }
}

/// Configs covering every op on every column type, every action, names, an absent column.
const CONFIGS: [&str; 8] = [
    r#"{"rules": [
        {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 1.5}},
        {"name": "cheap", "attribute": "price", "op": "lt", "value": 20, "action": {"add": 0.05}},
        {"attribute": "stock", "op": "le", "value": 2, "action": {"multiply": 0.5}},
        {"name": "clearance", "attribute": "tags", "op": "contains", "value": "clearance", "action": "bury"},
        {"name": "sponsored", "attribute": "sponsored", "op": "eq", "value": true, "action": {"pin": 0}}
    ]}"#,
    r#"{"rules": [
        {"attribute": "brand", "op": "contains", "value": "acme", "action": {"add": 0.3}},
        {"attribute": "brand", "op": "ne", "value": "zeta", "action": {"multiply": 0.9}},
        {"attribute": "price", "op": "ge", "value": 50.5, "action": {"multiply": 1.1}},
        {"attribute": "price", "op": "gt", "value": 90, "action": "bury"},
        {"attribute": "stock", "op": "eq", "value": 0, "action": "bury"}
    ]}"#,
    r#"{"rules": [
        {"name": "p2", "attribute": "tags", "op": "contains", "value": "new", "action": {"pin": 2}},
        {"name": "p0", "attribute": "brand", "op": "eq", "value": "orbit", "action": {"pin": 0}},
        {"attribute": "price", "op": "missing", "action": {"add": -0.2}},
        {"attribute": "brand", "op": "present", "action": {"add": 0.01}}
    ]}"#,
    r#"{"rules": [
        {"attribute": "sponsored", "op": "ne", "value": false, "action": {"multiply": 2}},
        {"attribute": "stock", "op": "gt", "value": 3, "action": {"add": 0.125}},
        {"attribute": "stock", "op": "missing", "action": "bury"},
        {"attribute": "tags", "op": "missing", "action": {"pin": 1}},
        {"attribute": "colour", "op": "missing", "action": {"add": 0.001}},
        {"attribute": "colour", "op": "eq", "value": "red", "action": {"add": 5}}
    ]}"#,
    r#"{"rules": [{"attribute": "price", "op": "le", "value": 30, "action": {"multiply": 0.1}}]}"#,
    r#"{"rules": []}"#,
    "",
    // Errors at run time: an op that does not apply to the column's type.
    r#"{"rules": [{"attribute": "brand", "op": "gt", "value": 3, "action": "bury"}]}"#,
];

/// Configs both must refuse when the stage is set up.
const BAD_CONFIGS: [&str; 6] = [
    r#"{"rules": [{"attribute": "brand", "op": "lt", "value": "a", "action": "bury"}]}"#,
    r#"{"rules": [{"attribute": "a", "op": "nope", "action": "bury"}]}"#,
    r#"{"rules": [{"attribute": "", "op": "present", "action": "bury"}]}"#,
    r#"{"rules": [{"attribute": "a", "op": "present", "action": {"pin": -1}}]}"#,
    r#"{"rules": [{"attribute": "a", "op": "present", "action": "bury", "extra": 1}]}"#,
    r#"{"rulez": []}"#,
];

#[test]
fn boost_in_typescript_answers_exactly_as_boost_in_rust() {
    if js_tools("boost_in_typescript_answers_exactly_as_boost_in_rust").is_none() {
        return;
    }
    let js = compile("boost-ts", &boost_ts_bytes());
    let rust = compile("boost", first_party::BOOST);
    assert!(js.size() > 500_000, "a QuickJS component carries the engine ({} bytes)", js.size());
    let rt = runtime();
    let ctx = RequestContext::new("shop");
    let mut compared = 0;
    for config in CONFIGS {
        let (rust_columns, _) = rt.columns(&rust, config.as_bytes(), &roomy());
        let (js_columns, _) = rt.columns(&js, config.as_bytes(), &roomy());
        assert_eq!(js_columns.unwrap(), rust_columns.unwrap(), "columns() with {config}");
        for (seed, n) in [(1, 300), (2, 300), (3, 120), (4, 57), (5, 1), (6, 0)] {
            let batch = random_batch(n, seed);
            let (want, _) = rt.call(&rust, &ctx, config.as_bytes(), &batch, &roomy());
            let (got, report) = rt.call(&js, &ctx, config.as_bytes(), &batch, &roomy());
            match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    assert_eq!(g.order, w.order, "order, seed {seed}, config {config}");
                    // f32 scores bit for bit: the port rounds every step with Math.fround.
                    let bits =
                        |s: &Option<Vec<f32>>| s.as_ref().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                    assert_eq!(bits(&g.scores), bits(&w.scores), "scores, seed {seed}, config {config}");
                    assert_eq!(g.reasons, w.reasons, "reasons, seed {seed}, config {config}");
                    assert!(report.fuel_used > 0);
                }
                (Err(StageFailure::PluginError { .. }), Err(StageFailure::PluginError { message })) => {
                    assert!(message.contains("does not apply"), "{message}");
                }
                _ => panic!("seed {seed}, config {config}: Rust {want:?} vs JS {got:?}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, CONFIGS.len() * 6);
    for config in BAD_CONFIGS {
        let (rust_columns, _) = rt.columns(&rust, config.as_bytes(), &roomy());
        let (js_columns, _) = rt.columns(&js, config.as_bytes(), &roomy());
        assert!(rust_columns.as_ref().is_ok_and(|c| c.is_err()), "Rust accepted {config}: {rust_columns:?}");
        assert!(js_columns.as_ref().is_ok_and(|c| c.is_err()), "JS accepted {config}: {js_columns:?}");
    }
}

#[test]
fn a_hostile_js_plugin_is_stopped_like_a_rust_one() {
    let Some(node_modules) = js_tools("a_hostile_js_plugin_is_stopped_like_a_rust_one") else {
        return;
    };
    let hostile = compile("hostile-js", &hostile_js_bytes(&node_modules));
    let rt = runtime();
    let ctx = RequestContext::new("shop");
    let batch = random_batch(20, 9);
    let call = |mode: &str, limits: &Limits| {
        let config = format!(r#"{{"mode": "{mode}"}}"#);
        rt.call(&hostile, &ctx, config.as_bytes(), &batch, limits)
    };

    let (ok, _) = call("ok", &roomy());
    assert_eq!(ok.unwrap().order, (0..20).collect::<Vec<u32>>(), "the well-behaved mode passes everything on");

    // An infinite loop: out of fuel under the default budget ...
    let (looped, report) = call("loop", &relaxed());
    assert!(matches!(looped, Err(StageFailure::FuelExhausted { .. })), "{looped:?}");
    assert!(report.fuel_used >= Limits::default().fuel);
    // ... and past the deadline when fuel is unbounded (epoch interruption).
    let endless = Limits { deadline_us: 20_000, fuel: u64::MAX / 4, ..Limits::default() };
    let (late, _) = call("loop", &endless);
    assert!(matches!(late, Err(StageFailure::DeadlineExceeded { .. })), "{late:?}");

    // Unbounded allocation: the memory cap holds. QuickJS turns the refused
    // grow into a JS out-of-memory error, which the plugin's error result carries,
    // or it traps; either way the call fails and the instance never exceeds the cap.
    let tight = Limits { memory_bytes: 8 << 20, fuel: u64::MAX / 4, deadline_us: 5_000_000, ..Limits::default() };
    let (grown, report) = call("grow", &tight);
    match &grown {
        Err(StageFailure::MemoryLimit { limit_bytes }) => assert_eq!(*limit_bytes, 8 << 20),
        Err(StageFailure::PluginError { message }) => {
            assert!(message.contains("memory"), "{message}")
        }
        other => panic!("expected the memory cap to stop it, got {other:?}"),
    }
    assert!(report.peak_memory_bytes <= 8 << 20, "peak {} over the cap", report.peak_memory_bytes);

    // Throwing is the stage's error; a log flood is cut at the cap and counted.
    let (thrown, _) = call("throw", &roomy());
    assert!(
        matches!(&thrown, Err(StageFailure::PluginError { message }) if message == "hostile: asked to fail"),
        "{thrown:?}"
    );
    let (flood, report) = call("log", &roomy());
    assert!(flood.is_ok());
    assert_eq!(report.logs.len(), Limits::default().max_log_lines);
    assert_eq!(report.logs_dropped, 1000 - Limits::default().max_log_lines as u64);

    // And the instance after all that is fresh: the next call is fine.
    assert!(call("ok", &roomy()).0.is_ok());
}

#[test]
fn a_new_js_plugin_builds_checks_and_runs_outside_the_workspace() {
    let Some(node_modules) = js_tools("a_new_js_plugin_builds_checks_and_runs_outside_the_workspace") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let edgerec = |args: &[&str], dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_edgerec")).args(args).current_dir(dir).output().unwrap()
    };
    let out = edgerec(&["plugin", "new", "demo-rule", "--lang", "js"], tmp.path());
    assert!(out.status.success(), "plugin new --lang js failed: {}", text(&out));
    let project = tmp.path().join("demo-rule");
    for file in
        ["package.json", "package-lock.json", "src/plugin.ts", "src/edgerec.ts", "wit/plugin.wit", "types/plugin.d.ts"]
    {
        assert!(project.join(file).is_file(), "{file} is missing");
    }
    // The project pins what sdk/js pins: its lock file is sdk/js's under the project's name.
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap()).unwrap();
    assert_eq!(lock["name"], "demo-rule");
    assert_eq!(lock["packages"]["node_modules/@bytecodealliance/jco"]["version"], "1.35.0");
    // Reuse the packages installed from that same lock file instead of a second `npm ci`.
    std::os::unix::fs::symlink(&node_modules, project.join("node_modules")).unwrap();

    let build = edgerec(&["plugin", "build"], &project);
    let log = text(&build);
    assert!(build.status.success(), "plugin build failed: {log}");
    assert!(log.contains("sample input:  passed"), "{log}");
    assert!(log.contains(r#"["price", "on_sale"]"#), "{log}");

    // A deadline a loaded CI machine cannot trip (the limits are reported, not under test).
    std::fs::write(project.join("limits.json"), r#"{"deadline_us": 5000000}"#).unwrap();
    let run = edgerec(
        &[
            "plugin",
            "run",
            "dist/demo-rule.wasm",
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
    // The same rule and sample as the Rust template: the same answer.
    assert_eq!(output["order"], serde_json::json!([3, 1, 4]));
    let scores: Vec<f32> = serde_json::from_value(output["scores"].clone()).unwrap();
    assert_eq!(scores, vec![0.74f32 * 1.5, 0.85, 0.6]);
    assert_eq!(output["reasons"], serde_json::json!(["on-sale", "", ""]));
    assert_eq!(report["report"]["logs"][0]["message"], "kept 3 of 5 candidates");

    // A config typo is refused by the check, as in Rust.
    std::fs::write(project.join("typo.json"), r#"{"minPrize": 3}"#).unwrap();
    let typo = edgerec(&["plugin", "check", "dist/demo-rule.wasm", "--config", "typo.json"], &project);
    assert!(!typo.status.success() && text(&typo).contains("unknown field `minPrize`"), "{}", text(&typo));
}
