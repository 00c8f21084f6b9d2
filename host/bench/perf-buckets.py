#!/usr/bin/env python3
"""Buckets a call-graph profile of `edgerec bench plugins` by cause.

    EDGEREC_PERF_MAP=1 perf record -F 1999 --call-graph dwarf,16384 -o perf.data -- \
        target/release/edgerec bench plugins --iterations 6000
    perf script -i perf.data -F ip,sym,dso > stacks.txt
    host/bench/perf-buckets.py stacks.txt 6600   # samples file, pipeline runs (iterations + 10 % warm-up)

Each sample goes to one bucket: guest code when its leaf is in the plugins'
JIT code, otherwise the first rule below whose marker is on its stack. With
the run count, prints µs per pipeline run (a sample is 1/1999 s of CPU);
the compile, native and instantiate-only rows are other parts of the bench,
shown on the same scale only to be set aside.
"""
import collections
import re
import sys

RULES = [
    ("compile (set-up, not per call)", ("cranelift", "regalloc2", "compile_function", "wasmparser")),
    ("native pipeline", ("NativePipeline",)),
    ("instantiate-only measurement", ("instantiate_only",)),
    ("instantiate", ("InstancePre<T>::instantiate", "PluginPre")),
    ("reset + free instance (store drop)", ("drop_in_place<wasmtime::runtime::store", "deallocate_module")),
    ("store + WASI context set-up", ("CallState::new",)),
    ("lower candidates / lift output", ("typed::", "TypedFunc", "call_raw")),
    ("dictionary encode", ("EncodedColumn::encode",)),
    ("gather columns per stage", ("EncodedColumn::gather",)),
    ("trace (moved, removed)", ("moved_count",)),
    ("validate output", ("validate_output",)),
    ("pipeline glue", ("run_pipeline",)),
]
FRAME = re.compile(r"\s*[0-9a-f]+\s+(.*)\s+\((.*)\)\s*$")


def stacks(path):
    stack = []
    with open(path) as lines:
        for line in lines:
            frame = FRAME.match(line)
            if frame:
                stack.append(frame.groups())
            elif not line.strip() and stack:
                yield stack
                stack = []
    if stack:
        yield stack


def bucket(stack):
    if "JIT" in stack[0][1] or "perf-" in stack[0][1]:
        return "guest code"
    names = [name for name, _ in stack]
    for label, markers in RULES:
        if any(marker in name for name in names for marker in markers):
            return label
    if any("JIT" in dso or "perf-" in dso for _, dso in stack):
        return "host called from guest (libcalls)"
    return "other: " + stack[0][1].rsplit("/", 1)[-1]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    counts = collections.Counter(bucket(s) for s in stacks(sys.argv[1]))
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else None
    total = sum(counts.values())
    for label, n in counts.most_common():
        per_run = f"{n / 1999 * 1e6 / runs:8.1f} µs/run" if runs else ""
        print(f"{100 * n / total:6.2f} %  {n:7d}  {per_run}  {label}")


if __name__ == "__main__":
    main()
