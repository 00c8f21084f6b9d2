//! The device-resident pool of the incremental states' keys and values: one
//! buffer `[layers][capacity][L][H·dqk | H·dv]` per backend, a slot per
//! user. The attention reads a user's cached rows from its slot and the
//! scatter writes the new rows there, so a batch of appends runs with no
//! copy of any user's cache (before the pool, each state had a buffer of its
//! own, staged into one and back by two device copies per layer and user).
//!
//! A slot goes back to the pool when its state is dropped (from any thread:
//! the free list has a lock of its own); the pool grows by doubling (the old
//! slots copied layer by layer) and never shrinks, so its device memory is
//! the most states alive at once.

use std::sync::{Arc, Mutex};

use crate::error::BackendError;

use super::launch::{DevBuf, Launcher, alloc, copy};

/// Slots of a new pool.
const FIRST_CAPACITY: usize = 16;

/// Freed slot indices, shared by a pool and its slots.
type FreeList = Arc<Mutex<Vec<usize>>>;

/// The keys and values of every incremental state of one backend.
pub(crate) struct KvPool {
    buf: Option<DevBuf<f32>>,
    capacity: usize,
    /// Slots ever handed out (those below it and not free are in use).
    used: usize,
    free: FreeList,
    /// f32 elements of one slot of one layer (L · H·(dqk + dv)).
    slot_len: usize,
    layers: usize,
}

/// One state's slot; dropping it returns the slot to the pool.
pub(crate) struct Slot {
    index: usize,
    free: FreeList,
}

impl Slot {
    /// The slot's index in the pool.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(self.index);
    }
}

impl KvPool {
    /// An empty pool for slots of `layers` × `slot_len` f32 (allocates on first use).
    pub fn new(layers: usize, slot_len: usize) -> Self {
        KvPool { buf: None, capacity: 0, used: 0, free: FreeList::default(), slot_len, layers }
    }

    /// A free slot, growing the pool when none is left.
    pub fn acquire(&mut self, l: &dyn Launcher) -> Result<Slot, BackendError> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let index = match reused {
            Some(index) => index,
            None => {
                if self.used == self.capacity {
                    self.grow(l)?;
                }
                self.used += 1;
                self.used - 1
            }
        };
        Ok(Slot { index, free: self.free.clone() })
    }

    fn grow(&mut self, l: &dyn Launcher) -> Result<(), BackendError> {
        let capacity = (2 * self.capacity).max(FIRST_CAPACITY);
        let mut buf = alloc::<f32>(l, self.layers * capacity * self.slot_len)?;
        if let Some(old) = &self.buf {
            for layer in 0..self.layers {
                let len = self.capacity * self.slot_len;
                copy(l, old, layer * len, &mut buf, layer * capacity * self.slot_len, len)?;
            }
        }
        self.buf = Some(buf);
        self.capacity = capacity;
        Ok(())
    }

    /// The pool's buffer (`None` before the first slot).
    pub fn buffer(&self) -> Option<&DevBuf<f32>> {
        self.buf.as_ref()
    }

    /// Slots per layer in the buffer.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `slot` was handed out by this pool.
    pub fn owns(&self, slot: &Slot) -> bool {
        Arc::ptr_eq(&self.free, &slot.free)
    }
}
