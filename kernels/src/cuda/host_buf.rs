//! Host memory that stands in for device buffers in the emulator (a leaf:
//! the launcher's buffer type and the emulator both hold it).

use crate::error::BackendError;

/// Alignment of every emulated device buffer (cudaMalloc's).
pub(super) const BUF_ALIGN: usize = 256;

/// Host memory standing in for one device buffer: the data starts 256-byte
/// aligned (as cudaMalloc's) and its 256-byte-rounded end is where an
/// inaccessible page begins; the bytes between the data's end and that page
/// are checked by the emulator on every kernel access.
pub(crate) struct HostBuf {
    map: *mut u8,
    map_len: usize,
    /// The data's first byte.
    pub(super) data: *mut u8,
    /// The buffer's size as asked.
    pub(super) bytes: usize,
    /// The size rounded up to [`BUF_ALIGN`]; the guard page follows.
    pub(super) padded: usize,
}

// SAFETY: the mapping is owned by this value alone; access is through &/&mut self.
unsafe impl Send for HostBuf {}
// SAFETY: shared references only read the pointer values.
unsafe impl Sync for HostBuf {}

impl HostBuf {
    pub(super) fn new(bytes: usize, align: usize) -> Result<Self, BackendError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
        let padded = bytes.div_ceil(BUF_ALIGN) * BUF_ALIGN;
        let body = padded.div_ceil(page).max(1) * page;
        let map_len = body + page;
        // SAFETY: a fresh anonymous private mapping; checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(device_err(format!("cannot map {map_len} bytes for an emulated device buffer")));
        }
        let map = map.cast::<u8>();
        // SAFETY: body < map_len, so the guard page lies inside the mapping.
        let guard = unsafe { map.add(body) };
        // SAFETY: the last page of our own mapping.
        if unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) } != 0 {
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(map.cast(), map_len) };
            return Err(device_err("cannot protect the guard page of an emulated device buffer"));
        }
        // The guard page is page aligned, so the data is 256-byte aligned and
        // its rounded end is flush with the guard.
        debug_assert!(align.is_power_of_two() && align <= BUF_ALIGN && bytes.is_multiple_of(align));
        // SAFETY: padded ≤ body, so data stays inside the mapping.
        let data = unsafe { guard.sub(padded) };
        Ok(HostBuf { map, map_len, data, bytes, padded })
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

fn device_err(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "cuda-emu", message: message.into() }
}
