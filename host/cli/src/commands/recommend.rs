//! `edgerec recommend`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use edgerec_kernels::item_map::{ITEMS_FILE, ItemMap};
use edgerec_kernels::{AnnIndex, AnnOptions};

use crate::engine_args::{EncodeArgs, encode_one, prepare};

/// Arguments of `edgerec recommend`.
#[derive(Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    request: EncodeArgs,
    /// How many items to return.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Also return items already in the kept history window (excluded by default,
    /// as the reference's evaluation does).
    #[arg(long)]
    no_exclude_history: bool,
    /// `exact`: the exact top-k (a scan of a quantised copy of the item
    /// table); `ann`: an HNSW graph built for this call first (what a tenant
    /// created with `"retrieval": "ann"` serves; approximate).
    #[arg(long, value_enum, default_value_t = Retrieval::Exact)]
    retrieval: Retrieval,
}

/// How `edgerec recommend` takes the top items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Retrieval {
    /// Exact.
    Exact,
    /// Approximate, from an HNSW graph.
    Ann,
}

/// `edgerec recommend`: prints `{"items":[{"item":ID,"score":S},…]}`, best
/// first; when the model directory has an `items.json`, each item also
/// carries its catalog id as `"external"`.
pub fn recommend(args: RecommendArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args.request)?;
    let external_ids = if args.request.model.join(ITEMS_FILE).exists() {
        Some(
            ItemMap::load(&args.request.model)
                .with_context(|| format!("cannot read the id mapping of {}", args.request.model.display()))?,
        )
    } else {
        None
    };
    let embedding = encode_one(&prepared)?;
    let model = prepared.backend.model();
    let exclude: Vec<u32> = if args.no_exclude_history {
        Vec::new()
    } else {
        edgerec_kernels::kept_items(model, &prepared.events, prepared.query_time)?
    };
    let mut lists = match args.retrieval {
        Retrieval::Exact => prepared.backend.top_k_batch(&[embedding], args.k, &[&exclude])?,
        Retrieval::Ann => {
            let index = AnnIndex::from_model(model, AnnOptions::default()).context("building the ann index")?;
            vec![index.search(&model.weights.item_emb, &embedding, args.k, &exclude, None)?]
        }
    };
    let items: Vec<serde_json::Value> = lists
        .pop()
        .unwrap_or_default()
        .iter()
        .map(|s| match external_ids.as_ref().and_then(|map| map.external(s.item)) {
            Some(external) => serde_json::json!({ "item": s.item, "external": external, "score": s.score }),
            None => serde_json::json!({ "item": s.item, "score": s.score }),
        })
        .collect();
    println!("{}", serde_json::json!({ "items": items }));
    Ok(())
}
