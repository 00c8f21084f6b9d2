//! The model directory: `config.json` + `model.safetensors` (float32), loaded
//! into row-major `Vec<f32>` tensors with every name, dtype and shape checked.
//!
//! Tensor names and shapes (D = d_model, V = num_items, N = attn_normalizer):
//!
//! | name | shape |
//! |---|---|
//! | `item_emb` | [V+1, D] (row 0 = padding) |
//! | `pos_emb` | [N, D] |
//! | `layers.{i}.uvqk` | [D, 2·H·(d_v+d_qk)] (input-by-output; blocks u, v, q, k) |
//! | `layers.{i}.o_w` | [H·d_v, D] (input-by-output) |
//! | `layers.{i}.o_b` | \[D\] |
//! | `layers.{i}.pos_w` | [2N−1] |
//! | `layers.{i}.ts_w` | [num_time_buckets+1] |

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::config::ModelConfig;
use crate::error::ModelError;

/// File name of the hyper-parameters inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Weights of one HSTU layer, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// [D, 2·H·(d_v+d_qk)], input-by-output, column blocks u | v | q | k.
    pub uvqk: Vec<f32>,
    /// [H·d_v, D], input-by-output.
    pub o_w: Vec<f32>,
    /// \[D\].
    pub o_b: Vec<f32>,
    /// [2N−1]: relative position bias, index `N-1 + j - i`.
    pub pos_w: Vec<f32>,
    /// [num_time_buckets+1]: log-time-gap bias.
    pub ts_w: Vec<f32>,
}

/// All weights of a model, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// [V+1, D]; row 0 is padding.
    pub item_emb: Vec<f32>,
    /// [N, D]; row t is added to the t-th kept event counted from the oldest.
    pub pos_emb: Vec<f32>,
    /// One entry per layer.
    pub layers: Vec<LayerWeights>,
}

/// A loaded model: config, weights and what is precomputed from them at load.
#[derive(Clone, Debug)]
pub struct Model {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Weights.
    pub weights: Weights,
    /// ‖E\[c\]‖₂ for every item row c in 0..=V (scoring divides by max(norm, 1e-6)).
    pub item_norms: Vec<f32>,
}

/// Expected shape of every tensor, in file order.
fn expected_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.d_model;
    let n = config.attn_normalizer;
    let mut shapes = vec![("item_emb".to_string(), vec![config.num_items + 1, d]), ("pos_emb".to_string(), vec![n, d])];
    for i in 0..config.num_layers {
        shapes.push((format!("layers.{i}.uvqk"), vec![d, config.uvqk_width()]));
        shapes.push((format!("layers.{i}.o_w"), vec![config.attn_width(), d]));
        shapes.push((format!("layers.{i}.o_b"), vec![d]));
        shapes.push((format!("layers.{i}.pos_w"), vec![2 * n - 1]));
        shapes.push((format!("layers.{i}.ts_w"), vec![config.num_time_buckets + 1]));
    }
    shapes
}

impl Weights {
    /// Parses a safetensors buffer and checks it against `config`: every
    /// expected tensor present, float32, of the expected shape, and no other.
    pub fn from_safetensors(config: &ModelConfig, bytes: &[u8]) -> Result<Self, ModelError> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| ModelError::Weights(format!("{WEIGHTS_FILE} is not a valid safetensors file: {e}")))?;
        let expected = expected_shapes(config);
        let expected_names: std::collections::HashSet<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
        let mut extra: Vec<String> =
            file.names().into_iter().filter(|name| !expected_names.contains(*name)).map(str::to_string).collect();
        if !extra.is_empty() {
            extra.sort();
            return Err(ModelError::Weights(format!(
                "unexpected tensor(s) {extra:?}: a model with num_layers = {} has only item_emb, pos_emb \
                 and layers.0..{} (uvqk, o_w, o_b, pos_w, ts_w)",
                config.num_layers, config.num_layers
            )));
        }
        let mut tensors = BTreeMap::new();
        for (name, shape) in &expected {
            let view = file
                .tensor(name)
                .map_err(|_| ModelError::Weights(format!("missing tensor {name:?} (expected float32 {shape:?})")))?;
            tensors.insert(name.clone(), read_f32(name, shape, &view)?);
        }
        let mut take = |name: &str| tensors.remove(name).expect("checked above");
        let item_emb = take("item_emb");
        let pos_emb = take("pos_emb");
        let layers = (0..config.num_layers)
            .map(|i| LayerWeights {
                uvqk: take(&format!("layers.{i}.uvqk")),
                o_w: take(&format!("layers.{i}.o_w")),
                o_b: take(&format!("layers.{i}.o_b")),
                pos_w: take(&format!("layers.{i}.pos_w")),
                ts_w: take(&format!("layers.{i}.ts_w")),
            })
            .collect();
        Ok(Weights { item_emb, pos_emb, layers })
    }

    /// Serialises to safetensors bytes, in the names and shapes of the format.
    pub fn to_safetensors(&self, config: &ModelConfig) -> Result<Vec<u8>, ModelError> {
        let shapes = expected_shapes(config);
        let mut data: Vec<(String, Vec<usize>, &[f32])> = Vec::with_capacity(shapes.len());
        for (name, shape) in shapes {
            let values = self.tensor(&name);
            let len: usize = shape.iter().product();
            if values.len() != len {
                return Err(ModelError::Weights(format!(
                    "tensor {name:?} holds {} values but shape {shape:?} needs {len}",
                    values.len()
                )));
            }
            data.push((name, shape, values));
        }
        let bytes: Vec<Vec<u8>> =
            data.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), raw)| {
                (name.clone(), TensorView::new(Dtype::F32, shape.clone(), raw).expect("sizes checked"))
            })
            .collect();
        safetensors::serialize(views, None).map_err(|e| ModelError::Weights(format!("cannot serialise weights: {e}")))
    }

    /// The tensor of the given format name.
    fn tensor(&self, name: &str) -> &[f32] {
        match name {
            "item_emb" => &self.item_emb,
            "pos_emb" => &self.pos_emb,
            _ => {
                let rest = name.strip_prefix("layers.").expect("format names");
                let (index, field) = rest.split_once('.').expect("format names");
                let layer = &self.layers[index.parse::<usize>().expect("format names")];
                match field {
                    "uvqk" => &layer.uvqk,
                    "o_w" => &layer.o_w,
                    "o_b" => &layer.o_b,
                    "pos_w" => &layer.pos_w,
                    "ts_w" => &layer.ts_w,
                    _ => unreachable!("format names"),
                }
            }
        }
    }
}

fn read_f32(name: &str, shape: &[usize], view: &TensorView<'_>) -> Result<Vec<f32>, ModelError> {
    if view.dtype() != Dtype::F32 {
        return Err(ModelError::Weights(format!(
            "tensor {name:?} has dtype {:?}, expected F32 (float32)",
            view.dtype()
        )));
    }
    if view.shape() != shape {
        return Err(ModelError::Weights(format!("tensor {name:?} has shape {:?}, expected {shape:?}", view.shape())));
    }
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(pos) = values.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::Weights(format!(
            "tensor {name:?} holds a non-finite value ({}) at flat index {pos}",
            values[pos]
        )));
    }
    Ok(values)
}

impl Model {
    /// Builds a model from parts, checking the weights match the config, and
    /// precomputes item norms.
    pub fn new(config: ModelConfig, weights: Weights) -> Result<Self, ModelError> {
        config.validate()?;
        if weights.layers.len() != config.num_layers {
            return Err(ModelError::Weights(format!(
                "config has {} layers but the weights have {}",
                config.num_layers,
                weights.layers.len()
            )));
        }
        // The same shape table as files use, so hand-built weights get the same checks.
        for (name, shape) in expected_shapes(&config) {
            let len: usize = shape.iter().product();
            let got = weights.tensor(&name).len();
            if got != len {
                return Err(ModelError::Weights(format!(
                    "tensor {name:?} holds {got} values, expected shape {shape:?} ({len} values)"
                )));
            }
        }
        let d = config.d_model;
        let item_norms = weights.item_emb.chunks_exact(d).map(item_norm).collect();
        Ok(Model { config, weights, item_norms })
    }

    /// Loads a model directory (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a model directory (expected a folder with config.json and model.safetensors)",
                ),
            });
        }
        let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
        let path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io { path, error: source })?;
        let weights = Weights::from_safetensors(&config, &bytes)?;
        Model::new(config, weights)
    }

    /// Writes the model directory (created if absent).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io { path: dir.to_path_buf(), error: source })?;
        self.config.save(&dir.join(CONFIG_FILE))?;
        let bytes = self.weights.to_safetensors(&self.config)?;
        let path = dir.join(WEIGHTS_FILE);
        std::fs::write(&path, bytes).map_err(|source| ModelError::Io { path, error: source })
    }

    /// A model with seeded random weights, scaled like a trained one (item and
    /// position embeddings ~ N(0, 1/D)-ish uniform, projections Xavier-uniform,
    /// small biases): reproducible for a given `(config, seed)`.
    pub fn random(config: ModelConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = config.d_model;
        let n = config.attn_normalizer;
        let mut uniform =
            |len: usize, scale: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-scale..scale)).collect() };
        let emb_scale = (3.0 / d as f32).sqrt() * 0.5;
        let mut item_emb = uniform((config.num_items + 1) * d, emb_scale);
        item_emb[..d].fill(0.0);
        let pos_emb = uniform(n * d, emb_scale);
        let xavier = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f32).sqrt();
        let layers = (0..config.num_layers)
            .map(|_| LayerWeights {
                uvqk: uniform(d * config.uvqk_width(), xavier(d, config.uvqk_width())),
                o_w: uniform(config.attn_width() * d, xavier(config.attn_width(), d)),
                o_b: uniform(d, 0.05),
                pos_w: uniform(2 * n - 1, 0.2),
                ts_w: uniform(config.num_time_buckets + 1, 0.2),
            })
            .collect();
        Model::new(config, Weights { item_emb, pos_emb, layers })
    }

    /// The embedding row of item `c` (0 = padding).
    pub fn item_row(&self, item: u32) -> &[f32] {
        let d = self.config.d_model;
        &self.weights.item_emb[item as usize * d..(item as usize + 1) * d]
    }
}

/// ‖row‖₂ in f32 as scoring divides by it (sum of squares in row order, then
/// the square root): the model's `item_norms` and the quantised retrieval
/// table both call this, so their scores agree to the bit.
pub(crate) fn item_norm(row: &[f32]) -> f32 {
    row.iter().map(|x| x * x).sum::<f32>().sqrt()
}
