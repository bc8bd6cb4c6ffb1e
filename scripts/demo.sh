#!/usr/bin/env bash
# Shows Flotilla working end to end on this machine: the shop demo
# (examples/shop) brought up from its spec (with its Redis Cluster of user
# sessions), listed, keeping a cart in the cluster, and answering a request.
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
GATEWAY="http://127.0.0.1:8080"  # gateway.listen in the spec
CART_LINE='{"item": "mug", "qty": 2}'

through_gateway() { # PATH [CURL_ARGS...]: a request to the shop, as a browser would make it
    curl -fsS -H 'Host: shop.localhost' "${@:2}" "$GATEWAY$1"
}

bash "$FLOTILLA_ROOT/scripts/setup.sh"
cd "$FLOTILLA_ROOT"
[[ -x "$FLOTILLA" ]] || die "$FLOTILLA is missing; scripts/setup.sh should have installed it"

log "flotilla up -f $SPEC"
"$FLOTILLA" up -f "$SPEC"
log "flotilla ps $APP"
"$FLOTILLA" ps "$APP"

# gateway -> web -> cart -> the sessions cache: the cart lives in Redis, not in a cart replica.
log "a cart write and read through the gateway: POST, then GET $GATEWAY/api/cart/alice"
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"
through_gateway /api/cart/alice -X POST -H 'Content-Type: application/json' -d "$CART_LINE"
through_gateway /api/cart/alice

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
  # carts are sessions in the Redis Cluster (sessions-0-0 ... sessions-2-1): kill
  # every cart replica, let Flotilla replace them, and alice's cart is still there:
  docker kill \$(docker ps -q --filter label=io.flotilla.app=$APP --filter label=io.flotilla.service=cart)
  sleep 3; curl -H 'Host: shop.localhost' http://127.0.0.1:8080/api/cart/alice
  # every replica is hardened: no capability, no-new-privileges, a pids limit, no core
  # dumps; the shop's run read-only as nobody (docs/spec.md, "Hardening"):
  docker inspect --format '{{json .HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} pids={{.HostConfig.PidsLimit}} {{.HostConfig.Ulimits}} ro={{.HostConfig.ReadonlyRootfs}} user={{.Config.User}}' $web
  # scale, watch, read the logs:
  $FLOTILLA scale $APP catalog=4 --wait && $FLOTILLA ps $APP
  $FLOTILLA logs $APP catalog --tail 5
  # more: $FLOTILLA --help; when done: $FLOTILLA down $APP

Here is the first one, run now:
EOF
docker exec "$web" python3 -c "$FETCH_WEB"

