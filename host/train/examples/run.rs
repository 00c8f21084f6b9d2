//! A dependency-light driver of the library for quick experiments without
//! building the whole `edgerec` binary (which also links the server):
//!
//! ```text
//! cargo run -p edgerec-train --example run -- generate OUT SEED
//! cargo run -p edgerec-train --example run -- train DATA OUT [key=value ...]
//! cargo run -p edgerec-train --example run -- eval MODEL DATA
//! ```
//! Keys: preset (ml-1m|ml-1m-large|ml-20m|books), d_model, layers, heads,
//! head_dim, max_seq_len, epochs, batch_size, lr, negatives, dropout,
//! patience, eval_users, seed, threads, loss (sampled-softmax|full-softmax),
//! negative_sampling (per-position|per-sequence), train_on_validation, test_every_epoch,
//! max_steps (per epoch), log_every (steps). `edgerec train` is the supported CLI.

use std::path::PathBuf;

use edgerec_train::train::Preset;

// The allocator and setting of `edgerec train` (host/cli/src/alloc.rs explains them),
// so that epoch times measured here are the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn keep_freed_memory() {
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mimalloc's option setters may be called at any time.
    unsafe {
        if matches!(libmimalloc_sys::mi_option_get(PURGE_DELAY), 10 | 1000) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: run generate OUT SEED | run train DATA OUT [key=value ...] | run eval MODEL DATA";
    match args.first().map(String::as_str) {
        Some("generate") if args.len() == 3 => {
            let spec = edgerec_train::synth::StorefrontSpec { seed: args[2].parse()?, ..Default::default() };
            let (items, events) = edgerec_train::synth::write_storefront(&PathBuf::from(&args[1]), &spec)?;
            eprintln!("{items} items, {events} events");
        }
        Some("train") if args.len() >= 3 => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for kv in &args[3..] {
                let (k, v) = kv.split_once('=').ok_or(format!("expected key=value, got {kv}"))?;
                pairs.push((k.to_string(), v.to_string()));
            }
            let preset = match pairs.iter().find(|(k, _)| k == "preset").map(|(_, v)| v.as_str()) {
                None | Some("ml-1m") => Preset::Ml1m,
                Some("ml-1m-large") => Preset::Ml1mLarge,
                Some("ml-20m") => Preset::Ml20m,
                Some("books") => Preset::Books,
                Some(other) => return Err(format!("unknown preset {other}").into()),
            };
            let mut o = preset.options();
            let mut threads = 1usize;
            let mut resume = false;
            for (k, v) in &pairs {
                match k.as_str() {
                    "preset" | "compare" => {}
                    "d_model" => o.shape.d_model = v.parse()?,
                    "layers" => o.shape.num_layers = v.parse()?,
                    "heads" => o.shape.num_heads = v.parse()?,
                    "head_dim" => o.shape.head_dim = v.parse()?,
                    "max_seq_len" => o.shape.max_seq_len = v.parse()?,
                    "epochs" => o.epochs = v.parse()?,
                    "batch_size" => o.batch_size = v.parse()?,
                    "lr" => o.optimizer.lr = v.parse()?,
                    "negatives" => o.num_negatives = v.parse()?,
                    "dropout" => o.dropout = v.parse()?,
                    "patience" => o.patience = v.parse()?,
                    "eval_users" => o.eval_users = v.parse()?,
                    "seed" => o.seed = v.parse()?,
                    "max_steps" => o.max_steps_per_epoch = v.parse()?,
                    "log_every" => o.log_every = v.parse()?,
                    "loss" => o.loss = serde_json::from_value(serde_json::Value::String(v.clone()))?,
                    "negative_sampling" => {
                        o.negative_sampling = serde_json::from_value(serde_json::Value::String(v.clone()))?
                    }
                    "train_on_validation" => o.train_on_validation = v == "1" || v == "true",
                    "test_every_epoch" => o.test_every_epoch = v == "1" || v == "true",
                    "threads" => threads = v.parse()?,
                    "resume" => resume = v == "1" || v == "true",
                    other => return Err(format!("unknown key {other}").into()),
                }
            }
            // SAFETY: single-threaded at this point; candle sizes its matmul pool from this variable.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
            rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
            let out = PathBuf::from(&args[2]);
            let data = edgerec_train::dataset::load_dataset(&PathBuf::from(&args[1]), None, None, false)?;
            eprintln!("{:?}", data.summary);
            let report = edgerec_train::report::train_and_report(&data, &o, &out, resume, true)?;
            std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
            let reference = match pairs.iter().find(|(k, _)| k == "compare") {
                Some((_, file)) => Some(edgerec_train::plot::ReferenceCurve::load(&PathBuf::from(file))?),
                None => None,
            };
            let extras = edgerec_train::plot::PlotExtras {
                popularity: Some(report.test.popularity.clone()),
                popularity_split: "test",
                reference,
            };
            edgerec_train::plot::plot_curves(&report.training.state.history, &extras, &out.join("curves.png"))?;
            println!("{}", serde_json::to_string_pretty(&report.test)?);
        }
        Some("plot") if args.len() >= 2 => {
            // Redraws OUT/curves.png from OUT/report.json (optionally with compare=CURVE.json).
            let out = PathBuf::from(&args[1]);
            let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
            let history: Vec<edgerec_train::train::EpochRecord> =
                serde_json::from_value(report["training"]["state"]["history"].clone())?;
            let popularity: Option<edgerec_train::metrics::Metrics> =
                serde_json::from_value(report["test"]["popularity"].clone()).ok();
            let reference = match args.get(2).and_then(|a| a.strip_prefix("compare=")) {
                Some(file) => Some(edgerec_train::plot::ReferenceCurve::load(&PathBuf::from(file))?),
                None => None,
            };
            let extras = edgerec_train::plot::PlotExtras { popularity, popularity_split: "test", reference };
            edgerec_train::plot::plot_curves(&history, &extras, &out.join("curves.png"))?;
        }
        Some("eval") if args.len() == 3 => {
            let report = edgerec_train::report::evaluate_dir(&PathBuf::from(&args[1]), &PathBuf::from(&args[2]), None)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
