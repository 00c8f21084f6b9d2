//! The model directory format: round trip, and a precise error for every way
//! a file can be wrong (missing, extra, wrong dtype, wrong shape, bad config).

use std::path::Path;

use edgerec_kernels::model::{CONFIG_FILE, WEIGHTS_FILE};
use edgerec_kernels::{Model, ModelConfig, ModelError};
use safetensors::{Dtype, tensor::TensorView};

fn small_config() -> ModelConfig {
    let mut config = ModelConfig::research(17, 13, 2, 3, 5, 9);
    config.d_v = 7;
    config
}

/// Rewrites `model.safetensors` in `dir` with `edit` applied to the list of
/// (name, dtype, shape, little-endian bytes) of the original file.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.dtype(), view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(dir.join(WEIGHTS_FILE), safetensors::serialize(views, None).unwrap()).unwrap();
}

fn saved_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::random(small_config(), 7).unwrap();
    model.save(dir.path()).unwrap();
    (dir, model)
}

fn load_error(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("the model loaded but should not have"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn save_then_load_round_trips_exactly() {
    let (dir, model) = saved_model();
    let loaded = Model::load(dir.path()).unwrap();
    assert_eq!(loaded.config, model.config);
    assert_eq!(loaded.weights, model.weights);
    assert_eq!(loaded.item_norms, model.item_norms);
    // The random weights are not degenerate.
    assert!(model.weights.layers[1].uvqk.iter().any(|x| x.abs() > 1e-3));
}

#[test]
fn random_models_are_reproducible_per_seed() {
    let a = Model::random(small_config(), 3).unwrap();
    let b = Model::random(small_config(), 3).unwrap();
    let c = Model::random(small_config(), 4).unwrap();
    assert_eq!(a.weights, b.weights);
    assert_ne!(a.weights, c.weights);
}

#[test]
fn a_missing_tensor_is_named_with_its_expected_shape() {
    let (dir, _) = saved_model();
    rewrite_weights(dir.path(), |t| t.retain(|(name, ..)| name != "layers.1.o_b"));
    let message = load_error(dir.path());
    assert!(message.contains("missing tensor \"layers.1.o_b\""), "{message}");
    assert!(message.contains("[13]"), "{message}");
}

#[test]
fn an_extra_tensor_is_an_error() {
    let (dir, _) = saved_model();
    rewrite_weights(dir.path(), |t| {
        t.push(("layers.2.uvqk".into(), Dtype::F32, vec![1], vec![0; 4]));
    });
    let message = load_error(dir.path());
    assert!(message.contains("unexpected tensor(s) [\"layers.2.uvqk\"]"), "{message}");
}

#[test]
fn a_wrong_dtype_is_named() {
    let (dir, _) = saved_model();
    rewrite_weights(dir.path(), |t| {
        let entry = t.iter_mut().find(|(name, ..)| name == "pos_emb").unwrap();
        entry.1 = Dtype::F16;
        entry.3.truncate(entry.3.len() / 2);
    });
    let message = load_error(dir.path());
    assert!(message.contains("\"pos_emb\" has dtype F16, expected F32"), "{message}");
}

#[test]
fn a_wrong_shape_is_named_with_the_expected_one() {
    let (dir, _) = saved_model();
    rewrite_weights(dir.path(), |t| {
        let entry = t.iter_mut().find(|(name, ..)| name == "layers.0.uvqk").unwrap();
        // Same number of values, transposed: only the shape check can catch it.
        entry.2.reverse();
    });
    let message = load_error(dir.path());
    // uvqk is [D, 2·H·(d_v + d_qk)] = [13, 2·3·(7+5)] = [13, 72].
    assert!(message.contains("\"layers.0.uvqk\" has shape [72, 13], expected [13, 72]"), "{message}");
}

#[test]
fn a_non_finite_weight_is_refused() {
    let (dir, _) = saved_model();
    rewrite_weights(dir.path(), |t| {
        let entry = t.iter_mut().find(|(name, ..)| name == "layers.0.ts_w").unwrap();
        entry.3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let message = load_error(dir.path());
    assert!(message.contains("\"layers.0.ts_w\" holds a non-finite value"), "{message}");
}

#[test]
fn garbage_weights_are_refused() {
    let (dir, _) = saved_model();
    std::fs::write(dir.path().join(WEIGHTS_FILE), b"definitely not safetensors").unwrap();
    let message = load_error(dir.path());
    assert!(message.contains("not a valid safetensors file"), "{message}");
}

#[test]
fn an_unknown_variant_is_refused_with_the_supported_one() {
    let (dir, _) = saved_model();
    let path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).unwrap().replace("gr-research", "dlrm-v3-stu");
    std::fs::write(&path, text).unwrap();
    let message = load_error(dir.path());
    assert!(message.contains("unsupported model variant \"dlrm-v3-stu\""), "{message}");
    assert!(message.contains("gr-research"), "{message}");
}

#[test]
fn inconsistent_configs_are_refused() {
    let mut config = small_config();
    config.attn_normalizer = config.max_seq_len - 1;
    assert!(matches!(config.validate(), Err(ModelError::Config(m)) if m.contains("attn_normalizer")));
    let mut config = small_config();
    config.num_heads = 0;
    assert!(matches!(config.validate(), Err(ModelError::Config(m)) if m.contains("num_heads")));
    let error = ModelConfig::from_json(r#"{"variant":"gr-research","d_model":8}"#).unwrap_err();
    assert!(error.to_string().contains("missing field"), "{error}");
}

#[test]
fn a_missing_directory_says_what_a_model_directory_is() {
    let message = load_error(Path::new("/nonexistent/edgerec-model"));
    assert!(message.contains("config.json and model.safetensors"), "{message}");
    // The cause is printed once, not repeated by an error chain.
    assert_eq!(message.matches("not a model directory").count(), 1, "{message}");
}
