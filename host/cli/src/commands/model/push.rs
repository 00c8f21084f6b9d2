//! `edgerec model push`: uploads a model directory to a server as a model
//! version (`PUT /v1/tenants/{tenant}/models/{version}`, a tar of its three
//! files) and, when asked, activates it (`POST …/models/{version}/activate`).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::Value;

/// `edgerec model push`.
#[derive(Args)]
pub struct ModelPushArgs {
    /// A model directory (config.json, model.safetensors, items.json: what
    /// `edgerec train` and `edgerec model import` write).
    dir: PathBuf,
    /// The server, e.g. `http://127.0.0.1:8080` (any host: hosts on one Redis share it).
    #[arg(long)]
    url: String,
    /// The tenant to upload to.
    #[arg(long)]
    tenant: String,
    /// The version's name (1..=64 of a-z, A-Z, 0-9, '-', '_', '.'); versions are immutable.
    #[arg(long, value_name = "VERSION")]
    model_version: String,
    /// Also activate it (hot swap; `POST …/models/rollback` undoes it).
    #[arg(long)]
    activate: bool,
    /// The operator token (printed by the server at start).
    #[arg(long, env = "EDGEREC_OPERATOR_TOKEN", hide_env_values = true)]
    token: String,
}

/// Runs `edgerec model push`.
pub fn push(args: ModelPushArgs) -> Result<()> {
    let mut bundle = tar::Builder::new(Vec::new());
    for name in ["config.json", "model.safetensors", "items.json"] {
        let path = args.dir.join(name);
        if !path.is_file() {
            bail!("{} is not a model directory: {name} is missing", args.dir.display());
        }
        bundle.append_path_with_name(&path, name).with_context(|| format!("reading {}", path.display()))?;
    }
    let bundle = bundle.into_inner().context("writing the bundle")?;
    if args.url.starts_with("https://") {
        bail!("this build of edgerec speaks plain HTTP only: push through a local port or tunnel (http://…)");
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .context("starting the HTTP client")?;
    let base = format!("{}/v1/tenants/{}/models/{}", args.url.trim_end_matches('/'), args.tenant, args.model_version);
    let size = bundle.len();
    let answer = client
        .put(&base)
        .bearer_auth(&args.token)
        .header("content-type", "application/x-tar")
        .body(bundle)
        .send()
        .with_context(|| format!("could not reach {} (is `edgerec serve` running there?)", args.url))?;
    let stored = answer_json(answer, "the upload")?;
    println!(
        "uploaded model version {} ({size} bytes, sha256 {}) to tenant {}",
        args.model_version,
        stored["digest"].as_str().unwrap_or("?"),
        args.tenant
    );
    if !args.activate {
        println!("not activated: pass --activate, or POST {base}/activate");
        return Ok(());
    }
    let answer = client.post(format!("{base}/activate")).bearer_auth(&args.token).send().context("activating")?;
    answer_json(answer, "the activation")?;
    println!("activated model version {} for tenant {}", args.model_version, args.tenant);
    Ok(())
}

fn answer_json(answer: reqwest::blocking::Response, what: &str) -> Result<Value> {
    let status = answer.status();
    let text = answer.text().with_context(|| format!("reading the server's answer to {what}"))?;
    if !status.is_success() {
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        let hint = match status.as_u16() {
            401 => " (check EDGEREC_OPERATOR_TOKEN: the server prints its operator token at start)",
            404 => " (check --url and --tenant)",
            413 => " (the bundle is over the server's max_model_bytes)",
            _ => "",
        };
        bail!("{what} failed: HTTP {status}: {detail}{hint}");
    }
    serde_json::from_str(&text).with_context(|| format!("the server's answer to {what} is not JSON: {text}"))
}
