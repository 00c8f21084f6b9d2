//! `edgerec eval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::training::{FormatArg, print_data, print_test, write_json};

/// `edgerec eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Events file or dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Runs `edgerec eval`: prints the JSON report on stdout.
pub fn eval(args: EvalArgs) -> Result<()> {
    let report = edgerec_train::report::evaluate_dir(&args.model, &args.data, args.format.format())?;
    print_data(&report.data);
    print_test(&report);
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
