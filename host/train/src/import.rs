//! Imports a checkpoint written by the reference trainer (research HSTU of
//! meta-recsys/generative-recommenders) into an engine model directory,
//! without Python: the `torch.save` zip is read with candle's pickle reader.
//!
//! The reference saves `{"epoch", "model_state_dict", "optimizer_state_dict"}`
//! with the model wrapped by DistributedDataParallel, so every key starts with
//! `module.`. The optimizer state and the `_attn_mask` buffer are ignored.
//! Heads and head dims cannot be read from tensor shapes (the fused `_uvqk`
//! matrix has 2·H·(d_v+d_qk) columns): they come from the trainer's model
//! description in the file name (`HSTU-b{layers}-h{heads}-dqk{d}-dv{d}-…`) or
//! from explicit overrides.

use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{DType, Tensor};
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{LayerWeights, Model, ModelConfig, Variant, Weights};

/// Prefix DistributedDataParallel puts on every key of the state dict.
const DDP_PREFIX: &str = "module.";
/// Positions the reference adds to L for N (`gr_output_length + 1` = 11).
const EXTRA_POSITIONS: usize = 11;

/// Why a checkpoint cannot be imported. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is missing, not a PyTorch zip, or its pickle is unreadable.
    #[error(
        "{path}: not a readable PyTorch checkpoint ({reason}); pass the file the reference trainer wrote with torch.save (a zip archive)"
    )]
    Unreadable {
        /// The checkpoint.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error(
        "{path}: missing tensor {name:?}; is this a research-HSTU checkpoint of the reference trainer (keys under \"model_state_dict\", prefixed \"module.\")?"
    )]
    Missing {
        /// The checkpoint.
        path: PathBuf,
        /// Full key, prefix included.
        name: String,
    },
    /// A tensor has another shape than the config implies.
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}{hint}")]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// Full key.
        name: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// What to check.
        hint: String,
    },
    /// Heads / head dims / layers are unknown or contradict the tensors.
    #[error("{0}")]
    Inconsistent(String),
    /// The item file cannot be used.
    #[error("{path}: {message}")]
    Items {
        /// The item file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The imported weights do not make a valid engine model, or it cannot be written.
    #[error(transparent)]
    Model(#[from] edgerec_kernels::ModelError),
    /// `items.json` cannot be written.
    #[error(transparent)]
    ItemMap(#[from] edgerec_kernels::item_map::ItemMapError),
}

/// What the caller knows beyond the checkpoint; `None` = infer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Attention heads (else from the file name's `h{H}`).
    pub num_heads: Option<usize>,
    /// Query/key dim per head (else `dqk{d}`).
    pub d_qk: Option<usize>,
    /// Value dim per head (else `dv{d}`).
    pub d_v: Option<usize>,
    /// L (else N − 11 from the positional table).
    pub max_seq_len: Option<usize>,
}

/// The parts of the reference's model description that fix the layer shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// `b{layers}`.
    pub num_layers: Option<usize>,
    /// `h{heads}`.
    pub num_heads: Option<usize>,
    /// `dqk{d}`.
    pub d_qk: Option<usize>,
    /// `dv{d}`.
    pub d_v: Option<usize>,
}

/// Reads `HSTU-b{layers}-h{heads}-dqk{d}-dv{d}-…` from a checkpoint file name
/// (`None` when the name has no `HSTU-` description).
pub fn parse_description(file_name: &str) -> Option<Description> {
    let start = file_name.find("HSTU-")?;
    let mut d = Description::default();
    // The fields come right after "HSTU-", dash-separated; stop at the first that is none of them.
    for field in file_name[start + 5..].split('-') {
        let num = |prefix: &str| field.strip_prefix(prefix).and_then(|v| v.parse::<usize>().ok());
        if let Some(v) = num("dqk") {
            d.d_qk = Some(v);
        } else if let Some(v) = num("dv") {
            d.d_v = Some(v);
        } else if let Some(v) = num("b") {
            d.num_layers = Some(v);
        } else if let Some(v) = num("h") {
            d.num_heads = Some(v);
        } else {
            break;
        }
    }
    Some(d)
}

/// The result of an import.
pub struct Imported {
    /// The engine model.
    pub model: Model,
    /// The id mapping, when an item file was given.
    pub items: Option<ItemMap>,
}

fn open(path: &Path) -> Result<PthTensors, ImportError> {
    let unreadable = |reason: String| ImportError::Unreadable { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(unreadable("no such file".into()));
    }
    // A plain state dict saved alone has no "model_state_dict" level: try both.
    match PthTensors::new(path, Some("model_state_dict")) {
        Ok(t) if !t.tensor_infos().is_empty() => Ok(t),
        Ok(_) | Err(_) => {
            let t = PthTensors::new(path, None).map_err(|e| unreadable(e.to_string()))?;
            if t.tensor_infos().is_empty() {
                return Err(unreadable("it holds no tensors".into()));
            }
            Ok(t)
        }
    }
}

struct Reader<'a> {
    path: &'a Path,
    tensors: PthTensors,
    prefix: &'static str,
}

impl Reader<'_> {
    fn get(&self, key: &str, expected: &[usize], hint: &str) -> Result<Vec<f32>, ImportError> {
        let name = format!("{}{key}", self.prefix);
        let tensor: Tensor = self
            .tensors
            .get(&name)
            .map_err(|e| ImportError::Unreadable {
                path: self.path.to_path_buf(),
                reason: format!("tensor {name:?}: {e}"),
            })?
            .ok_or_else(|| ImportError::Missing { path: self.path.to_path_buf(), name: name.clone() })?;
        if tensor.dims() != expected {
            return Err(ImportError::Shape {
                path: self.path.to_path_buf(),
                name,
                found: tensor.dims().to_vec(),
                expected: expected.to_vec(),
                hint: hint.to_string(),
            });
        }
        let values =
            tensor.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(
                |e| ImportError::Unreadable { path: self.path.to_path_buf(), reason: format!("tensor {name:?}: {e}") },
            )?;
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(ImportError::Inconsistent(format!(
                "{}: tensor {name:?} holds a non-finite value at index {bad}; the checkpoint is corrupt or diverged",
                self.path.display()
            )));
        }
        Ok(values)
    }

    fn dims(&self, key: &str) -> Result<Vec<usize>, ImportError> {
        let name = format!("{}{key}", self.prefix);
        self.tensors
            .tensor_infos()
            .get(&name)
            .map(|info| info.layout.dims().to_vec())
            .ok_or_else(|| ImportError::Missing { path: self.path.to_path_buf(), name })
    }
}

/// Reads the item file: an `items.json` (`{"external_ids": [...]}`) or a text
/// file with one external id per line (line k = model id k).
pub fn read_item_file(path: &Path) -> Result<ItemMap, ImportError> {
    let bad = |message: String| ImportError::Items { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if text.trim_start().starts_with('{') {
        return ItemMap::from_json(&text).map_err(bad);
    }
    let ids: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    ItemMap::from_external_ids(ids)
        .map_err(|e| bad(format!("{e} (expected one external id per line, line k = model id k)")))
}

/// Imports the checkpoint at `path`; `items` is an optional item file.
pub fn import_gr_research(path: &Path, opts: &ImportOptions, items: Option<&Path>) -> Result<Imported, ImportError> {
    let tensors = open(path)?;
    let prefix = if tensors.tensor_infos().keys().any(|k| k.starts_with(DDP_PREFIX)) { DDP_PREFIX } else { "" };
    let reader = Reader { path, tensors, prefix };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let description = parse_description(file_name).unwrap_or_default();

    let item_dims = reader.dims("_embedding_module._item_emb.weight")?;
    let pos_dims = reader.dims("_input_features_preproc._pos_emb.weight")?;
    let [rows, d] = item_dims[..] else {
        return Err(ImportError::Inconsistent(format!(
            "{}: the item table has shape {item_dims:?}, expected [items + 1, D]",
            path.display()
        )));
    };
    let [n, pos_d] = pos_dims[..] else {
        return Err(ImportError::Inconsistent(format!(
            "{}: the positional table has shape {pos_dims:?}, expected [N, D]",
            path.display()
        )));
    };
    if pos_d != d || rows < 2 {
        return Err(ImportError::Inconsistent(format!(
            "{}: item table {item_dims:?} and positional table {pos_dims:?} disagree on D (or hold no item)",
            path.display()
        )));
    }
    let layer_key = |i: usize, name: &str| format!("_hstu._attention_layers.{i}.{name}");
    let mut num_layers = 0;
    while reader.tensors.tensor_infos().contains_key(&format!("{prefix}{}", layer_key(num_layers, "_uvqk"))) {
        num_layers += 1;
    }
    if num_layers == 0 {
        return Err(ImportError::Missing {
            path: path.to_path_buf(),
            name: format!("{prefix}{}", layer_key(0, "_uvqk")),
        });
    }
    if let Some(b) = description.num_layers
        && b != num_layers
    {
        return Err(ImportError::Inconsistent(format!(
            "{}: the file name says b{b} ({b} layers) but the checkpoint has {num_layers}; rename the file or check it is the checkpoint you meant",
            path.display()
        )));
    }
    let pick = |flag: Option<usize>, named: Option<usize>, what: &str, option: &str| -> Result<usize, ImportError> {
        flag.or(named).filter(|&v| v > 0).ok_or_else(|| {
            ImportError::Inconsistent(format!(
                "{}: the {what} cannot be read from the tensors and the file name has no HSTU-b…-h…-dqk…-dv… description; pass {option}",
                path.display()
            ))
        })
    };
    let h = pick(opts.num_heads, description.num_heads, "number of heads", "--heads")?;
    let dqk = pick(opts.d_qk, description.d_qk, "query/key dim per head", "--dqk")?;
    let dv = pick(opts.d_v, description.d_v, "value dim per head", "--dv")?;
    let width = 2 * h * (dv + dqk);
    let uvqk_dims = reader.dims(&layer_key(0, "_uvqk"))?;
    let o_dims = reader.dims(&layer_key(0, "_o.weight"))?;
    if uvqk_dims.len() != 2 || uvqk_dims[1] != width || o_dims.len() != 2 || o_dims[1] != h * dv {
        // Transposed tensors have their own, clearer message (below) when the heads are right.
        let transposed = uvqk_dims == [width, d] || o_dims == [h * dv, d];
        if !transposed {
            return Err(ImportError::Inconsistent(format!(
                "{}: h{h}-dqk{dqk}-dv{dv} needs _uvqk [{d}, {width}] and _o.weight [{d}, {}], the checkpoint has {uvqk_dims:?} and {o_dims:?}; \
                 the file-name description is wrong: pass --heads, --dqk and --dv as the model was trained",
                path.display(),
                h * dv
            )));
        }
    }
    let l = opts.max_seq_len.unwrap_or(n.saturating_sub(EXTRA_POSITIONS));
    if l == 0 || l > n {
        return Err(ImportError::Inconsistent(format!(
            "{}: the positional table has N = {n} rows, so L = N − 11 = {} is unusable; pass --max-seq-len (at most {n})",
            path.display(),
            n as i64 - EXTRA_POSITIONS as i64
        )));
    }
    let ts_dims = reader.dims(&layer_key(0, "_rel_attn_bias._ts_w"))?;
    let num_time_buckets = match ts_dims[..] {
        [len] if len >= 2 => len - 1,
        _ => {
            return Err(ImportError::Inconsistent(format!(
                "{}: _ts_w has shape {ts_dims:?}, expected [buckets + 1]",
                path.display()
            )));
        }
    };
    let config = ModelConfig {
        variant: Variant::GrResearch,
        d_model: d,
        num_layers,
        num_heads: h,
        d_qk: dqk,
        d_v: dv,
        max_seq_len: l,
        attn_normalizer: n,
        alpha: 1.0,
        num_items: rows - 1,
        num_time_buckets,
        time_bucket_div: 0.301,
    };
    config.validate()?;

    let mut item_emb = reader.get("_embedding_module._item_emb.weight", &[rows, d], "")?;
    // Row 0 is padding: the reference never reads it, the engine expects zeros.
    item_emb[..d].fill(0.0);
    let pos_emb = reader.get("_input_features_preproc._pos_emb.weight", &[n, d], "")?;
    let transposed_hint = " (a transposed tensor: the reference stores _uvqk input-by-output and _o.weight output-by-input, as torch.nn.Linear)";
    let mut layers = Vec::with_capacity(num_layers);
    for i in 0..num_layers {
        let uvqk = reader.get(&layer_key(i, "_uvqk"), &[d, width], transposed_hint)?;
        let o_torch = reader.get(&layer_key(i, "_o.weight"), &[d, h * dv], transposed_hint)?;
        // torch Linear keeps [out, in]; the engine wants [in, out].
        let mut o_w = vec![0f32; h * dv * d];
        for out in 0..d {
            for inp in 0..h * dv {
                o_w[inp * d + out] = o_torch[out * h * dv + inp];
            }
        }
        let o_b = reader.get(&layer_key(i, "_o.bias"), &[d], "")?;
        let pos_w = reader.get(
            &layer_key(i, "_rel_attn_bias._pos_w"),
            &[2 * n - 1],
            " (the relative position table must have 2N − 1 entries)",
        )?;
        let ts_w = reader.get(&layer_key(i, "_rel_attn_bias._ts_w"), &[num_time_buckets + 1], "")?;
        layers.push(LayerWeights { uvqk, o_w, o_b, pos_w, ts_w });
    }
    let model = Model::new(config, Weights { item_emb, pos_emb, layers })?;
    let items = match items {
        Some(file) => {
            let map = read_item_file(file)?;
            if map.len() != model.config.num_items {
                return Err(ImportError::Items {
                    path: file.to_path_buf(),
                    message: format!(
                        "maps {} items but the checkpoint's item table has {} (ids 1..={})",
                        map.len(),
                        model.config.num_items,
                        model.config.num_items
                    ),
                });
            }
            Some(map)
        }
        None => None,
    };
    Ok(Imported { model, items })
}

/// Imports and writes `out` (config.json, model.safetensors, items.json when given).
pub fn import_to_dir(
    path: &Path,
    opts: &ImportOptions,
    items: Option<&Path>,
    out: &Path,
) -> Result<Imported, ImportError> {
    let imported = import_gr_research(path, opts, items)?;
    imported.model.save(out)?;
    if let Some(map) = &imported.items {
        map.save(out)?;
    }
    Ok(imported)
}
