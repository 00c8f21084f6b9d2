#!/usr/bin/env bash
# The one GPU check of the CUDA backend, sized for one lent device slot
# (one command ≤ 10 min; this script ≤ 8 min with every step's timeout
# inside that). Run from anywhere; it works in the repo root:
#
#   kernels/cuda/check.sh          # on the GPU machine (carry target/device)
#   kernels/cuda/check.sh --emu    # the same steps on cuda-emu, on any machine
#
# Steps (planned timeout; each is also cut to what is left of the budget):
#   0. device: nvidia-smi's name, driver, memory                         15 s
#   1. unpack the carried binaries (target/device/*.gz)                   30 s
#   2. parity: tests/cuda_parity/main.rs, the device against the CPU engine on
#      random models (head dims 5..256, d_qk ≠ d_v, 1..200+ events, up to
#      4096 users, incremental and batched appends, top-k over 3,953 /
#      131,263 / 1,000,000 items); a test that SKIPs fails the check       170 s
#   3. timings: whole calls against the roofs measured in the same run
#      (f32 FMA peak, device-to-device copy), then per kernel against the
#      roofs and the cost model's prediction (cuda::cost), then the cost
#      model at the device shapes                                          110 s
#   4. server: a tenant on `--backend cuda` answers what a `cpu` tenant
#      answers, through a real server (tests/tests/backends.rs)            80 s
#   5. compute-sanitizer memcheck, then racecheck, on the parity tests at
#      small sizes (EDGEREC_CHECK_SMALL=1), where the image has the tool   35 + 35 s
# Sum of the planned timeouts: 475 s ≤ 480 s. A summary line per step ends
# the run; the exit status is 1 if any step failed.
#
# Binaries: target/device/{cuda_parity,backends,edgerec}.gz, made on a CPU
# machine by kernels/cuda/build-for-device.sh (stripped, gzip'd, ≤ 48 MiB in
# all). Without them the script builds with cargo (needs a toolchain).
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
BUDGET=480
EMU=0
[[ ${1:-} == --emu ]] && EMU=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
declare -a SUMMARY=()
FAILED=0

left() { echo $((BUDGET - ($(date +%s) - START))); }
# The step's timeout: its plan, or what is left of the budget (5 s for the kill grace).
cap() {
    local plan=$1 rest
    rest=$(($(left) - 5))
    ((rest < plan)) && plan=$rest
    ((plan < 1)) && plan=1
    echo "$plan"
}
# run NAME PLAN CMD...: runs CMD under its timeout and records the outcome.
run() {
    local name=$1 plan=$2 t0 rc t
    shift 2
    t=$(cap "$plan")
    t0=$(date +%s)
    timeout -k 5 "$t" "$@"
    rc=$?
    local took=$(($(date +%s) - t0))
    if ((rc == 0)); then
        SUMMARY+=("PASS    $name (${took} s of ${t} s)")
    elif ((rc == 124 || rc == 137)); then
        SUMMARY+=("TIMEOUT $name (${t} s)")
        FAILED=1
    else
        SUMMARY+=("FAIL    $name (exit $rc, ${took} s)")
        FAILED=1
    fi
    return $rc
}

echo "== 0. device =="
# libnvrtc.so.13: the toolkit's, or the pip wheel's.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $dir ]] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
wheel_lib=$(timeout 10 python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
[[ -n $wheel_lib && -d $wheel_lib ]] && export LD_LIBRARY_PATH="$wheel_lib:${LD_LIBRARY_PATH:-}"
if ((EMU)); then
    export EDGEREC_CHECK_EMU=1
    DEVICE_BACKEND=cuda-emu
    echo "device: cuda-emu (the kernels on the CPU; sizes reduced)"
    SUMMARY+=("PASS    device: cuda-emu")
else
    DEVICE_BACKEND=cuda
    if command -v nvidia-smi >/dev/null; then
        run "device" 15 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    else
        echo "check: no nvidia-smi; the parity step says whether a device loads"
    fi
fi

echo "== 1. binaries =="
unpack() {
    local name=$1
    if [[ -f target/device/$name.gz ]]; then
        gzip -dc "target/device/$name.gz" >"$WORK/$name" && chmod +x "$WORK/$name" && echo "$WORK/$name"
    elif [[ -x target/device/$name ]]; then
        echo "target/device/$name"
    fi
}
artifact() { # package test-target: builds it and prints the executable
    cargo test --offline -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}
t1=$(date +%s)
PARITY=$(unpack cuda_parity)
BACKENDS=$(unpack backends)
EDGEREC=$(unpack edgerec)
if [[ -z $PARITY ]]; then
    echo "check: no target/device/cuda_parity(.gz); building with cargo --offline"
    PARITY=$(timeout "$(cap 300)" bash -c "$(declare -f artifact); artifact edgerec-kernels cuda_parity")
fi
if [[ -z $BACKENDS && $EMU == 1 ]]; then
    BACKENDS=$(timeout "$(cap 300)" bash -c "$(declare -f artifact); artifact edgerec-e2e backends")
fi
if [[ -z $PARITY ]]; then
    echo "check: FAILED (no parity test binary)" >&2
    exit 1
fi
echo "parity binary: $PARITY; server check: ${BACKENDS:-none} with ${EDGEREC:-cargo-built edgerec}"
SUMMARY+=("PASS    binaries ($(($(date +%s) - t1)) s)")

echo "== 2. parity: $DEVICE_BACKEND against the CPU engine =="
log="$WORK/parity.log"
run "parity" 170 "$PARITY" --test-threads=1 --nocapture > >(tee "$log") 2>&1
wait $! 2>/dev/null  # the tee has written everything
if ((!EMU)) && grep -q 'SKIP ' "$log"; then
    echo "check: tests skipped (no CUDA device loaded, see the SKIP lines)" >&2
    SUMMARY+=("FAIL    parity: tests SKIPPED (no device)")
    FAILED=1
fi

echo "== 3. timings: calls, kernels, cost model =="
run "timings" 110 "$PARITY" --ignored --exact cuda_timing_table --nocapture --test-threads=1 \
    > >(grep -v '^running\|^test result\|^$') 2>&1
wait $! 2>/dev/null

echo "== 4. server: a $DEVICE_BACKEND tenant answers like a cpu tenant =="
if [[ -n $BACKENDS ]]; then
    [[ -n $EDGEREC ]] && export EDGEREC_E2E_BIN=$EDGEREC
    EDGEREC_E2E_DEVICE_BACKEND=$DEVICE_BACKEND run "server" 80 "$BACKENDS" --test-threads=1 --nocapture
else
    echo "skipped: no target/device/backends (kernels/cuda/build-for-device.sh builds it)"
    SUMMARY+=("SKIPPED server (no backends binary)")
fi

echo "== 5. compute-sanitizer =="
if ((EMU)); then
    echo "skipped on cuda-emu (its own race detector and bounds checks ran in step 2)"
    SUMMARY+=("SKIPPED compute-sanitizer (cuda-emu)")
elif command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
        EDGEREC_CHECK_SMALL=1 run "compute-sanitizer $tool" 35 compute-sanitizer --tool "$tool" \
            --error-exitcode 3 "$PARITY" --test-threads=1 > >(tail -n 25) 2>&1
        wait $! 2>/dev/null
    done
else
    echo "skipped: compute-sanitizer is not on this image"
    SUMMARY+=("SKIPPED compute-sanitizer (not installed)")
fi

echo "== summary =="
printf '%s\n' "${SUMMARY[@]}"
echo "check: $( ((FAILED)) && echo FAILED || echo OK) in $(($(date +%s) - START)) s (budget $BUDGET s)"
exit $FAILED
