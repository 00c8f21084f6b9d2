//! `config.json` of the model format: the hyper-parameters that fix every
//! tensor's shape and the variant of the layer math.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The layer variant a model was trained with. Only the research HSTU of the
/// public benchmark table (`"gr-research"`) is implemented; the field exists so
/// that production variants (learnable LNs, no rab, M-FALCON targets) are named
/// explicitly rather than guessed from shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// The research HSTU (`generative_recommenders/research`), see `docs/HSTU.md`.
    #[serde(rename = "gr-research")]
    GrResearch,
}

/// Hyper-parameters of an HSTU model (the `config.json` of a model directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Layer variant; only `"gr-research"` is accepted.
    pub variant: Variant,
    /// Model (embedding) dimension D.
    pub d_model: usize,
    /// Number of HSTU layers.
    pub num_layers: usize,
    /// Attention heads H.
    pub num_heads: usize,
    /// Query/key dimension per head.
    pub d_qk: usize,
    /// Value dimension per head.
    pub d_v: usize,
    /// L: the longest history kept (older events are dropped).
    pub max_seq_len: usize,
    /// N: the constant attention normalizer, also the number of positions
    /// (the reference uses L + 11).
    pub attn_normalizer: usize,
    /// Scale of q·k inside the attention SiLU (1 for the parity models).
    pub alpha: f32,
    /// V: number of items; item ids run 1..=V, row 0 of `item_emb` is padding.
    pub num_items: usize,
    /// Number of log-time buckets (128 in the reference); `ts_w` has one more entry.
    pub num_time_buckets: usize,
    /// Divisor of ln(Δt) in the bucket function (0.301 in the reference).
    pub time_bucket_div: f32,
}

impl ModelConfig {
    /// The reference's ML-1M shape (D=50, 2 layers, 1 head of 50, L=200, N=211) with V items.
    pub fn ml_1m(num_items: usize) -> Self {
        Self::research(num_items, 50, 2, 1, 50, 200)
    }

    /// The reference's ML-20M shape (D=256, 4 layers, 4 heads of 64, L=200, N=211) with V items.
    pub fn ml_20m(num_items: usize) -> Self {
        Self::research(num_items, 256, 4, 4, 64, 200)
    }

    /// The reference's Amazon Books shape (D=64, 4 layers, 4 heads of 16, L=50, N=61) with V items.
    pub fn books(num_items: usize) -> Self {
        Self::research(num_items, 64, 4, 4, 16, 50)
    }

    /// A research-variant config with `d_qk = d_v = head_dim`, N = L + 11,
    /// alpha 1 and the reference's time buckets.
    pub fn research(
        num_items: usize,
        d_model: usize,
        num_layers: usize,
        num_heads: usize,
        head_dim: usize,
        max_seq_len: usize,
    ) -> Self {
        ModelConfig {
            variant: Variant::GrResearch,
            d_model,
            num_layers,
            num_heads,
            d_qk: head_dim,
            d_v: head_dim,
            max_seq_len,
            attn_normalizer: max_seq_len + 11,
            alpha: 1.0,
            num_items,
            num_time_buckets: 128,
            time_bucket_div: 0.301,
        }
    }

    /// Width of the fused u|v|q|k projection: 2·H·(d_v + d_qk).
    pub fn uvqk_width(&self) -> usize {
        2 * self.num_heads * (self.d_v + self.d_qk)
    }

    /// Width of the concatenated attention output: H·d_v.
    pub fn attn_width(&self) -> usize {
        self.num_heads * self.d_v
    }

    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelError::Io { path: path.to_path_buf(), error: source })?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config(msg) => ModelError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and validates a config from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        // Check the variant first so an unknown one gets a message that says
        // which variants exist, not a generic serde error.
        let raw: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json is not valid JSON: {e}")))?;
        match raw.get("variant").and_then(|v| v.as_str()) {
            Some("gr-research") => {}
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "unsupported model variant {other:?}: this build implements only \"gr-research\" \
                     (the research HSTU of docs/HSTU.md)"
                )));
            }
            None => {
                return Err(ModelError::Config(
                    "config.json has no string field \"variant\" (expected \"gr-research\")".into(),
                ));
            }
        }
        let config: ModelConfig =
            serde_json::from_value(raw).map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values are usable: every dimension positive, N ≥ L, finite alpha.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("d_model", self.d_model),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("d_qk", self.d_qk),
            ("d_v", self.d_v),
            ("max_seq_len", self.max_seq_len),
            ("attn_normalizer", self.attn_normalizer),
            ("num_items", self.num_items),
            ("num_time_buckets", self.num_time_buckets),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ModelError::Config(format!("{name} must be at least 1, got 0")));
            }
        }
        if self.attn_normalizer < self.max_seq_len {
            return Err(ModelError::Config(format!(
                "attn_normalizer (N = {}) must be at least max_seq_len (L = {}): positions 0..L index pos_emb [N, D]",
                self.attn_normalizer, self.max_seq_len
            )));
        }
        if !self.alpha.is_finite() {
            return Err(ModelError::Config(format!("alpha must be finite, got {}", self.alpha)));
        }
        if !(self.time_bucket_div.is_finite() && self.time_bucket_div > 0.0) {
            return Err(ModelError::Config(format!(
                "time_bucket_div must be a positive number, got {}",
                self.time_bucket_div
            )));
        }
        if self.num_items >= u32::MAX as usize {
            return Err(ModelError::Config(format!("num_items {} does not fit item ids in u32", self.num_items)));
        }
        Ok(())
    }

    /// Writes `config.json` (pretty-printed).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        std::fs::write(path, text + "\n").map_err(|source| ModelError::Io { path: path.to_path_buf(), error: source })
    }
}
