#!/usr/bin/env bash
# Builds, on this (CPU) machine, what kernels/cuda/check.sh runs on a GPU
# machine that has no Rust toolchain or crates cache, into target/device/:
#   cuda_parity.gz  the parity tests and timing table (the kernels are
#                   embedded with include_str!; cudarc loads libcuda/libnvrtc
#                   at run time);
#   edgerec.gz, backends.gz
#                   the server and its end-to-end backends test (step 4:
#                   a `cuda` tenant answers like a `cpu` tenant).
# Release builds, stripped (no symbols or debug info: the release edgerec is
# ~280 MB unstripped), gzip -9 (check.sh unpacks them to a temp folder).
# Fails when target/device holds more than 48 MiB: a device run carries at
# most 64 MiB, and the working tree travels with it.
#
#   kernels/cuda/build-for-device.sh
#   run(command="kernels/cuda/check.sh", carry=["target/device"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT_MIB=48
OUT=target/device
# The executable of a cargo target, from cargo's JSON messages.
executable() {
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
pack() { # source name: strip into $OUT/name, gzip it
    strip --strip-all -o "$OUT/$2" "$1"
    gzip -9 -f "$OUT/$2"
    echo "  $2.gz: $(du -k "$OUT/$2.gz" | cut -f1) KiB (from $(du -k "$1" | cut -f1) KiB unstripped)"
}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "build-for-device: release builds (slow the first time)"
parity=$(cargo test --release -p edgerec-kernels --test cuda_parity --no-run --message-format=json 2>/dev/null | executable cuda_parity)
[[ -n $parity ]] || { echo "build-for-device: cargo did not produce the cuda_parity test binary" >&2; exit 1; }
edgerec=$(cargo build --release -p edgerec-host --message-format=json 2>/dev/null | executable edgerec)
backends=$(cargo test --release -p edgerec-e2e --test backends --no-run --message-format=json 2>/dev/null | executable backends)
[[ -n $edgerec && -n $backends ]] || { echo "build-for-device: the server or its backends test did not build" >&2; exit 1; }
pack "$parity" cuda_parity
pack "$edgerec" edgerec
pack "$backends" backends
total=$(du -sk "$OUT" | cut -f1)
glibc=$(objdump -T "$parity" "$edgerec" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
echo "build-for-device: $OUT holds $((total / 1024)) MiB ($total KiB; limit $LIMIT_MIB MiB); glibc needed: $glibc"
if ((total > LIMIT_MIB * 1024)); then
    echo "build-for-device: FAILED: more than $LIMIT_MIB MiB to carry" >&2
    exit 1
fi
