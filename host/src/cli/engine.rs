//! `edgerec encode`, `recommend`, `model random` and `bench kernels`.

use anyhow::bail;
use clap::{Args, Subcommand};

/// Arguments of `edgerec encode`.
#[derive(Args)]
pub struct EncodeArgs {}

/// Arguments of `edgerec recommend`.
#[derive(Args)]
pub struct RecommendArgs {}

/// `edgerec model …`.
#[derive(Subcommand)]
pub enum ModelCommand {}

/// Arguments of `edgerec bench kernels`.
#[derive(Args)]
pub struct BenchArgs {}

pub fn encode(_args: EncodeArgs) -> anyhow::Result<()> {
    bail!("encode: not built yet")
}

pub fn recommend(_args: RecommendArgs) -> anyhow::Result<()> {
    bail!("recommend: not built yet")
}

pub fn model(command: ModelCommand) -> anyhow::Result<()> {
    match command {}
}

pub fn bench(_args: BenchArgs) -> anyhow::Result<()> {
    bail!("bench kernels: not built yet")
}
