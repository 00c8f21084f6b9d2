//! `edgerec model import`: a checkpoint of the reference trainer becomes an engine model directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use edgerec_train::import::{ImportOptions, import_to_dir};

/// Checkpoint formats `edgerec model import` reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ImportFormat {
    /// torch.save of the research HSTU trainer (meta-recsys/generative-recommenders).
    #[value(name = "gr-research")]
    GrResearch,
}

/// Arguments of `edgerec model import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Which trainer wrote the checkpoint.
    #[arg(long = "from", value_enum)]
    from: ImportFormat,
    /// The checkpoint file (its name carries the trainer's HSTU-b…-h…-dqk…-dv… description).
    #[arg(value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// Output model directory (config.json, model.safetensors, items.json with --items).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// External item ids: items.json ({"external_ids": [...]}) or one id per line (line k = model id k).
    /// Without it the ids are the checkpoint's own (MovieLens: the movie ids).
    #[arg(long, value_name = "FILE")]
    items: Option<PathBuf>,
    /// L, the longest history kept (default: N − 11 from the positional table).
    #[arg(long, value_name = "L")]
    max_seq_len: Option<usize>,
    /// Attention heads (default: h… of the file name).
    #[arg(long)]
    heads: Option<usize>,
    /// Query/key dim per head (default: dqk… of the file name).
    #[arg(long)]
    dqk: Option<usize>,
    /// Value dim per head (default: dv… of the file name).
    #[arg(long)]
    dv: Option<usize>,
}

/// Runs `edgerec model import`.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let ImportFormat::GrResearch = args.from;
    let opts = ImportOptions { num_heads: args.heads, d_qk: args.dqk, d_v: args.dv, max_seq_len: args.max_seq_len };
    let imported = import_to_dir(&args.checkpoint, &opts, args.items.as_deref(), &args.out)
        .with_context(|| format!("cannot import {}", args.checkpoint.display()))?;
    let c = &imported.model.config;
    eprintln!(
        "edgerec: imported {} items, D {}, {} layers, {} heads (dqk {}, dv {}), L {} (N {}) into {}{}",
        c.num_items,
        c.d_model,
        c.num_layers,
        c.num_heads,
        c.d_qk,
        c.d_v,
        c.max_seq_len,
        c.attn_normalizer,
        args.out.display(),
        if imported.items.is_some() { " with items.json" } else { "" }
    );
    Ok(())
}
