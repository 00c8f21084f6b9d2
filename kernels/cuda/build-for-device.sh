#!/usr/bin/env bash
# Builds the CUDA parity/timing test binary on this (CPU) machine and puts it
# at target/device/cuda_parity, so a GPU machine without a Rust toolchain or
# crates cache can run kernels/cuda/check.sh with `carry: ["target/device"]`.
# The kernels are embedded in the binary (include_str!) and cudarc loads
# libcuda/libnvrtc at run time, so the one file is all that travels.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo test -p edgerec-kernels --test cuda_parity --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "cuda_parity" and m.get("executable"):
        print(m["executable"])')
[[ -n "$bin" ]] || { echo "build-for-device: cargo did not produce the cuda_parity test binary" >&2; exit 1; }
mkdir -p target/device
cp "$bin" target/device/cuda_parity
echo "built target/device/cuda_parity ($(du -h target/device/cuda_parity | cut -f1)); glibc needed: $(objdump -T target/device/cuda_parity 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)"
# The server-level path (kernels/cuda/check.sh step 3): the edgerec binary and
# the end-to-end backends test, which compares a tenant served by the device
# backend with a CPU tenant through a real server.
cargo build --release -p edgerec-host 2>/dev/null
e2e=$(cargo test --release -p edgerec-e2e --test backends --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "backends" and m.get("executable"):
        print(m["executable"])')
if [[ -n "$e2e" ]]; then
    cp target/release/edgerec target/device/edgerec
    cp "$e2e" target/device/backends
    echo "built target/device/edgerec and target/device/backends (server-level check)"
fi

