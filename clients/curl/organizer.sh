#!/usr/bin/env bash
# An organizer's event from draft to cancellation over HTTP/JSON through Envoy:
# become an organizer (the admin grants the role), create a draft (nobody else
# sees it), fix it with the etag just read, publish it, sell a seat, cancel it
# and watch the refund go through. Needs curl and jq.
#   EDGE=http://localhost:8080 clients/curl/organizer.sh
set -euo pipefail
EDGE=${EDGE:-http://localhost:8080}
EMAIL="organizer-$RANDOM$RANDOM@example.com"
FAN_EMAIL="fan-$RANDOM$RANDOM@example.com"
login() {
  curl -sf -X POST "$EDGE/v1/auth/login" -d '{"email":"'"$1"'","password":"'"$2"'"}' \
    | jq -r .access_token
}
register() {
  curl -sf -X POST "$EDGE/v1/auth/register" \
    -d '{"email":"'"$1"'","password":"correct-horse","display_name":"Someone"}' | jq -r .user_id
}

ME=$(register "$EMAIL")
ADMIN=$(login "${ADMIN_EMAIL:-admin@example.com}" "${ADMIN_PASSWORD:-admin-change-me}")
curl -sf -X POST "$EDGE/v1/users/$ME:setRole" -H "authorization: Bearer $ADMIN" \
  -d '{"role": "ROLE_ORGANIZER"}' | jq -c '{role}'
TOKEN=$(login "$EMAIL" correct-horse)

# A draft: its organizer (and the admins) see it, nobody else does.
DRAFT=$(curl -sf -X POST "$EDGE/v1/events" -H "authorization: Bearer $TOKEN" -d '{
  "title": "Sumer festival", "venue": "Riverside", "starts_at": "2030-07-01T18:00:00Z",
  "state": "EVENT_STATE_DRAFT",
  "tiers": [{"tier": "TIER_STANDARD", "price": {"currency_code": "USD", "amount_minor": "4000"},
             "rows": 10, "seats_per_row": 20}]}')
EVENT=$(echo "$DRAFT" | jq -r .event_id)
echo "$DRAFT" | jq -c '{state, etag}'
curl -s -o /dev/null -w '%{http_code}\n' "$EDGE/v1/events/$EVENT"

# Fix the title and the price, only if nobody changed the event since it was read.
EDIT='{"title": "Summer festival", "etag": '"$(echo "$DRAFT" | jq .etag)"',
  "tiers": [{"tier": "TIER_STANDARD", "price": {"currency_code": "USD", "amount_minor": "4500"},
             "rows": 10, "seats_per_row": 20}]}'
curl -sf -X PATCH "$EDGE/v1/events/$EVENT?update_mask=title,tiers" \
  -H "authorization: Bearer $TOKEN" -d "$EDIT" \
  | jq -c '{title, etag, price: .tiers[0].price.amount_minor}'
# The same edit again: its etag is stale now.
curl -s -X PATCH "$EDGE/v1/events/$EVENT?update_mask=title,tiers" \
  -H "authorization: Bearer $TOKEN" -d "$EDIT" \
  | jq -c '[.details[] | select(."@type" | endswith("ErrorInfo")) | .reason]'

curl -sf -X POST "$EDGE/v1/events/$EVENT:publish" -H "authorization: Bearer $TOKEN" -d '{}' \
  | jq -c '{state}'
curl -sf "$EDGE/v1/events?organizer_id=$ME&query=summer" | jq -c '[.events[].title]'

# A fan buys a seat ...
register "$FAN_EMAIL" >/dev/null
FAN=$(login "$FAN_EMAIL" correct-horse)
BOOKING=$(curl -sf -X POST "$EDGE/v1/bookings" -H "authorization: Bearer $FAN" -d '{
  "event_id": "'"$EVENT"'", "seat_ids": ["standard-1-1"],
  "payment_method": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                     "cvc": "123"},
  "request_id": "'"$(cat /proc/sys/kernel/random/uuid)"'"}')
echo "$BOOKING" | jq -c '{state, total: .total.amount_minor}'

# ... and the show is cancelled: the call returns at once, refunds and emails follow.
curl -sf -X POST "$EDGE/v1/events/$EVENT:cancel" -H "authorization: Bearer $TOKEN" \
  -d '{"reason": "Storm warning"}' | jq -c '{state, reason: .cancellation.reason}'
for _ in $(seq 150); do
  curl -sf "$EDGE/v1/events/$EVENT" | jq -e .cancellation.finish_time >/dev/null && break
  sleep 0.2
done
curl -sf "$EDGE/v1/events/$EVENT" | jq -c '.cancellation | {bookings_total, bookings_refunded}'
curl -sf "$EDGE/v1/bookings/$(echo "$BOOKING" | jq -r .booking_id)" \
  -H "authorization: Bearer $FAN" | jq -c '{state}'
