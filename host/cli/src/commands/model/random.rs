//! `edgerec model random`: a model with seeded random weights.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use edgerec_kernels::{Model, ModelConfig};

/// Named model shapes of the public benchmark table.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shape {
    /// D=50, 2 layers, 1 head of 50, L=200 (V defaults to 3953).
    #[value(name = "ml-1m")]
    Ml1m,
    /// D=256, 4 layers, 4 heads of 64, L=200 (V defaults to 131263).
    #[value(name = "ml-20m")]
    Ml20m,
    /// D=64, 4 layers, 4 heads of 16, L=50 (needs --num-items).
    Books,
    /// Every dimension from the flags below.
    Custom,
}

/// Arguments of `edgerec model random`.
#[derive(Args)]
pub struct RandomArgs {
    /// Model shape.
    #[arg(long, value_enum)]
    shape: Shape,
    /// V, the number of items (ids 1..=V).
    #[arg(long)]
    num_items: Option<usize>,
    /// D (custom shape).
    #[arg(long)]
    d_model: Option<usize>,
    /// Number of layers (custom shape).
    #[arg(long)]
    num_layers: Option<usize>,
    /// Number of heads (custom shape).
    #[arg(long)]
    num_heads: Option<usize>,
    /// Query/key dimension per head (custom shape).
    #[arg(long)]
    d_qk: Option<usize>,
    /// Value dimension per head (custom shape; defaults to --d-qk).
    #[arg(long)]
    d_v: Option<usize>,
    /// L, the longest history kept (custom shape).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// N, the attention normalizer (custom shape; defaults to L + 11).
    #[arg(long)]
    attn_normalizer: Option<usize>,
    /// Seed of the weights (same seed and shape, same model).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory to write (created if absent).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn random_config(args: &RandomArgs) -> anyhow::Result<ModelConfig> {
    let need = |value: Option<usize>, flag: &str| -> anyhow::Result<usize> {
        value.with_context(|| format!("--shape {:?} needs {flag}", args.shape))
    };
    let config = match args.shape {
        Shape::Ml1m => ModelConfig::ml_1m(args.num_items.unwrap_or(3953)),
        Shape::Ml20m => ModelConfig::ml_20m(args.num_items.unwrap_or(131_263)),
        Shape::Books => ModelConfig::books(need(args.num_items, "--num-items")?),
        Shape::Custom => {
            let d_qk = need(args.d_qk, "--d-qk")?;
            let mut c = ModelConfig::research(
                need(args.num_items, "--num-items")?,
                need(args.d_model, "--d-model")?,
                need(args.num_layers, "--num-layers")?,
                need(args.num_heads, "--num-heads")?,
                d_qk,
                need(args.max_seq_len, "--max-seq-len")?,
            );
            c.d_v = args.d_v.unwrap_or(d_qk);
            if let Some(n) = args.attn_normalizer {
                c.attn_normalizer = n;
            }
            c
        }
    };
    if !matches!(args.shape, Shape::Custom) {
        let custom_only = [
            ("--d-model", args.d_model),
            ("--num-layers", args.num_layers),
            ("--num-heads", args.num_heads),
            ("--d-qk", args.d_qk),
            ("--d-v", args.d_v),
            ("--max-seq-len", args.max_seq_len),
            ("--attn-normalizer", args.attn_normalizer),
        ];
        if let Some((flag, _)) = custom_only.iter().find(|(_, v)| v.is_some()) {
            bail!("{flag} applies to --shape custom only; --shape {:?} fixes the dimensions", args.shape);
        }
    }
    config.validate()?;
    Ok(config)
}

/// Runs `edgerec model random`.
pub fn random(args: RandomArgs) -> anyhow::Result<()> {
    let config = random_config(&args)?;
    let model = Model::random(config, args.seed)?;
    model.save(&args.out).with_context(|| format!("cannot write the model to {}", args.out.display()))?;
    eprintln!(
        "edgerec: wrote a random {} model (V = {}, seed {}) to {}",
        args.shape.to_possible_value().expect("no skipped variants").get_name(),
        model.config.num_items,
        args.seed,
        args.out.display()
    );
    Ok(())
}
