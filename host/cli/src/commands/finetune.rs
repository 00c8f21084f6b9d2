//! `edgerec finetune`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::training::{FormatArg, HyperArgs, print_test, write_json};

/// `edgerec finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The model directory to continue from (config.json, model.safetensors, items.json).
    #[arg(long)]
    model: PathBuf,
    /// The new events (same formats as `train`).
    #[arg(long)]
    data: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Output directory (model/ holds the fine-tuned model).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    hyper: HyperArgs,
}

/// Runs `edgerec finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<()> {
    args.hyper.apply_threads();
    let opts = args.hyper.options();
    args.hyper.check(&opts)?;
    let report = edgerec_train::report::finetune(
        &args.model,
        &args.data,
        args.format.format(),
        &opts,
        &args.out,
        !args.hyper.no_progress,
    )?;
    write_json(&args.out.join("report.json"), &report)?;
    let extras = edgerec_train::plot::PlotExtras {
        popularity: Some(report.test.popularity.clone()),
        popularity_split: "test",
        reference: None,
    };
    edgerec_train::plot::plot_curves(&report.training.state.history, &extras, &args.out.join("curves.png"))?;
    eprintln!(
        "fine-tuned: {} old items, {} new; validation NDCG@10 {:.4} -> {:.4}, HR@10 {:.4} -> {:.4}",
        report.old_items,
        report.new_items,
        report.validation_before.ndcg_10,
        report.validation_after.ndcg_10,
        report.validation_before.hr_10,
        report.validation_after.hr_10
    );
    print_test(&report.test);
    Ok(())
}
