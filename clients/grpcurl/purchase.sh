#!/usr/bin/env bash
# The same purchase with grpcurl, straight at the services, by server reflection,
# over mutual TLS with the developer certificate that `make up` issues into var/tls.
#   AUTH=localhost:3001 EVENT=localhost:3003 BOOKING=localhost:3002 clients/grpcurl/purchase.sh
set -euo pipefail
AUTH=${AUTH:-localhost:3001} EVENT=${EVENT:-localhost:3003} BOOKING=${BOOKING:-localhost:3002}
GRPCURL=${GRPCURL:-grpcurl}
TLS=${TLS_DIR:-var/tls}
MTLS=(-cacert "$TLS/ca.pem" -cert "$TLS/developer.pem" -key "$TLS/developer.key")
EMAIL="fan-$RANDOM$RANDOM@example.com"

"$GRPCURL" "${MTLS[@]}" -d '{"email":"'"$EMAIL"'","password":"correct-horse","display_name":"Fan"}' \
  "$AUTH" ticketing.auth.v1.AuthService/Register > /dev/null
TOKEN=$("$GRPCURL" "${MTLS[@]}" -d '{"email":"'"$EMAIL"'","password":"correct-horse"}' \
  "$AUTH" ticketing.auth.v1.AuthService/Login | jq -r '.access_token // .accessToken')
ADMIN=$("$GRPCURL" "${MTLS[@]}" \
  -d '{"email":"'"${ADMIN_EMAIL:-admin@example.com}"'","password":"'"${ADMIN_PASSWORD:-admin-change-me}"'"}' \
  "$AUTH" ticketing.auth.v1.AuthService/Login | jq -r '.access_token // .accessToken')

EVENT_ID=$("$GRPCURL" "${MTLS[@]}" -H "authorization: Bearer $ADMIN" -d '{"event": {
  "title": "Opening night", "venue": "Main Hall", "starts_at": "2030-06-01T20:00:00Z",
  "tiers": [{"tier": "TIER_VIP", "price": {"currency_code": "USD", "amount_minor": "15000"},
             "rows": 2, "seats_per_row": 10}]}}' \
  "$EVENT" ticketing.event.v1.EventService/CreateEvent | jq -r '.event_id // .eventId')

"$GRPCURL" "${MTLS[@]}" -H "authorization: Bearer $TOKEN" -d '{"event_id": "'"$EVENT_ID"'",
  "seat_ids": ["vip-1-1"], "request_id": "'"$(cat /proc/sys/kernel/random/uuid)"'",
  "payment_method": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                     "cvc": "123"}}' \
  "$BOOKING" ticketing.booking.v1.BookingService/CreateBooking | jq -c '{state, total}'
