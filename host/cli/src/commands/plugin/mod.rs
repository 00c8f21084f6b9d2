//! `edgerec plugin new|build|push|run|check`: the partners' local loop, one
//! module per subcommand; what `run` and `check` share lives here.

mod build;
mod check;
mod new;
mod push;
mod run;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use edgerec_runtime::{CompiledPlugin, Runtime, RuntimeConfig};

/// Work with plugin components locally.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project (Rust or TypeScript) that builds on its own: example rule, test, sample request.
    New(new::NewArgs),
    /// Build a plugin project (cargo or npm) and run `plugin check` on the component.
    Build(build::BuildArgs),
    /// Upload a component to a server (operator token from EDGEREC_OPERATOR_TOKEN) and optionally activate it.
    Push(push::PushArgs),
    /// Run a plugin on a request file; print its output, fuel, memory, time, logs and each limit's pass/fail.
    Run(run::RunArgs),
    /// Say whether a file is a component of the edgerec:plugin world and what it declares.
    Check(check::CheckArgs),
}

/// Runs a plugin subcommand.
pub fn plugin(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::Run(args) => run::run(args),
        PluginCommand::Check(args) => check::check(args),
        PluginCommand::New(args) => new::new(args),
        PluginCommand::Build(args) => build::build(args),
        PluginCommand::Push(args) => push::push(args),
    }
}

/// A runtime with the compiled-plugin cache under the system temp directory,
/// so that re-running an unchanged plugin skips Cranelift.
fn local_runtime() -> Result<Runtime> {
    let cache_dir = std::env::temp_dir().join("edgerec-plugin-cache");
    // The server's upload cap, so that a local check accepts exactly what an upload would.
    let max_upload_bytes = edgerec_server::config::ServerConfig::default().max_plugin_bytes;
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir), max_upload_bytes, ..RuntimeConfig::default() })
        .context("starting the plugin runtime")
}

fn compile(runtime: &Runtime, file: &Path) -> Result<Arc<CompiledPlugin>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned());
    runtime.compile_named(name.as_deref(), &bytes).with_context(|| format!("{} is not a usable plugin", file.display()))
}

fn read_optional(path: Option<&Path>) -> Result<Vec<u8>> {
    match path {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        None => Ok(Vec::new()),
    }
}
