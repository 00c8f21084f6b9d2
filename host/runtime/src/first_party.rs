//! The first-party plugins (`plugins/`), built to wasm32-wasip2 components by
//! this crate's build script and embedded here, so the server and the CLI
//! can install them without a separate build step.

/// `in-stock`: drops items out of stock.
pub const IN_STOCK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/in_stock.wasm"));
/// `boost`: attribute rules that multiply, add, bury, pin.
pub const BOOST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/boost.wasm"));
/// `diversity`: per-category caps in the top k, MMR by category.
pub const DIVERSITY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/diversity.wasm"));
/// `exclude-recent`: drops items the shopper recently bought.
pub const EXCLUDE_RECENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exclude_recent.wasm"));

/// Every first-party plugin as (name, component bytes).
pub fn all() -> [(&'static str, &'static [u8]); 4] {
    [("in-stock", IN_STOCK), ("boost", BOOST), ("diversity", DIVERSITY), ("exclude-recent", EXCLUDE_RECENT)]
}
