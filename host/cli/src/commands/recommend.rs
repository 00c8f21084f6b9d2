//! `edgerec recommend`.

use anyhow::Context;
use clap::Args;
use edgerec_kernels::item_map::{ITEMS_FILE, ItemMap};

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
    let mut lists = prepared.backend.top_k_batch(&[embedding], args.k, &[&exclude])?;
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
