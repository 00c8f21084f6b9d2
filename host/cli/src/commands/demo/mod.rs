//! `edgerec demo generate`, one module per subcommand.

mod generate;

use anyhow::Result;
use clap::Subcommand;

/// `edgerec demo ...`.
#[derive(Subcommand, Debug)]
pub enum DemoCommand {
    /// Write the synthetic storefront: catalog.jsonl and events.csv.
    Generate(generate::GenerateArgs),
}

/// Runs `edgerec demo ...`.
pub fn demo(command: DemoCommand) -> Result<()> {
    match command {
        DemoCommand::Generate(args) => generate::generate(args),
    }
}
