// cuda-emu: runs the backend's unmodified .cu kernels on the CPU, compiled
// as C++ by the system compiler with this header force-included in front.
//
// Model: one fiber (own stack, own registers) per CUDA thread; the blocks of
// a launch run one after another on the calling OS thread. A fiber runs
// until it reaches a synchronisation point, then the next one runs:
//   __syncthreads()  every live (not exited) thread of the block must reach
//                    the SAME barrier (same source line), or the launch fails;
//   __shfl_*sync / __syncwarp
//                    the lanes named by the mask meet in a per-warp exchange
//                    at the same call site; a named lane that has exited, or
//                    waits elsewhere, fails the launch;
//   __trap()         fails the launch with the line.
// Threads of a block run in thread order or in reverse order (alternating
// with the block index and the launch number), so a missing barrier shows up
// as a read of data another thread has not written yet, whichever way round
// the dependency goes. __shared__ variables are thread_local statics: one
// instance per OS thread, i.e. per block being run. Dynamic shared memory is
// filled with NaN bytes before each block. Device buffers are host memory
// ending on a guard page (allocated by the Rust side), so an overrun faults.
//
// Limits: blocks are 1-D in threads (all the backend launches); no atomics,
// no warp votes (none are used); fp rounding is the CPU's (libm expf, fmaf).

#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <sys/mman.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
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
    ~Runtime() {
        if (stacks) munmap(stacks, (size_t)MAX_THREADS * (PAGE + STACK_BYTES));
        free(fibers);
    }
};

inline thread_local Runtime rt;

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

inline void fail(const char* fmt, int a, int b, int c, int d) {
    if (!rt.failed) {
        rt.failed = true;
        snprintf(rt.error, sizeof rt.error, fmt, a, b, c, d);
    }
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
inline void yield() { emu_switch(&me().sp, rt.sched_sp); }

[[noreturn]] inline void fiber_main() {
    rt.thunk(rt.args);
    me().state = EXITED;
    yield();
    __builtin_unreachable();
}

inline void barrier(int line) {
    Fiber& f = me();
    f.state = AT_BARRIER;
    f.line = line;
    yield();
}

inline unsigned long long warp_op(int line, int op, unsigned mask, unsigned long long value, int arg) {
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
inline T shfl(int line, int op, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    if (width != 32) fail("line %d: shuffle width %d (only 32 is emulated)%.0d%.0d", line, width, 0, 0);
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = warp_op(line, op, mask, bits, arg);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

[[noreturn]] inline void trap(int line) {
    fail("__trap() at line %d (thread %d of block %d)%.0d", line, rt.current, (int)rt.block_idx.x, 0);
    me().state = EXITED;
    yield();
    __builtin_unreachable();
}

inline void setup_stacks() {
    if (rt.stacks) return;
    size_t slot = PAGE + STACK_BYTES;
    void* p = mmap(nullptr, (size_t)MAX_THREADS * slot, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "cuda-emu: cannot map fiber stacks\n");
        abort();
    }
    rt.stacks = (char*)p;
    // A guard page under every stack: a fiber that overflows its stack faults.
    for (int t = 0; t < MAX_THREADS; t++) mprotect(rt.stacks + t * slot, PAGE, PROT_NONE);
    rt.fibers = (Fiber*)calloc(MAX_THREADS, sizeof(Fiber));
}

inline void init_fiber(int t) {
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
inline int resolve_warps() {
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
                fail("line %d: warp op of warp %d names lane %d, which has exited%.0d", L.line, w0 / 32, l, 0);
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
        for (int l = 0; l < 32; l++)
            if (L.mask >> l & 1u) rt.fibers[w0 + l].state = RUNNABLE;
        any = 1;
    }
    return any;
}

// Runs one block to completion; false on a failure (rt.error says why).
inline bool run_block(bool reverse) {
    int n = rt.nthreads;
    for (int t = 0; t < n; t++) init_fiber(t);
    for (;;) {
        for (int k = 0; k < n; k++) {
            int t = reverse ? n - 1 - k : k;
            if (rt.fibers[t].state != RUNNABLE) continue;
            rt.current = t;
            emu_switch(&rt.sched_sp, rt.fibers[t].sp);
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
                fail("thread %d waits at line %d (a warp op) while others wait at a barrier%.0d%.0d", t, f.line, 0, 0);
                return false;
            }
            if (line < 0) line = f.line;
            if (f.line != line) {
                fail("threads of a block wait at different barriers: line %d and line %d (thread %d)%.0d", line, f.line, t, 0);
                return false;
            }
        }
        if (live == 0) return true;
        for (int t = 0; t < n; t++)
            if (rt.fibers[t].state == AT_BARRIER) rt.fibers[t].state = RUNNABLE;
    }
}

// One launch: every block of the grid, in order. Returns 0 or 1 (error in err).
inline int launch(void (*thunk)(void**), void (*poison_dyn)(unsigned long long), const unsigned* grid, unsigned block,
                  unsigned long long dyn_smem, void** args, unsigned long long seq, char* err, unsigned long errlen) {
    if (block == 0 || block > (unsigned)MAX_THREADS) {
        snprintf(err, errlen, "block of %u threads", block);
        return 1;
    }
    setup_stacks();
    rt.failed = false;
    rt.error[0] = 0;
    rt.thunk = thunk;
    rt.args = args;
    rt.nthreads = (int)block;
    rt.block_dim = uint3{block, 1, 1};
    rt.grid_dim = uint3{grid[0], grid[1], grid[2]};
    unsigned long long linear = 0;
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++, linear++) {
                rt.block_idx = uint3{x, y, z};
                poison_dyn(dyn_smem);
                if (!run_block(((linear + seq) & 1) != 0)) {
                    snprintf(err, errlen, "block (%u, %u, %u): %s", x, y, z, rt.error);
                    return 1;
                }
            }
    return 0;
}

}  // namespace emu

#define threadIdx (::emu::rt.fibers[::emu::rt.current].tid)
#define blockIdx (::emu::rt.block_idx)
#define blockDim (::emu::rt.block_dim)
#define gridDim (::emu::rt.grid_dim)
#define __syncthreads() ::emu::barrier(__LINE__)
#define __syncwarp(...) ((void)::emu::warp_op(__LINE__, ::emu::SYNCWARP, 0xffffffffu __VA_OPT__(* 0 +) __VA_ARGS__, 0, 0))
#define __shfl_sync(mask, v, lane, ...) ::emu::shfl(__LINE__, ::emu::SHFL_IDX, (mask), (v), (lane), 32 __VA_OPT__(* 0 +) __VA_ARGS__)
#define __shfl_xor_sync(mask, v, lanemask, ...) ::emu::shfl(__LINE__, ::emu::SHFL_XOR, (mask), (v), (lanemask), 32 __VA_OPT__(* 0 +) __VA_ARGS__)
#define __trap() ::emu::trap(__LINE__)
