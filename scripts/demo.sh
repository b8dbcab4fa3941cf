#!/usr/bin/env bash
# The README's worked example, runnable: token → partner → client → member → card →
# purchase → balance, against a server at $BASE (default http://127.0.0.1:8080).
# Needs curl and jq, and the `coalition` binary as $COALITION (default: cargo run).
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8080}
COALITION=${COALITION:-"cargo run -q -p coalition-server --"}

creds=$($COALITION programme create --name "Demo Coalition" --currency EUR --point-value 0.01)
client_id=$(jq -r .client_id <<<"$creds"); client_secret=$(jq -r .client_secret <<<"$creds")
admin=$(curl -sf -u "$client_id:$client_secret" -d grant_type=client_credentials "$BASE/oauth/token" | jq -r .access_token)

gym=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"Gym","kind":"merchant","category":"fitness","earn_points_per_unit":"1","issue_price_per_point":"0.012","redemption_value_per_point":"0.009"}' \
  "$BASE/v1/partners" | jq -r .id)
pos=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d "{\"name\":\"Gym POS\",\"partner_id\":\"$gym\"}" "$BASE/v1/clients")
partner=$(curl -sf -d grant_type=client_credentials -d "client_id=$(jq -r .client_id <<<"$pos")" \
  -d "client_secret=$(jq -r .client_secret <<<"$pos")" "$BASE/oauth/token" | jq -r .access_token)

member=$(curl -sf -H "Authorization: Bearer $partner" -H 'Content-Type: application/json' \
  -d "{\"name\":\"Ann\",\"email\":\"ann-$RANDOM@example.org\"}" "$BASE/v1/members" | jq -r .id)
card=$(curl -sf -H "Authorization: Bearer $partner" -H 'Content-Type: application/json' \
  -d "{\"member_id\":\"$member\"}" "$BASE/v1/cards" | jq -r .number)

curl -sf -H "Authorization: Bearer $partner" -H 'Content-Type: application/json' -H "Idempotency-Key: $(date +%s%N)" \
  -d "{\"card_number\":\"$card\",\"amount\":{\"amount\":\"42.50\",\"currency\":\"EUR\"},\"external_ref\":\"receipt-$RANDOM\"}" \
  "$BASE/v1/purchases" | jq .
balance=$(curl -sf -H "Authorization: Bearer $partner" "$BASE/v1/members/$member/balance")
jq . <<<"$balance"
test "$(jq .points <<<"$balance")" = 42
echo "demo: ok"
