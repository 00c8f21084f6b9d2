//! Trainer ↔ engine parity, the sampled-softmax loss against a plain reference,
//! a short training run whose validation loss falls,
//! evaluation ranks against a brute-force ranking, and fine-tuning that keeps old ids.

use candle_core::{Device, Tensor};
use edgerec_kernels::encode::encode;
use edgerec_kernels::history::Event;
use edgerec_kernels::item_map::ItemMap;
use edgerec_kernels::{Model, ModelConfig};
use edgerec_train::dataset::load_dataset;
use edgerec_train::hstu::{Batch, HstuVars, init_model, l2_normalize};
use edgerec_train::synth::{StorefrontSpec, write_storefront};
use edgerec_train::train::{ModelShape, Preset, TrainOptions, case_loss, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random histories with gaps from 0 s (ties) to months, so every time bucket regime occurs.
fn random_history(rng: &mut ChaCha8Rng, len: usize, num_items: usize) -> (Vec<u32>, Vec<i64>) {
    let mut ts = 1_000_000_000i64;
    let mut items = Vec::new();
    let mut times = Vec::new();
    for _ in 0..len {
        ts += [0, 1, 7, 300, 86_400, 5_000_000][rng.random_range(0..6)];
        items.push(rng.random_range(1..=num_items as u32));
        times.push(ts);
    }
    (items, times)
}

#[test]
fn trainer_forward_matches_the_engine_on_the_same_weights() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Two heads of odd width, a short L so that windows get truncated too.
    let config = ModelConfig::research(40, 12, 2, 2, 5, 16);
    let mut model = init_model(&config, &mut rng).unwrap();
    // Trained-like rab tables and projections: larger than the init (u|v|q|k start
    // at σ 0.02, where the attention is nearly zero) so that every term matters.
    for layer in &mut model.weights.layers {
        layer.uvqk.iter_mut().for_each(|w| *w = rng.random_range(-0.5..0.5));
        layer.pos_w.iter_mut().for_each(|w| *w = rng.random_range(-1.0..1.0));
        layer.ts_w.iter_mut().for_each(|w| *w = rng.random_range(-1.0..1.0));
    }
    let model = Model::new(model.config.clone(), model.weights.clone()).unwrap();
    let vars = HstuVars::from_model(&model).unwrap();
    let lens = [1usize, 2, 9, 16, 5];
    let histories: Vec<(Vec<u32>, Vec<i64>)> = lens.iter().map(|&n| random_history(&mut rng, n, 40)).collect();
    // Each row i predicts event i+1; the last row is queried a little after the last event.
    let nexts: Vec<Vec<i64>> = histories
        .iter()
        .map(|(_, ts)| {
            let mut n = ts[1..].to_vec();
            n.push(ts[ts.len() - 1] + 4242);
            n
        })
        .collect();
    let rows: Vec<(&[u32], &[i64], &[i64])> =
        histories.iter().zip(&nexts).map(|((i, t), n)| (i.as_slice(), t.as_slice(), n.as_slice())).collect();
    let batch = Batch::new(&config, &rows).unwrap();
    let out = l2_normalize(&vars.forward(&batch, 0.2, None).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    let mut row = 0;
    let mut worst = 0.0f32;
    for ((items, ts), next) in histories.iter().zip(&nexts) {
        for (i, &query_time) in next.iter().enumerate().take(items.len()) {
            let events: Vec<Event> = (0..=i).map(|j| Event { item: items[j], ts: ts[j] }).collect();
            let engine = encode(&model, &events, query_time).unwrap();
            let diff: f32 = engine.iter().zip(&out[row]).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
            let norm: f32 = engine.iter().map(|a| a * a).sum::<f32>().sqrt();
            worst = worst.max(diff / norm);
            row += 1;
        }
    }
    assert_eq!(row, out.len());
    assert!(worst <= 1e-4, "trainer and engine differ by {worst} (relative L2)");
}

/// Mean and standard deviation of a slice, in f64.
fn moments(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn initialisation_follows_the_reference_trainer() {
    // ML-1M's shape: D 50, 2 layers, 1 head of 50, L 200 (N 211), 3,883 items.
    let config = ModelConfig::research(3883, 50, 2, 1, 50, 200);
    let model = init_model(&config, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
    let w = &model.weights;
    let close = |what: &str, got: f64, want: f64, rel: f64| {
        assert!((got - want).abs() <= rel * want, "{what}: std {got:.5}, reference {want:.5}");
    };
    // Item rows: truncated normal σ 0.02 cut at ±2σ (std 0.02·0.8796), padding row zero.
    assert!(w.item_emb[..50].iter().all(|&v| v == 0.0), "the padding row is zero");
    let items = &w.item_emb[50..];
    close("item embeddings", moments(items).1, 0.02 * 0.8796, 0.02);
    assert!(items.iter().all(|v| v.abs() < 0.04), "item embeddings are cut at 2σ");
    // Positions: Xavier-normal over [N, D] (HSTU.reset_params overrides the preprocessor's init).
    close("positions", moments(&w.pos_emb).1, (2.0f64 / (211.0 + 50.0)).sqrt(), 0.03);
    for layer in &w.layers {
        close("u|v|q|k", moments(&layer.uvqk).1, 0.02, 0.02);
        // Xavier-uniform: bound √(6/(fan_in+fan_out)), std bound/√3.
        let bound = (6.0f64 / 100.0).sqrt();
        close("W_o", moments(&layer.o_w).1, bound / 3f64.sqrt(), 0.05);
        assert!(layer.o_w.iter().all(|&v| (v as f64).abs() <= bound));
        assert!(layer.o_b.iter().all(|&v| (v as f64).abs() <= 1.0 / 50f64.sqrt()));
        close("rab positions", moments(&layer.pos_w).1, 0.02, 0.1);
        assert!(moments(&layer.o_b).1 > 0.02, "the bias is drawn, not zero");
    }
}

fn tiny_options() -> TrainOptions {
    let mut o = Preset::Ml1m.options();
    o.shape = ModelShape { d_model: 16, num_layers: 1, num_heads: 1, head_dim: 16, max_seq_len: 20 };
    o.epochs = 4;
    o.batch_size = 64;
    o.num_negatives = 32;
    o.dropout = 0.1;
    o.optimizer.lr = 5e-3;
    o.patience = 10;
    o
}

#[test]
fn a_short_run_lowers_validation_loss_and_writes_an_engine_model() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("store");
    write_storefront(&data_dir, &StorefrontSpec { items: 96, users: 300, seed: 1 }).unwrap();
    let data = load_dataset(&data_dir, None, None, false).unwrap();
    assert_eq!(data.items.len(), 96, "the catalog fixes the item set");
    let opts = tiny_options();
    let initial = init_model(&opts.shape.config(96), &mut ChaCha8Rng::seed_from_u64(opts.seed)).unwrap();
    let before =
        case_loss(&HstuVars::from_model(&initial).unwrap(), &data.sequences, &data.split.validation, &opts, 1).unwrap();
    let out = dir.path().join("run");
    let outcome = train(&data, &opts, &out, None, false, false).unwrap();
    let best = Model::load(&out.join("model")).unwrap();
    let after =
        case_loss(&HstuVars::from_model(&best).unwrap(), &data.sequences, &data.split.validation, &opts, 1).unwrap();
    assert!(after < before - 0.1, "validation loss {before} -> {after}");
    let curve: Vec<f64> = outcome.state.history.iter().map(|r| r.train_loss).collect();
    assert!(curve.last().unwrap() < curve.first().unwrap(), "training loss {curve:?}");
    assert_eq!(ItemMap::load(&out.join("model")).unwrap().external(1), Some("sku-00001"));
    // --resume continues from the checkpoint for one more epoch.
    let more = TrainOptions { epochs: 5, ..opts };
    let resumed = train(&data, &more, &out, None, true, false).unwrap();
    assert_eq!(resumed.state.history.len(), 5);
}

#[test]
fn fine_tuning_grows_the_catalog_and_keeps_old_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("store");
    write_storefront(&data_dir, &StorefrontSpec { items: 48, users: 120, seed: 2 }).unwrap();
    let data = load_dataset(&data_dir, None, None, false).unwrap();
    let mut opts = tiny_options();
    opts.epochs = 1;
    train(&data, &opts, &dir.path().join("base"), None, false, false).unwrap();
    let base_dir = dir.path().join("base/model");
    let base_map = ItemMap::load(&base_dir).unwrap();
    let base = Model::load(&base_dir).unwrap();
    // New events: known items plus two items the model has never seen.
    let new_events = "user,item,timestamp,action\nn1,sku-00003,2000000000,view\nn1,sku-new-1,2000000100,view\nn1,sku-00007,2000000200,view\nn1,sku-new-2,2000000300,view\nn2,sku-new-2,2000000000,view\nn2,sku-00003,2000000050,view\nn2,sku-00009,2000000060,view\n";
    let events = dir.path().join("new.csv");
    std::fs::write(&events, new_events).unwrap();
    let out = dir.path().join("tuned");
    let report = edgerec_train::report::finetune(&base_dir, &events, None, &opts, &out, false).unwrap();
    assert_eq!((report.old_items, report.new_items), (48, 2));
    let tuned_map = ItemMap::load(&out.join("model")).unwrap();
    assert_eq!(tuned_map.len(), 50);
    for id in 1..=48u32 {
        assert_eq!(tuned_map.external(id), base_map.external(id), "old id {id} moved");
    }
    assert_eq!(tuned_map.internal("sku-new-1"), Some(49));
    let tuned = Model::load(&out.join("model")).unwrap();
    assert_eq!(tuned.config.num_items, 50);
    // Growing appends fresh rows and copies every old row unchanged.
    let grown = edgerec_train::hstu::grow_items(&base, 2, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    for id in 0..=48u32 {
        assert_eq!(grown.item_row(id), base.item_row(id));
    }
    assert!(grown.item_row(49).iter().any(|&x| x != 0.0));
}

/// The sampled-softmax loss against a plain f64 reference: per-sequence
/// negatives, padding rows ignored, a negative equal to the target masked out.
#[test]
fn sampled_softmax_loss_matches_a_plain_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let config = ModelConfig::research(30, 8, 1, 1, 8, 10);
    let model = Model::random(config, 9).unwrap();
    let vars = HstuVars::from_model(&model).unwrap();
    let (b, t, d, r) = (3usize, 4usize, 8usize, 5usize);
    let outputs: Vec<f32> = (0..b * t * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    // Sequence lengths 4, 2, 3: rows 6, 7 and 11 are padding.
    let real_rows: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 8, 9, 10];
    let targets: Vec<u32> = real_rows.iter().map(|_| rng.random_range(1..=30u32)).collect();
    let mut negatives: Vec<u32> = (0..b * r).map(|_| rng.random_range(1..=30u32)).collect();
    negatives[r + 2] = targets[4]; // sequence 1 draws the target of its first row
    let temperature = 0.05;
    let loss = vars
        .sampled_softmax_loss(
            &Tensor::from_vec(outputs.clone(), (b, t, d), &Device::Cpu).unwrap(),
            &real_rows,
            &targets,
            &negatives,
            temperature,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;

    let emb = &model.weights.item_emb;
    let cosine = |u: &[f32], item: u32| -> f64 {
        let e = &emb[item as usize * d..(item as usize + 1) * d];
        let dot: f64 = u.iter().zip(e).map(|(a, b)| *a as f64 * *b as f64).sum();
        let nu: f64 = u.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let ne: f64 = e.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        dot / (nu.max(1e-6) * ne.max(1e-6))
    };
    let mut total = 0.0;
    for (&flat, &target) in real_rows.iter().zip(&targets) {
        let u = &outputs[flat as usize * d..(flat as usize + 1) * d];
        let sequence = flat as usize / t;
        let positive = cosine(u, target) / temperature;
        let mut denominator = positive.exp();
        for &negative in &negatives[sequence * r..(sequence + 1) * r] {
            if negative != target {
                denominator += (cosine(u, negative) / temperature).exp();
            }
        }
        total += -(positive - denominator.ln());
    }
    let reference = total / real_rows.len() as f64;
    assert!((loss - reference).abs() <= 1e-4 * reference.abs(), "loss {loss} vs reference {reference}");
}
