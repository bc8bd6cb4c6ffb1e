#!/usr/bin/env bash
# Shows Flotilla working end to end on this machine: the shop demo
# (examples/shop) brought up from its spec, listed, and answering a request.
#
# Why it exists: one command a newcomer can run to see what Flotilla does,
# and that shows the way to try more by hand.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPEC="examples/shop/flotilla.yaml"
APP="shop"
FLOTILLA="$FLOTILLA_ROOT/.venv/bin/flotilla"
FETCH_WEB="import urllib.request;print(urllib.request.urlopen('http://web:8000/').read().decode())"

bash "$FLOTILLA_ROOT/scripts/setup.sh"
cd "$FLOTILLA_ROOT"
[[ -x "$FLOTILLA" ]] || die "$FLOTILLA is missing; scripts/setup.sh should have installed it"

log "flotilla up -f $SPEC"
"$FLOTILLA" up -f "$SPEC"
log "flotilla ps $APP"
"$FLOTILLA" ps "$APP"

web=$(docker ps --format '{{.Names}}' --filter "label=io.flotilla.app=$APP" \
      --filter "label=io.flotilla.service=web" | head -n 1)
[[ -n "$web" ]] || die "no running web replica found (label io.flotilla.service=web)"

cat <<EOF

Try it:
  # from inside the app's network, where services find each other by name:
  docker exec $web python3 -c "$FETCH_WEB"
  # from the host, through the gateway (web is the one public service):
  curl -H 'Host: shop.localhost' http://127.0.0.1:8080/
  $FLOTILLA routes $APP
  # scale, watch, read the logs:
  $FLOTILLA scale $APP catalog=4 --wait && $FLOTILLA ps $APP
  $FLOTILLA logs $APP catalog --tail 5
  # more: $FLOTILLA --help; when done: $FLOTILLA down $APP

Here is the first one, run now:
EOF
docker exec "$web" python3 -c "$FETCH_WEB"

