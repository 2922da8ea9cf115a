#!/usr/bin/env bash
# A whole purchase over HTTP/JSON through Envoy: register, log in, create an
# event (as the admin), book two seats in two tiers, read the booking and its
# payment, fetch the tickets, check one in at the door, cancel; then the same
# in two steps: hold the best two VIP seats, renew the hold, buy it. Needs curl
# and jq.   EDGE=http://localhost:8080 clients/curl/purchase.sh
set -euo pipefail
EDGE=${EDGE:-http://localhost:8080}
EMAIL="fan-$RANDOM$RANDOM@example.com"

curl -sf -X POST "$EDGE/v1/auth/register" \
  -d '{"email":"'"$EMAIL"'","password":"correct-horse","display_name":"Fan"}' | jq -c '{user_id, role}'
TOKEN=$(curl -sf -X POST "$EDGE/v1/auth/login" \
  -d '{"email":"'"$EMAIL"'","password":"correct-horse"}' | jq -r .access_token)
ADMIN=$(curl -sf -X POST "$EDGE/v1/auth/login" \
  -d '{"email":"'"${ADMIN_EMAIL:-admin@example.com}"'","password":"'"${ADMIN_PASSWORD:-admin-change-me}"'"}' \
  | jq -r .access_token)

EVENT=$(curl -sf -X POST "$EDGE/v1/events" -H "authorization: Bearer $ADMIN" -d '{
  "title": "Opening night", "venue": "Main Hall", "starts_at": "2030-06-01T20:00:00Z",
  "tiers": [
    {"tier": "TIER_STANDARD", "price": {"currency_code": "USD", "amount_minor": "5000"},
     "rows": 20, "seats_per_row": 30},
    {"tier": "TIER_VIP", "price": {"currency_code": "USD", "amount_minor": "15000"},
     "rows": 2, "seats_per_row": 10}]}' | jq -r .event_id)
curl -sf "$EDGE/v1/events/$EVENT/seats?tier=TIER_VIP&page_size=3" | jq -c '[.seats[].seat_id]'

BOOKING=$(curl -sf -X POST "$EDGE/v1/bookings" -H "authorization: Bearer $TOKEN" -d '{
  "event_id": "'"$EVENT"'", "seat_ids": ["vip-1-4", "standard-3-10"],
  "payment_method": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                     "cvc": "123"},
  "request_id": "'"$(cat /proc/sys/kernel/random/uuid)"'"}')
echo "$BOOKING" | jq -c '{state, total}'
ID=$(echo "$BOOKING" | jq -r .booking_id)
curl -sf "$EDGE/v1/bookings/$ID" -H "authorization: Bearer $TOKEN" | jq -c '[.seats[].seat_id]'
curl -sf "$EDGE/v1/payments/$(echo "$BOOKING" | jq -r .payment_id)" \
  -H "authorization: Bearer $TOKEN" | jq -c '{state, card_brand, card_last4}'

# Tickets on demand: a signed token per seat (its QR code's payload), or the PDF.
TICKET=$(curl -sf "$EDGE/v1/bookings/$ID/tickets" -H "authorization: Bearer $TOKEN" \
  | jq -r '.tickets[0].ticket_token')
curl -sf "$EDGE/v1/bookings/$ID/tickets.pdf" -H "authorization: Bearer $TOKEN" \
  -o /dev/null -w '%{content_type}\n'  # -o tickets.pdf to keep it
# At the door the event's organizer (here the admin) scans it: admitted once,
# then ALREADY_CHECKED_IN (409) with the first scan's time.
curl -sf -X POST "$EDGE/v1/tickets:checkIn" -H "authorization: Bearer $ADMIN" \
  -d '{"ticket_token": "'"$TICKET"'"}' | jq -c '{seat_id}'
curl -s -X POST "$EDGE/v1/tickets:checkIn" -H "authorization: Bearer $ADMIN" \
  -d '{"ticket_token": "'"$TICKET"'"}' | jq -c '.details[0].reason'
curl -sf -X POST "$EDGE/v1/bookings/$ID:cancel" -H "authorization: Bearer $TOKEN" | jq -c '{state}'

# Two steps, as a checkout page does it: hold seats (here the best two VIP seats,
# side by side if a row has them), show the countdown, then buy exactly that hold.
HOLD=$(curl -sf -X POST "$EDGE/v1/events/$EVENT/holds" -H "authorization: Bearer $TOKEN" \
  -d '{"best_available": {"tier": "TIER_VIP", "quantity": 2},
       "request_id": "'"$(cat /proc/sys/kernel/random/uuid)"'"}')
echo "$HOLD" | jq -c '{seats: [.seats[].seat_id], total, placement, renewals_left}'
HOLD_ID=$(echo "$HOLD" | jq -r .hold_id)   # expire_time: when the seats go back
curl -sf -X POST "$EDGE/v1/holds/$HOLD_ID:renew" -H "authorization: Bearer $TOKEN" -d '{}' \
  | jq -c '{renewals_left}'
curl -sf -X POST "$EDGE/v1/bookings" -H "authorization: Bearer $TOKEN" -d '{
  "hold_id": "'"$HOLD_ID"'",
  "payment_method": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                     "cvc": "123"},
  "request_id": "'"$(cat /proc/sys/kernel/random/uuid)"'"}' | jq -c '{state, seats: [.seats[].seat_id]}'
