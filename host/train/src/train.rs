//! The training loop of the reference: next-item prediction at every
//! position, sampled softmax over uniform negatives, cosine / temperature,
//! AdamW, dropout, early stopping on validation NDCG@10 measured by the
//! engine. Writes `model/` (best, engine format + items.json),
//! `checkpoint/` (last epoch + optimizer, for `--resume`) and `report.json`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use edgerec_kernels::{Model, ModelConfig};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::TrainError;
use crate::eval::evaluate_model;
use crate::hstu::{Batch, Contrast, HstuVars, init_model};
use crate::metrics::Metrics;
use crate::optim::{AdamW, AdamWParams};
use crate::split::{EvalCase, UserSequence};

/// Shape of a new model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// D.
    pub d_model: usize,
    /// Layers.
    pub num_layers: usize,
    /// Heads.
    pub num_heads: usize,
    /// dqk = dv per head.
    pub head_dim: usize,
    /// L (N = L + 11).
    pub max_seq_len: usize,
}

impl ModelShape {
    /// The engine config of this shape over `num_items` items.
    pub fn config(&self, num_items: usize) -> ModelConfig {
        ModelConfig::research(num_items, self.d_model, self.num_layers, self.num_heads, self.head_dim, self.max_seq_len)
    }
}

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Softmax over the target and R uniformly drawn negatives (the reference's).
    SampledSoftmax,
    /// Softmax over the whole catalog: no sampling noise, cost ∝ V.
    FullSoftmax,
}

/// How the sampled softmax draws its negatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeSampling {
    /// R fresh negatives for every predicting position (the reference's).
    PerPosition,
    /// R negatives per sequence, shared by its positions (cheaper, learns slower).
    PerSequence,
}

fn legacy_loss() -> LossKind {
    LossKind::SampledSoftmax
}

fn legacy_sampling() -> NegativeSampling {
    NegativeSampling::PerSequence
}

/// Every hyper-parameter of a run (the presets: the reference's ML-1M recipe with 512 negatives).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Shape of the model trained from scratch.
    pub shape: ModelShape,
    /// Maximum epochs.
    pub epochs: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// AdamW.
    pub optimizer: AdamWParams,
    /// The objective. (Checkpoints written before the option existed resume with the loss they used.)
    #[serde(default = "legacy_loss")]
    pub loss: LossKind,
    /// Where the sampled softmax's negatives are drawn.
    #[serde(default = "legacy_sampling")]
    pub negative_sampling: NegativeSampling,
    /// Uniform negatives R of the sampled softmax (per position or per sequence).
    pub num_negatives: usize,
    /// Also train on each user's validation event (the reference trains on all
    /// but the last event); validation metrics are then no longer held out.
    #[serde(default)]
    pub train_on_validation: bool,
    /// Evaluate the test split after every epoch (the reference's curve is a test curve).
    #[serde(default)]
    pub test_every_epoch: bool,
    /// Softmax temperature of the cosine logits.
    pub temperature: f64,
    /// Dropout on the input and before W_o.
    pub dropout: f32,
    /// Stop after this many evaluations without a better validation NDCG@10.
    pub patience: usize,
    /// Validate every this many epochs.
    pub eval_every: usize,
    /// Validate on at most this many users (0 = all); a fixed seeded subset.
    pub eval_users: usize,
    /// Seed of initialisation, shuffling, negatives and dropout.
    pub seed: u64,
    /// Stop each epoch after this many steps (0 = every batch): quick
    /// experiments on the first steps' dynamics.
    #[serde(default)]
    pub max_steps_per_epoch: usize,
    /// Print the mean training loss of every this many steps to stderr (0 = never).
    #[serde(default)]
    pub log_every: usize,
}

/// The presets of the public table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// ML-1M HSTU: D 50, 2 layers, 1 head of 50, L 200, 512 negatives per position, dropout 0.2.
    Ml1m,
    /// ML-1M HSTU-large: 8 layers, 2 heads of 25.
    Ml1mLarge,
    /// ML-20M HSTU: D 256, 4 layers, 4 heads of 64.
    Ml20m,
    /// Amazon Books: D 64, 4 layers, 4 heads of 16, L 50, 512 negatives, dropout 0.5.
    Books,
}

impl Preset {
    /// The reference options of this preset.
    pub fn options(self) -> TrainOptions {
        let mut o = TrainOptions {
            shape: ModelShape { d_model: 50, num_layers: 2, num_heads: 1, head_dim: 50, max_seq_len: 200 },
            epochs: 100,
            batch_size: 128,
            optimizer: AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.0 },
            loss: LossKind::SampledSoftmax,
            // The reference's own sampling (per position), with 4× its 128
            // negatives: on ML-1M users 1–2999 R 128 fell behind the reference
            // trainer's curve from epoch 25 on, R 512 stays above it, and the
            // per-sequence draw learned slower (docs/perf/training.md).
            negative_sampling: NegativeSampling::PerPosition,
            num_negatives: 512,
            train_on_validation: false,
            test_every_epoch: false,
            temperature: 0.05,
            dropout: 0.2,
            patience: 10,
            eval_every: 1,
            eval_users: 0,
            seed: 42,
            max_steps_per_epoch: 0,
            log_every: 0,
        };
        match self {
            Preset::Ml1m => {}
            Preset::Ml1mLarge => o.shape = ModelShape { num_layers: 8, num_heads: 2, head_dim: 25, ..o.shape },
            Preset::Ml20m => {
                o.shape = ModelShape { d_model: 256, num_layers: 4, num_heads: 4, head_dim: 64, max_seq_len: 200 }
            }
            Preset::Books => {
                o.shape = ModelShape { d_model: 64, num_layers: 4, num_heads: 4, head_dim: 16, max_seq_len: 50 };
                o.dropout = 0.5;
            }
        }
        o
    }
}

/// One epoch of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Sampled-softmax loss on the validation targets (fixed negatives, no dropout).
    pub val_loss: f64,
    /// Validation NDCG@10 by the engine (when evaluated this epoch).
    pub val_ndcg_10: Option<f64>,
    /// Validation HR@10 by the engine (when evaluated this epoch).
    pub val_hr_10: Option<f64>,
    /// Test HR@10 by the engine (with `test_every_epoch`).
    #[serde(default)]
    pub test_hr_10: Option<f64>,
    /// Test NDCG@10 by the engine (with `test_every_epoch`).
    #[serde(default)]
    pub test_ndcg_10: Option<f64>,
    /// Wall seconds of the epoch's training steps.
    pub seconds: f64,
    /// Training tokens (predicted positions) per second.
    pub tokens_per_s: f64,
}

/// What `checkpoint/state.json` holds to resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Options of the run (a resumed run keeps them).
    pub options: TrainOptions,
    /// Completed epochs.
    pub epochs_done: usize,
    /// Best validation NDCG@10 so far.
    pub best_ndcg_10: f64,
    /// Epoch of the best model.
    pub best_epoch: usize,
    /// Evaluations since the best one.
    pub evals_since_best: usize,
    /// The curve so far.
    pub history: Vec<EpochRecord>,
}

/// A finished run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    /// Final state (curve, best epoch).
    pub state: TrainState,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Total wall seconds of this invocation.
    pub wall_seconds: f64,
}

/// Subdirectory of the output with the best model (engine format + items.json).
pub const BEST_DIR: &str = "model";
/// Subdirectory of the output with the last epoch's checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// One training row: the last ≤ L+1 training events of a user become L inputs and L targets.
struct Row<'a> {
    items: &'a [u32],
    ts: &'a [i64],
    next_ts: &'a [i64],
    targets: &'a [u32],
}

/// Events of user `u` the trainer learns from: the training part, plus the
/// validation event when asked (users too short to evaluate already give all).
fn trained_len(data: &Dataset, u: usize, with_validation: bool) -> usize {
    let len = data.split.train_len[u];
    if with_validation && len + 2 == data.sequences[u].len() { len + 1 } else { len }
}

fn training_row<'a>(seq: &'a UserSequence, train_len: usize, max_len: usize) -> Option<Row<'a>> {
    if train_len < 2 {
        return None;
    }
    let start = train_len.saturating_sub(max_len + 1);
    let items = &seq.items[start..train_len];
    let ts = &seq.timestamps[start..train_len];
    Some(Row { items: &items[..items.len() - 1], ts: &ts[..ts.len() - 1], next_ts: &ts[1..], targets: &items[1..] })
}

/// Sampled-softmax loss of the validation (or any) cases: each case's
/// history predicts its target; negatives (R per case) are fixed by `seed`.
pub fn case_loss(
    vars: &HstuVars,
    sequences: &[UserSequence],
    cases: &[EvalCase],
    opts: &TrainOptions,
    seed: u64,
) -> Result<f64, TrainError> {
    let l = vars.config.max_seq_len;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let num_items = vars.config.num_items as u32;
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in cases.chunks(opts.batch_size.max(1)) {
        let mut next: Vec<Vec<i64>> = Vec::new();
        let mut spans = Vec::new();
        for case in chunk {
            let seq = &sequences[case.user_index];
            let start = case.history_len.saturating_sub(l);
            let mut n: Vec<i64> = seq.timestamps[start + 1..case.history_len].to_vec();
            n.push(case.target_ts);
            next.push(n);
            spans.push(start..case.history_len);
        }
        let rows: Vec<(&[u32], &[i64], &[i64])> = chunk
            .iter()
            .zip(&spans)
            .zip(&next)
            .map(|((c, s), n)| {
                (
                    &sequences[c.user_index].items[s.clone()],
                    &sequences[c.user_index].timestamps[s.clone()],
                    n.as_slice(),
                )
            })
            .collect();
        let batch = Batch::new(&vars.config, &rows)?;
        let out = vars.forward_padded(&batch, 0.0, None)?;
        // Only the last real row of each sequence predicts the case's target.
        let last: Vec<u32> = spans.iter().enumerate().map(|(b, s)| (b * batch.len + s.len() - 1) as u32).collect();
        let targets: Vec<u32> = chunk.iter().map(|c| c.target).collect();
        let value = match opts.loss {
            LossKind::FullSoftmax => {
                vars.chunked_softmax_loss(
                    &out,
                    &last,
                    &targets,
                    Contrast::Catalog,
                    opts.temperature,
                    loss_chunk(num_items as usize),
                )?
                .value
            }
            // One predicting row per sequence: per-sequence and per-position draws coincide.
            LossKind::SampledSoftmax => {
                let negatives: Vec<u32> =
                    (0..chunk.len() * opts.num_negatives).map(|_| rng.random_range(1..=num_items)).collect();
                vars.sampled_softmax_loss(&out, &last, &targets, &negatives, opts.temperature)?.to_scalar::<f32>()?
                    as f64
            }
        };
        total += value * chunk.len() as f64;
        count += chunk.len();
    }
    Ok(total / count.max(1) as f64)
}

/// Rows per chunk of the chunked loss: ~8 M floats of logits or gathered negatives at a time.
fn loss_chunk(width: usize) -> usize {
    ((8usize << 20) / width.max(1)).max(1)
}

fn eval_subset(cases: &[EvalCase], max_users: usize, seed: u64) -> Vec<EvalCase> {
    if max_users == 0 || cases.len() <= max_users {
        return cases.to_vec();
    }
    let mut picked = cases.to_vec();
    picked.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    picked.truncate(max_users);
    picked
}

/// Trains on `data` into `out`. `start` is the model to continue from (fine-tuning);
/// `None` initialises one of `opts.shape`. With `resume`, continues `out/checkpoint`.
pub fn train(
    data: &Dataset,
    opts: &TrainOptions,
    out: &Path,
    start: Option<Model>,
    resume: bool,
    progress: bool,
) -> Result<TrainOutcome, TrainError> {
    let began = Instant::now();
    let checkpoint = out.join(CHECKPOINT_DIR);
    let (model, mut state) = if resume {
        let text = std::fs::read_to_string(checkpoint.join("state.json"))
            .map_err(|source| TrainError::Io { path: checkpoint.join("state.json"), source })?;
        let state: TrainState = serde_json::from_str(&text).map_err(|e| {
            TrainError::Invalid(format!("{}: unreadable state ({e}); start without --resume", checkpoint.display()))
        })?;
        (Model::load(&checkpoint)?, state)
    } else {
        let model = match start {
            Some(m) => m,
            None => init_model(&opts.shape.config(data.items.len()), &mut ChaCha8Rng::seed_from_u64(opts.seed))?,
        };
        let state = TrainState {
            options: opts.clone(),
            epochs_done: 0,
            best_ndcg_10: -1.0,
            best_epoch: 0,
            evals_since_best: 0,
            history: Vec::new(),
        };
        (model, state)
    };
    let opts = if resume { TrainOptions { epochs: opts.epochs, ..state.options.clone() } } else { opts.clone() };
    if model.config.num_items != data.items.len() {
        return Err(TrainError::Invalid(format!(
            "the model has {} items but the data's id mapping {}; train a new model or fine-tune",
            model.config.num_items,
            data.items.len()
        )));
    }
    let vars = HstuVars::from_model(&model)?;
    let mut optimizer = AdamW::new(vars.all(), opts.optimizer)?;
    if resume {
        optimizer.load(&checkpoint.join("optimizer.safetensors"))?;
    }
    let users: Vec<usize> =
        (0..data.sequences.len()).filter(|&u| trained_len(data, u, opts.train_on_validation) >= 2).collect();
    if users.is_empty() {
        return Err(TrainError::Invalid("no user has 2 training events: nothing to learn from".into()));
    }
    let val_cases = eval_subset(&data.split.validation, opts.eval_users, opts.seed);
    let max_steps = if opts.max_steps_per_epoch == 0 { usize::MAX } else { opts.max_steps_per_epoch };
    let steps_per_epoch = users.len().div_ceil(opts.batch_size).min(max_steps);
    // One bar per epoch (its ETA is the epoch's), drawn only on a terminal.
    let show = progress && std::io::stderr().is_terminal();
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps, {msg}, ETA {eta}")
        .map_err(|e| TrainError::Invalid(format!("progress bar template: {e}")))?
        .progress_chars("=> ");
    let mut stopped_early = false;
    let num_items = vars.config.num_items as u32;
    for epoch in state.epochs_done + 1..=opts.epochs {
        let bar = if show { ProgressBar::new(steps_per_epoch as u64) } else { ProgressBar::hidden() };
        bar.set_style(style.clone());
        bar.set_prefix(format!("{epoch}/{}", opts.epochs));
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order = users.clone();
        order.shuffle(&mut rng);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        let (mut window_sum, mut window_tokens) = (0.0, 0usize);
        for (step, chunk) in order.chunks(opts.batch_size).take(max_steps).enumerate() {
            let rows: Vec<Row<'_>> = chunk
                .iter()
                .filter_map(|&u| {
                    training_row(
                        &data.sequences[u],
                        trained_len(data, u, opts.train_on_validation),
                        vars.config.max_seq_len,
                    )
                })
                .collect();
            let batch = Batch::new(&vars.config, &rows.iter().map(|r| (r.items, r.ts, r.next_ts)).collect::<Vec<_>>())?;
            let targets: Vec<u32> = rows.iter().flat_map(|r| r.targets.iter().copied()).collect();
            let outputs = vars.forward_padded(&batch, opts.dropout, Some(&mut rng))?;
            let (value, objective) = match (opts.loss, opts.negative_sampling) {
                (LossKind::FullSoftmax, _) => {
                    let parts = vars.chunked_softmax_loss(
                        &outputs,
                        &batch.real_rows,
                        &targets,
                        Contrast::Catalog,
                        opts.temperature,
                        loss_chunk(num_items as usize),
                    )?;
                    (parts.value, parts.objective)
                }
                (LossKind::SampledSoftmax, NegativeSampling::PerPosition) => {
                    let negatives: Vec<u32> =
                        (0..targets.len() * opts.num_negatives).map(|_| rng.random_range(1..=num_items)).collect();
                    let parts = vars.chunked_softmax_loss(
                        &outputs,
                        &batch.real_rows,
                        &targets,
                        Contrast::Sampled(&negatives),
                        opts.temperature,
                        // Sampled rows are visited one by one: no chunk to size.
                        1,
                    )?;
                    (parts.value, parts.objective)
                }
                (LossKind::SampledSoftmax, NegativeSampling::PerSequence) => {
                    let negatives: Vec<u32> =
                        (0..rows.len() * opts.num_negatives).map(|_| rng.random_range(1..=num_items)).collect();
                    let loss =
                        vars.sampled_softmax_loss(&outputs, &batch.real_rows, &targets, &negatives, opts.temperature)?;
                    (loss.to_scalar::<f32>()? as f64, loss)
                }
            };
            let grads = objective.backward()?;
            optimizer.step(&grads)?;
            loss_sum += value * targets.len() as f64;
            tokens += targets.len();
            window_sum += value * targets.len() as f64;
            window_tokens += targets.len();
            if opts.log_every > 0 && (step + 1) % opts.log_every == 0 {
                bar.suspend(|| {
                    eprintln!("epoch {epoch} step {}: loss {:.4}", step + 1, window_sum / window_tokens.max(1) as f64)
                });
                (window_sum, window_tokens) = (0.0, 0);
            }
            let rate = tokens as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4}, {:.0} tokens/s", loss_sum / tokens as f64, rate));
            bar.inc(1);
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let evaluate = epoch % opts.eval_every.max(1) == 0 || epoch == opts.epochs;
        let model = vars.to_model()?;
        let val_loss = case_loss(&vars, &data.sequences, &val_cases, &opts, opts.seed ^ 0x5eed)?;
        let metrics: Option<Metrics> = if evaluate && !val_cases.is_empty() {
            Some(evaluate_model(&model, &data.sequences, &val_cases)?)
        } else {
            None
        };
        let test: Option<Metrics> = if opts.test_every_epoch && !data.split.test.is_empty() {
            Some(evaluate_model(&model, &data.sequences, &data.split.test)?)
        } else {
            None
        };
        state.history.push(EpochRecord {
            epoch,
            train_loss: loss_sum / tokens.max(1) as f64,
            val_loss,
            val_ndcg_10: metrics.as_ref().map(|m| m.ndcg_10),
            val_hr_10: metrics.as_ref().map(|m| m.hr_10),
            test_hr_10: test.as_ref().map(|m| m.hr_10),
            test_ndcg_10: test.as_ref().map(|m| m.ndcg_10),
            seconds,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
        });
        state.epochs_done = epoch;
        if let Some(m) = &metrics {
            if m.ndcg_10 > state.best_ndcg_10 {
                state.best_ndcg_10 = m.ndcg_10;
                state.best_epoch = epoch;
                state.evals_since_best = 0;
                model.save(&out.join(BEST_DIR))?;
                data.items.save(&out.join(BEST_DIR))?;
            } else {
                state.evals_since_best += 1;
            }
        }
        let line = format!(
            "epoch {epoch}: train loss {:.4}, val loss {val_loss:.4}, val NDCG@10 {}{}, {:.0} tok/s, {seconds:.1} s",
            loss_sum / tokens.max(1) as f64,
            metrics.as_ref().map_or("-".to_string(), |m| format!("{:.4}", m.ndcg_10)),
            test.as_ref().map_or(String::new(), |m| format!(", test HR@10 {:.4} NDCG@10 {:.4}", m.hr_10, m.ndcg_10)),
            tokens as f64 / seconds.max(1e-9)
        );
        bar.finish_and_clear();
        eprintln!("{line}");
        save_checkpoint(&checkpoint, &model, &optimizer, &state, data)?;
        if state.evals_since_best >= opts.patience.max(1) {
            stopped_early = true;
            break;
        }
    }
    if state.best_epoch == 0 {
        // No evaluation happened (no validation users): the last model is the best we know.
        vars.to_model()?.save(&out.join(BEST_DIR))?;
        data.items.save(&out.join(BEST_DIR))?;
    }
    Ok(TrainOutcome { state, stopped_early, wall_seconds: began.elapsed().as_secs_f64() })
}

fn save_checkpoint(
    dir: &Path,
    model: &Model,
    optimizer: &AdamW,
    state: &TrainState,
    data: &Dataset,
) -> Result<(), TrainError> {
    model.save(dir)?;
    data.items.save(dir)?;
    optimizer.save(&dir.join("optimizer.safetensors"))?;
    let path = dir.join("state.json");
    let text = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(&path, text).map_err(|source| TrainError::Io { path, source })
}
