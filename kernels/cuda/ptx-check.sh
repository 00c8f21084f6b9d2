#!/usr/bin/env bash
# Compiles every CUDA kernel of edgerec-kernels to PTX on a machine without a
# GPU, with NVRTC from the CUDA 13.0 wheels (the same library and options the
# backend uses at run time), for sm_80 and sm_90 and several head-dim
# configurations; then runs `ptxas -v` for sm_90, prints registers / shared
# memory / spills per kernel, and fails on any compile error or on a spill in
# a hot kernel.
#
# The wheels are pinned as a set: nvidia-cuda-nvcc alone pulls an unpinned
# newer backend whose PTX (ISA 9.5) the lent GPUs' driver (580, CUDA 13.0)
# rejects. They go into a cached venv (EDGEREC_CUDA_VENV, default
# ~/.cache/edgerec/cuda13-venv), reinstalled only when the pin set changes.
set -euo pipefail
cd "$(dirname "$0")"
SRC=../src/cuda
PINS="nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96"
VENV="${EDGEREC_CUDA_VENV:-$HOME/.cache/edgerec/cuda13-venv}"
STAMP="$VENV/.edgerec-pins"

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$PINS" ]]; then
    echo "ptx-check: installing the CUDA 13.0 wheels into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
    echo "$PINS" > "$STAMP"
fi
CU13="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
NVRTC="$CU13/lib/libnvrtc.so.13"
PTXAS="$CU13/bin/ptxas"
[[ -f "$NVRTC" && -x "$PTXAS" ]] || { echo "ptx-check: $NVRTC or $PTXAS missing; delete $VENV and rerun" >&2; exit 1; }
export LD_LIBRARY_PATH="$CU13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The launch shapes, single-sourced in kernels/src/cuda/shapes.rs (the kernels
# have no defaults): the same -D defines the backend passes to NVRTC.
mapfile -t SHAPES < <(sed -n 's/^pub(crate) const \([A-Z_]*\): u32 = \([0-9]*\);.*/-D\1=\2/p' ../src/cuda/shapes.rs)
[[ ${#SHAPES[@]} -ge 8 ]] || { echo "ptx-check: could not read the launch shapes from ../src/cuda/shapes.rs" >&2; exit 1; }

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# Kernels that run per request; a spill there is a performance bug.
HOT="hstu_attention ln_gemm_silu gated_ln_gemm_resid quant_chunk_kth quant_select"
# (d_qk, d_v) configurations: the public models' head dims, odd and
# unequal dims, and the large end.
CONFIGS="5:5 25:25 50:50 64:64 16:32 25:50 128:128"

fail=0
compile() {  # src arch tag defines...
    local src=$1 arch=$2 tag=$3; shift 3
    if ! "$VENV/bin/python" nvrtc_compile.py "$NVRTC" "$SRC/$src" "$arch" "$OUT/$tag.$arch.ptx" "${SHAPES[@]}" "$@"; then
        fail=1
        return 1
    fi
}

for arch in sm_80 sm_90; do
    for src in hstu_rows.cu hstu_gemm.cu score_topk.cu roofline.cu; do
        compile "$src" "$arch" "${src%.cu}" || true
    done
    for cfg in $CONFIGS; do
        compile hstu_attention.cu "$arch" "hstu_attention.${cfg/:/x}" \
            "-DHSTU_DQK=${cfg%:*}" "-DHSTU_DV=${cfg#*:}" -DHSTU_NB=128 || true
    done
done
[[ $fail == 0 ]] || { echo "ptx-check: FAILED (compile errors above)" >&2; exit 1; }

printf '%-34s %5s %9s %8s %7s\n' "kernel (sm_90)" "regs" "smem(B)" "spill_st" "spill_ld"
for ptx in "$OUT"/*.sm_90.ptx; do
    tag=$(basename "$ptx" .sm_90.ptx)
    cfg=""
    [[ $tag == hstu_attention.* ]] && cfg=" [${tag#hstu_attention.}]"
    # ptxas prints, per entry: "Compiling entry function 'NAME'", then the
    # spill line, then "Used R registers, ..., S bytes smem".
    "$PTXAS" -v -arch=sm_90 "$ptx" -o /dev/null 2>&1 | awk -v cfg="$cfg" -v hot="$HOT" '
        /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2) }
        /spill stores/ { st = $5; ld = $9 }
        /Used [0-9]+ registers/ {
            regs = $5; smem = 0
            if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
            printf "%-34s %5s %9s %8s %7s\n", name cfg, regs, smem, st, ld
            if ((st > 0 || ld > 0) && index(" " hot " ", " " name " ")) { print "SPILL in hot kernel " name cfg > "/dev/stderr"; bad = 1 }
        }
        END { exit bad }' || fail=1
done
echo "hstu_attention also takes dynamic shared memory: 8*(NB+64) + 4*(32*(2*(dqk|1)) + 32*dv) bytes (dqk=dv=64: 26368 B)"
[[ $fail == 0 ]] || { echo "ptx-check: FAILED (spills in hot kernels)" >&2; exit 1; }
echo "ptx-check: OK (every kernel compiles for sm_80 and sm_90; no spills in hot kernels)"
