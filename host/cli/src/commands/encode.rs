//! `edgerec encode`.

use crate::engine_args::{EncodeArgs, encode_one, prepare};

/// `edgerec encode`: prints `{"embedding":[…]}`.
pub fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    let embedding = encode_one(&prepared)?;
    println!("{}", serde_json::json!({ "embedding": embedding }));
    Ok(())
}
