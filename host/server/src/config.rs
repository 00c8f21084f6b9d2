//! The server configuration: TOML file, then `EDGEREC_SERVE_<KEY>` environment
//! overrides, then command-line flags. Each key is defined once, in
//! `config_keys!`'s table below (name, type, default as TOML, meaning), from
//! which the struct's fields and their docs, the defaults, [`KEYS`] (the
//! `--help` text and the environment variables' names) all derive, so that
//! they can never disagree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use edgerec_kernels::BackendChoice;
use serde::Deserialize;

/// Prefix of the environment variable that overrides a key (`EDGEREC_SERVE_LISTEN`).
pub const ENV_PREFIX: &str = "EDGEREC_SERVE_";

/// Builds [`ServerConfig`], [`KEYS`] and the defaults from one table of
/// `name: Type = "default as TOML", "meaning";` rows.
macro_rules! config_keys {
    ($( $(#[$attr:meta])* $name:ident: $type:ty = $default:literal, $meaning:literal; )+) => {
        /// The resolved configuration of `edgerec serve`.
        #[derive(Clone, Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServerConfig {
            $( #[doc = $meaning] $(#[$attr])* pub $name: $type, )+
        }

        /// Every configuration key: name, default (as TOML), meaning.
        pub const KEYS: &[(&str, &str, &str)] = &[$( (stringify!($name), $default, $meaning), )+];
    };
}

config_keys! {
    listen: SocketAddr = "\"127.0.0.1:8080\"",
        "address the HTTP API listens on";
    data_dir: PathBuf = "\"edgerec-data\"",
        "directory of the embedded store (store.redb) and the event outbox, created if absent";
    store: String = "\"\"",
        "where tenants, events, catalogs, plugins and pipelines live: empty = the embedded store in data_dir (one host); `redis://HOST:PORT` or `redis+cluster://H1:P1,H2:P2,…` = shared by every host on it";
    demo_tenant: bool = "true",
        "create the `demo` tenant (bundled demo model, catalog, default pipeline) on first start";
    max_body_bytes: usize = "1048576",
        "largest JSON request body; larger bodies get 413 payload_too_large";
    max_plugin_bytes: usize = "16777216",
        "largest plugin component upload";
    max_model_bytes: usize = "268435456",
        "largest model bundle upload (PUT …/models/{version})";
    request_timeout_ms: u64 = "5000",
        "a request still running after this gets 503 timeout";
    max_in_flight: usize = "64",
        "recommend requests admitted at once; more get a fast 503 overloaded with Retry-After";
    encode_concurrency: usize = "0",
        "encodes running at once (0 = number of CPU cores)";
    plugin_concurrency: usize = "0",
        "plugin pipelines running at once (0 = number of CPU cores)";
    retry_after_s: u64 = "1",
        "the Retry-After of a 503 overloaded";
    cache_bytes: u64 = "67108864",
        "memory bound of EACH tenant's per-user encoder-state cache (one tenant cannot evict another's users)";
    candidates: usize = "100",
        "items retrieved by the model and handed to the pipeline";
    plugin_deadline_us: u64 = "5000",
        "wall-clock deadline of one plugin stage call (instantiation included) for stages that set no `limits` (JavaScript plugins: at least 50000, with 750 M fuel); past it the stage fails with deadline_exceeded and its on_error applies";
    max_k: usize = "100",
        "largest `k` a recommend may ask for (at most `candidates`)";
    otlp_endpoint: String = "\"\"",
        "OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); empty = no export";
    log_format: String = "\"text\"",
        "`text` or `json` (structured logs on stderr; filter with RUST_LOG)";
    max_connections: usize = "1024",
        "client connections held open at once; further clients wait in the listen backlog";
    header_read_timeout_ms: u64 = "5000",
        "a client must send its request headers within this, or the connection is closed";
    body_read_timeout_ms: u64 = "10000",
        "a client must send its whole request body within this, or gets 400";
    tenant_recommend_rate: u32 = "1000",
        "recommends per second one tenant may send (0 = unlimited); beyond it 429 rate_limited with Retry-After";
    tenant_write_rate: u32 = "200",
        "event batches and catalog requests (writes and reads) per second one tenant may send (0 = unlimited); beyond it 429";
    tenant_max_in_flight: usize = "32",
        "requests of one tenant in flight at once; beyond it 429 rate_limited";
    max_future_skew_s: i64 = "86400",
        "event timestamps more than this many seconds ahead of the server clock are refused with 400";
    #[serde(deserialize_with = "backend_choice")]
    backend: BackendChoice = "\"auto\"",
        "engine that encodes and scores: `auto` (CUDA when it loads, else the CPU; the log says which and why), `cpu`, `cuda`, or `cuda-emu` (the CUDA kernels on the CPU emulator: tests only, slow); a tenant may override it";
    max_batch: usize = "32",
        "recommends of one tenant encoded and scored together in one backend call (1 = no batching: each request on its own)";
    max_wait_us: u64 = "0",
        "how long a recommend may wait for others to batch with (0 = batch only what is already queued: no added latency)";
    // Connection lifetimes and retention (issue 21).
    first_request_timeout_ms: u64 = "5000",
        "a new connection must deliver its first request (HTTP/1 or HTTP/2, the bytes that tell which included) within this, or it is closed and its place in max_connections freed";
    idle_timeout_ms: u64 = "60000",
        "a connection with no request in flight for this long is closed (HTTP/2 gets a GOAWAY; an HTTP/1 connection already waits at most header_read_timeout_ms for its next request)";
    user_ttl_days: u64 = "90",
        "Redis store: a user's events and event ids expire this many days after their last event (0 = never); both stores keep each user's newest 2 × max_seq_len events regardless";
    // Bytes are the unit of every bound (issue 21): what one tenant may make the host read, hold or compile.
    max_item_bytes: usize = "65536",
        "largest catalog item (its attributes as JSON); a larger one gets 413 payload_too_large";
    max_page_bytes: usize = "1048576",
        "largest catalog listing page (attributes as JSON); a page ends early, with `next`, when the next item would pass it (a page holds at least one item)";
    catalog_memory_bytes: usize = "1073741824",
        "memory bound of EACH tenant's in-memory catalog snapshot (typed columns; about 35 bytes per item for five attributes); an upsert that would pass it gets 507 catalog_full";
    known_items_cache_bytes: u64 = "16777216",
        "memory bound of EACH tenant's cache of ids of catalog items its model does not know (what event checks use while the shared store is away)";
    tenant_plugin_concurrency: usize = "0",
        "plugin pipelines one tenant may run at once (0 = half of plugin_concurrency, at least 1); its other recommends wait within the request deadline";
    tenant_catalog_read_concurrency: usize = "1",
        "catalog reads (GET …/catalog/items, …/items/{id}) one tenant may run at once; its other reads wait within the request deadline, so that a tenant paging through large items holds at most this many threads";
    tenant_catalog_read_bytes_rate: u64 = "16777216",
        "bytes of attributes per second one tenant's catalog reads may return (0 = unlimited): after a read of B bytes the tenant's next read waits B / rate seconds (within the request deadline), so that paging through large items costs its own time, not the host's";
    upload_concurrency: usize = "2",
        "plugin and model uploads checked (compiled, unpacked, loaded) at once; more get 503 overloaded with Retry-After";
    plugin_compile_timeout_ms: u64 = "60000",
        "the time one plugin upload's compile (a child process) may take before it is killed and the upload refused";
    plugin_compile_memory_bytes: u64 = "2147483648",
        "the memory one plugin upload's compile (a child process) may use before it fails and the upload is refused";
    // The operator console (issue 25).
    console_session_ttl_s: u64 = "28800",
        "how long a console login lasts (seconds) before the operator must log in again";
    console_secure_cookie: bool = "false",
        "mark the console's session cookie Secure (HTTPS only): set it when a TLS proxy serves the console (a request forwarded with X-Forwarded-Proto: https gets a Secure cookie regardless)";
}

impl Default for ServerConfig {
    /// Every key at the default its table row gives.
    fn default() -> Self {
        ServerConfig::from_table(toml::Table::new()).expect("the defaults in config_keys! are valid")
    }
}

/// Reads a [`BackendChoice`] from its name (`auto`, `cpu`, `cuda`, `cuda-emu`).
pub fn backend_choice<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BackendChoice, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

impl ServerConfig {
    /// Reads `path` (if given), applies `EDGEREC_SERVE_*` overrides from
    /// `env`, and checks the result.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if !KEYS.iter().any(|(k, _, _)| *k == key) {
                anyhow::bail!("{name} names no configuration key; see `edgerec serve --help` for the keys");
            }
            table.insert(key, env_value(&value));
        }
        let config = ServerConfig::from_table(table)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration `table` gives, each key it lacks at its default.
    fn from_table(mut table: toml::Table) -> anyhow::Result<Self> {
        for (key, default, _) in KEYS {
            if !table.contains_key(*key) {
                let value = format!("v = {default}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
                let value = value.with_context(|| format!("the default of {key} ({default}) is not TOML"))?;
                table.insert((*key).to_string(), value);
            }
        }
        toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (see `edgerec serve --help` for every key and its type)")
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_in_flight > 0, "max_in_flight must be at least 1");
        anyhow::ensure!(self.candidates > 0, "candidates must be at least 1");
        anyhow::ensure!(
            self.max_k > 0 && self.max_k <= self.candidates,
            "max_k must be in 1..=candidates ({})",
            self.candidates
        );
        anyhow::ensure!(self.request_timeout_ms > 0, "request_timeout_ms must be positive");
        anyhow::ensure!(self.plugin_deadline_us > 0, "plugin_deadline_us must be positive");
        anyhow::ensure!(self.max_connections > 0, "max_connections must be at least 1");
        anyhow::ensure!(self.header_read_timeout_ms > 0, "header_read_timeout_ms must be positive");
        anyhow::ensure!(self.body_read_timeout_ms > 0, "body_read_timeout_ms must be positive");
        anyhow::ensure!(self.tenant_max_in_flight > 0, "tenant_max_in_flight must be at least 1");
        anyhow::ensure!(self.max_future_skew_s >= 0, "max_future_skew_s must not be negative");
        anyhow::ensure!(self.max_batch > 0, "max_batch must be at least 1 (1 turns batching off)");
        anyhow::ensure!(
            self.max_wait_us <= 1_000_000,
            "max_wait_us must be at most 1000000 (a second); a request should not wait longer for company"
        );
        anyhow::ensure!(self.first_request_timeout_ms > 0, "first_request_timeout_ms must be positive");
        anyhow::ensure!(self.idle_timeout_ms > 0, "idle_timeout_ms must be positive");
        anyhow::ensure!(
            self.user_ttl_days <= 36_500,
            "user_ttl_days must be at most 36500 (100 years); 0 keeps users for ever"
        );
        anyhow::ensure!(self.max_item_bytes > 0, "max_item_bytes must be at least 1");
        anyhow::ensure!(self.max_page_bytes > 0, "max_page_bytes must be at least 1");
        anyhow::ensure!(self.upload_concurrency > 0, "upload_concurrency must be at least 1");
        anyhow::ensure!(self.console_session_ttl_s > 0, "console_session_ttl_s must be at least 1");
        anyhow::ensure!(self.plugin_compile_timeout_ms > 0, "plugin_compile_timeout_ms must be at least 1");
        anyhow::ensure!(
            self.plugin_compile_memory_bytes >= 16 << 20,
            "plugin_compile_memory_bytes must be at least 16 MiB (16777216): a compiler needs that much to start"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "log_format must be \"text\" or \"json\", not {:?}",
            self.log_format
        );
        Ok(())
    }

    /// How long a user's keys live on Redis after their last event (`None`: for ever).
    pub fn user_ttl(&self) -> Option<std::time::Duration> {
        (self.user_ttl_days > 0).then(|| std::time::Duration::from_secs(self.user_ttl_days * 24 * 3600))
    }

    /// Effective encode concurrency.
    pub fn encode_permits(&self) -> usize {
        effective(self.encode_concurrency)
    }

    /// Effective plugin concurrency.
    pub fn plugin_permits(&self) -> usize {
        effective(self.plugin_concurrency)
    }

    /// Plugin pipelines one tenant may run at once: as configured (at most
    /// the server's), else half the server's, so that one tenant's
    /// recommends always leave plugin slots to the others.
    pub fn tenant_plugin_permits(&self) -> usize {
        let all = self.plugin_permits();
        match self.tenant_plugin_concurrency {
            0 => all.div_ceil(2).min(all.saturating_sub(1)).max(1),
            n => n.min(all),
        }
    }
}

fn effective(configured: usize) -> usize {
    if configured > 0 { configured } else { std::thread::available_parallelism().map_or(2, |n| n.get()) }
}

/// An environment value as TOML when it parses as a scalar (numbers,
/// booleans), else as a plain string (addresses, paths).
fn env_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// The key table as `--help` text.
pub fn keys_help() -> String {
    let mut text = String::from(
        "Configuration keys (TOML file given by --config; each can be overridden by the\n\
         environment variable EDGEREC_SERVE_<KEY in upper case>; flags override both).\n\
         EDGEREC_OPERATOR_TOKEN and EDGEREC_DEMO_API_KEY set the operator token and the\n\
         demo tenant's API key instead of the generated ones.\n\n",
    );
    for (key, default, meaning) in KEYS {
        text.push_str(&format!("  {key} = {default}\n      {meaning}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_documented_once_and_its_default_is_the_servers() {
        let names: std::collections::HashSet<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(names.len(), KEYS.len(), "a key is listed twice");
        let defaults = ServerConfig::default();
        assert_eq!(defaults.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((defaults.max_body_bytes, defaults.cache_bytes, defaults.max_k), (1 << 20, 64 << 20, 100));
        assert_eq!(defaults.backend, BackendChoice::Auto);
        assert!(defaults.demo_tenant && defaults.store.is_empty());
        defaults.validate().expect("the defaults are a valid configuration");
        // A file that sets a key's default changes nothing.
        let written: toml::Table =
            KEYS.iter().map(|(k, d, _)| format!("{k} = {d}")).collect::<Vec<_>>().join("\n").parse().unwrap();
        assert_eq!(format!("{:?}", ServerConfig::from_table(written).unwrap()), format!("{defaults:?}"));
    }

    #[test]
    fn file_then_environment_then_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgerec.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ncandidates = 50\nmax_k = 20\n").unwrap();
        let env = vec![
            ("EDGEREC_SERVE_CANDIDATES".to_string(), "80".to_string()),
            ("EDGEREC_SERVE_DATA_DIR".to_string(), "/tmp/x y".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let config = ServerConfig::load(Some(&path), env).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.candidates, 80);
        assert_eq!(config.max_k, 20);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x y"));

        let bad = vec![("EDGEREC_SERVE_NOPE".to_string(), "1".to_string())];
        assert!(ServerConfig::load(None, bad).is_err());
        let bad = vec![("EDGEREC_SERVE_MAX_K".to_string(), "1000".to_string())];
        assert!(ServerConfig::load(None, bad).is_err());
        std::fs::write(&path, "listen = 5\n").unwrap();
        assert!(ServerConfig::load(Some(&path), Vec::new()).is_err());
    }

    #[test]
    fn a_tenants_plugin_share_leaves_slots_to_the_others() {
        let share = |plugin_concurrency, tenant_plugin_concurrency| {
            ServerConfig { plugin_concurrency, tenant_plugin_concurrency, ..ServerConfig::default() }
                .tenant_plugin_permits()
        };
        assert_eq!([share(1, 0), share(2, 0), share(3, 0), share(16, 0)], [1, 1, 2, 8]);
        assert_eq!([share(8, 3), share(4, 9)], [3, 4], "as configured, at most the server's");
    }
}
