//! What `train`, `finetune` and `eval` share: dataset formats, the
//! hyper-parameters, and how reports are written and printed.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use edgerec_train::data::Format;
use edgerec_train::train::{LossKind, NegativeSampling, Preset, TrainOptions};

/// Dataset formats on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// From the file name: *.dat → ml-1m, u.data → ml-100k, ratings.csv → ml-latest, *.parquet → parquet, else events.
    Auto,
    /// `user::item::rating::ts` (ML-1M ratings.dat).
    #[value(name = "ml-1m")]
    Ml1m,
    /// `user<TAB>item<TAB>rating<TAB>ts` (ML-100K u.data).
    #[value(name = "ml-100k")]
    Ml100k,
    /// `userId,movieId,rating,timestamp` (ml-latest ratings.csv).
    MlLatest,
    /// `user,item,timestamp[,action]` CSV event log.
    Events,
    /// The same columns in a Parquet file, found by name (ids string or integer; timestamp seconds or TIMESTAMP).
    Parquet,
}

impl FormatArg {
    pub fn format(self) -> Option<Format> {
        match self {
            FormatArg::Auto => None,
            FormatArg::Ml1m => Some(Format::MovieLensDat),
            FormatArg::Ml100k => Some(Format::MovieLens100k),
            FormatArg::MlLatest => Some(Format::MovieLensCsv),
            FormatArg::Events => Some(Format::EventsCsv),
            FormatArg::Parquet => Some(Format::EventsParquet),
        }
    }
}

/// Presets of the public benchmark table.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetArg {
    /// D 50, 2 layers, 1 head of 50, L 200, 512 negatives, dropout 0.2.
    #[value(name = "ml-1m")]
    Ml1m,
    /// D 50, 8 layers, 2 heads of 25, L 200.
    #[value(name = "ml-1m-large")]
    Ml1mLarge,
    /// D 256, 4 layers, 4 heads of 64, L 200.
    #[value(name = "ml-20m")]
    Ml20m,
    /// D 64, 4 layers, 4 heads of 16, L 50, 512 negatives, dropout 0.5.
    Books,
}

/// `--loss` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    /// Softmax over the target and R uniform negatives (the reference's objective).
    SampledSoftmax,
    /// Softmax over the whole catalog (exact; cost grows with the catalog).
    FullSoftmax,
}

/// `--negative-sampling` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplingArg {
    /// R fresh negatives for every predicting position (the reference's).
    PerPosition,
    /// R negatives per sequence, shared by its positions.
    PerSequence,
}

/// Hyper-parameters; each flag overrides the preset's value.
#[derive(Args, Debug)]
pub struct HyperArgs {
    /// Reference recipe to start from.
    #[arg(long, value_enum, default_value = "ml-1m")]
    preset: PresetArg,
    /// Model dimension D.
    #[arg(long)]
    d_model: Option<usize>,
    /// Number of HSTU layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Query/key and value dimension per head.
    #[arg(long)]
    head_dim: Option<usize>,
    /// L: longest history kept (N = L + 11).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Maximum epochs (reference: 100).
    #[arg(long)]
    epochs: Option<usize>,
    /// Sequences per step (reference: 128).
    #[arg(long)]
    batch_size: Option<usize>,
    /// AdamW learning rate (reference: 1e-3).
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW beta1 (reference: 0.9).
    #[arg(long)]
    beta1: Option<f64>,
    /// AdamW beta2 (reference: 0.98).
    #[arg(long)]
    beta2: Option<f64>,
    /// AdamW weight decay (reference: 0).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Objective (default: the preset's; see host/train/README.md for why).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Where the sampled softmax draws its negatives (reference: per position).
    #[arg(long, value_enum)]
    negative_sampling: Option<SamplingArg>,
    /// Uniform negatives R of the sampled softmax [default: 512; the reference: 128, Books 512].
    #[arg(long)]
    negatives: Option<usize>,
    /// Also train on each user's validation event, as the reference does (all but the last event);
    /// validation metrics are then no longer held out.
    #[arg(long)]
    train_on_validation: bool,
    /// Evaluate the test split after every epoch (a test curve, as the reference's).
    #[arg(long)]
    test_every_epoch: bool,
    /// Temperature of the cosine logits (reference: 0.05).
    #[arg(long)]
    temperature: Option<f64>,
    /// Dropout on the input and before W_o (reference: 0.2, Books 0.5).
    #[arg(long)]
    dropout: Option<f32>,
    /// Early stopping: evaluations without a better validation NDCG@10.
    #[arg(long)]
    patience: Option<usize>,
    /// Validate every this many epochs.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Validate on a fixed random subset of this many users (0 = all).
    #[arg(long)]
    eval_users: Option<usize>,
    /// Seed of initialisation, shuffling, negatives and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Compute threads (on 2 cores candle's small ops ran fastest with 1).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl HyperArgs {
    pub fn options(&self) -> TrainOptions {
        let mut o = match self.preset {
            PresetArg::Ml1m => Preset::Ml1m,
            PresetArg::Ml1mLarge => Preset::Ml1mLarge,
            PresetArg::Ml20m => Preset::Ml20m,
            PresetArg::Books => Preset::Books,
        }
        .options();
        let set = |slot: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut o.shape.d_model, self.d_model);
        set(&mut o.shape.num_layers, self.layers);
        set(&mut o.shape.num_heads, self.heads);
        set(&mut o.shape.head_dim, self.head_dim);
        set(&mut o.shape.max_seq_len, self.max_seq_len);
        set(&mut o.epochs, self.epochs);
        set(&mut o.batch_size, self.batch_size);
        set(&mut o.num_negatives, self.negatives);
        set(&mut o.patience, self.patience);
        set(&mut o.eval_every, self.eval_every);
        set(&mut o.eval_users, self.eval_users);
        o.optimizer.lr = self.lr.unwrap_or(o.optimizer.lr);
        o.optimizer.beta1 = self.beta1.unwrap_or(o.optimizer.beta1);
        o.optimizer.beta2 = self.beta2.unwrap_or(o.optimizer.beta2);
        o.optimizer.weight_decay = self.weight_decay.unwrap_or(o.optimizer.weight_decay);
        o.temperature = self.temperature.unwrap_or(o.temperature);
        o.dropout = self.dropout.unwrap_or(o.dropout);
        o.seed = self.seed.unwrap_or(o.seed);
        if let Some(loss) = self.loss {
            o.loss = match loss {
                LossArg::SampledSoftmax => LossKind::SampledSoftmax,
                LossArg::FullSoftmax => LossKind::FullSoftmax,
            };
        }
        if let Some(sampling) = self.negative_sampling {
            o.negative_sampling = match sampling {
                SamplingArg::PerPosition => NegativeSampling::PerPosition,
                SamplingArg::PerSequence => NegativeSampling::PerSequence,
            };
        }
        o.train_on_validation |= self.train_on_validation;
        o.test_every_epoch |= self.test_every_epoch;
        o
    }

    pub fn check(&self, o: &TrainOptions) -> Result<()> {
        anyhow::ensure!(o.batch_size > 0, "--batch-size must be at least 1");
        anyhow::ensure!(o.num_negatives > 0, "--negatives must be at least 1");
        anyhow::ensure!((0.0..1.0).contains(&o.dropout), "--dropout must be in [0, 1), got {}", o.dropout);
        anyhow::ensure!(o.temperature > 0.0, "--temperature must be positive, got {}", o.temperature);
        anyhow::ensure!(o.optimizer.lr > 0.0, "--lr must be positive, got {}", o.optimizer.lr);
        anyhow::ensure!(self.threads > 0, "--threads must be at least 1");
        Ok(())
    }

    /// Sizes the compute thread pools before any work starts.
    pub fn apply_threads(&self) {
        // SAFETY: called at the start of the command, before any thread is spawned;
        // candle reads RAYON_NUM_THREADS to size its matmul parallelism.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string()) };
        // The global pool may already exist (then it keeps its size; nothing to do).
        let _ = rayon::ThreadPoolBuilder::new().num_threads(self.threads).build_global();
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("serialising the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Prints the model's and popularity's test metrics, one line each.
pub fn print_test(report: &edgerec_train::report::EvalReport) {
    let row = |name: &str, m: &edgerec_train::metrics::Metrics| {
        eprintln!(
            "{name:<11} HR@10 {:.4}  NDCG@10 {:.4}  HR@50 {:.4}  NDCG@50 {:.4}  HR@200 {:.4}  NDCG@200 {:.4}  MRR {:.4}  ({} users)",
            m.hr_10, m.ndcg_10, m.hr_50, m.ndcg_50, m.hr_200, m.ndcg_200, m.mrr, m.users
        )
    };
    row("model", &report.model);
    row("popularity", &report.popularity);
}

/// Prints what was read from the dataset, and the first bad rows.
pub fn print_data(summary: &edgerec_train::dataset::DataSummary) {
    eprintln!(
        "data: {} rows ({} bad), {} users, {} items, {} merged repeats, {} unknown items",
        summary.rows,
        summary.bad_rows,
        summary.users,
        summary.items,
        summary.sequences.merged_repeats,
        summary.sequences.unknown_items
    );
    for bad in &summary.bad_examples {
        eprintln!("  bad row at line {}: {}", bad.line, bad.reason);
    }
}
