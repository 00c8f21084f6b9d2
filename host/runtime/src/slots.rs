//! Instance slots (a bounded wait when the pool is full) and the epoch ticker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// A counting semaphore over the pooling allocator's instance slots, so that a
/// call beyond the pool waits (up to a bound) instead of failing at once.
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held slot; dropping it frees the slot.
pub(crate) struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Slots { free: Mutex::new(count), freed: Condvar::new() }
    }

    /// A slot, waiting at most `wait`; `None` if none freed in time.
    pub fn acquire(&self, wait: Duration) -> Option<SlotGuard<'_>> {
        let deadline = Instant::now() + wait;
        // A poisoned lock only means another caller panicked; the count is still right.
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            free = self.freed.wait_timeout(free, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *free -= 1;
        Some(SlotGuard { slots: self })
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.slots.freed.notify_one();
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
        let slots = Slots::new(1);
        let held = slots.acquire(Duration::ZERO).expect("one free slot");
        assert!(slots.acquire(Duration::from_millis(5)).is_none());
        drop(held);
        assert!(slots.acquire(Duration::ZERO).is_some());
    }

    #[test]
    fn a_waiting_caller_gets_the_slot_freed_by_another_thread() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.acquire(Duration::ZERO).unwrap();
        let waiter = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || slots.acquire(Duration::from_secs(10)).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
