#!/usr/bin/env bash
# The one GPU check of the CUDA backend, run from the repo root on the GPU
# machine:   kernels/cuda/check.sh [TEST_BINARY]
#
# 1. the CUDA-vs-CPU comparison tests (random models and inputs, poisoned
#    buffers, head dims 5..64, d_qk ≠ d_v, 1..200+ events, 1..4096 users,
#    incremental, the Backend state API with batched appends, top-k over
#    3,953 / 131,263 / 1,000,000 items); a test that
#    SKIPs here (no device loaded) fails the check;
# 2. the timing table (encode users/s and TFLOP/s vs the measured FMA peak;
#    top-k GB/s vs the measured copy bandwidth);
# 3. when target/device/backends is there: the server end to end, a tenant
#    on `--backend cuda` answering what a CPU tenant answers.
#
# TEST_BINARY defaults to target/device/cuda_parity (made on a CPU machine by
# kernels/cuda/build-for-device.sh and carried over); without it, the script
# builds with `cargo --offline` (needs a Rust toolchain and a crates cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)

# libnvrtc.so.13: the toolkit's, or the pip wheel's.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $dir ]] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
wheel_lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
[[ -n $wheel_lib && -d $wheel_lib ]] && export LD_LIBRARY_PATH="$wheel_lib:$LD_LIBRARY_PATH"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

BIN=${1:-target/device/cuda_parity}
if [[ ! -x $BIN ]]; then
    echo "check: no prebuilt $BIN; building with cargo --offline"
    BIN=$(cargo test --offline -p edgerec-kernels --test cuda_parity --no-run --message-format=json \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "cuda_parity" and m.get("executable"):
        print(m["executable"])')
fi

echo "== 1. CUDA vs CPU comparison tests =="
log=$(mktemp)
set +e
timeout 360 "$BIN" --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [[ $rc != 0 ]]; then echo "check: FAILED (comparison tests, exit $rc)" >&2; exit 1; fi
if grep -q 'SKIP ' "$log"; then echo "check: FAILED (tests skipped: no CUDA device loaded, see SKIP lines)" >&2; exit 1; fi

echo "== 2. timing table =="
timeout 180 "$BIN" --ignored --exact cuda_timing_table --nocapture --test-threads=1 2>&1 | grep -v '^running\|^test result\|^$'
if [[ -x target/device/backends && -x target/device/edgerec ]]; then
    echo "== 3. the server on the device backend =="
    EDGEREC_E2E_BIN=target/device/edgerec EDGEREC_E2E_DEVICE_BACKEND=cuda \
        timeout 180 target/device/backends --test-threads=1 --nocapture
else
    echo "== 3. skipped: no target/device/backends (kernels/cuda/build-for-device.sh builds it) =="
fi
echo "check: OK in $(( $(date +%s) - START )) s"
