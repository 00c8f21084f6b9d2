//! `edgerec plugin check FILE [--config CONFIG]`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use edgerec_runtime::Limits;

use super::{compile, local_runtime, read_optional};

/// `edgerec plugin check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The plugin component.
    file: PathBuf,
    /// Also ask which columns it reads with this stage config (JSON file).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs `edgerec plugin check`.
pub fn check(args: CheckArgs) -> Result<()> {
    check_file(&args.file, args.config.as_deref())
}

/// `edgerec plugin check FILE [--config CONFIG]`: compiles, checks the world,
/// runs the sample input and prints what the component declares.
pub fn check_file(file: &Path, config: Option<&Path>) -> Result<()> {
    let runtime = local_runtime()?;
    let plugin = compile(&runtime, file)?;
    println!("{}: a component of the edgerec:plugin@0.1.0 `plugin` world", file.display());
    let cap = edgerec_server::config::ServerConfig::default().max_plugin_bytes;
    println!("  size:          {} bytes (a server's default upload cap: {} MiB)", plugin.size(), cap >> 20);
    if plugin.size() > cap {
        println!(
            "  warning:       over the default upload cap: a server refuses it unless its max_plugin_bytes is raised"
        );
    }
    println!("  sha256:        {}", plugin.hash());
    let how = if plugin.from_cache() { "loaded from the cache" } else { "compiled" };
    println!("  {how} in {:.1} ms", plugin.compile_time().as_secs_f64() * 1e3);
    println!("  sample input:  passed");
    println!("  columns read with the default config: {:?}", plugin.declared_columns());
    if let Some(path) = config {
        let config = read_optional(Some(path))?;
        let (columns, _) = runtime.columns(&plugin, &config, &Limits::for_language(plugin.language()));
        match columns {
            Ok(Ok(columns)) => println!("  columns read with {}: {columns:?}", path.display()),
            Ok(Err(message)) => bail!("the plugin refuses the config {}: {message}", path.display()),
            Err(failure) => bail!("the plugin failed while reading the config: {failure}"),
        }
    }
    Ok(())
}
