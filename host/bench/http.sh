#!/usr/bin/env bash
# `edgerec bench http` against a fresh `edgerec serve` on loopback, started
# by this script on a scratch data directory and stopped at the end.
#
#   host/bench/http.sh BIN demo   [bench args...]  the demo tenant (bundled model, 50-event histories)
#   host/bench/http.sh BIN ml-1m  [bench args...]  a random ML-1M-shape model (D 50, 2 layers,
#                                                  L 200, 3,953 items) and 200-event histories
#   host/bench/http.sh BIN large  [bench args...]  the same shape over 1,000,000 items (EDGEREC_BENCH_ITEMS
#                                                  sets another count), five attributes each, the pipeline
#                                                  in-stock, boost, diversity and 200-event histories (see
#                                                  large-catalog.py; EDGEREC_BENCH_FILTER=1 adds
#                                                  `retrieve.where stock gt 0`)
#
# EDGEREC_SERVE_* variables in the environment configure the server, e.g.
# EDGEREC_SERVE_MAX_BATCH=1 (batching off) or EDGEREC_SERVE_BACKEND=cpu.
# EDGEREC_BENCH_STORE=redis serves from a fresh redis-server started here
# (loopback, append-only file fsync'd on every write) instead of the
# embedded store.
# BIN is a release build (`cargo build --release -p edgerec-host`): a debug
# build measures the debug build.
set -euo pipefail
bin=$(realpath "${1:?usage: host/bench/http.sh BIN demo|ml-1m [bench args...]}")
mode=${2:-demo}
shift 2 || shift $#
work=$(mktemp -d)
trap 'kill "$server" $redis 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export EDGEREC_OPERATOR_TOKEN=bench-operator EDGEREC_DEMO_API_KEY=bench-demo-key
server=
redis=
if [ "${EDGEREC_BENCH_STORE:-}" = redis ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$work/redis"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
        --dir "$work/redis" > /dev/null &
    redis=$!
    until redis-cli -p "$port" ping > /dev/null 2>&1; do sleep 0.05; done
    export EDGEREC_SERVE_STORE="redis://127.0.0.1:$port"
fi
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" > "$work/stdout" 2> "$work/stderr" &
server=$!
base=
for _ in $(seq 600); do
    base=$(sed -n 's/^edgerec listening on //p' "$work/stdout")
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
done
[ -n "$base" ] || { echo "edgerec serve did not start" >&2; exit 1; }
case $mode in
    demo)
        exec_args=(--tenant demo --api-key bench-demo-key --history 50) ;;
    ml-1m)
        "$bin" model random --shape ml-1m --seed 1 --out "$work/model" 2> /dev/null
        key=$(curl -sf -H "Authorization: Bearer bench-operator" -H 'content-type: application/json' \
            -d "{\"name\": \"ml1m\", \"model\": \"$work/model\"}" "$base/v1/tenants" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
        # The bench draws its histories from the catalog: list every model item.
        # (A random model has no items.json: its external ids are "1".."V".)
        python3 - "$work/model/config.json" "$work/pages" <<'PY'
import json, sys
ids = [str(i) for i in range(1, json.load(open(sys.argv[1]))["num_items"] + 1)]
for n, start in enumerate(range(0, len(ids), 500)):
    page = [{"id": i, "attributes": {}} for i in ids[start:start + 500]]
    json.dump({"items": page}, open(f"{sys.argv[2]}.{n}", "w"))
PY
        for page in "$work"/pages.*; do
            curl -sf -X PUT -H "Authorization: Bearer $key" -H 'content-type: application/json' \
                --data-binary "@$page" "$base/v1/tenants/ml1m/catalog/items" > /dev/null
        done
        exec_args=(--tenant ml1m --api-key "$key" --history 200) ;;
    large)
        items=${EDGEREC_BENCH_ITEMS:-1000000}
        "$bin" model random --shape ml-1m --num-items "$items" --seed 1 --out "$work/model" 2> /dev/null
        key=$(curl -sf -H "Authorization: Bearer bench-operator" -H 'content-type: application/json' \
            -d "{\"name\": \"large\", \"model\": \"$work/model\"}" "$base/v1/tenants" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
        start=$(date +%s.%N)
        python3 "$(dirname "$0")/large-catalog.py" "$base" large "$key" "$items"
        echo "catalog of $items items upserted and pipeline activated in $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
        echo "server RSS $(($(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024)) MiB"
        exec_args=(--tenant large --api-key "$key" --history 200) ;;
    *) echo "mode must be demo, ml-1m or large, not $mode" >&2; exit 2 ;;
esac
"$bin" bench http --url "$base" --operator-token bench-operator "${exec_args[@]}" "$@"
