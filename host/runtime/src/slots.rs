//! Instance slots (a bounded wait when the pool is full) and the epoch ticker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// A counting semaphore over the pooling allocator's instance slots, so that a
/// call beyond the pool waits (up to a bound) instead of failing at once, with
/// a cap per tenant: one tenant's calls (say, a plugin that always runs to its
/// deadline) can hold at most `per_tenant` slots, whatever the others need.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
    per_tenant: usize,
}

struct SlotState {
    free: usize,
    /// Slots held per tenant; a tenant holding none has no entry.
    held: HashMap<String, usize>,
}

/// Why no slot was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SlotBusy {
    /// The pool stayed full.
    Pool,
    /// The tenant stayed at its cap.
    Tenant,
}

/// A held slot; dropping it frees the slot.
pub(crate) struct SlotGuard<'a> {
    slots: &'a Slots,
    tenant: String,
}

impl Slots {
    pub fn new(count: usize, per_tenant: usize) -> Self {
        Slots {
            state: Mutex::new(SlotState { free: count, held: HashMap::new() }),
            freed: Condvar::new(),
            per_tenant: per_tenant.clamp(1, count.max(1)),
        }
    }

    /// A slot for `tenant`, waiting at most `wait` for the pool to have one
    /// and the tenant to be under its cap.
    pub fn acquire(&self, tenant: &str, wait: Duration) -> Result<SlotGuard<'_>, SlotBusy> {
        let deadline = Instant::now() + wait;
        // A poisoned lock only means another caller panicked; the counts are still right.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let held = state.held.get(tenant).copied().unwrap_or(0);
            let blocked = if held >= self.per_tenant {
                Some(SlotBusy::Tenant)
            } else if state.free == 0 {
                Some(SlotBusy::Pool)
            } else {
                None
            };
            let Some(why) = blocked else { break };
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(why);
            };
            state = self.freed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        state.free -= 1;
        *state.held.entry(tenant.to_owned()).or_insert(0) += 1;
        Ok(SlotGuard { slots: self, tenant: tenant.to_owned() })
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        state.free += 1;
        if let Some(held) = state.held.get_mut(&self.tenant) {
            *held -= 1;
            if *held == 0 {
                state.held.remove(&self.tenant);
            }
        }
        drop(state);
        // Waiters wait on different conditions (pool or their tenant's cap):
        // wake them all, each re-checks its own.
        self.slots.freed.notify_all();
    }
}

/// A thread that advances the engine's epoch every tick: what makes the
/// wall-clock deadline of a running call fire. Stops when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("edgerec-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_waits_then_gives_up_and_a_freed_slot_is_reused() {
        let slots = Slots::new(1, 1);
        let held = slots.acquire("a", Duration::ZERO).expect("one free slot");
        assert_eq!(slots.acquire("b", Duration::from_millis(5)).err(), Some(SlotBusy::Pool));
        drop(held);
        assert!(slots.acquire("b", Duration::ZERO).is_ok());
    }

    #[test]
    fn a_tenant_at_its_cap_waits_while_others_still_get_slots() {
        let slots = Slots::new(4, 2);
        let a1 = slots.acquire("a", Duration::ZERO).unwrap();
        let _a2 = slots.acquire("a", Duration::ZERO).unwrap();
        assert_eq!(slots.acquire("a", Duration::from_millis(5)).err(), Some(SlotBusy::Tenant));
        let _b1 = slots.acquire("b", Duration::ZERO).expect("b is under its cap and the pool has room");
        let _b2 = slots.acquire("b", Duration::ZERO).expect("b's second slot");
        drop(a1);
        assert!(slots.acquire("a", Duration::ZERO).is_ok(), "a freed one of its own");
    }

    #[test]
    fn a_waiting_caller_gets_the_slot_freed_by_another_thread() {
        let slots = Arc::new(Slots::new(1, 1));
        let held = slots.acquire("a", Duration::ZERO).unwrap();
        let waiter = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || slots.acquire("b", Duration::from_secs(10)).is_ok())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
