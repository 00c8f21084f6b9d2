//! `edgerec train`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::training::{FormatArg, HyperArgs, print_data, print_test, write_json};

/// `edgerec train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Events file or dataset directory (ratings.dat, u.data, ratings.csv, events.csv, events.parquet; .xz read directly).
    #[arg(long)]
    data: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Output directory: model/ (best), checkpoint/, report.json, curves.png.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in OUT/checkpoint (same options; --epochs may be raised).
    #[arg(long)]
    resume: bool,
    /// Draw this reference curve (JSON: `{"curve": [{"epoch", "hr@10", "ndcg@10"}, ...]}`) beside ours in curves.png.
    #[arg(long, value_name = "CURVE.json")]
    compare: Option<PathBuf>,
    #[command(flatten)]
    hyper: HyperArgs,
}

/// Runs `edgerec train`.
pub fn train(args: TrainArgs) -> Result<()> {
    args.hyper.apply_threads();
    let opts = args.hyper.options();
    args.hyper.check(&opts)?;
    // Read the curve first: a bad file should fail before an hour of training, not after.
    let reference = args.compare.as_deref().map(edgerec_train::plot::ReferenceCurve::load).transpose()?;
    let data = edgerec_train::dataset::load_dataset(&args.data, args.format.format(), None, false)
        .with_context(|| format!("loading {}", args.data.display()))?;
    print_data(&data.summary);
    let report =
        edgerec_train::report::train_and_report(&data, &opts, &args.out, args.resume, !args.hyper.no_progress)?;
    write_json(&args.out.join("report.json"), &report)?;
    let extras = edgerec_train::plot::PlotExtras {
        popularity: Some(report.test.popularity.clone()),
        popularity_split: "test",
        reference,
    };
    edgerec_train::plot::plot_curves(&report.training.state.history, &extras, &args.out.join("curves.png"))?;
    eprintln!(
        "trained {} epochs in {:.0} s (best epoch {}, early stop: {}); test split:",
        report.training.state.epochs_done,
        report.training.wall_seconds,
        report.training.state.best_epoch,
        report.training.stopped_early
    );
    print_test(&report.test);
    eprintln!("wrote {}/model, report.json, curves.png", args.out.display());
    Ok(())
}
