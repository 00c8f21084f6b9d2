//! The process's allocator (mimalloc) and its one setting that depends on the command.

/// See host/cli/Cargo.toml: glibc malloc was a third of the server's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same index in
/// its v2 and v3 headers); libmimalloc-sys exports no constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delays in ms (v2: 10, v3: 1000), used to recognise the option.
const DEFAULT_PURGE_DELAYS_MS: [std::ffi::c_long; 2] = [10, 1000];

/// Keeps freed memory mapped instead of returning it to the OS after a delay
/// (1 s in the mimalloc v3 linked here).
///
/// Training allocates and frees tensors of tens of MB per operation (candle
/// has no memory pool); with purging on, every such block was faulted in
/// and zeroed by the kernel anew, a large share of an ML-1M epoch in `perf`
/// (page faults, `clear_page`; docs/perf/training.md). The training commands' memory use is
/// bounded by one step's tensors, so keeping it is safe; the server keeps the
/// default. Does nothing if the option is not where this build expects it.
pub fn keep_freed_memory() {
    // SAFETY: plain getters/setters of mimalloc's option table, callable at any time.
    unsafe {
        if DEFAULT_PURGE_DELAYS_MS.contains(&libmimalloc_sys::mi_option_get(PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The index names the purge delay: its value is one of mimalloc's
    /// defaults for it, and it can be switched off.
    #[test]
    fn the_purge_delay_option_is_found_and_set() {
        // SAFETY: as in keep_freed_memory.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert!(
            super::DEFAULT_PURGE_DELAYS_MS.contains(&before) || before == -1,
            "option 15 is {before}, not the purge delay"
        );
        super::keep_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) }, -1);
    }
}
