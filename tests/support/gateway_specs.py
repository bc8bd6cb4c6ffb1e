"""Builders of specs and servers for tests of the gateway's configuration.

Why it exists: the pure rendering tests (tests/unit/test_gateway_config.py) and
the tests that feed the same configurations to the real ``haproxy -c``
(tests/integration/test_gateway_config_haproxy.py) build their apps the same
way; the ports they name are only text in a rendered file, never bound.
"""

from __future__ import annotations

from flotilla.gateway.config import build_gateway_config
from flotilla.gateway.model import GatewayConfig, Server
from flotilla.spec.models import DEFAULT_MAX_BODY, AppSpec, GatewaySpec, RouteSpec, ServiceSpec


def route(host: str, path: str = "/", strip: bool = False) -> RouteSpec:
    """A route of the spec: ``host`` and ``path``, the prefix stripped or not."""
    return RouteSpec(host=host, path=path, strip_prefix=strip)


def service(*routes: RouteSpec, max_body: int = DEFAULT_MAX_BODY) -> ServiceSpec:
    """A service on port 8000 with these routes (none: internal only)."""
    return ServiceSpec(image="img:1", port=8000, routes=tuple(routes), max_body=max_body)


def app(name: str, *, port: int = 48080, host: str = "127.0.0.1", **services: ServiceSpec) -> AppSpec:
    """An app with these services, its gateway address only written into the rendered text."""
    return AppSpec(app=name, gateway=GatewaySpec(listen_host=host, listen_port=port),
                   services=services)


def servers(prefix: str, count: int, *, disabled: tuple[int, ...] = ()) -> list[Server]:
    """``count`` replicas ``prefix-1`` ... at 10.1.0.N:8000; those numbered in ``disabled`` not ready."""
    return [Server(f"{prefix}-{i}-abc123", f"10.1.0.{i}", 8000, i not in disabled)
            for i in range(1, count + 1)]


def build(*apps: AppSpec, replicas: dict | None = None) -> GatewayConfig:
    """The gateway configuration for these apps and their replicas, keyed by (app, service)."""
    return build_gateway_config({a.app: a for a in apps}, replicas or {})
