//! `edgerec plugin build [DIR]`: builds a plugin project (cargo for Rust, npm
//! for JS) and runs the same check as `edgerec plugin check`, in one step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::new::{Lang, detect, js_artifact, rust_artifact};

/// `edgerec plugin build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The project (made by `edgerec plugin new`).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

/// A project's plugin name and the component it builds.
pub struct Project {
    /// The package name (the plugin's default name on the server).
    pub name: String,
    /// The component file.
    pub artifact: PathBuf,
}

/// Reads a project's name and where its component lands (for Rust, asking
/// cargo for the target directory, which `CARGO_TARGET_DIR` or a config may move).
pub fn project(dir: &Path) -> Result<Project> {
    match detect(dir)? {
        Lang::Rust => {
            let manifest = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let table: toml::Table =
                text.parse().with_context(|| format!("{} is not valid TOML", manifest.display()))?;
            let name = table
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(toml::Value::as_str)
                .with_context(|| format!("{} has no [package] name", manifest.display()))?
                .to_owned();
            let output = Command::new(cargo())
                .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
                .current_dir(dir)
                .output()
                .context("running `cargo metadata` (is Rust installed? https://rustup.rs)")?;
            if !output.status.success() {
                bail!(
                    "`cargo metadata` failed in {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let metadata: serde_json::Value =
                serde_json::from_slice(&output.stdout).context("`cargo metadata` printed something other than JSON")?;
            let target = metadata["target_directory"].as_str().context("`cargo metadata` gave no target directory")?;
            let artifact = rust_artifact(&name);
            let relative = artifact.strip_prefix("target/").unwrap_or(&artifact);
            Ok(Project { artifact: Path::new(target).join(relative), name })
        }
        Lang::Js => {
            let manifest = dir.join("package.json");
            let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", manifest.display()))?;
            let name = json["name"].as_str().with_context(|| format!("{} has no name", manifest.display()))?.to_owned();
            let artifact = json["edgerec"]["component"].as_str().map_or_else(|| js_artifact(&name), str::to_owned);
            Ok(Project { artifact: dir.join(artifact), name })
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run_step(cmd: &mut Command, what: &str, help: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {what}: {help}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its output above");
    }
    Ok(())
}

/// Runs `edgerec plugin build`.
pub fn build(args: BuildArgs) -> Result<()> {
    let dir = &args.dir;
    let lang = detect(dir)?;
    match lang {
        Lang::Rust => run_step(
            Command::new(cargo()).args(["build", "--release", "--target", "wasm32-wasip2"]).current_dir(dir),
            "cargo build --release --target wasm32-wasip2",
            "install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`",
        )?,
        Lang::Js => {
            let npm_help = "install Node.js 20 or later with npm (https://nodejs.org, or `apt-get install nodejs npm`)";
            if !dir.join("node_modules").exists() {
                let install = if dir.join("package-lock.json").is_file() { "ci" } else { "install" };
                eprintln!("node_modules is missing: running `npm {install}` (once)");
                run_step(
                    Command::new("npm").args([install, "--no-audit", "--no-fund"]).current_dir(dir),
                    &format!("npm {install}"),
                    npm_help,
                )?;
            }
            run_step(Command::new("npm").args(["run", "build"]).current_dir(dir), "npm run build", npm_help)?;
        }
    }
    let project = project(dir)?;
    if !project.artifact.is_file() {
        bail!("the build succeeded but {} is missing", project.artifact.display());
    }
    if lang == Lang::Js {
        // The JS toolchain cannot write custom sections: the plugin name (so a
        // server can tell which plugin this is) and the language (which gives
        // a JS stage its own default limits) are added here.
        let bytes =
            std::fs::read(&project.artifact).with_context(|| format!("reading {}", project.artifact.display()))?;
        let mut marked = bytes.clone();
        if edgerec_runtime::declared_name(&bytes).is_none() {
            marked = edgerec_runtime::with_declared_name(&marked, &project.name);
        }
        if edgerec_runtime::declared_language(&bytes).is_none() {
            marked = edgerec_runtime::with_declared_language(&marked, "js");
        }
        if marked != bytes {
            std::fs::write(&project.artifact, marked)
                .with_context(|| format!("writing {}", project.artifact.display()))?;
        }
    }
    let config = dir.join("config.json");
    super::check::check_file(&project.artifact, config.is_file().then_some(config.as_path()))?;
    let shown = project.artifact.strip_prefix(dir).unwrap_or(&project.artifact);
    println!("\nbuilt {}", project.artifact.display());
    println!("next: edgerec plugin run {} --input request.json --config config.json", shown.display());
    Ok(())
}
