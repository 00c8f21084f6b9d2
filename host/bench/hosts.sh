#!/usr/bin/env bash
# Change propagation across three `edgerec serve` hosts on one Redis
# (loopback): the end-to-end test `three_hosts_on_one_redis_serve_one_truth`
# makes 100 pipeline activations through the hosts in turn and prints, for
# each, the time from its 200 until every other host serves it (p50/p99/max),
# after checking that 50 activations under load fail no request.
#
#   host/bench/hosts.sh [BIN]   BIN: an edgerec binary to run as the hosts
#                               (default: the debug build the test builds)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${1:-}" ]; then
    EDGEREC_E2E_BIN=$(realpath "$1")
    export EDGEREC_E2E_BIN
fi
cargo test -q -p edgerec-e2e --test hosts three_hosts_on_one_redis_serve_one_truth -- --nocapture 2>&1 |
    grep -E '^(change propagation|first propagations|[0-9]+ answers during)|panicked|FAILED'
