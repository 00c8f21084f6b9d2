//! `edgerec plugin push`: uploads a component to a server
//! (`PUT /v1/tenants/{tenant}/plugins/{name}`) and, when asked, activates a
//! new pipeline version with it placed after a named stage
//! (`GET` then `PUT /v1/tenants/{tenant}/pipeline`).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::build::project;
use super::new::check_name;

/// `edgerec plugin push`.
#[derive(Args)]
pub struct PushArgs {
    /// A component file, or a project directory (its built component; run `edgerec plugin build` first).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// The tenant to upload to.
    #[arg(long)]
    tenant: String,
    /// The plugin's name on the server (default: the name the component declares, else the project's
    /// package name or the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Store the component under --name even though it declares another plugin name (the server
    /// refuses that with 409 otherwise).
    #[arg(long, requires = "name")]
    replace: bool,
    /// The operator token (printed by the server at start).
    #[arg(long, env = "EDGEREC_OPERATOR_TOKEN", hide_env_values = true)]
    token: String,
    /// Also activate a new pipeline version with this plugin right after the stage running the plugin named
    /// STAGE (`start` = first). A stage already running this plugin is removed (its config and limits kept
    /// unless --config is given).
    #[arg(long, value_name = "STAGE")]
    activate_after: Option<String>,
    /// The stage config (JSON file) for --activate-after.
    #[arg(long, requires = "activate_after")]
    config: Option<PathBuf>,
    /// The stage's error policy for --activate-after: `skip` (candidates pass on unchanged) or `fail`.
    #[arg(long, requires = "activate_after", value_parser = ["skip", "fail"])]
    on_error: Option<String>,
}

/// Runs `edgerec plugin push`.
pub fn push(args: PushArgs) -> Result<()> {
    let (file, default_name) = if args.path.is_dir() {
        let project = project(&args.path)?;
        if !project.artifact.is_file() {
            bail!(
                "{} is not built yet: run `edgerec plugin build {}`",
                project.artifact.display(),
                args.path.display()
            );
        }
        (project.artifact, project.name)
    } else {
        let stem = args.path.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_default();
        (args.path.clone(), stem)
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = args.name.clone().or_else(|| edgerec_runtime::declared_name(&bytes)).unwrap_or(default_name);
    check_name(&name)?;
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_slice::<Value>(&text).with_context(|| format!("{} is not JSON", path.display()))?)
        }
        None => None,
    };
    if args.url.starts_with("https://") {
        bail!("this build of edgerec speaks plain HTTP only: push through a local port or tunnel (http://…)");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(push_async(&args, &name, bytes, config))
}

async fn push_async(args: &PushArgs, name: &str, bytes: Vec<u8>, config: Option<Value>) -> Result<()> {
    let client = reqwest::Client::new();
    let base = format!("{}/v1/tenants/{}", args.url.trim_end_matches('/'), args.tenant);
    let size = bytes.len();
    let answer = client
        .put(format!("{base}/plugins/{name}{}", if args.replace { "?replace=true" } else { "" }))
        .bearer_auth(&args.token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("could not reach {} (is `edgerec serve` running there?)", args.url))?;
    let uploaded = answer_json(answer, "the upload").await?;
    let version = uploaded["version"].as_u64().context("the server's upload answer has no version")?;
    println!(
        "uploaded {name} version {version} ({size} bytes, sha256 {}) to tenant {}",
        uploaded["digest"].as_str().unwrap_or("?"),
        args.tenant
    );
    let Some(after) = &args.activate_after else {
        println!("not activated: pass --activate-after STAGE, or PUT {base}/pipeline yourself");
        return Ok(());
    };
    let history = answer_json(
        client.get(format!("{base}/pipeline")).bearer_auth(&args.token).send().await.context("reading the pipeline")?,
        "reading the pipeline",
    )
    .await?;
    let active = history["active"].as_u64().unwrap_or(0);
    let current: Vec<Value> = history["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|v| v["version"].as_u64() == Some(active)))
        .and_then(|v| v["stages"].as_array().cloned())
        .unwrap_or_default();
    let stages = place_stage(current, name, version, after, config, args.on_error.as_deref())?;
    let record = answer_json(
        client
            .put(format!("{base}/pipeline"))
            .bearer_auth(&args.token)
            .json(&json!({ "stages": stages }))
            .send()
            .await
            .context("activating the pipeline")?,
        "activating the pipeline",
    )
    .await?;
    let names: Vec<String> = record["stages"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|st| format!("{}@{}", st["plugin"].as_str().unwrap_or("?"), st["version"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    println!("activated pipeline version {}: {}", record["version"], names.join(" → "));
    Ok(())
}

/// The stages with `name@version` placed right after the first stage running
/// plugin `after` (`start` = first); any earlier stage of `name` is removed,
/// its config, error policy and limits carried over unless replaced.
pub fn place_stage(
    mut stages: Vec<Value>,
    name: &str,
    version: u64,
    after: &str,
    config: Option<Value>,
    on_error: Option<&str>,
) -> Result<Vec<Value>> {
    let previous = stages.iter().position(|s| s["plugin"] == name).map(|i| stages.remove(i));
    let at = if after == "start" {
        0
    } else {
        let found = stages.iter().position(|s| s["plugin"] == after);
        let Some(found) = found else {
            let present: Vec<&str> = stages.iter().filter_map(|s| s["plugin"].as_str()).collect();
            bail!(
                "the active pipeline has no stage running {after:?} (it has {present:?}); use one of those or `start`"
            );
        };
        found + 1
    };
    let mut stage = previous.unwrap_or_else(|| json!({ "plugin": name }));
    stage["version"] = json!(version);
    if let Some(config) = config {
        stage["config"] = config;
    }
    if let Some(on_error) = on_error {
        stage["on_error"] = json!(on_error);
    }
    stages.insert(at, stage);
    Ok(stages)
}

/// The answer's JSON on success; its error message otherwise.
async fn answer_json(answer: reqwest::Response, what: &str) -> Result<Value> {
    let status = answer.status();
    let text = answer.text().await.with_context(|| format!("reading the server's answer to {what}"))?;
    if !status.is_success() {
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().or(v["message"].as_str()).map(str::to_owned))
            .unwrap_or(text);
        let hint = match status.as_u16() {
            401 => " (check EDGEREC_OPERATOR_TOKEN: the server prints its operator token at start)",
            404 => " (check --url and --tenant)",
            413 => " (the component is over the server's max_plugin_bytes)",
            _ => "",
        };
        bail!("{what} failed: HTTP {status}: {detail}{hint}");
    }
    serde_json::from_str(&text).with_context(|| format!("the server's answer to {what} is not JSON: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(plugin: &str, version: u64) -> Value {
        json!({"plugin": plugin, "version": version, "config": {"x": version}, "on_error": "skip"})
    }

    #[test]
    fn places_after_the_named_stage_and_replaces_an_older_version() {
        let stages = vec![stage("in-stock", 1), stage("mine", 1), stage("diversity", 2)];
        let out = place_stage(stages.clone(), "mine", 2, "diversity", None, Some("fail")).unwrap();
        let order: Vec<(&str, u64)> =
            out.iter().map(|s| (s["plugin"].as_str().unwrap(), s["version"].as_u64().unwrap())).collect();
        assert_eq!(order, vec![("in-stock", 1), ("diversity", 2), ("mine", 2)]);
        assert_eq!(out[2]["config"], json!({"x": 1}), "the old stage's config is kept");
        assert_eq!(out[2]["on_error"], "fail");
        let first = place_stage(stages.clone(), "new", 1, "start", Some(json!({"a": 1})), None).unwrap();
        assert_eq!(first[0], json!({"plugin": "new", "version": 1, "config": {"a": 1}}));
        let err = place_stage(stages, "new", 1, "nope", None, None).unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("in-stock"), "{err}");
    }
}
