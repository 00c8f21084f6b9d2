//! A plugin that misbehaves on purpose, one way per `mode` in its config, so
//! that edgerec-runtime's tests can check every limit and validation.
//! Built to wasm by edgerec-runtime's build script; never shipped.

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, export_plugin, log};
use serde::Deserialize;

/// The plugin.
pub struct Hostile;

/// Which misbehaviour.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `loop`, `grow`, `recurse`, `oversized`, `out_of_range`, `duplicate`,
    /// `nan`, `panic`, `trap`, `log_flood`, `error`, `bad_scores_len`; anything
    /// else behaves (keeps the input).
    pub mode: String,
}

/// Recursion without end that keeps everything in registers (no shadow-stack
/// traffic), so it is the wasm stack cap that stops it; the mixing after the
/// call keeps LLVM from turning it into a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let r = recurse(depth + 1);
    r ^ (r >> 3) ^ depth
}

impl Plugin for Hostile {
    type Config = Config;

    fn columns(_config: &Config) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    fn run(_ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let n = cands.len() as u32;
        match config.mode.as_str() {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let depth = recurse(u64::from(n));
                Ok(Output::from_order(vec![depth as u32]))
            }
            "oversized" => Ok(Output::from_order((0..n).chain(0..n).collect())),
            "out_of_range" => Ok(Output::from_order(vec![0, n + 7])),
            "duplicate" => Ok(Output::from_order(vec![0, 0])),
            "nan" => Ok(Output::from_order((0..n).collect()).with_scores(vec![f32::NAN; n as usize])),
            "bad_scores_len" => Ok(Output::from_order((0..n).collect()).with_scores(vec![1.0])),
            "panic" => panic!("the hostile plugin panics on purpose"),
            "trap" => {
                // An unreachable instruction.
                std::process::abort()
            }
            "log_flood" => {
                for i in 0..1000 {
                    log::info(&format!("line {i} {}", "x".repeat(100)));
                }
                Ok(Output::unchanged(cands))
            }
            "error" => Err("the hostile plugin refuses on purpose".into()),
            _ => Ok(Output::unchanged(cands)),
        }
    }
}

export_plugin!(Hostile);
