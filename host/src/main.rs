//! `edgerec`: the edge recommendation server and its operator CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// edgerec — HSTU recommendations at the edge, with sandboxed per-tenant plugins.
#[derive(Parser)]
#[command(name = "edgerec", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode one user's history into an L2-normalised embedding (prints JSON).
    Encode(cli::engine::EncodeArgs),
    /// Recommend the top-k items for one user's history (prints JSON).
    Recommend(cli::engine::RecommendArgs),
    /// Model utilities (write a seeded random model, ...).
    #[command(subcommand)]
    Model(cli::engine::ModelCommand),
    /// Benchmarks that print their ratios against a roof or baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The HSTU kernels: encode latency, users/s, incremental, top-k, against the sgemm roof.
    Kernels(cli::engine::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encode(args) => cli::engine::encode(args),
        Command::Recommend(args) => cli::engine::recommend(args),
        Command::Model(command) => cli::engine::model(command),
        Command::Bench(BenchCommand::Kernels(args)) => cli::engine::bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line naming the problem, with its causes; no backtrace for user errors.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
