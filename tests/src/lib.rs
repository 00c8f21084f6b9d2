//! Harness of the end-to-end tests: builds and spawns the real `edgerec
//! serve` on a loopback port the OS picks, talks HTTP to it, and writes the
//! small random models the tests' tenants use. Every server gets its own
//! temporary data directory, removed when the test ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Model, ModelConfig};
use serde_json::Value;

pub mod redis;

/// The operator token every test server uses.
pub const OPERATOR: &str = "eo_test_operator_token";
/// The demo tenant's API key every test server uses.
pub const DEMO_KEY: &str = "ek_test_demo_key";

/// The `edgerec` binary, built once per test process (a no-op when fresh).
/// `EDGEREC_E2E_BIN` points at a prebuilt binary instead.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("EDGEREC_E2E_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        // `--workspace --tests` resolves features exactly as `cargo test
        // --workspace` does, so after that command this is a no-op on the very
        // binary it built; `-p edgerec-host` alone would resolve fewer
        // features and rebuild wasmtime, candle and the rest a second time.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--workspace", "--tests", "--bin", "edgerec"]);
        if release {
            build.arg("--release");
        }
        let status = build.env("CARGO_TARGET_DIR", &target_dir).status().expect("run cargo build");
        assert!(status.success(), "building the edgerec binary failed");
        profile_dir.join("edgerec")
    })
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Create the demo tenant.
    pub demo: bool,
    /// Extra environment (`EDGEREC_SERVE_*` overrides).
    pub env: Vec<(String, String)>,
    /// Let the server generate its operator token and demo key (the
    /// environment sets neither) instead of the fixed test secrets.
    pub generated_secrets: bool,
    /// The store (`redis://…`) shared with other servers; `None` = the
    /// server's own: its embedded store, or, when `EDGEREC_E2E_STORE=redis`,
    /// a Redis of its own with its data beside the data directory (so that a
    /// server restarted on the same directory finds its state in both modes).
    pub store: Option<String>,
}

/// Whether `EDGEREC_E2E_STORE=redis` runs every server of the suite on Redis.
pub fn suite_on_redis() -> bool {
    std::env::var("EDGEREC_E2E_STORE").is_ok_and(|v| v == "redis")
}

/// A running `edgerec serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// The server's own Redis (`EDGEREC_E2E_STORE=redis`), stopped with it.
    _own_redis: Option<redis::RedisServer>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    client: reqwest::blocking::Client,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server on `data_dir` and waits until /readyz answers 200.
    pub fn start(data_dir: &Path, options: &Options) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("log file");
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("EDGEREC_SERVE_DEMO_TENANT", if options.demo { "true" } else { "false" })
            // These tests check behaviour, not wall-clock budgets: on a loaded
            // 2-core CI machine a 5 ms stage deadline trips now and then, and a
            // skipped stage changes an answer (seen in a clean-clone run). The
            // deadline itself is tested in edgerec-runtime's hostile tests.
            .env("EDGEREC_SERVE_PLUGIN_DEADLINE_US", "2000000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        if options.generated_secrets {
            command.env_remove("EDGEREC_OPERATOR_TOKEN").env_remove("EDGEREC_DEMO_API_KEY");
        } else {
            command.env("EDGEREC_OPERATOR_TOKEN", OPERATOR).env("EDGEREC_DEMO_API_KEY", DEMO_KEY);
        }
        let mut own_redis = None;
        match &options.store {
            Some(store) => {
                command.env("EDGEREC_SERVE_STORE", store);
            }
            None if suite_on_redis() => {
                let redis = redis::RedisServer::start(&data_dir.with_extension("redis"));
                command.env("EDGEREC_SERVE_STORE", redis.url());
                own_redis = Some(redis);
            }
            None => {}
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn edgerec serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("edgerec listening on ") {
                    let _ = tx.send(address.to_string());
                }
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
                panic!("edgerec serve did not start within 120 s; its log:\n{log}");
            }
        };
        let client =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client");
        let server =
            Server { child, _own_redis: own_redis, base, data_dir: data_dir.to_path_buf(), client, stdout: lines };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/readyz", None).0 != 200 {
            assert!(Instant::now() < deadline, "/readyz never answered 200");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Sends a request; returns the status and the JSON body (Null when not JSON).
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.bytes().expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A JSON POST; returns the status, the `Retry-After` header and the body.
    pub fn post_with_retry_after(&self, path: &str, token: &str, body: &Value) -> (u16, Option<String>, Value) {
        self.json_with_retry_after("POST", path, token, body)
    }

    /// A JSON request; returns the status, the `Retry-After` header and the body.
    pub fn json_with_retry_after(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let body = response.json().unwrap_or(Value::Null);
        (status, retry_after, body)
    }

    /// GET.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request("GET", path, token, None)
    }

    /// A JSON request.
    pub fn json(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.request(method, path, token, Some(serde_json::to_vec(body).expect("json")))
    }

    /// The raw text of a GET (e.g. /metrics).
    pub fn text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().expect("request");
        (response.status().as_u16(), response.text().expect("text"))
    }

    /// Every line the server printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// `host:port` of the server, for raw TCP clients.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A request with extra headers; returns the status, the headers and the JSON body.
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().expect("body");
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The server's process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now and at its peak, in bytes
    /// (`VmRSS`, `VmHWM` of `/proc/<pid>/status`).
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none() && self.get("/healthz", None).0 == 200
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait (at most 60 s) for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every byte the store of a server on `data_dir` holds on disk: its redb
/// file, or, on Redis (`EDGEREC_E2E_STORE=redis`), its Redis's files.
pub fn stored_bytes(data_dir: &Path) -> Vec<u8> {
    fn walk(path: &Path, out: &mut Vec<u8>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
                walk(&entry.path(), out);
            }
        } else {
            out.extend(std::fs::read(path).expect("read a store file"));
        }
    }
    let mut out = Vec::new();
    if suite_on_redis() {
        walk(&data_dir.with_extension("redis"), &mut out);
    } else {
        out = std::fs::read(data_dir.join("store.redb")).expect("store file");
    }
    out
}

/// Writes a small random model whose items are `sku-1..=sku-<num_items>`
/// into `dir`; returns the external ids in model order.
pub fn write_model(dir: &Path, num_items: usize, seed: u64) -> Vec<String> {
    let config = ModelConfig::research(num_items, 32, 2, 2, 16, 50);
    let model = Model::random(config, seed).expect("random model");
    model.save(dir).expect("save model");
    let ids: Vec<String> = (1..=num_items).map(|i| format!("sku-{i}")).collect();
    ItemMap::from_external_ids(ids.clone()).expect("unique ids").save(dir).expect("save items.json");
    ids
}

/// A test's temporary directory, with `data` (the server's) inside.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory.
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Creates tenant `name` on a model directory; returns its API key.
pub fn create_tenant(server: &Server, name: &str, model_dir: &Path) -> String {
    create_tenant_on(server, name, model_dir, None)["api_key"].as_str().expect("api_key").to_string()
}

/// Creates tenant `name` on a model directory, served by `backend` when
/// given (else the server's); returns the creation answer (its `api_key`,
/// the `backend` serving it, …).
pub fn create_tenant_on(server: &Server, name: &str, model_dir: &Path, backend: Option<&str>) -> Value {
    let mut request = serde_json::json!({"name": name, "model": model_dir.to_str().expect("utf-8 path")});
    if let Some(backend) = backend {
        request["backend"] = backend.into();
    }
    let (status, body) = server.json("POST", "/v1/tenants", Some(OPERATOR), &request);
    assert_eq!(status, 201, "create tenant {name}: {body}");
    body
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Item ids of a recommend answer.
pub fn items(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .map(|i| i["item"].as_str().expect("item id").to_string())
        .collect()
}
