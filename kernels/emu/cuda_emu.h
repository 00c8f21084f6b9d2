// cuda-emu: runs the backend's unmodified .cu kernels on the CPU, compiled
// as C++ by the system compiler with this header force-included in front.
//
// Model: one fiber (own stack, own registers) per CUDA thread; the blocks of
// a launch run one after another on the calling OS thread, in a seeded
// varied order (a random start and a random stride coprime to the block
// count). A fiber runs until it reaches a synchronisation point, then the
// next one runs:
//   __syncthreads()  every live (not exited) thread of the block must reach
//                    the SAME barrier (same source line), or the launch fails;
//   __shfl_*sync / __syncwarp
//                    the lanes named by the mask meet in a per-warp exchange
//                    at the same call site; a named lane that has exited, or
//                    waits elsewhere, fails the launch;
//   __trap()         fails the launch with the line.
// Threads of a block run in thread order or in reverse order (alternating
// with the block and the launch).
//
// Shared memory. __shared__ variables are thread_local: one instance per OS
// thread, i.e. per block being run; they are this module's whole TLS block
// apart from the runtime's one pointer and the dynamic shared arrays. Before
// each block the static shared variables and the requested bytes of the
// dynamic arrays are filled with NaN bytes (0xff). The kernels are compiled
// with -fsanitize=thread, but no ThreadSanitizer runtime is linked: the
// __tsan_read*/__tsan_write* hooks below receive every load and store the
// kernel code makes, and
//   - an access to a dynamic shared array beyond the bytes the launch asked
//     for fails the launch (one element past the end is caught exactly);
//   - a race detector keeps, per 4-byte word of shared memory, the last
//     writer (thread, barrier epoch, warp-sync generation, pc) and the
//     readers since it. Two accesses by different threads, at least one a
//     write, race unless ordered by
//       * a __syncthreads() completed between them (the block's epoch), or
//       * both threads being in the same warp and a full-mask __syncwarp()
//         completed between them (the warp's generation).
//     A race fails the launch naming both threads and both source lines.
//     Warp-synchronous rules (Volta and later, independent thread
//     scheduling): lanes of one warp are NOT implicitly synchronous; only
//     __syncwarp() orders their shared-memory accesses. Shuffles exchange
//     registers and order nothing (CUDA gives them no memory ordering). A
//     __syncwarp with a partial mask orders nothing either (conservative: no
//     kernel uses one). Granularity is one 4-byte word: two threads writing
//     different bytes of one word would be reported (no kernel does).
//   - device buffers start 256-byte aligned (as cudaMalloc's) and end on an
//     inaccessible page; the up-to-255 bytes between a buffer's end and that
//     page are checked here, so an overrun of one element fails the launch
//     (or faults, where the buffer fills its last page exactly).
//
// Limits: blocks are 1-D in threads (all the backend launches); atomics:
// atomicAdd on unsigned int only (see below); no warp votes (none are used); fp rounding is the CPU's (libm expf; the
// compiler contracts a*b+c into an FMA as NVRTC's default --fmad=true does,
// where the CPU has FMA instructions).

#pragma once

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <unistd.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>

#define __global__
#define __device__
#define __host__
// Always inlined, as NVRTC does: every call site has its own code addresses
// (the static-shared bounds check below keys on them).
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// Fibers switch only at barriers and warp syncs, and blocks run one at a
// time, so a plain read-modify-write is atomic here. The order in which
// threads and blocks get their slots is the emulator's run order (varied per
// launch): a kernel must not depend on it, as on a device.
static inline unsigned atomicAdd(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}

static inline double __longlong_as_double(long long i) {
    double f;
    memcpy(&f, &i, 8);
    return f;
}
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
static inline unsigned __float_as_uint(float f) {
    unsigned i;
    memcpy(&i, &f, 4);
    return i;
}
static inline float __uint_as_float(unsigned i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}

// The runtime itself is not instrumented: only the kernels' own accesses
// reach the hooks.
#define EMU_RT __attribute__((no_sanitize_thread))

namespace emu {

enum FiberState { RUNNABLE, AT_BARRIER, AT_WARP, EXITED };
enum WarpOp { SHFL_IDX, SHFL_XOR, SYNCWARP };

struct Fiber {
    void* sp;
    int state;
    int line;       // barrier / warp-op source line
    int op;         // WarpOp
    unsigned mask;  // warp-op lane mask
    int arg;        // source lane or xor mask
    unsigned long long value;
    unsigned long long result;
    uint3 tid;
};

const size_t STACK_BYTES = 64 * 1024;
const size_t PAGE = 4096;
const int MAX_THREADS = 1024;
const int MAX_DYN = 4;     // extern __shared__ arrays per file
const int MAX_TAILS = 64;  // buffer arguments per launch
const int MAX_VARS = 64;     // static __shared__ variables per file
const int PC_SLOTS = 4096;   // code addresses touching static shared memory per launch
const uint16_t NONE16 = 0xffff;
const uint16_t MULTI16 = 0xfffe;

// Race-detector state of one 4-byte word of shared memory.
struct Shadow {
    uint32_t serial;  // block the entry belongs to (another block's entry is empty)
    uint32_t w_epoch, w_gen, w_pc;
    uint32_t r_epoch, r_gen, r_pc;
    uint16_t w_tid;   // NONE16: no write in this block yet
    uint16_t r_tid;   // a reader (for messages)
    uint16_t r_tid2;  // a reader of another warp than r_tid, when r_warp is MULTI16
    uint16_t r_warp;  // NONE16: no reads; MULTI16: readers of several warps
    uint16_t r_lane;  // lane that read at generation r_gen; MULTI16: several lanes
};

struct Runtime {
    Fiber* fibers = nullptr;
    char* stacks = nullptr;  // MAX_THREADS × (guard page + STACK_BYTES)
    void* sched_sp = nullptr;
    int current = 0;
    int nthreads = 0;
    uint3 block_idx{0, 0, 0}, block_dim{0, 0, 0}, grid_dim{0, 0, 0};
    void (*thunk)(void**) = nullptr;
    void** args = nullptr;
    bool failed = false;
    char error[1024] = {0};
    // Shared memory: this module's TLS block of the calling OS thread.
    uintptr_t tls_lo = 0, tls_len = 0;
    uintptr_t dyn_lo[MAX_DYN] = {0}, dyn_cap[MAX_DYN] = {0};
    int ndyn = 0;
    uintptr_t dyn_req = 0;  // bytes the launch asked for
    int guarded = 0;        // fiber stacks with their guard page set up (each one is a mapping)
    uintptr_t module_base = 0;
    // Race detector.
    bool tracking = false;  // a fiber is running kernel code
    Shadow* shadow = nullptr;
    uint32_t serial = 0;  // current block (never 0)
    uint32_t epoch = 0;   // completed __syncthreads of the block
    uint32_t warp_gen[MAX_THREADS / 32] = {0};
    int barrier_line = 0;  // line of the last completed barrier
    // Static shared variables (TLS offset, size, name), sorted by offset, and
    // the variable each code address touched first in this launch.
    int nvars = 0;
    struct Var {
        uintptr_t lo, len;
        char name[48];
    } vars[MAX_VARS];
    uint32_t pc_key[PC_SLOTS];
    uint16_t pc_var[PC_SLOTS];
    uint32_t pc_launch[PC_SLOTS];
    uint32_t launch_no = 0;
    // Buffer tails (between a buffer's end and its guard page) of this launch.
    const unsigned long long* tails = nullptr;
    int ntails = 0;
};

// The calling OS thread's runtime of this module (made on its first launch,
// freed when the thread exits).
inline thread_local Runtime* rt_ptr = nullptr;
#define rt (*::emu::rt_ptr)

inline Fiber& me() { return rt.fibers[rt.current]; }

// Context switch (x86-64 System V): saves the callee-saved registers on the
// current stack, stores the stack pointer in *save, and resumes the stack `to`.
extern "C" void emu_switch(void** save, void* to);
#if defined(__x86_64__)
asm(R"(
    .text
    .p2align 4
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
#else
#error "cuda-emu: the fiber switch is written for x86-64 only"
#endif

EMU_RT __attribute__((format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
    if (!rt.failed) {
        rt.failed = true;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rt.error, sizeof rt.error, fmt, ap);
        va_end(ap);
    }
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
EMU_RT inline void yield() {
    rt.tracking = false;
    emu_switch(&me().sp, rt.sched_sp);
}

// Ends the calling fiber after a failure (the scheduler abandons the block).
[[noreturn]] EMU_RT inline void abandon() {
    me().state = EXITED;
    yield();
    __builtin_unreachable();
}

[[noreturn]] EMU_RT inline void fiber_main() {
    rt.thunk(rt.args);
    me().state = EXITED;
    yield();
    __builtin_unreachable();
}

EMU_RT inline void barrier(int line) {
    Fiber& f = me();
    f.state = AT_BARRIER;
    f.line = line;
    yield();
}

EMU_RT inline unsigned long long warp_op(int line, int op, unsigned mask, unsigned long long value, int arg) {
    Fiber& f = me();
    f.state = AT_WARP;
    f.line = line;
    f.op = op;
    f.mask = mask;
    f.value = value;
    f.arg = arg;
    yield();
    return me().result;
}

template <class T>
EMU_RT inline T shfl(int line, int op, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    if (width != 32) {
        fail("line %d: shuffle width %d (only 32 is emulated)", line, width);
        abandon();
    }
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = warp_op(line, op, mask, bits, arg);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

[[noreturn]] EMU_RT inline void trap(int line) {
    fail("__trap() at line %d (thread %d of block %d)", line, rt.current, (int)rt.block_idx.x);
    abandon();
}

// ---- shared memory: bounds and races ----

// Where a shared address lies, for messages.
EMU_RT inline void describe(uintptr_t a, char* out, size_t len) {
    for (int i = 0; i < rt.ndyn; i++)
        if (a - rt.dyn_lo[i] < rt.dyn_cap[i]) {
            snprintf(out, len, "dynamic shared byte %lu", (unsigned long)(a - rt.dyn_lo[i]));
            return;
        }
    for (int i = 0; i < rt.nvars; i++)
        if (a - rt.vars[i].lo < rt.vars[i].len) {
            snprintf(out, len, "%s byte %lu", rt.vars[i].name, (unsigned long)(a - rt.vars[i].lo));
            return;
        }
    snprintf(out, len, "static shared memory (TLS byte %lu)", (unsigned long)(a - rt.tls_lo));
}

EMU_RT inline void race(const char* what, uintptr_t a, int other, uint32_t other_pc, const char* other_did,
                        uint32_t pc) {
    char where[96];
    describe(a, where, sizeof where);
    int t = rt.current;
    char since[48] = "the block's start";
    if (rt.barrier_line > 0) snprintf(since, sizeof since, "the __syncthreads at line %d", rt.barrier_line);
    fail("shared-memory race on %s: thread %d (warp %d) %s at @0x%x, thread %d (warp %d) %s at @0x%x, both since "
         "%s with no barrier between them",
         where, t, t >> 5, what, pc, other, other >> 5, other_did, other_pc, since);
    abandon();
}

EMU_RT inline void shared_word(uintptr_t a, bool write, uint32_t pc) {
    Shadow& s = rt.shadow[(a - rt.tls_lo) >> 2];
    const int t = rt.current;
    const uint16_t w = (uint16_t)(t >> 5), lane = (uint16_t)(t & 31);
    const uint32_t ep = rt.epoch, gen = rt.warp_gen[w];
    if (s.serial != rt.serial) {
        s.serial = rt.serial;
        s.w_tid = NONE16;
        s.r_warp = NONE16;
    }
    // The last write happens before this access?
    if (s.w_tid != NONE16 && s.w_tid != t && s.w_epoch == ep) {
        if ((s.w_tid >> 5) != w || s.w_gen == gen)
            race(write ? "writes" : "reads", a, s.w_tid, s.w_pc, "wrote", pc);
    }
    if (write) {
        // Every read since the last ordering point happens before this write?
        if (s.r_warp != NONE16 && s.r_epoch == ep) {
            if (s.r_warp == MULTI16) {
                int other = (s.r_tid >> 5) != w ? s.r_tid : s.r_tid2;
                race("writes", a, other, s.r_pc, "read", pc);
            }
            if (s.r_warp != w) race("writes", a, s.r_tid, s.r_pc, "read", pc);
            if (s.r_gen == gen && s.r_lane != lane) race("writes", a, s.r_tid, s.r_pc, "read", pc);
        }
        s.w_tid = (uint16_t)t;
        s.w_epoch = ep;
        s.w_gen = gen;
        s.w_pc = pc;
        s.r_warp = NONE16;
        return;
    }
    if (s.r_warp == NONE16 || s.r_epoch != ep) {
        s.r_epoch = ep;
        s.r_warp = w;
        s.r_gen = gen;
        s.r_lane = lane;
        s.r_tid = (uint16_t)t;
        s.r_pc = pc;
    } else if (s.r_warp == MULTI16) {
        // Several warps read already: any later write in this epoch races.
    } else if (s.r_warp != w) {
        s.r_warp = MULTI16;
        s.r_tid2 = (uint16_t)t;
    } else if (gen != s.r_gen) {
        s.r_gen = gen;
        s.r_lane = lane;
        s.r_tid = (uint16_t)t;
        s.r_pc = pc;
    } else if (s.r_lane != lane) {
        s.r_lane = MULTI16;
    }
}

// A static shared access must lie inside one __shared__ variable, and the
// same one that the instruction (code address) touched first in this
// launch: an index one past the end of an array lands in padding (fails
// here) or in a neighbouring variable (fails here too, as the instruction
// switches variables). Every __device__ function is inlined, so one
// instruction serves one array.
EMU_RT inline void static_bounds(uintptr_t a, size_t size, bool write, uint32_t pc) {
    int lo = 0, hi = rt.nvars;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (rt.vars[mid].lo + rt.vars[mid].len <= a) lo = mid + 1; else hi = mid;
    }
    bool inside = lo < rt.nvars && a >= rt.vars[lo].lo && a + size <= rt.vars[lo].lo + rt.vars[lo].len;
    if (!inside) {
        bool dyn = false;
        for (int i = 0; i < rt.ndyn; i++) dyn |= a - rt.dyn_lo[i] < rt.dyn_cap[i];
        if (dyn || a - (uintptr_t)&rt_ptr < sizeof rt_ptr) return;
        fail("thread %d %s %lu bytes of static shared memory at @0x%x outside every __shared__ variable (past the "
             "end of an array?)", rt.current, write ? "writes" : "reads", (unsigned long)size, pc);
        abandon();
    }
    uint32_t h = (pc * 2654435761u) >> 20;  // PC_SLOTS = 2^12
    for (int probe = 0; probe < PC_SLOTS; probe++, h = (h + 1) & (PC_SLOTS - 1)) {
        if (rt.pc_launch[h] != rt.launch_no) {
            rt.pc_launch[h] = rt.launch_no;
            rt.pc_key[h] = pc;
            rt.pc_var[h] = (uint16_t)lo;
            return;
        }
        if (rt.pc_key[h] != pc) continue;
        if (rt.pc_var[h] != lo) {
            const auto& was = rt.vars[rt.pc_var[h]];
            fail("thread %d %s %s byte %lu at @0x%x, an instruction that accessed %s (%lu bytes) before: an index "
                 "out of %s's bounds",
                 rt.current, write ? "writes" : "reads", rt.vars[lo].name, (unsigned long)(a - rt.vars[lo].lo), pc,
                 was.name, (unsigned long)was.len, was.name);
            abandon();
        }
        return;
    }
}

EMU_RT inline void access(void* p, size_t size, bool write, void* ret) {
    Runtime* r = rt_ptr;
    if (r == nullptr || !r->tracking) return;
    uintptr_t a = (uintptr_t)p;
    uint32_t pc = (uint32_t)((uintptr_t)ret - 1 - r->module_base);
    if (a - r->tls_lo < r->tls_len) {
        for (int i = 0; i < r->ndyn; i++) {
            uintptr_t off = a - r->dyn_lo[i];
            if (off < r->dyn_cap[i] && off + size > r->dyn_req) {
                fail("thread %d %s dynamic shared bytes %lu..%lu at @0x%x, past the %lu bytes the launch asked for",
                     r->current, write ? "writes" : "reads", (unsigned long)off, (unsigned long)(off + size),
                     pc, (unsigned long)r->dyn_req);
                abandon();
            }
        }
        if (r->nvars > 0) static_bounds(a, size, write, pc);
        for (uintptr_t w = a & ~(uintptr_t)3; w < a + size; w += 4) shared_word(w, write, pc);
        return;
    }
    // Only the last 256 bytes of a page can hold a buffer's tail.
    if ((a & (PAGE - 1)) + 256 < PAGE && ((a + size - 1) & (PAGE - 1)) + 256 < PAGE) return;
    for (int i = 0; i < r->ntails; i++) {
        unsigned long long end = r->tails[2 * i], guard = r->tails[2 * i + 1];
        if (a < guard && a + size > end) {
            fail("thread %d %s %lu bytes at @0x%x, %llu bytes past the end of buffer argument %d", r->current,
                 write ? "writes" : "reads", (unsigned long)size, pc, (unsigned long long)(a + size - end), i);
            abandon();
        }
    }
}

// ---- launching ----

EMU_RT inline void free_runtime(void* p) {
    Runtime* r = (Runtime*)p;
    if (r->stacks) munmap(r->stacks, (size_t)MAX_THREADS * (PAGE + STACK_BYTES));
    free(r->fibers);
    free(r->shadow);
    delete r;
}

inline pthread_key_t runtime_key;
inline pthread_once_t runtime_key_once = PTHREAD_ONCE_INIT;
EMU_RT inline void make_runtime_key() { pthread_key_create(&runtime_key, free_runtime); }

struct TlsQuery {
    uintptr_t base;
    uintptr_t modid, len;
};

struct TlsIndex {
    unsigned long module, offset;
};
extern "C" void* __tls_get_addr(TlsIndex*);

EMU_RT inline int find_tls(struct dl_phdr_info* info, size_t, void* arg) {
    TlsQuery* q = (TlsQuery*)arg;
    if ((uintptr_t)info->dlpi_addr != q->base) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            q->modid = info->dlpi_tls_modid;
            q->len = info->dlpi_phdr[i].p_memsz;
        }
    return 1;
}

// The variable name of a mangled function-local static (`_ZZ4funcE6s_mean`,
// `_ZZ7ln_gemmILb0EEv...E6s_mean_0`): the last <length><name> of the symbol.
EMU_RT inline void local_name(const char* sym, char* out, size_t len) {
    snprintf(out, len, "%s", sym);
    size_t n = strlen(sym);
    for (size_t i = 0; i + 1 < n; i++) {
        if (sym[i] != 'E' || sym[i + 1] < '1' || sym[i + 1] > '9') continue;
        size_t j = i + 1, l = 0;
        while (j < n && sym[j] >= '0' && sym[j] <= '9') l = l * 10 + (sym[j++] - '0');
        // The name runs to the end, or to a discriminator `_<digits>`.
        if (j + l == n || (j + l < n && sym[j + l] == '_')) {
            snprintf(out, len, "%.*s", (int)l, sym + j);
        }
    }
}

// The static __shared__ variables of this module, from its ELF symbol table:
// every TLS object except the runtime pointer and the dynamic arrays.
EMU_RT inline void load_vars(Runtime* r, const char* path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    void* map = size > 0 ? mmap(nullptr, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED) return;
    const char* base = (const char*)map;
    const Elf64_Ehdr* eh = (const Elf64_Ehdr*)base;
    const Elf64_Shdr* sh = (const Elf64_Shdr*)(base + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const Elf64_Sym* syms = (const Elf64_Sym*)(base + sh[i].sh_offset);
        const char* names = base + sh[sh[i].sh_link].sh_offset;
        size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < count && r->nvars < MAX_VARS; k++) {
            if (ELF64_ST_TYPE(syms[k].st_info) != STT_TLS || syms[k].st_size == 0) continue;
            // A TLS symbol's value is its offset in the module's TLS block.
            uintptr_t lo = r->tls_lo + syms[k].st_value;
            bool ours = lo == (uintptr_t)&rt_ptr;
            for (int d = 0; d < r->ndyn; d++) ours |= lo == r->dyn_lo[d];
            if (ours) continue;
            Runtime::Var& v = r->vars[r->nvars++];
            v.lo = lo;
            v.len = syms[k].st_size;
            local_name(names + syms[k].st_name, v.name, sizeof v.name);
        }
    }
    munmap(map, (size_t)size);
    // Sorted by address (insertion sort: a handful of variables).
    for (int i = 1; i < r->nvars; i++)
        for (int j = i; j > 0 && r->vars[j - 1].lo > r->vars[j].lo; j--) {
            Runtime::Var t = r->vars[j];
            r->vars[j] = r->vars[j - 1];
            r->vars[j - 1] = t;
        }
}

// The calling thread's runtime, made on first use: fiber stacks (a guard
// page under each), the shared-memory window and its shadow. Null on failure
// (err says why).
EMU_RT inline Runtime* runtime(char* err, unsigned long errlen) {
    if (rt_ptr) return rt_ptr;
    pthread_once(&runtime_key_once, make_runtime_key);
    Dl_info self;
    if (dladdr((void*)&find_tls, &self) == 0) {
        snprintf(err, errlen, "cuda-emu: dladdr cannot find the emulator module");
        return nullptr;
    }
    // Taking the address allocates this thread's TLS block of the module.
    Runtime** slot = &rt_ptr;
    TlsQuery q{(uintptr_t)self.dli_fbase, 0, 0};
    dl_iterate_phdr(find_tls, &q);
    TlsIndex index{q.modid, 0};
    uintptr_t data = q.modid ? (uintptr_t)__tls_get_addr(&index) : 0;
    if (data == 0 || q.len == 0 || (uintptr_t)slot - data >= q.len) {
        snprintf(err, errlen, "cuda-emu: cannot locate the module's thread-local block (shared memory): base %lx data %lx len %lu slot %lx",
                 (unsigned long)q.base, (unsigned long)data, (unsigned long)q.len, (unsigned long)slot);
        return nullptr;
    }
    size_t slot_bytes = PAGE + STACK_BYTES;
    void* p = mmap(nullptr, (size_t)MAX_THREADS * slot_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cuda-emu: cannot map fiber stacks");
        return nullptr;
    }
    Runtime* r = new Runtime();
    r->stacks = (char*)p;
    r->fibers = (Fiber*)calloc(MAX_THREADS, sizeof(Fiber));
    r->tls_lo = data;
    r->tls_len = q.len;
    r->module_base = q.base;
    r->shadow = (Shadow*)calloc(q.len / 4 + 1, sizeof(Shadow));
    if (!r->fibers || !r->shadow) {
        snprintf(err, errlen, "cuda-emu: out of memory for the runtime");
        free_runtime(r);
        return nullptr;
    }
    pthread_setspecific(runtime_key, r);
    rt_ptr = r;
    return r;
}

EMU_RT inline void init_fiber(int t) {
    char* top = rt.stacks + (size_t)(t + 1) * (PAGE + STACK_BYTES);
    void** sp = (void**)top;
    *--sp = nullptr;                  // alignment slot: fiber_main starts as if called
    *--sp = (void*)&fiber_main;       // popped by emu_switch's ret
    for (int r = 0; r < 6; r++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    --sp;                             // mxcsr + x87 control word
    unsigned int mxcsr;
    unsigned short fpcw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpcw));
    memcpy((char*)sp, &mxcsr, 4);
    memcpy((char*)sp + 4, &fpcw, 2);
    Fiber& f = rt.fibers[t];
    f.sp = sp;
    f.state = RUNNABLE;
    f.tid = uint3{(unsigned)t, 0, 0};
}

// Completes every warp op whose lanes have all arrived; 1 if any did, 0 if
// none, -1 on a misuse (recorded in rt.error).
EMU_RT inline int resolve_warps() {
    int n = rt.nthreads, any = 0;
    for (int w0 = 0; w0 < n; w0 += 32) {
        int lead = -1;
        for (int l = 0; l < 32 && w0 + l < n; l++)
            if (rt.fibers[w0 + l].state == AT_WARP) { lead = w0 + l; break; }
        if (lead < 0) continue;
        Fiber& L = rt.fibers[lead];
        for (int l = 0; l < 32; l++) {
            if (!(L.mask >> l & 1u)) continue;
            int t = w0 + l;
            if (t >= n) {
                fail("line %d: warp op names lane %d of warp %d, which does not exist (block of %d threads)", L.line, l, w0 / 32, n);
                return -1;
            }
            Fiber& f = rt.fibers[t];
            if (f.state == EXITED) {
                fail("line %d: warp op of warp %d names lane %d, which has exited", L.line, w0 / 32, l);
                return -1;
            }
            if (f.state != AT_WARP || f.line != L.line || f.op != L.op || f.mask != L.mask) {
                fail("line %d: lane %d of warp %d waits at line %d instead (divergent warp op)", L.line, l, w0 / 32, f.line);
                return -1;
            }
        }
        for (int l = 0; l < 32; l++) {
            if (!(L.mask >> l & 1u)) continue;
            Fiber& f = rt.fibers[w0 + l];
            int src = l;
            if (f.op == SHFL_IDX) src = f.arg & 31;
            if (f.op == SHFL_XOR) src = (l ^ f.arg) & 31;
            if (!(L.mask >> src & 1u)) {
                fail("line %d: lane %d reads lane %d, outside the mask (warp %d)", L.line, l, src, w0 / 32);
                return -1;
            }
            f.result = rt.fibers[w0 + src].value;
        }
        // A full-mask __syncwarp orders the warp's shared-memory accesses.
        if (L.op == SYNCWARP && L.mask == 0xffffffffu) rt.warp_gen[w0 / 32]++;
        for (int l = 0; l < 32; l++)
            if (L.mask >> l & 1u) rt.fibers[w0 + l].state = RUNNABLE;
        any = 1;
    }
    return any;
}

// Runs one block to completion; false on a failure (rt.error says why).
EMU_RT inline bool run_block(bool reverse) {
    int n = rt.nthreads;
    for (int t = 0; t < n; t++) init_fiber(t);
    if (++rt.serial == 0) {
        // 2^32 blocks later: forget every shadow entry rather than misread one.
        memset(rt.shadow, 0, (rt.tls_len / 4 + 1) * sizeof(Shadow));
        rt.serial = 1;
    }
    rt.epoch = 0;
    rt.barrier_line = 0;
    memset(rt.warp_gen, 0, sizeof rt.warp_gen);
    for (;;) {
        for (int k = 0; k < n; k++) {
            int t = reverse ? n - 1 - k : k;
            if (rt.fibers[t].state != RUNNABLE) continue;
            rt.current = t;
            rt.tracking = true;
            emu_switch(&rt.sched_sp, rt.fibers[t].sp);
            rt.tracking = false;
            if (rt.failed) return false;
        }
        int r = resolve_warps();
        if (r < 0) return false;
        if (r > 0) continue;
        int live = 0, line = -1;
        for (int t = 0; t < n; t++) {
            Fiber& f = rt.fibers[t];
            if (f.state == EXITED) continue;
            live++;
            if (f.state != AT_BARRIER) {
                fail("thread %d waits at line %d (a warp op) while others wait at a barrier", t, f.line);
                return false;
            }
            if (line < 0) line = f.line;
            if (f.line != line) {
                fail("threads of a block wait at different barriers: line %d and line %d (thread %d)", line, f.line, t);
                return false;
            }
        }
        if (live == 0) return true;
        rt.epoch++;
        rt.barrier_line = line;
        for (int t = 0; t < n; t++)
            if (rt.fibers[t].state == AT_BARRIER) rt.fibers[t].state = RUNNABLE;
    }
}

// NaN bytes over the static shared variables (the TLS block minus the
// runtime pointer and the dynamic arrays) and the requested dynamic bytes.
EMU_RT inline void poison_shared() {
    uintptr_t skip_lo[MAX_DYN + 1], skip_hi[MAX_DYN + 1];
    int nskip = 0;
    skip_lo[nskip] = (uintptr_t)&rt_ptr;
    skip_hi[nskip++] = (uintptr_t)&rt_ptr + sizeof rt_ptr;
    for (int i = 0; i < rt.ndyn; i++) {
        skip_lo[nskip] = rt.dyn_lo[i];
        skip_hi[nskip++] = rt.dyn_lo[i] + rt.dyn_cap[i];
        memset((void*)rt.dyn_lo[i], 0xff, rt.dyn_req < rt.dyn_cap[i] ? rt.dyn_req : rt.dyn_cap[i]);
    }
    uintptr_t a = rt.tls_lo, end = rt.tls_lo + rt.tls_len;
    while (a < end) {
        uintptr_t next = end;  // start of the next skipped range at or after a
        bool inside = false;
        for (int i = 0; i < nskip; i++) {
            if (a >= skip_lo[i] && a < skip_hi[i]) {
                a = skip_hi[i];
                inside = true;
                break;
            }
            if (skip_lo[i] >= a && skip_lo[i] < next) next = skip_lo[i];
        }
        if (inside) continue;
        memset((void*)a, 0xff, next - a);
        a = next;
    }
}

EMU_RT inline uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

EMU_RT inline uint64_t gcd(uint64_t a, uint64_t b) {
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// One launch: every block of the grid, in a seeded order. Returns 0 or 1 (error in err).
EMU_RT inline int launch(void (*thunk)(void**), int (*dyn_arrays)(uintptr_t*, uintptr_t*), const unsigned* grid,
                         unsigned block, unsigned long long dyn_smem, void** args, unsigned long long seq,
                         unsigned long long seed, const unsigned long long* tails, int ntails, char* err,
                         unsigned long errlen) {
    if (block == 0 || block > (unsigned)MAX_THREADS) {
        snprintf(err, errlen, "block of %u threads", block);
        return 1;
    }
    if (ntails > MAX_TAILS) {
        snprintf(err, errlen, "%d buffer arguments (the emulator takes %d)", ntails, MAX_TAILS);
        return 1;
    }
    if (runtime(err, errlen) == nullptr) return 1;
    // A guard page under every stack in use: a fiber that overflows its stack
    // faults. Only as many as the largest block so far (each is a mapping).
    for (; rt.guarded < (int)block; rt.guarded++)
        if (mprotect(rt.stacks + rt.guarded * (PAGE + STACK_BYTES), PAGE, PROT_NONE) != 0) {
            snprintf(err, errlen, "cuda-emu: cannot protect a fiber stack's guard page (too many mappings?)");
            return 1;
        }
    rt.failed = false;
    rt.error[0] = 0;
    rt.thunk = thunk;
    rt.args = args;
    rt.nthreads = (int)block;
    rt.block_dim = uint3{block, 1, 1};
    rt.grid_dim = uint3{grid[0], grid[1], grid[2]};
    rt.ndyn = dyn_arrays(rt.dyn_lo, rt.dyn_cap);
    if (rt.launch_no == 0) {
        Dl_info self;
        if (dladdr((void*)&find_tls, &self) != 0 && self.dli_fname) load_vars(&rt, self.dli_fname);
    }
    if (++rt.launch_no == 0) {
        memset(rt.pc_launch, 0, sizeof rt.pc_launch);
        rt.launch_no = 1;
    }
    rt.dyn_req = dyn_smem;
    rt.tails = tails;
    rt.ntails = ntails;
    for (int i = 0; i < rt.ndyn; i++)
        if (dyn_smem > rt.dyn_cap[i]) {
            snprintf(err, errlen, "%llu bytes of dynamic shared memory (the emulator has %lu)", dyn_smem,
                     (unsigned long)rt.dyn_cap[i]);
            return 1;
        }
    // Blocks in the order start, start + stride, ... (mod the block count),
    // the stride coprime to the count: every block once, in a varied order.
    const uint64_t total = (uint64_t)grid[0] * grid[1] * grid[2];
    uint64_t state = seed ^ (seq * 0xd1b54a32d192ed03ull);
    uint64_t start = total ? splitmix(state) % total : 0, stride = 1;
    if (total > 2) {
        stride = 1 + splitmix(state) % (total - 1);
        while (gcd(stride, total) != 1) stride = stride % (total - 1) + 1;
    }
    uint64_t linear = start;
    for (uint64_t i = 0; i < total; i++, linear = (linear + stride) % total) {
        unsigned x = (unsigned)(linear % grid[0]);
        unsigned y = (unsigned)(linear / grid[0] % grid[1]);
        unsigned z = (unsigned)(linear / ((uint64_t)grid[0] * grid[1]));
        rt.block_idx = uint3{x, y, z};
        poison_shared();
        if (!run_block(((i + seq) & 1) != 0)) {
            snprintf(err, errlen, "block (%u, %u, %u), the %llu-th run of %llu (block order seed %llu, launch %llu): %s",
                     x, y, z, (unsigned long long)i + 1, (unsigned long long)total, seed, seq, rt.error);
            return 1;
        }
    }
    return 0;
}

}  // namespace emu

// ---- the ThreadSanitizer hooks the compiler calls (no tsan runtime is linked) ----
// Signatures as GCC declares them (the symbols are extern "C", so a compiler
// that declares them otherwise links to the same functions).

#define EMU_HOOK extern "C" EMU_RT __attribute__((used))
#define EMU_HOOKS(n)                                                                                        \
    EMU_HOOK void __tsan_read##n(void* p) { ::emu::access(p, n, false, __builtin_return_address(0)); }          \
    EMU_HOOK void __tsan_write##n(void* p) { ::emu::access(p, n, true, __builtin_return_address(0)); }          \
    EMU_HOOK void __tsan_unaligned_read##n(void* p) { ::emu::access(p, n, false, __builtin_return_address(0)); } \
    EMU_HOOK void __tsan_unaligned_write##n(void* p) { ::emu::access(p, n, true, __builtin_return_address(0)); }
EMU_HOOK void __tsan_init() {}
EMU_HOOK void __tsan_func_entry(void*) {}
EMU_HOOK void __tsan_func_exit(void*) {}
EMU_HOOK void __tsan_read1(void* p) { ::emu::access(p, 1, false, __builtin_return_address(0)); }
EMU_HOOK void __tsan_write1(void* p) { ::emu::access(p, 1, true, __builtin_return_address(0)); }
EMU_HOOKS(2)
EMU_HOOKS(4)
EMU_HOOKS(8)
EMU_HOOKS(16)
EMU_HOOK void __tsan_read_range(void* p, long n) { ::emu::access(p, n, false, __builtin_return_address(0)); }
EMU_HOOK void __tsan_write_range(void* p, long n) { ::emu::access(p, n, true, __builtin_return_address(0)); }

#undef rt
#define threadIdx (::emu::rt_ptr->fibers[::emu::rt_ptr->current].tid)
#define blockIdx (::emu::rt_ptr->block_idx)
#define blockDim (::emu::rt_ptr->block_dim)
#define gridDim (::emu::rt_ptr->grid_dim)
#define __syncthreads() ::emu::barrier(__LINE__)
#define __syncwarp(...) ((void)::emu::warp_op(__LINE__, ::emu::SYNCWARP, 0xffffffffu __VA_OPT__(* 0 +) __VA_ARGS__, 0, 0))
#define __shfl_sync(mask, v, lane, ...) ::emu::shfl(__LINE__, ::emu::SHFL_IDX, (mask), (v), (lane), 32 __VA_OPT__(* 0 +) __VA_ARGS__)
#define __shfl_xor_sync(mask, v, lanemask, ...) ::emu::shfl(__LINE__, ::emu::SHFL_XOR, (mask), (v), (lanemask), 32 __VA_OPT__(* 0 +) __VA_ARGS__)
#define __trap() ::emu::trap(__LINE__)
