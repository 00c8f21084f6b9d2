//! A plugin that misbehaves on purpose, one way per `mode` in its config, so
//! that edgerec-runtime's tests can check every limit and validation.
//! Built to wasm by edgerec-runtime's build script; never shipped.

use std::time::Duration;

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, export_plugin, log};
use serde::Deserialize;
use wasip2::clocks::monotonic_clock;

/// The plugin.
pub struct Hostile;

/// Which misbehaviour.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `loop`, `grow`, `recurse`, `oversized`, `out_of_range`, `duplicate`,
    /// `nan`, `panic`, `trap`, `log_flood`, `error`, `bad_scores_len`;
    /// waiting: `sleep`, `poll`, `block`, `stdin`, `stdin_std`, `sleep_zero_loop`;
    /// other WASI abuse: `exit`, `random_huge`, `zeroes_huge`, `poll_empty`.
    /// Empty (the default config): the upload-check dodge — behaves for tenant
    /// `sample` and sleeps 5 s for every other tenant. Anything else behaves
    /// (keeps the input).
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

    fn run(ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let n = cands.len() as u32;
        match config.mode.as_str() {
            "" if ctx.tenant() != "sample" => {
                std::thread::sleep(Duration::from_secs(5));
                Ok(Output::unchanged(cands))
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs(5));
                Ok(Output::unchanged(cands))
            }
            "sleep_zero_loop" => loop {
                std::thread::sleep(Duration::ZERO);
            },
            "poll" => {
                let timer = monotonic_clock::subscribe_duration(5_000_000_000);
                let ready = wasip2::io::poll::poll(&[&timer]);
                Ok(Output::from_order(ready))
            }
            "block" => {
                monotonic_clock::subscribe_duration(5_000_000_000).block();
                Ok(Output::unchanged(cands))
            }
            "stdin" => {
                // Raw blocking reads until a byte arrives (one never does).
                let stdin = wasip2::cli::stdin::get_stdin();
                loop {
                    if let Ok(bytes) = stdin.blocking_read(1)
                        && !bytes.is_empty()
                    {
                        return Ok(Output::from_order(vec![u32::from(bytes[0]) % n.max(1)]));
                    }
                }
            }
            "stdin_std" => {
                let mut line = String::new();
                while line.is_empty() {
                    std::io::stdin().read_line(&mut line).map_err(|e| Error(e.to_string()))?;
                }
                Ok(Output::unchanged(cands))
            }
            "exit" => std::process::exit(3),
            "random_huge" => {
                let bytes = wasip2::random::random::get_random_bytes(u64::MAX);
                Ok(Output::from_order(vec![u32::from(bytes[0]) % n.max(1)]))
            }
            "zeroes_huge" => {
                let stderr = wasip2::cli::stderr::get_stderr();
                stderr.write_zeroes(1 << 40).map_err(|e| Error(format!("{e:?}")))?;
                Ok(Output::unchanged(cands))
            }
            "poll_empty" => {
                let ready = wasip2::io::poll::poll(&[]);
                Ok(Output::from_order(ready))
            }
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
