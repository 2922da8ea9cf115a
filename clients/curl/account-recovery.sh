#!/usr/bin/env bash
# An account recovered over HTTP/JSON through Envoy: register, verify the email
# with the code it was sent, forget the password, set a new one with the code
# emailed for it, and see the old session end; then delete the account. The development mail sink keeps
# every email as a file in MAIL_DIR, where the codes are read from. Needs curl
# and jq.   EDGE=http://localhost:8080 MAIL_DIR=var/mail clients/curl/account-recovery.sh
set -euo pipefail
EDGE=${EDGE:-http://localhost:8080}
MAIL_DIR=${MAIL_DIR:-var/mail}
EMAIL="fan-$RANDOM$RANDOM@example.com"

code() {  # the code in the newest email of kind $1 to $EMAIL, once it has come
  for _ in $(seq 150); do
    mail=$(grep -lsx "To: $EMAIL"$'\r\\?' "$MAIL_DIR"/*.eml \
      | xargs -r grep -lsx "X-Ticketing-Kind: $1"$'\r\\?' | sort | tail -n 1)
    if [ -n "$mail" ]; then grep -oE '^    [0-9]{6}' "$mail" | tr -d ' '; return; fi
    sleep 0.2
  done
  echo "no $1 email to $EMAIL in $MAIL_DIR" >&2
  return 1
}

curl -sf -X POST "$EDGE/v1/auth/register" \
  -d '{"email":"'"$EMAIL"'","password":"correct-horse","display_name":"Fan"}' | jq -c '{email_verified}'
curl -sf -X POST "$EDGE/v1/auth/verifyEmail" \
  -d '{"email":"'"$EMAIL"'","code":"'"$(code VERIFICATION_CODE)"'"}' | jq -c '{email_verified}'
SESSION=$(curl -sf -X POST "$EDGE/v1/auth/login" \
  -d '{"email":"'"$EMAIL"'","password":"correct-horse"}' | jq -r .refresh_token)

# The password is forgotten. Asking for a code answers {} whether or not the
# address has an account; the code works once, for 15 minutes.
curl -sf -X POST "$EDGE/v1/auth/password:reset" -d '{"email":"'"$EMAIL"'"}' | jq -c .
curl -sf -X POST "$EDGE/v1/auth/password:set" -d '{"email":"'"$EMAIL"'",
  "code":"'"$(code PASSWORD_RESET)"'","new_password":"battery-staple"}' | jq -c .

# Every session from before has ended, and the new password signs in.
curl -s -X POST "$EDGE/v1/auth/refresh" -d '{"refresh_token":"'"$SESSION"'"}' \
  | jq -c "{code, reason: (.details[] | select(.reason) | .reason)}"
LOGIN=$(curl -sf -X POST "$EDGE/v1/auth/login" \
  -d '{"email":"'"$EMAIL"'","password":"battery-staple"}')
jq -c '{token_type}' <<<"$LOGIN"

# Leaving for good: deleting the account asks for the password again. Every
# session ends, and the email and name are erased from every service (the
# bookings stay, for accounting, under an id no account has); the old
# password signs in no more, and the address may register again.
curl -sf -X DELETE "$EDGE/v1/users/me" -H "Authorization: Bearer $(jq -r .access_token <<<"$LOGIN")" \
  -d '{"current_password":"battery-staple"}' | jq -c .
curl -s -X POST "$EDGE/v1/auth/login" -d '{"email":"'"$EMAIL"'","password":"battery-staple"}' \
  | jq -c "{code, reason: (.details[] | select(.reason) | .reason)}"
