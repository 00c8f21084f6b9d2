//! The chunked softmax losses (per-position sampled negatives, full catalog)
//! against a plain f64 reference: the value, and every gradient (user
//! outputs and item table) against central differences of that reference.

use candle_core::{Device, Tensor, Var};
use edgerec_kernels::{Model, ModelConfig};
use edgerec_train::hstu::{Contrast, HstuVars};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const V: usize = 30;
const D: usize = 8;
const B: usize = 3;
const T: usize = 4;
const R: usize = 5;
const TEMPERATURE: f64 = 0.05;

/// Plain f64 loss: mean over rows of −log softmax of cosine / temperature.
/// `negatives` None = every item 1..=V; Some = R per row, the target's own draws skipped.
fn reference_loss(
    outputs: &[f64],
    items: &[f64],
    real_rows: &[u32],
    targets: &[u32],
    negatives: Option<&[u32]>,
) -> f64 {
    let cosine = |row: usize, item: u32| -> f64 {
        let u = &outputs[row * D..(row + 1) * D];
        let e = &items[item as usize * D..(item as usize + 1) * D];
        let dot: f64 = u.iter().zip(e).map(|(a, b)| a * b).sum();
        let nu = u.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-6);
        let ne = e.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-6);
        dot / (nu * ne)
    };
    let mut total = 0.0;
    for (i, (&flat, &target)) in real_rows.iter().zip(targets).enumerate() {
        let positive = cosine(flat as usize, target) / TEMPERATURE;
        let others: Vec<u32> = match negatives {
            None => (1..=V as u32).filter(|&c| c != target).collect(),
            Some(n) => n[i * R..(i + 1) * R].iter().copied().filter(|&c| c != target).collect(),
        };
        let mut denominator = positive.exp();
        for c in others {
            denominator += (cosine(flat as usize, c) / TEMPERATURE).exp();
        }
        total += denominator.ln() - positive;
    }
    total / real_rows.len() as f64
}

fn check(contrast_ids: Option<Vec<u32>>, chunk: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = Model::random(ModelConfig::research(V, D, 1, 1, D, 10), seed).unwrap();
    let vars = HstuVars::from_model(&model).unwrap();
    let outputs: Vec<f32> = (0..B * T * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    // Sequence lengths 4, 2, 3: rows 6, 7 and 11 are padding.
    let real_rows: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 8, 9, 10];
    let targets: Vec<u32> = real_rows.iter().map(|_| rng.random_range(1..=V as u32)).collect();
    let contrast_ids = contrast_ids.map(|mut ids| {
        // Row 4 draws its own target twice: those draws are no negatives.
        ids[4 * R + 1] = targets[4];
        ids[4 * R + 3] = targets[4];
        ids
    });
    let contrast = match &contrast_ids {
        Some(ids) => Contrast::Sampled(ids),
        None => Contrast::Catalog,
    };
    let out_var = Var::from_tensor(&Tensor::from_vec(outputs.clone(), (B, T, D), &Device::Cpu).unwrap()).unwrap();
    let parts =
        vars.chunked_softmax_loss(out_var.as_tensor(), &real_rows, &targets, contrast, TEMPERATURE, chunk).unwrap();
    let grads = parts.objective.backward().unwrap();
    let g_out = grads.get(&out_var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let g_items = grads.get(&vars.item_emb).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();

    let outputs64: Vec<f64> = outputs.iter().map(|&x| x as f64).collect();
    let items64: Vec<f64> = model.weights.item_emb.iter().map(|&x| x as f64).collect();
    let ids = contrast_ids.as_deref();
    let reference = reference_loss(&outputs64, &items64, &real_rows, &targets, ids);
    assert!((parts.value - reference).abs() <= 1e-4 * reference.abs(), "loss {} vs reference {reference}", parts.value);

    let h = 1e-6;
    let numeric = |which: usize, k: usize| -> f64 {
        let (mut o, mut e) = (outputs64.clone(), items64.clone());
        let slot = if which == 0 { &mut o[k] } else { &mut e[k] };
        *slot += h;
        let plus = reference_loss(&o, &e, &real_rows, &targets, ids);
        let slot = if which == 0 { &mut o[k] } else { &mut e[k] };
        *slot -= 2.0 * h;
        let minus = reference_loss(&o, &e, &real_rows, &targets, ids);
        (plus - minus) / (2.0 * h)
    };
    let mut worst = 0.0f64;
    let mut largest = 0.0f64;
    for (which, grad) in [(0usize, &g_out), (1usize, &g_items)] {
        for (k, &g) in grad.iter().enumerate() {
            let want = numeric(which, k);
            largest = largest.max(want.abs());
            worst = worst.max((g as f64 - want).abs());
        }
    }
    assert!(largest > 1e-2, "gradients too small to test ({largest})");
    assert!(worst <= 2e-3 * largest, "gradient differs from the f64 reference by {worst} (largest {largest})");
    // Padding rows predict nothing: no gradient reaches them.
    for row in [6usize, 7, 11] {
        assert!(g_out[row * D..(row + 1) * D].iter().all(|&g| g == 0.0), "padding row {row} got a gradient");
    }
    assert!(g_items[..D].iter().all(|&g| g == 0.0), "the padding item got a gradient");
}

#[test]
fn per_position_sampled_softmax_matches_the_reference_in_value_and_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let ids: Vec<u32> = (0..9 * R).map(|_| rng.random_range(1..=V as u32)).collect();
    // One chunk, and chunks of 2 rows (not dividing 9): the same result.
    check(Some(ids.clone()), 100, 1);
    check(Some(ids), 2, 1);
}

#[test]
fn full_softmax_matches_the_reference_in_value_and_gradient() {
    check(None, 100, 2);
    check(None, 4, 3);
}

#[test]
fn mismatched_negatives_are_an_error() {
    let model = Model::random(ModelConfig::research(V, D, 1, 1, D, 10), 1).unwrap();
    let vars = HstuVars::from_model(&model).unwrap();
    let outputs = Tensor::zeros((1, 2, D), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = vars
        .chunked_softmax_loss(&outputs, &[0, 1], &[1, 2], Contrast::Sampled(&[1, 2, 3]), TEMPERATURE, 8)
        .err()
        .unwrap();
    assert!(err.to_string().contains("3 negatives for 2 rows"), "{err}");
}

/// A short run on the synthetic storefront with each loss: the best
/// validation NDCG@10 (by the engine) rises above the popularity baseline.
#[test]
fn short_runs_with_each_loss_beat_popularity_on_validation() {
    use edgerec_train::train::{LossKind, ModelShape, NegativeSampling, Preset, train};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("store");
    edgerec_train::synth::write_storefront(
        &data_dir,
        &edgerec_train::synth::StorefrontSpec { items: 96, users: 300, seed: 3 },
    )
    .unwrap();
    let data = edgerec_train::dataset::load_dataset(&data_dir, None, None, false).unwrap();
    let popularity = edgerec_train::eval::evaluate_popularity(&data.sequences, &data.split.validation, 96, 20);
    for (i, (loss, sampling)) in [
        (LossKind::FullSoftmax, NegativeSampling::PerPosition),
        (LossKind::SampledSoftmax, NegativeSampling::PerPosition),
    ]
    .into_iter()
    .enumerate()
    {
        let mut o = Preset::Ml1m.options();
        o.shape = ModelShape { d_model: 16, num_layers: 1, num_heads: 1, head_dim: 16, max_seq_len: 20 };
        o.epochs = 4;
        o.batch_size = 64;
        o.num_negatives = 16;
        o.dropout = 0.1;
        o.optimizer.lr = 5e-3;
        o.loss = loss;
        o.negative_sampling = sampling;
        let outcome = train(&data, &o, &dir.path().join(format!("run{i}")), None, false, false).unwrap();
        let best = outcome.state.best_ndcg_10;
        eprintln!("{loss:?}: best validation NDCG@10 {best:.4}, popularity {:.4}", popularity.ndcg_10);
        assert!(
            best > popularity.ndcg_10,
            "{loss:?}: validation NDCG@10 {best} not above popularity {}",
            popularity.ndcg_10
        );
    }
}
