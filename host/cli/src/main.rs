//! `edgerec`: the edge recommendation server and its operator CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod commands;
mod engine_args;
mod training;

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
    Encode(engine_args::EncodeArgs),
    /// Recommend the top-k items for one user's history (prints JSON).
    Recommend(commands::recommend::RecommendArgs),
    /// Model utilities (write a seeded random model, ...).
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
    /// Benchmarks that print their ratios against a roof or baseline measured in the same run.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Run or check a plugin component locally (the partners' runner).
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Train an HSTU model on an event log (MovieLens, or a CSV of user,item,timestamp with an optional action column).
    Train(commands::train::TrainArgs),
    /// Continue a model on new events (new items get fresh rows; old ids stay).
    Finetune(commands::finetune::FinetuneArgs),
    /// Evaluate a model with the engine (HR/NDCG@10/50/200, MRR) against popularity.
    Eval(commands::eval::EvalArgs),
    /// The synthetic storefront behind the demo model.
    #[command(subcommand)]
    Demo(commands::demo::DemoCommand),
    /// Serve the HTTP API (tenants, recommend, events, catalog, plugins); `--help` lists every config key.
    Serve(commands::serve::ServeArgs),
}

fn main() -> ExitCode {
    // The server compiles each uploaded plugin in a child process of this
    // binary, bounded in time and memory (edgerec_runtime::CompileProcess).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == edgerec_runtime::COMPILE_SUBCOMMAND) {
        return edgerec_runtime::child_main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encode(args) => commands::encode::encode(args),
        Command::Recommend(args) => commands::recommend::recommend(args),
        Command::Model(command) => commands::model::model(command),
        Command::Bench(command) => commands::bench::bench(command),
        Command::Plugin(command) => commands::plugin::plugin(command),
        Command::Train(args) => {
            alloc::keep_freed_memory();
            commands::train::train(args)
        }
        Command::Finetune(args) => {
            alloc::keep_freed_memory();
            commands::finetune::finetune(args)
        }
        Command::Eval(args) => commands::eval::eval(args),
        Command::Demo(command) => commands::demo::demo(command),
        Command::Serve(args) => commands::serve::serve(args),
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
