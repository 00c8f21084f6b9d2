//! Secrets and identifiers: API keys and the operator token (128-bit random
//! strings, stored and compared as SHA-256 hashes: a fast hash is enough,
//! no password stretching needed, and a leaked store file reveals no usable
//! key), short ids for stored keys and error reports, and content digests.
//! A leaf.

use rand::Rng;
use sha2::{Digest, Sha256};

/// A random secret: `prefix_` then 32 hex characters (128 bits).
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}_{}", hex(&bytes))
}

/// A short random identifier for a stored key (not secret).
pub fn new_key_id() -> String {
    let bytes: [u8; 4] = rand::rng().random();
    format!("k{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a secret, as lowercase hex: what the store keeps.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The SHA-256 of some content (a plugin component), as lowercase hex: the
/// digest the plugin runtime and the store name a component by.
pub fn content_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_hex_and_compare_exactly() {
        let a = secret_hash("ek_0123");
        assert_eq!(a.len(), 64);
        assert_eq!(a, secret_hash("ek_0123"));
        assert!(same_hash(&a, &secret_hash("ek_0123")));
        assert!(!same_hash(&a, &secret_hash("ek_0124")));
        assert!(!same_hash(&a, &a[..63]));
        let secret = new_secret("ek");
        assert!(secret.starts_with("ek_") && secret.len() == 35);
        assert_ne!(secret, new_secret("ek"));
    }
}
