#!/usr/bin/env sh
# Rebuilds the bundled demo model from scratch, deterministically:
# generates the synthetic storefront (seed 7), trains on it (seed 42, one
# compute thread) and copies the best model and the catalog here.
# Run from anywhere: examples/demo/build.sh
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
WORK="${WORK:-$ROOT/target/demo-build}"
EDGEREC="${EDGEREC:-cargo run --quiet --release -p edgerec-host --}"
$EDGEREC demo generate --out "$WORK/store" --seed 7
$EDGEREC train --data "$WORK/store" --out "$WORK/run" \
  --d-model 32 --layers 2 --heads 1 --head-dim 32 --max-seq-len 50 \
  --epochs 40 --patience 5 --seed 42 --threads 1 --no-progress
rm -rf examples/demo/model
cp -r "$WORK/run/model" examples/demo/model
cp "$WORK/store/catalog.jsonl" examples/demo/catalog.jsonl
cp "$WORK/run/report.json" examples/demo/train-report.json
cp "$WORK/run/curves.png" examples/demo/curves.png
echo "demo model written to examples/demo/model"
