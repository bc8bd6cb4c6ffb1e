"""The shop demo's spec as tests use it, and the rule that keeps test gateways off fixed ports.

Why it exists: several integration tests bring up ``examples/shop/flotilla.yaml``
under an app name of their own, while the demo itself may be running beside
the suite with its gateway on 127.0.0.1:8080 (``scripts/demo.sh``). A copy of
the demo that kept that address would fail to come up, or take the port the
demo wants. ``shop_demo`` gives every copy a free port; ``check_gateway_port``
refuses a routed spec that would listen on the demo's address (or on the
default one, which is the same), so a new test cannot reintroduce the clash.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flotilla.spec.models import GatewaySpec
from tests.support.ports import free_port

SHOP_DEMO = Path(__file__).resolve().parents[2] / "examples" / "shop" / "flotilla.yaml"
DEMO_GATEWAY_PORT = GatewaySpec().listen_port  # the default, and what the demo's spec names


def shop_demo(app: str) -> dict:
    """The demo's spec as ``app``, its gateway on a free loopback port; a dict for the test to adjust."""
    spec = yaml.safe_load(SHOP_DEMO.read_text())
    spec["app"] = app
    spec["gateway"] = {"listen": f"127.0.0.1:{free_port()}"}
    return spec


def check_gateway_port(text: str) -> None:
    """Refuse spec text whose routes would make the gateway listen on the demo's fixed port."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # a test of bad YAML; the CLI reports it, nothing listens
    if not isinstance(spec, dict) or not isinstance(spec.get("services"), dict):
        return
    routed = any(isinstance(s, dict) and s.get("routes") for s in spec["services"].values())
    listen = str((spec.get("gateway") or {}).get("listen", f"127.0.0.1:{DEMO_GATEWAY_PORT}"))
    if routed and listen.rsplit(":", 1)[-1] == str(DEMO_GATEWAY_PORT):
        raise AssertionError(
            f"this spec routes requests through a gateway on {listen}, a port the shop demo "
            f"(scripts/demo.sh) may hold while the tests run; set gateway.listen to "
            f"127.0.0.1:{{free_port()}} (tests/support/ports.py)")


def routed_spec(app: str, port: int, *, listen_host: str = "127.0.0.1", replicas: int = 2, env: str = "") -> str:
    """A routed shop-catalog service (web) and an internal one, behind a gateway on ``listen_host:port``."""
    return f"""\
app: {app}
gateway: {{listen: "{listen_host}:{port}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    replicas: {replicas}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    env: {{LOG_LEVEL: warning{env}}}
    routes:
      - {{host: shop.localhost, path: /}}
      - {{host: "*.shop.example", path: /api, strip_prefix: true}}
  internal:
    image: shop-cart:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
"""


def cache_spec(app: str, *, shards: int = 3, replicas: int = 1, persistence: str = "aof") -> str:
    """An app with a ``sessions`` Redis Cluster and ``cart`` (the shop's catalog image) listing it."""
    return f"""\
app: {app}
caches:
  sessions: {{type: redis-cluster, shards: {shards}, replicas: {replicas}, memory: 48M, persistence: {persistence}}}
services:
  cart:
    image: shop-catalog:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    caches: [sessions]
"""
