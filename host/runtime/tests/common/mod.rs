//! Shared by the runtime's integration tests: one Runtime per test binary
//! (compiling with Cranelift is costly) with a disk cache, the compiled
//! plugins, and seeded random candidate batches.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use edgerec_runtime::{
    CandidateBatch, Column, ColumnValues, CompiledPlugin, Limits, Runtime, RuntimeConfig, first_party,
};

/// The test suite's cache of compiled plugins (survives between runs).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgerec-plugin-cache")
}

/// The shared runtime.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), ..RuntimeConfig::default() }).expect("runtime")
    })
}

fn compiled(cell: &'static OnceLock<Arc<CompiledPlugin>>, name: &str, bytes: &[u8]) -> Arc<CompiledPlugin> {
    Arc::clone(cell.get_or_init(|| runtime().compile_named(Some(name), bytes).expect(name)))
}

/// The compiled first-party plugins and the hostile one.
pub fn in_stock() -> Arc<CompiledPlugin> {
    static CELL: OnceLock<Arc<CompiledPlugin>> = OnceLock::new();
    compiled(&CELL, "in-stock", first_party::IN_STOCK)
}
/// See [`in_stock`].
pub fn boost() -> Arc<CompiledPlugin> {
    static CELL: OnceLock<Arc<CompiledPlugin>> = OnceLock::new();
    compiled(&CELL, "boost", first_party::BOOST)
}
/// See [`in_stock`].
pub fn diversity() -> Arc<CompiledPlugin> {
    static CELL: OnceLock<Arc<CompiledPlugin>> = OnceLock::new();
    compiled(&CELL, "diversity", first_party::DIVERSITY)
}
/// See [`in_stock`].
pub fn exclude_recent() -> Arc<CompiledPlugin> {
    static CELL: OnceLock<Arc<CompiledPlugin>> = OnceLock::new();
    compiled(&CELL, "exclude-recent", first_party::EXCLUDE_RECENT)
}
/// See [`in_stock`].
pub fn hostile() -> Arc<CompiledPlugin> {
    static CELL: OnceLock<Arc<CompiledPlugin>> = OnceLock::new();
    compiled(&CELL, "hostile", edgerec_test_programs::HOSTILE)
}

/// Limits with a deadline generous enough for a loaded CI machine (the tests
/// that exercise the deadline set their own).
pub fn relaxed() -> Limits {
    Limits { deadline_us: 2_000_000, ..Limits::default() }
}

/// A tiny deterministic generator (xorshift64*), so inputs are random but reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const CATEGORIES: [&str; 6] = ["shoes", "shirts", "hats", "bags", "socks", "coats"];
pub const BRANDS: [&str; 4] = ["acme", "zeta", "nova", "orbit"];

/// `n` candidates with random scores and 4 attribute columns (`in_stock`
/// bool, `price` f64, `category` string, `brand` string), ~5% missing values.
pub fn random_batch(n: usize, seed: u64) -> CandidateBatch {
    let mut rng = Rng::new(seed);
    let maybe = |rng: &mut Rng| rng.below(20) != 0;
    let ids = (0..n as u64).map(|i| 1000 + i * 7).collect();
    let scores = (0..n).map(|_| rng.unit() as f32).collect();
    let in_stock = (0..n).map(|_| maybe(&mut rng).then(|| rng.below(4) != 0)).collect();
    let price = (0..n).map(|_| maybe(&mut rng).then(|| 5.0 + 100.0 * rng.unit())).collect();
    let category = (0..n).map(|_| maybe(&mut rng).then(|| CATEGORIES[rng.below(6) as usize].to_owned())).collect();
    let brand = (0..n).map(|_| maybe(&mut rng).then(|| BRANDS[rng.below(4) as usize].to_owned())).collect();
    CandidateBatch {
        ids,
        scores,
        columns: vec![
            Column { name: "in_stock".into(), values: ColumnValues::Bool(in_stock) },
            Column { name: "price".into(), values: ColumnValues::F64(price) },
            Column { name: "category".into(), values: ColumnValues::String(category) },
            Column { name: "brand".into(), values: ColumnValues::String(brand) },
        ],
    }
}
