//! `edgerec demo generate`: the synthetic storefront behind the demo model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `edgerec demo generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Seed (the same seed writes the same files).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Catalog size.
    #[arg(long, default_value_t = 3000)]
    items: usize,
    /// Number of shoppers.
    #[arg(long, default_value_t = 3000)]
    users: usize,
}

/// Runs `edgerec demo generate`.
pub fn generate(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(
        args.items >= 24 && args.users >= 1,
        "--items must be at least 24 (one per category) and --users at least 1"
    );
    let spec = edgerec_train::synth::StorefrontSpec { items: args.items, users: args.users, seed: args.seed };
    let (items, events) = edgerec_train::synth::write_storefront(&args.out, &spec)?;
    eprintln!("wrote {items} items to catalog.jsonl and {events} events to events.csv in {}", args.out.display());
    Ok(())
}
