#!/usr/bin/env bash
# Schema-driven fuzz of the served OpenAPI document with schemathesis (PyPI):
# a real `edgerec serve` on loopback with the demo tenant, fuzzed once with
# the operator token and once with the demo tenant's key. Fails on any 5xx
# (not_a_server_error) and on any schema-valid request refused with a status
# the API reserves for bad input (positive_data_acceptance: 400/422). The
# plugin upload is left out: schemathesis cannot generate an application/wasm
# body, and random bytes would never be a component (the upload has its own
# hostile-input tests). Model bundle uploads are fuzzed for 5xx only: random
# bytes are never a model (tests/tests/models.rs tests hostile bundles).
#
# Usage: tests/fuzz/openapi.sh [path/to/edgerec]   (default target/debug/edgerec)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/edgerec}
[ -x "$bin" ] || { echo "no edgerec binary at $bin: build it first (cargo build -p edgerec-host)" >&2; exit 1; }
venv=${EDGEREC_FUZZ_VENV:-$HOME/.cache/edgerec/schemathesis-4.32.5}
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "schemathesis==4.32.5"
fi
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
EDGEREC_OPERATOR_TOKEN=fuzz-operator EDGEREC_DEMO_API_KEY=fuzz-demo-key \
    EDGEREC_SERVE_TENANT_RECOMMEND_RATE=0 EDGEREC_SERVE_TENANT_WRITE_RATE=0 \
    EDGEREC_SERVE_PLUGIN_DEADLINE_US=2000000 RUST_LOG=warn \
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" > "$work/stdout" 2> "$work/stderr" &
server=$!
for _ in $(seq 600); do
    base=$(sed -n 's/^edgerec listening on //p' "$work/stdout")
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr" >&2; echo "edgerec serve exited" >&2; exit 1; }
    sleep 0.2
done
[ -n "$base" ] || { echo "edgerec serve did not start" >&2; exit 1; }
# Path parameters point at the demo tenant so that requests reach the handlers.
cat > "$work/schemathesis.toml" <<TOML
[parameters]
tenant = "demo"
TOML
fuzz() { # $1 = token, $2... = extra arguments
    local token=$1; shift
    "$venv/bin/st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
        -H "Authorization: Bearer $token" --workers 1 --max-examples "${EDGEREC_FUZZ_EXAMPLES:-40}" \
        --phases examples,coverage,fuzzing --suppress-health-check all --no-color "$@"
}
status=0
for token in fuzz-operator fuzz-demo-key; do
    echo "== $token: no 5xx anywhere"
    fuzz "$token" --checks not_a_server_error --exclude-path-regex '/plugins/\{name\}$' || status=1
    echo "== $token: no schema-valid request refused"
    fuzz "$token" --checks positive_data_acceptance --exclude-path-regex '/plugins/\{name\}$|/models/\{version\}$' || status=1
done
kill -0 "$server" || { echo "the server died during the fuzz" >&2; status=1; }
exit $status
