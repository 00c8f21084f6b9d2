//! The embeddings the latest encodes left on the device, so that a top-k of
//! them reads them there: a ring of rows on the device and, on the host, the
//! exact bits of each row's embedding (what the encode returned) → its row.
//! A top-k query whose bits match a row is quantised from that row
//! (score_topk.cu `quant_query`); only the others (cache hits of a server,
//! embeddings from elsewhere) are sent to the device. Identity by bits is
//! exact: a row is used only for a query equal to it in every bit.
//!
//! It lives in the backend's workspace, so the workspace lock that
//! serialises the backend's calls also keeps an encode from overwriting a
//! row while a top-k reads it.

use std::collections::HashMap;

use crate::error::BackendError;

use super::launch::{DevBuf, Launcher, alloc, copy};

/// Rows of the ring: every embedding of the last few batches (a top-k
/// call's group is at most 256 users).
pub(crate) const RESIDENT_ROWS: usize = 4096;

/// The ring (allocated on the first encode).
pub(crate) struct Resident {
    rows: Option<DevBuf<f32>>,
    /// Values per row (the model's D).
    dim: usize,
    /// The row the next embedding goes to.
    next: usize,
    /// Embedding bits → row.
    by_bits: HashMap<Vec<u32>, usize>,
    /// The bits each row holds (to forget them when it is overwritten).
    held: Vec<Option<Vec<u32>>>,
}

fn bits(e: &[f32]) -> Vec<u32> {
    e.iter().map(|v| v.to_bits()).collect()
}

impl Resident {
    /// An empty ring for embeddings of `dim` values.
    pub fn new(dim: usize) -> Self {
        Resident { rows: None, dim, next: 0, by_bits: HashMap::new(), held: Vec::new() }
    }

    /// Copies the first `host.len()` rows of `src` (on the device; `host`
    /// is what they hold, as downloaded) into the ring, device to device,
    /// in at most two copies; beyond the ring's size only the last rows stay.
    pub fn keep(&mut self, l: &dyn Launcher, src: &DevBuf<f32>, host: &[Vec<f32>]) -> Result<(), BackendError> {
        let d = self.dim;
        if self.rows.is_none() {
            self.rows = Some(alloc::<f32>(l, RESIDENT_ROWS * d)?);
            self.held = vec![None; RESIDENT_ROWS];
        }
        let skip = host.len().saturating_sub(RESIDENT_ROWS);
        let mut first = skip;
        while first < host.len() {
            let len = (host.len() - first).min(RESIDENT_ROWS - self.next);
            if let Some(rows) = self.rows.as_mut() {
                copy(l, src, first * d, rows, self.next * d, len * d)?;
            }
            for (i, e) in host[first..first + len].iter().enumerate() {
                let row = self.next + i;
                if let Some(old) = self.held[row].take()
                    && self.by_bits.get(&old) == Some(&row)
                {
                    self.by_bits.remove(&old);
                }
                let key = bits(e);
                self.by_bits.insert(key.clone(), row);
                self.held[row] = Some(key);
            }
            self.next = (self.next + len) % RESIDENT_ROWS;
            first += len;
        }
        Ok(())
    }

    /// The row holding exactly `e`, if any.
    pub fn find(&self, e: &[f32]) -> Option<usize> {
        self.by_bits.get(&bits(e)).copied()
    }

    /// The ring's buffer (`None` before the first encode).
    pub fn buffer(&self) -> Option<&DevBuf<f32>> {
        self.rows.as_ref()
    }
}
