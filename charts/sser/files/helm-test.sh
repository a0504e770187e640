# `helm test`: subscribe through the subscriber Service, publish through the
# internal Service, and pass when the event arrives (through whichever
# replicas the two Services pick, so usually across replicas). POSIX sh and
# curl only. Set by the Pod (templates/tests/test-delivery.yaml):
#   FRONTEND, INTERNAL  base URLs of the two Services
#   STREAM              stream to use; TIMEOUT seconds for everything
#   TOKEN_FILE          publish token file (may be absent: no token)
#   SUBSCRIBE           open, ticket (mint one with the publish token) or
#                       refused (JWTs only: check that an anonymous
#                       subscription gets 401 instead of the delivery)
set -eu

work=${TMPDIR:-/tmp}
deadline=$(($(date +%s) + TIMEOUT))
left() { echo $((deadline - $(date +%s))); }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# The token goes to curl in a header file, never on its command line.
: >"$work/auth.h"
if [ -s "${TOKEN_FILE:-}" ]; then
  printf 'Authorization: Bearer %s\n' "$(cat "$TOKEN_FILE")" >"$work/auth.h"
fi
post() { # post PATH JSON: POST to the internal Service, print the body
  curl -fsS --max-time 10 -H 'Content-Type: application/json' -H "@$work/auth.h" -d "$2" "$INTERNAL$1"
}
msg="sser helm test $(date +%s)-$$"
publish() { # a wrong or missing credential ends the test; anything else may pass
  code=$(curl -sS -o "$work/publish.out" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' -H "@$work/auth.h" \
    -d "{\"stream\":\"$STREAM\",\"msg\":\"$msg\"}" "$INTERNAL/api/json/v1/publish") || code=000
  case $code in
    2??) echo "published \"$msg\" at $INTERNAL" ;;
    401 | 403) fail "publish to $INTERNAL got $code: $(cat "$work/publish.out") (the publish token)" ;;
    *)
      echo "publish to $INTERNAL got $code: $(cat "$work/publish.out" 2>/dev/null)" >&2
      return 1
      ;;
  esac
}

if [ "$SUBSCRIBE" = refused ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$FRONTEND/events?stream=$STREAM") || true
  [ "$code" = 401 ] || fail "an anonymous subscription to $FRONTEND got $code, want 401 (authentication is configured)"
  echo "an anonymous subscription is refused (401), as authentication requires"
  publish || fail "publish to $INTERNAL failed"
  echo "PASS: publish accepted; delivery is not checked (JWT authentication: the test has no token)"
  exit 0
fi

set -- --data-urlencode "stream=$STREAM"
if [ "$SUBSCRIBE" = ticket ]; then
  answer=$(post /api/json/v1/tickets "{\"subject\":\"sser-helm-test\",\"streams\":[\"$STREAM\"],\"ttl\":\"${TIMEOUT}s\"}") ||
    fail "could not get a ticket from $INTERNAL"
  ticket=$(printf '%s' "$answer" | sed -n 's/.*"ticket" *: *"\([^"]*\)".*/\1/p')
  [ -n "$ticket" ] || fail "no ticket in $answer"
  set -- "$@" --data-urlencode "ticket=$ticket"
fi

# The subscriber runs in the background; sub.exit appears when it ends.
(
  set +e
  curl -sSN -G --max-time "$((TIMEOUT + 5))" -D "$work/headers" -o "$work/events" "$@" "$FRONTEND/events" &
  echo $! >"$work/sub.pid"
  wait $! 2>/dev/null
  echo $? >"$work/sub.exit"
) &
ended() { [ -f "$work/sub.exit" ]; }
trap 'kill "$(cat "$work/sub.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
# The server writes a retry: line as soon as the subscription is live.
until grep -q '^retry:' "$work/events" 2>/dev/null; do
  if ended; then
    fail "the subscription to $FRONTEND ended: $(head -n1 "$work/headers" 2>/dev/null) $(cat "$work/events" 2>/dev/null) (a stream outside sser.allowedStreams gets 204)"
  fi
  [ "$(left)" -gt 0 ] || fail "no subscription to $FRONTEND within ${TIMEOUT}s"
  sleep 0.2
done
echo "subscribed to $STREAM at $FRONTEND"

# A replica that has only just started may not know every peer yet: publish
# again until the event arrives (a repeat is only a duplicate).
while :; do
  publish || true
  wait_until=$(($(date +%s) + 3))
  while [ "$(date +%s)" -lt "$wait_until" ]; do
    if grep -qF "data: $msg" "$work/events"; then
      echo "PASS: the event arrived"
      exit 0
    fi
    ! ended || fail "the subscription ended before the event arrived"
    sleep 0.2
  done
  [ "$(left)" -gt 0 ] || fail "the event did not arrive within ${TIMEOUT}s"
done
