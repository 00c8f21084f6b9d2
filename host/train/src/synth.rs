//! The synthetic storefront: a deterministic catalog and an event log with
//! structure a sequential model can learn and a popularity ranking cannot:
//! shoppers with a category taste that drifts, sessions, complementary-item
//! chains (camera → lens → tripod), a popularity power law, time gaps from
//! seconds to months, and views / add-to-cart / purchases.

use std::io::Write;
use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::Action;
use crate::error::TrainError;

const CATEGORIES: [&str; 24] = [
    "cameras",
    "lenses",
    "tripods",
    "laptops",
    "laptop-bags",
    "mice",
    "running-shoes",
    "running-socks",
    "sports-watches",
    "coffee-makers",
    "coffee-beans",
    "mugs",
    "tents",
    "sleeping-bags",
    "headlamps",
    "yoga-mats",
    "yoga-blocks",
    "water-bottles",
    "board-games",
    "puzzles",
    "card-games",
    "skincare",
    "sunscreen",
    "towels",
];
const BRANDS: [&str; 12] =
    ["Acme", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Helix", "Iris", "Juniper", "Kestrel", "Lumen"];
const ADJECTIVES: [&str; 10] =
    ["Classic", "Pro", "Lite", "Ultra", "Eco", "Compact", "Deluxe", "Sport", "Travel", "Smart"];

/// Sizes of the generated storefront.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorefrontSpec {
    /// Catalog size.
    pub items: usize,
    /// Shoppers.
    pub users: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl Default for StorefrontSpec {
    fn default() -> Self {
        StorefrontSpec { items: 3000, users: 3000, seed: 7 }
    }
}

/// Attributes of a catalog line (`catalog.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attributes {
    /// Human title.
    pub title: String,
    /// Category name.
    pub category: String,
    /// Brand name.
    pub brand: String,
    /// Price in currency units, two decimals.
    pub price: f64,
    /// Units in stock (0 = sold out).
    pub stock: u32,
}

/// One catalog line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatalogItem {
    /// External id, `sku-00042`.
    pub id: String,
    /// Attributes the server's plugins filter and boost on.
    pub attributes: Attributes,
}

/// One row of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthEvent {
    /// `user-0007`.
    pub user: String,
    /// `sku-00042`.
    pub item: String,
    /// Unix seconds.
    pub ts: i64,
    /// view | cart | purchase.
    pub action: Action,
}

struct Store {
    items: Vec<CatalogItem>,
    by_category: Vec<Vec<usize>>,
    /// Popularity weight of each item inside its category (power law).
    weight: Vec<f64>,
    /// Two complements of each item in the next category of its chain.
    complements: Vec<[usize; 2]>,
}

/// Categories come in chains of three (cameras → lenses → tripods, ...):
/// the complement of an item lives in the next category of its chain.
fn complement_category(category: usize) -> usize {
    let chain = category / 3;
    chain * 3 + (category % 3 + 1) % 3
}

fn build_store(spec: &StorefrontSpec, rng: &mut ChaCha8Rng) -> Store {
    let mut items = Vec::with_capacity(spec.items);
    let mut by_category = vec![Vec::new(); CATEGORIES.len()];
    let mut weight = Vec::with_capacity(spec.items);
    for index in 0..spec.items {
        let category = index % CATEGORIES.len();
        let rank_in_category = by_category[category].len();
        by_category[category].push(index);
        // Zipf-like: the r-th item of a category is 1/(r+1)^1.1 as popular as the first.
        weight.push(1.0 / ((rank_in_category + 1) as f64).powf(1.1));
        let brand = *BRANDS.choose(rng).expect("brands");
        let adjective = *ADJECTIVES.choose(rng).expect("adjectives");
        let base = 5.0 + 20.0 * (category % 7) as f64;
        let price = (base * (0.5 + rng.random::<f64>() * 2.5) * 100.0).round() / 100.0;
        let stock = if rng.random::<f64>() < 0.08 { 0 } else { rng.random_range(1..200) };
        let noun = CATEGORIES[category].trim_end_matches('s').replace('-', " ");
        items.push(CatalogItem {
            id: format!("sku-{:05}", index + 1),
            attributes: Attributes {
                title: format!("{brand} {adjective} {noun} {}", rank_in_category + 1),
                category: CATEGORIES[category].to_string(),
                brand: brand.to_string(),
                price,
                stock,
            },
        });
    }
    let complements = (0..spec.items)
        .map(|index| {
            let pool = &by_category[complement_category(index % CATEGORIES.len())];
            // Deterministic pairing by position, so chains are sharp and learnable.
            let rank = index / CATEGORIES.len();
            [pool[rank % pool.len()], pool[(rank * 7 + 3) % pool.len()]]
        })
        .collect();
    Store { items, by_category, weight, complements }
}

fn pick_weighted(pool: &[usize], weight: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = pool.iter().map(|&i| weight[i]).sum();
    let mut x = rng.random::<f64>() * total;
    for &i in pool {
        x -= weight[i];
        if x <= 0.0 {
            return i;
        }
    }
    *pool.last().expect("non-empty pool")
}

/// Log-uniform seconds in [lo, hi].
fn log_uniform(lo: f64, hi: f64, rng: &mut ChaCha8Rng) -> i64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp() as i64
}

/// Generates the catalog and the time-ordered event log of `spec`.
pub fn generate(spec: &StorefrontSpec) -> (Vec<CatalogItem>, Vec<SynthEvent>) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let store = build_store(spec, &mut rng);
    let start = 1_735_689_600i64; // 2025-01-01T00:00:00Z
    let mut events = Vec::new();
    for user in 0..spec.users {
        let user_id = format!("user-{:05}", user + 1);
        // Taste: 3 favourite categories, the first one dominant.
        let mut taste: Vec<usize> = (0..3).map(|_| rng.random_range(0..CATEGORIES.len())).collect();
        let mut ts = start + rng.random_range(0..90 * 86_400);
        let sessions = 2 + (rng.random::<f64>().powi(2) * 14.0) as usize;
        for _ in 0..sessions {
            // Drift: now and then a favourite category is replaced.
            if rng.random::<f64>() < 0.2 {
                let slot = rng.random_range(0..taste.len());
                taste[slot] = rng.random_range(0..CATEGORIES.len());
            }
            let category = if rng.random::<f64>() < 0.6 { taste[0] } else { *taste.choose(&mut rng).expect("taste") };
            let mut current = pick_weighted(&store.by_category[category], &store.weight, &mut rng);
            let length = rng.random_range(2..10);
            for step in 0..length {
                if step > 0 {
                    let roll = rng.random::<f64>();
                    current = if roll < 0.45 {
                        store.complements[current][usize::from(rng.random::<f64>() < 0.3)]
                    } else if roll < 0.85 {
                        pick_weighted(
                            &store.by_category[store.items[current].attributes.category_index()],
                            &store.weight,
                            &mut rng,
                        )
                    } else {
                        let c = rng.random_range(0..CATEGORIES.len());
                        pick_weighted(&store.by_category[c], &store.weight, &mut rng)
                    };
                    ts += log_uniform(5.0, 900.0, &mut rng);
                }
                events.push(SynthEvent {
                    user: user_id.clone(),
                    item: store.items[current].id.clone(),
                    ts,
                    action: Action::View,
                });
                if rng.random::<f64>() < 0.12 {
                    ts += log_uniform(3.0, 120.0, &mut rng);
                    events.push(SynthEvent {
                        user: user_id.clone(),
                        item: store.items[current].id.clone(),
                        ts,
                        action: Action::Cart,
                    });
                    if rng.random::<f64>() < 0.5 {
                        ts += log_uniform(20.0, 600.0, &mut rng);
                        events.push(SynthEvent {
                            user: user_id.clone(),
                            item: store.items[current].id.clone(),
                            ts,
                            action: Action::Purchase,
                        });
                    }
                }
            }
            // Between sessions: an hour to three months.
            ts += log_uniform(3_600.0, 90.0 * 86_400.0, &mut rng);
        }
    }
    events.sort_by_key(|e| e.ts);
    (store.items, events)
}

impl Attributes {
    fn category_index(&self) -> usize {
        CATEGORIES.iter().position(|c| *c == self.category).expect("generated categories")
    }
}

/// Writes `catalog.jsonl` and `events.csv` into `dir`.
pub fn write_storefront(dir: &Path, spec: &StorefrontSpec) -> Result<(usize, usize), TrainError> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
    let (catalog, events) = generate(spec);
    let write = |name: &str, fill: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| -> Result<(), TrainError> {
        let path = dir.join(name);
        let io = |source| TrainError::Io { path: path.clone(), source };
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
        fill(&mut file).map_err(io)?;
        file.flush().map_err(io)
    };
    write("catalog.jsonl", &|w| {
        for item in &catalog {
            writeln!(w, "{}", serde_json::to_string(item).expect("catalog serialises"))?;
        }
        Ok(())
    })?;
    write("events.csv", &|w| {
        writeln!(w, "user,item,timestamp,action")?;
        for e in &events {
            writeln!(w, "{},{},{},{}", e.user, e.item, e.ts, e.action.as_str())?;
        }
        Ok(())
    })?;
    Ok((catalog.len(), events.len()))
}
