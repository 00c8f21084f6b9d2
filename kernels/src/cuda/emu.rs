//! cuda-emu: the backend's unmodified `.cu` files run on the CPU, for tests
//! and checks on machines without a GPU.
//!
//! Each `.cu` file is compiled at run time by the system C++ compiler
//! (`EDGEREC_EMU_CXX`, else `CXX`, else `c++`) with `kernels/emu/cuda_emu.h`
//! in front (CUDA qualifiers and built-ins, one fiber per CUDA thread,
//! checked barriers and warp exchanges: see that header), with the same
//! `-D` shape and head-dim defines NVRTC gets, into a shared library that is
//! cached (keyed by a hash of everything that goes into it, see
//! [`cache_dir`]), and loaded with `dlopen`. Call thunks
//! are generated from the signature table with a `static_assert` that each
//! matches the kernel's declared type. The compile instruments every load
//! and store of kernel code (`-fsanitize=thread` without its runtime: the
//! header's hooks), which is how the header checks shared-memory races and
//! bounds and the padding after each buffer. Device buffers are host memory
//! that starts 256-byte aligned and ends on an inaccessible page.
//!
//! Slow (a fiber switch per thread per barrier or shuffle, a hook call per
//! memory access): for small shapes.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_ulong, c_void};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::ModelConfig;
use crate::error::BackendError;

use super::host_buf::HostBuf;
use super::launch::{Arg, Launcher, Profiler, RawBuf, Shape};
use super::shapes;
use super::signatures::{Kernel, SOURCES, Source};

/// The shim header force-included in front of every `.cu` file.
const HEADER: &str = include_str!("../../emu/cuda_emu.h");
/// Dynamic shared memory one emulated block may take (an H100/H200's opt-in limit).
pub(crate) const EMU_DYN_SMEM_MAX: usize = 227 * 1024;
/// Compile flags: no strict aliasing (the kernels carve typed arrays out of
/// byte shared memory); `-fsanitize=thread` so that every load and store of
/// the kernel code calls the header's `__tsan_*` hooks (shared-memory race
/// detector, bounds; no ThreadSanitizer runtime is linked: see `LINK_FLAGS`);
/// `-g1` for the line tables that name a racing access's source line;
/// `-fno-gnu-unique` so that each loaded library keeps its own runtime and
/// shared variables (GCC would otherwise merge inline functions' statics
/// across every library of the process, RTLD_LOCAL or not).
const CXX_FLAGS: &[&str] = &[
    "-std=gnu++20",
    "-O2",
    "-g1",
    "-fPIC",
    "-c",
    "-fno-strict-aliasing",
    "-fno-gnu-unique",
    "-fsanitize=thread",
    "--param",
    "tsan-instrument-func-entry-exit=0",
    "-w",
];
/// NVRTC's default `--fmad=true` contracts `a*b+c` into one FMA; so does the
/// emulator where the CPU has FMA instructions (else it cannot, and says so
/// in [`fp_contract_note`]).
const FMA_FLAGS: &[&str] = &["-mfma", "-ffp-contract=fast"];
const NO_FMA_FLAGS: &[&str] = &["-ffp-contract=off"];
/// Link flags: the hooks bind inside the library (`-Bsymbolic`), nothing is
/// left undefined (a hook the compiler wants and the header lacks is a build
/// error, not a load error), and no sanitizer runtime is linked.
const LINK_FLAGS: &[&str] = &["-shared", "-Wl,-Bsymbolic", "-Wl,--no-undefined"];

/// Whether this CPU can contract `a*b+c` into an FMA as NVRTC does.
fn cpu_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The flags of the emulator's compile for this CPU.
fn cxx_flags() -> Vec<&'static str> {
    let fp = if cpu_has_fma() { FMA_FLAGS } else { NO_FMA_FLAGS };
    CXX_FLAGS.iter().chain(fp).copied().collect()
}

/// How the emulator rounds `a*b+c` on this CPU (for reports).
pub fn fp_contract_note() -> &'static str {
    if cpu_has_fma() {
        "a*b+c contracted to FMA (as NVRTC --fmad=true)"
    } else {
        "no FMA on this CPU: a*b+c rounded twice (NVRTC contracts it)"
    }
}

/// The block-order seed: `EDGEREC_EMU_SEED`, else a fixed default (runs
/// reproduce; set the variable to vary the order between runs).
fn block_order_seed() -> u64 {
    std::env::var("EDGEREC_EMU_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0x5eed_b10c)
}

fn emu_err(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "cuda-emu", message: message.into() }
}

fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable { backend: "cuda-emu", reason: reason.into() }
}

/// Source texts to use instead of the embedded `.cu` files (by file name,
/// e.g. `"hstu_gemm.cu"`): how the tests run a deliberately broken copy of a
/// kernel to prove the emulator catches it.
#[derive(Clone, Debug, Default)]
pub struct EmuOptions {
    /// `(file name, replacement text)` pairs.
    pub source_overrides: Vec<(String, String)>,
    /// `(kernel name, bytes)`: launch that kernel with this many bytes less
    /// dynamic shared memory than the host computed (the mutation tests'
    /// host-side shared-memory size mutants).
    pub dyn_smem_shrink: Vec<(String, u32)>,
    /// Kernel launch (counted from 1) of this backend at which the device
    /// context is lost, as after an illegal address on a GPU: that launch
    /// and every later call fail with [`BackendError::ContextLost`] (the
    /// failover tests). The environment variable [`LOSE_CONTEXT_ENV`] does
    /// the same for one launch of the whole process.
    pub lose_context_at_launch: Option<u64>,
}

/// `EDGEREC_EMU_LOSE_CONTEXT_AT=N`: the process's N-th emulated kernel launch
/// (counted from 1, over every `cuda-emu` backend) loses its backend's
/// context, once (how a server test injects a device fault).
pub const LOSE_CONTEXT_ENV: &str = "EDGEREC_EMU_LOSE_CONTEXT_AT";

/// The launch number [`LOSE_CONTEXT_ENV`] names, read once.
fn process_loss_at() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| std::env::var(LOSE_CONTEXT_ENV).ok().and_then(|v| v.trim().parse().ok()))
}

/// Emulated launches of the process so far.
static PROCESS_LAUNCHES: AtomicU64 = AtomicU64::new(0);

fn context_lost(message: impl Into<String>) -> BackendError {
    BackendError::ContextLost { backend: "cuda-emu", message: message.into() }
}

/// `emu_launch` of a compiled `.cu` file (see [`translation_unit`]).
type LaunchFn = unsafe extern "C" fn(
    name: *const c_char,
    grid: *const u32,
    block: u32,
    dyn_smem: u64,
    args: *mut *mut c_void,
    seq: u64,
    seed: u64,
    tails: *const u64,
    ntails: c_int,
    err: *mut c_char,
    errlen: c_ulong,
) -> c_int;

/// A loaded emulator library (never unloaded: fibers' thread-locals live in it).
struct Module {
    _lib: libloading::Library,
    launch: LaunchFn,
    /// The library file (its line tables name the source line of a race).
    path: PathBuf,
}

/// Libraries loaded by this process, by content hash.
fn loaded() -> &'static Mutex<HashMap<u64, Arc<Module>>> {
    static LOADED: OnceLock<Mutex<HashMap<u64, Arc<Module>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The emulated device: one compiled library per `.cu` file.
pub(crate) struct EmuLauncher {
    modules: HashMap<Source, Arc<Module>>,
    /// Launch counter: varies the block order and alternates the thread order between launches.
    seq: AtomicU64,
    /// Seed of the block order.
    seed: u64,
    /// Bytes taken off kernels' dynamic shared memory (mutation tests).
    dyn_smem_shrink: Vec<(String, u32)>,
    profiler: Profiler,
    /// See [`EmuOptions::lose_context_at_launch`].
    lose_at: Option<u64>,
    /// Set by an injected fault: every later call fails, as on a dead context.
    lost: AtomicBool,
}

/// FNV-1a, 64 bit: a content hash for the cache (no security role).
fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Where compiled kernels are kept: `EDGEREC_EMU_CACHE`, else the user's
/// cache folder (`$XDG_CACHE_HOME` or `~/.cache`, `edgerec/cuda-emu`: not
/// the temp dir first, which is often mounted noexec), else the temp dir.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEREC_EMU_CACHE") {
        return PathBuf::from(dir);
    }
    let home_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(dir) = home_cache {
        return dir.join("edgerec").join("cuda-emu");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("edgerec-cuda-emu-{uid}"))
}

fn compiler() -> String {
    std::env::var("EDGEREC_EMU_CXX").or_else(|_| std::env::var("CXX")).unwrap_or_else(|_| "c++".to_string())
}

/// The `extern __shared__` arrays of a source: (element type, name).
fn dynamic_shared(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.split("extern __shared__").nth(1)?;
            let decl = rest.split('[').next()?.trim();
            let name_start = decl.rfind(|c: char| !(c.is_alphanumeric() || c == '_'))? + 1;
            let (ty, name) = decl.split_at(name_start);
            // Drop __align__(..): the definition picks its own (larger) alignment.
            let ty = match (ty.find("__align__("), ty.find(')')) {
                (Some(a), Some(b)) if b > a => format!("{}{}", &ty[..a], &ty[b + 1..]),
                _ => ty.to_string(),
            };
            Some((ty.trim().to_string(), name.to_string()))
        })
        .collect()
}

/// The C++ translation unit of one source: the text (line numbers kept),
/// definitions of its dynamic shared memory, and generated launch thunks.
fn translation_unit(source: Source, text: &str) -> String {
    let file = source.file();
    let mut tu =
        format!("#include \"cuda_emu.h\"\n#define EMU_DYN_SMEM_MAX {EMU_DYN_SMEM_MAX}\n#line 1 \"{file}\"\n{text}\n");
    tu.push_str("\n// ---- generated by kernels/src/cuda/emu.rs ----\n");
    let dynamic = dynamic_shared(text);
    for (ty, name) in &dynamic {
        tu.push_str(&format!(
            "thread_local __attribute__((aligned(64))) {ty} {name}[EMU_DYN_SMEM_MAX / sizeof({ty})];\n"
        ));
    }
    // Where the dynamic arrays of the calling thread are (the header bounds
    // and poisons them per launch).
    tu.push_str("static int emu_dyn_arrays(uintptr_t* lo, uintptr_t* cap) {\n");
    for (i, (_, name)) in dynamic.iter().enumerate() {
        tu.push_str(&format!("    lo[{i}] = (uintptr_t){name}; cap[{i}] = sizeof({name});\n"));
    }
    tu.push_str(&format!("    (void)lo; (void)cap;\n    return {};\n}}\n", dynamic.len()));
    for kernel in source.kernels() {
        let name = kernel.name();
        let types: Vec<String> = kernel.params().iter().map(|(_, ty)| ty.c_type()).collect();
        let call: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("*({t}*)a[{i}]")).collect();
        tu.push_str(&format!(
            "static_assert(std::is_same<decltype(&{name}), void (*)({})>::value, \
             \"the signature table (kernels/src/cuda/signatures.rs) of {name} differs from {file}\");\n",
            types.join(", ")
        ));
        tu.push_str(&format!("static void emu_thunk_{name}(void** a) {{ {name}({}); }}\n", call.join(", ")));
    }
    tu.push_str(
        "extern \"C\" EMU_RT __attribute__((visibility(\"default\"))) int emu_launch(const char* name, const unsigned* grid, \
         unsigned block, unsigned long long dyn, void** args, unsigned long long seq, unsigned long long seed, \
         const unsigned long long* tails, int ntails, char* err, unsigned long errlen) {\n",
    );
    for kernel in source.kernels() {
        let name = kernel.name();
        tu.push_str(&format!(
            "    if (strcmp(name, \"{name}\") == 0) return emu::launch(emu_thunk_{name}, emu_dyn_arrays, grid, block, dyn, args, seq, seed, tails, ntails, err, errlen);\n"
        ));
    }
    tu.push_str(&format!("    snprintf(err, errlen, \"no kernel %s in {file}\", name);\n    return 1;\n}}\n"));
    tu
}

/// A library being built: the compiler process and where its output goes.
struct Build {
    child: std::process::Child,
    /// The object file being compiled (linked into `tmp` once the compiler is done).
    obj: PathBuf,
    tmp: PathBuf,
    out: PathBuf,
    source: Source,
}

fn start_build(dir: &Path, key: u64, source: Source, tu: &str, defines: &[String]) -> Result<Build, BackendError> {
    let work = dir.join(format!("{key:016x}.build"));
    std::fs::create_dir_all(&work).map_err(|e| emu_err(format!("cannot create {}: {e}", work.display())))?;
    let write = |name: &str, text: &str| {
        std::fs::write(work.join(name), text)
            .map_err(|e| emu_err(format!("cannot write {}: {e}", work.join(name).display())))
    };
    write("cuda_emu.h", HEADER)?;
    let tu_name = format!("{}.cpp", source.file());
    write(&tu_name, tu)?;
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{key:016x}.so.{}.{n}", std::process::id()));
    let obj = dir.join(format!("{key:016x}.o.{}.{n}", std::process::id()));
    let cxx = compiler();
    let child = Command::new(&cxx)
        .args(cxx_flags())
        .args(defines)
        .arg("-I")
        .arg(&work)
        .arg(work.join(&tu_name))
        .arg("-o")
        .arg(&obj)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            unavailable(format!(
                "cannot run the C++ compiler {cxx:?} ({e}); install g++ or clang++, or point EDGEREC_EMU_CXX at one"
            ))
        })?;
    Ok(Build { child, obj, tmp, out: dir.join(format!("{key:016x}.so")), source })
}

/// Links a compiled object into the shared library `out` (no sanitizer runtime).
fn link(obj: &Path, out: &Path) -> Result<(), String> {
    let output = Command::new(compiler())
        .args(LINK_FLAGS)
        .arg(obj)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("the C++ compiler failed to run: {e}"))?;
    let _ = std::fs::remove_file(obj);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).chars().take(6000).collect())
    }
}

fn load(path: &Path) -> Result<Module, BackendError> {
    // SAFETY: a library this module just compiled (or an earlier run did, from
    // the same inputs); its initialisers only set up thread-locals.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        emu_err(format!(
            "cannot load {} ({e}); if its folder is mounted noexec, point EDGEREC_EMU_CACHE elsewhere",
            path.display()
        ))
    })?;
    // SAFETY: emu_launch has exactly the LaunchFn signature (generated in translation_unit).
    let launch = unsafe { lib.get::<LaunchFn>(b"emu_launch\0") }
        .map(|s| *s)
        .map_err(|e| emu_err(format!("{} has no emu_launch: {e}", path.display())))?;
    Ok(Module { _lib: lib, launch, path: path.to_path_buf() })
}

/// `message` with every `@0x…` code offset of `library` replaced by the
/// source line it belongs to (`score_topk.cu:90`), as binutils' `addr2line`
/// reads the library's line tables; left as is where it cannot.
fn with_source_lines(message: &str, library: &Path) -> String {
    let mut offsets = Vec::new();
    let mut rest = message;
    while let Some(at) = rest.find("@0x") {
        let hex: String = rest[at + 3..].chars().take_while(char::is_ascii_hexdigit).collect();
        offsets.push(hex.clone());
        rest = &rest[at + 3 + hex.len()..];
    }
    if offsets.is_empty() {
        return message.to_string();
    }
    let Ok(out) = Command::new("addr2line")
        .arg("-e")
        .arg(library)
        .args(offsets.iter().map(|h| format!("0x{h}")))
        .stderr(Stdio::null())
        .output()
    else {
        return message.to_string();
    };
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    let mut text = String::new();
    let mut rest = message;
    for (i, hex) in offsets.iter().enumerate() {
        let at = rest.find("@0x").unwrap_or(rest.len());
        text.push_str(&rest[..at]);
        match lines.get(i).filter(|l| !l.starts_with("??")) {
            // Only the file name and line: the build folder is a cache detail.
            Some(line) => {
                let line = line.split(" (").next().unwrap_or(line);
                text.push_str("line ");
                text.push_str(line.rsplit('/').next().unwrap_or(line));
            }
            None => text.push_str(&format!("@0x{hex}")),
        }
        rest = rest.get(at + 3 + hex.len()..).unwrap_or("");
    }
    text.push_str(rest);
    text
}

impl EmuLauncher {
    /// Compiles (or finds cached) every `.cu` file for `config`'s head dims.
    pub(crate) fn new(config: &ModelConfig, options: &EmuOptions) -> Result<Self, BackendError> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err(unavailable("the emulator's fiber switch is written for x86-64 Linux only"));
        }
        let dir = cache_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| emu_err(format!("cannot create the emulator cache {}: {e}", dir.display())))?;
        let cxx = compiler();
        let mut modules = HashMap::new();
        let mut builds = Vec::new();
        for source in SOURCES {
            let text = options
                .source_overrides
                .iter()
                .find(|(file, _)| file == source.file())
                .map_or(source.text(), |(_, text)| text.as_str());
            let mut defines = shapes::defines();
            if source == Source::Attention {
                defines.push(format!("-DHSTU_DQK={}", config.d_qk));
                defines.push(format!("-DHSTU_DV={}", config.d_v));
                defines.push(format!("-DHSTU_NB={}", config.num_time_buckets));
            }
            let tu = translation_unit(source, text);
            let key = fnv(&[HEADER, &tu, &defines.join(" "), &cxx, &cxx_flags().join(" "), &LINK_FLAGS.join(" ")]);
            if let Some(module) = loaded().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                modules.insert(source, module.clone());
                continue;
            }
            let path = dir.join(format!("{key:016x}.so"));
            if path.exists() {
                let module = Arc::new(load(&path)?);
                loaded().lock().unwrap_or_else(|e| e.into_inner()).insert(key, module.clone());
                modules.insert(source, module);
                continue;
            }
            builds.push((key, start_build(&dir, key, source, &tu, &defines)?));
        }
        // The compilers run in parallel; collect every one before failing.
        let mut failure = None;
        for (key, build) in builds {
            let output =
                build.child.wait_with_output().map_err(|e| emu_err(format!("the C++ compiler failed to run: {e}")))?;
            if !output.status.success() {
                let log = String::from_utf8_lossy(&output.stderr);
                let log: String = log.chars().take(6000).collect();
                let _ = std::fs::remove_file(&build.obj);
                failure.get_or_insert_with(|| {
                    emu_err(format!("{} does not compile as C++ for the emulator:\n{log}", build.source.file()))
                });
                continue;
            }
            if let Err(log) = link(&build.obj, &build.tmp) {
                failure.get_or_insert_with(|| {
                    emu_err(format!("{} does not link for the emulator:\n{log}", build.source.file()))
                });
                continue;
            }
            // Atomic publish: a concurrent process sees the old state or the whole file.
            std::fs::rename(&build.tmp, &build.out)
                .map_err(|e| emu_err(format!("cannot store {}: {e}", build.out.display())))?;
            let module = Arc::new(load(&build.out)?);
            loaded().lock().unwrap_or_else(|e| e.into_inner()).insert(key, module.clone());
            modules.insert(build.source, module);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(EmuLauncher {
            modules,
            seq: AtomicU64::new(0),
            seed: block_order_seed(),
            dyn_smem_shrink: options.dyn_smem_shrink.clone(),
            profiler: Profiler::default(),
            lose_at: options.lose_context_at_launch,
            lost: AtomicBool::new(false),
        })
    }

    /// Fails every call once an injected fault has lost the context.
    fn alive(&self) -> Result<(), BackendError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(context_lost("the context was lost by an earlier injected fault"));
        }
        Ok(())
    }
}

impl Launcher for EmuLauncher {
    fn name(&self) -> &'static str {
        "cuda-emu"
    }

    fn alloc_raw(&self, bytes: usize, align: usize) -> Result<RawBuf, BackendError> {
        self.alive()?;
        Ok(RawBuf::Emu(HostBuf::new(bytes, align)?))
    }

    fn upload_raw(&self, dst: &mut RawBuf, offset: usize, src: &[u8]) -> Result<(), BackendError> {
        self.alive()?;
        let RawBuf::Emu(buf) = dst else {
            return Err(emu_err("a CUDA buffer passed to the emulator"));
        };
        if offset + src.len() > buf.bytes {
            return Err(emu_err(format!("upload of {} bytes at {offset} into {} bytes", src.len(), buf.bytes)));
        }
        // SAFETY: bounds checked above; src is host memory distinct from the mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf.data.add(offset), src.len()) };
        Ok(())
    }

    fn download_raw(&self, src: &RawBuf, offset: usize, dst: &mut [u8]) -> Result<(), BackendError> {
        self.alive()?;
        let RawBuf::Emu(buf) = src else {
            return Err(emu_err("a CUDA buffer passed to the emulator"));
        };
        if offset + dst.len() > buf.bytes {
            return Err(emu_err(format!("download of {} bytes at {offset} from {} bytes", dst.len(), buf.bytes)));
        }
        // SAFETY: bounds checked above; dst is host memory distinct from the mapping.
        unsafe { std::ptr::copy_nonoverlapping(buf.data.add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy_raw(
        &self,
        src: &RawBuf,
        src_off: usize,
        dst: &mut RawBuf,
        dst_off: usize,
        bytes: usize,
    ) -> Result<(), BackendError> {
        self.alive()?;
        let (RawBuf::Emu(s), RawBuf::Emu(d)) = (src, &*dst) else {
            return Err(emu_err("a CUDA buffer passed to the emulator"));
        };
        if src_off + bytes > s.bytes || dst_off + bytes > d.bytes {
            return Err(emu_err(format!("copy of {bytes} bytes outside a buffer")));
        }
        // SAFETY: bounds checked above; `dst` is borrowed mutably, so it is a
        // different buffer from `src` and the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(s.data.add(src_off), d.data.add(dst_off), bytes) };
        Ok(())
    }

    fn launch_raw(&self, kernel: Kernel, shape: &Shape, args: &[Arg<'_>]) -> Result<(), BackendError> {
        self.alive()?;
        let mine = self.seq.load(Ordering::Relaxed) + 1;
        let process = PROCESS_LAUNCHES.fetch_add(1, Ordering::Relaxed) + 1;
        if self.lose_at == Some(mine) || process_loss_at() == Some(process) {
            self.lost.store(true, Ordering::Relaxed);
            return Err(context_lost(format!(
                "injected fault at {} (this backend's launch {mine}, the process's {process})",
                kernel.name()
            )));
        }
        let module = self
            .modules
            .get(&kernel.source())
            .ok_or_else(|| emu_err(format!("{} is not loaded", kernel.source().file())))?;
        let mut slots = Vec::with_capacity(args.len());
        // (end, guard) of every buffer whose data stops short of its guard page.
        let mut tails: Vec<u64> = Vec::new();
        for arg in args {
            slots.push(match *arg {
                Arg::Buf { raw: RawBuf::Emu(buf), offset, .. } => {
                    if buf.padded > buf.bytes {
                        tails.extend([buf.data as u64 + buf.bytes as u64, buf.data as u64 + buf.padded as u64]);
                    }
                    buf.data as u64 + offset as u64
                }
                Arg::Buf { .. } => return Err(emu_err("a CUDA buffer passed to the emulator")),
                Arg::I32(v) => u64::from(v as u32),
                Arg::I64(v) => v as u64,
                Arg::U32(v) => u64::from(v),
                Arg::F32(v) => u64::from(v.to_bits()),
            });
        }
        let shrink = self.dyn_smem_shrink.iter().find(|(name, _)| name == kernel.name()).map_or(0, |(_, b)| *b);
        let dyn_smem = shape.dyn_smem.saturating_sub(shrink);
        // Little-endian: a 4-byte parameter reads the low half of its slot.
        let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast::<c_void>()).collect();
        let name = CString::new(kernel.name()).map_err(|_| emu_err("kernel name with a NUL"))?;
        let grid = [shape.grid.0, shape.grid.1, shape.grid.2];
        let mut err = vec![0u8; 2048];
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // SAFETY: args hold one pointer per parameter of the checked signature,
        // each to an 8-byte slot holding the value (buffer pointers point into
        // live HostBufs borrowed by `args` for this call); `tails` holds
        // `tails.len() / 2` pairs and outlives the call.
        let rc = unsafe {
            (module.launch)(
                name.as_ptr(),
                grid.as_ptr(),
                shape.block,
                u64::from(dyn_smem),
                ptrs.as_mut_ptr(),
                seq,
                self.seed,
                tails.as_ptr(),
                (tails.len() / 2) as c_int,
                err.as_mut_ptr().cast(),
                err.len() as c_ulong,
            )
        };
        if rc != 0 {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            let message = String::from_utf8_lossy(&err[..end]);
            return Err(emu_err(format!(
                "{} ({}): {}",
                kernel.name(),
                kernel.source().file(),
                with_source_lines(&message, &module.path)
            )));
        }
        Ok(())
    }

    fn exact_buffers(&self) -> bool {
        true
    }

    fn max_dyn_smem(&self) -> usize {
        EMU_DYN_SMEM_MAX
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        // Launches and copies run to completion on the calling thread.
        Ok(())
    }

    fn profiler(&self) -> &Profiler {
        &self.profiler
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::host_buf::BUF_ALIGN;

    #[test]
    fn buffers_are_256_byte_aligned_and_end_on_their_guard_page() {
        for bytes in [4usize, 1000, 4000, 4096, 4100, 70_000] {
            let b = HostBuf::new(bytes, 4).unwrap();
            assert_eq!(b.data as usize % BUF_ALIGN, 0, "{bytes} bytes");
            assert_eq!((b.data as usize + b.padded) % 4096, 0, "{bytes} bytes: the guard page follows the padding");
            assert!(b.padded >= bytes && b.padded - bytes < BUF_ALIGN);
        }
    }
}
