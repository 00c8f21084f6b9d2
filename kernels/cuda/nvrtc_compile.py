#!/usr/bin/env python3
"""Compiles one .cu file to PTX with NVRTC, exactly as the CUDA backend does
at run time (same library, same kind of options), so that the CPU-only check
exercises the real compile path. Used by ptx-check.sh.

usage: nvrtc_compile.py LIBNVRTC SRC.cu ARCH OUT.ptx [-DNAME=VALUE ...]
Exit status 1 with NVRTC's log on a compile error.
"""
import ctypes
import sys


def main() -> int:
    lib_path, src_path, arch, out_path, *defines = sys.argv[1:]
    lib = ctypes.CDLL(lib_path)
    with open(src_path, "rb") as f:
        src = f.read()
    prog = ctypes.c_void_p()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), src, src_path.encode(), 0, None, None))
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"] + [d.encode() for d in defines]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    if rc != 0:
        print(f"NVRTC failed on {src_path} ({arch} {' '.join(defines)}):\n{text}", file=sys.stderr)
        return 1
    if text:
        print(f"NVRTC warnings for {src_path} ({arch}):\n{text}", file=sys.stderr)
    check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, ptx))
    with open(out_path, "wb") as f:
        f.write(ptx.value)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return 0


def check(lib, rc: int) -> None:
    if rc != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise SystemExit(f"NVRTC call failed: {lib.nvrtcGetErrorString(rc).decode()}")


if __name__ == "__main__":
    sys.exit(main())
