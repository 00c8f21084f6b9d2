//! The JSON reports of `edgerec train`, `edgerec finetune` and `edgerec eval`.

use std::path::Path;

use edgerec_kernels::Model;
use edgerec_kernels::item_map::ItemMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::Format;
use crate::dataset::{DataSummary, Dataset, load_dataset};
use crate::error::TrainError;
use crate::eval::{evaluate_model, evaluate_popularity};
use crate::hstu::grow_items;
use crate::metrics::Metrics;
use crate::train::{BEST_DIR, TrainOptions, TrainOutcome, train};

/// Test-split metrics of a model next to the popularity baseline.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// The protocol, spelled out.
    pub protocol: &'static str,
    /// What was read.
    pub data: DataSummary,
    /// The model, ranked by the engine.
    pub model: Metrics,
    /// Most popular unseen items.
    pub popularity: Metrics,
}

/// The protocol text written into every report.
pub const PROTOCOL: &str = "leave-last-out per user (last = test, second to last = validation); the target ranked against the full catalog by the edgerec engine (encode_batch + top_k), items of the user's kept window (last L events) excluded; targets inside that window count as misses";

/// Evaluates `model` and the popularity baseline on the test split of `data`.
pub fn evaluate_test(model: &Model, data: &Dataset) -> Result<EvalReport, TrainError> {
    let model_metrics = evaluate_model(model, &data.sequences, &data.split.test)?;
    let popularity =
        evaluate_popularity(&data.sequences, &data.split.test, model.config.num_items, model.config.max_seq_len);
    Ok(EvalReport { protocol: PROTOCOL, data: data.summary.clone(), model: model_metrics, popularity })
}

/// Loads a model directory and evaluates it on a dataset mapped through its `items.json`.
pub fn evaluate_dir(model_dir: &Path, data: &Path, format: Option<Format>) -> Result<EvalReport, TrainError> {
    let model = Model::load(model_dir)?;
    let items = ItemMap::load(model_dir)?;
    if items.len() != model.config.num_items {
        return Err(TrainError::Invalid(format!(
            "{}: items.json maps {} items but the model has {}; the directory is inconsistent",
            model_dir.display(),
            items.len(),
            model.config.num_items
        )));
    }
    let dataset = load_dataset(data, format, Some(items), false)?;
    evaluate_test(&model, &dataset)
}

/// `edgerec train`: the run, the test report of the best model, the curve.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Options and curve.
    pub training: TrainOutcome,
    /// Test metrics of the best model and of popularity.
    pub test: EvalReport,
}

/// Trains from scratch (or resumes) and evaluates the best model on the test split.
pub fn train_and_report(
    data: &Dataset,
    opts: &TrainOptions,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<TrainReport, TrainError> {
    let training = train(data, opts, out, None, resume, progress)?;
    let best = Model::load(&out.join(BEST_DIR))?;
    let test = evaluate_test(&best, data)?;
    Ok(TrainReport { training, test })
}

/// `edgerec finetune`: validation before and after, on the new events.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneReport {
    /// Items the base model knew.
    pub old_items: usize,
    /// Items added by the new events (fresh rows).
    pub new_items: usize,
    /// Validation metrics of the grown model before any step.
    pub validation_before: Metrics,
    /// Validation metrics of the best fine-tuned model.
    pub validation_after: Metrics,
    /// The run.
    pub training: TrainOutcome,
    /// Test metrics of the fine-tuned model and of popularity.
    pub test: EvalReport,
}

/// Continues `model_dir` on the events at `data`: unseen items are appended to
/// the id mapping with fresh embedding rows, old ids keep their ids and rows.
pub fn finetune(
    model_dir: &Path,
    data: &Path,
    format: Option<Format>,
    opts: &TrainOptions,
    out: &Path,
    progress: bool,
) -> Result<FinetuneReport, TrainError> {
    let base = Model::load(model_dir)?;
    let items = ItemMap::load(model_dir)?;
    let old_items = items.len();
    if old_items != base.config.num_items {
        return Err(TrainError::Invalid(format!(
            "{}: items.json maps {old_items} items but the model has {}",
            model_dir.display(),
            base.config.num_items
        )));
    }
    let dataset = load_dataset(data, format, Some(items), true)?;
    let new_items = dataset.items.len() - old_items;
    let grown = grow_items(&base, new_items, &mut ChaCha8Rng::seed_from_u64(opts.seed))?;
    let validation_before = evaluate_model(&grown, &dataset.sequences, &dataset.split.validation)?;
    let training = train(&dataset, opts, out, Some(grown), false, progress)?;
    let best = Model::load(&out.join(BEST_DIR))?;
    let validation_after = evaluate_model(&best, &dataset.sequences, &dataset.split.validation)?;
    let test = evaluate_test(&best, &dataset)?;
    Ok(FinetuneReport { old_items, new_items, validation_before, validation_after, training, test })
}
