//! `edgerec`: the edge recommendation server and its operator CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
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
    /// Run or check a plugin component locally (the partners' runner).
    #[command(subcommand)]
    Plugin(cli::plugin::PluginCommand),
    /// Train an HSTU model on an event log (MovieLens, or a CSV of user,item,timestamp with an optional action column).
    Train(cli::train::TrainArgs),
    /// Continue a model on new events (new items get fresh rows; old ids stay).
    Finetune(cli::train::FinetuneArgs),
    /// Evaluate a model with the engine (HR/NDCG@10/50/200, MRR) against popularity.
    Eval(cli::train::EvalArgs),
    /// The synthetic storefront behind the demo model.
    #[command(subcommand)]
    Demo(cli::train::DemoCommand),
    /// Serve the HTTP API (tenants, recommend, events, catalog, plugins); `--help` lists every config key.
    Serve(cli::serve::ServeArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The plugin sandbox: a 3-stage first-party pipeline, wasmtime against the same rules as native Rust.
    Plugins(cli::plugin::BenchPluginsArgs),
    /// The HSTU kernels: encode latency, users/s, incremental, top-k, against the sgemm roof.
    Kernels(cli::engine::BenchArgs),
    /// Load a running server at fixed request rates: throughput, p50/p99, time per stage.
    Http(cli::serve::BenchHttpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encode(args) => cli::engine::encode(args),
        Command::Recommend(args) => cli::engine::recommend(args),
        Command::Model(command) => cli::engine::model(command),
        Command::Bench(BenchCommand::Kernels(args)) => cli::engine::bench(args),
        Command::Bench(BenchCommand::Plugins(args)) => cli::plugin::bench_plugins(args),
        Command::Plugin(command) => cli::plugin::plugin(command),
        Command::Train(args) => {
            alloc::keep_freed_memory();
            cli::train::train(args)
        }
        Command::Finetune(args) => {
            alloc::keep_freed_memory();
            cli::train::finetune(args)
        }
        Command::Eval(args) => cli::train::eval(args),
        Command::Demo(command) => cli::train::demo(command),
        Command::Bench(BenchCommand::Http(args)) => cli::serve::bench_http(args),
        Command::Serve(args) => cli::serve::serve(args),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks a command's definition only when it is parsed: this
    /// parses every subcommand's definition now (clashing flag names and the like).
    #[test]
    fn every_command_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
