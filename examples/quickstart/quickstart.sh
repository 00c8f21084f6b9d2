#!/usr/bin/env bash
# A walk through the edgerec API against a running `edgerec serve`.
#
#   terminal 1:  EDGEREC_OPERATOR_TOKEN=op-secret EDGEREC_DEMO_API_KEY=demo-secret \
#                cargo run --release -p edgerec-host -- serve
#   terminal 2:  EDGEREC_OPERATOR_TOKEN=op-secret EDGEREC_DEMO_API_KEY=demo-secret \
#                examples/quickstart/quickstart.sh
#
# Without the two variables the server generates both secrets on first start
# and prints them; export the printed values here instead.
set -euo pipefail

URL="${EDGEREC_URL:-http://127.0.0.1:8080}"
OP="${EDGEREC_OPERATOR_TOKEN:?set EDGEREC_OPERATOR_TOKEN to the operator token the server printed}"
KEY="${EDGEREC_DEMO_API_KEY:?set EDGEREC_DEMO_API_KEY to the demo API key the server printed}"
json=(-H 'content-type: application/json')

step() { printf '\n== %s\n' "$*"; }

step "health"
curl -sf "$URL/healthz"; echo

step "three catalog items of the demo tenant"
curl -sf -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/catalog/items?limit=3"; echo

step "a shopper views two items (events are durable before the 200)"
now=$(date +%s)
ids=$(curl -sf -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/catalog/items?limit=40" |
  grep -o '"id":"[^"]*"' | sed -n '10p;30p' | cut -d'"' -f4)
a=$(echo "$ids" | sed -n 1p); b=$(echo "$ids" | sed -n 2p)
curl -sf "${json[@]}" -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/events" -d "{\"events\":[
  {\"user_id\":\"shopper-1\",\"item\":\"$a\",\"ts\":$((now-120)),\"action\":\"view\"},
  {\"user_id\":\"shopper-1\",\"item\":\"$b\",\"ts\":$((now-60)),\"action\":\"cart\"}]}"; echo

step "recommend 5 items for that shopper, with the per-stage trace"
curl -sf "${json[@]}" -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/recommend" \
  -d '{"user_id":"shopper-1","k":5,"explain":true}'; echo

step "the active pipeline (operator)"
curl -sf -H "authorization: Bearer $OP" "$URL/v1/tenants/demo/pipeline" | head -c 600; echo

step "activate a new version: in-stock, then boost items under 20 (hot swap, no restart)"
curl -sf "${json[@]}" -X PUT -H "authorization: Bearer $OP" "$URL/v1/tenants/demo/pipeline" -d '{"stages":[
  {"plugin":"in-stock","config":{"attribute":"stock","min":1}},
  {"plugin":"boost","config":{"rules":[{"name":"cheap","attribute":"price","op":"lt","value":20,"action":{"multiply":1.5}}]}}]}'; echo
curl -sf "${json[@]}" -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/recommend" -d '{"user_id":"shopper-1","k":5}'; echo

step "roll back to the previous version"
curl -sf -X POST -H "authorization: Bearer $OP" "$URL/v1/tenants/demo/pipeline/rollback"; echo

step "a mistake answers a JSON error with a stable code"
curl -s "${json[@]}" -H "authorization: Bearer $KEY" "$URL/v1/tenants/demo/recommend" -d '{"k":"ten"}'; echo
