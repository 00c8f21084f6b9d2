//! `edgerec model random|import|push`, one module per subcommand.

mod import;
mod push;
mod random;

use clap::Subcommand;

/// `edgerec model …`.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a model with seeded random weights (benchmarks, smoke tests).
    Random(random::RandomArgs),
    /// Import a checkpoint of another trainer (the reference's research HSTU).
    Import(import::ImportArgs),
    /// Upload a model directory to a server as a model version (and activate it).
    Push(push::ModelPushArgs),
}

/// `edgerec model …`.
pub fn model(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Random(args) => random::random(args),
        ModelCommand::Import(args) => import::import(args),
        ModelCommand::Push(args) => push::push(args),
    }
}
