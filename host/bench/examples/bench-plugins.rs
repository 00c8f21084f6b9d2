//! The plugin benchmark without building the whole server:
//! `cargo run --release -p edgerec-bench --example bench-plugins [CANDIDATES] [ITERATIONS]`
//! (the same as `edgerec bench plugins`).

use edgerec_bench::{BenchOptions, run_plugin_bench};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let candidates = args.next().and_then(Result::ok).unwrap_or(500);
    let iterations = args.next().and_then(Result::ok).unwrap_or(2000);
    match run_plugin_bench(BenchOptions { candidates, iterations }) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
