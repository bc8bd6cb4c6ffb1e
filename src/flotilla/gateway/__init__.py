"""The HAProxy gateway: Flotilla's data plane, the one place requests enter an app.

``model`` holds the routing table as data, ``config`` builds it from the specs
and renders haproxy.cfg (pure), ``runtime`` changes servers in a running
HAProxy through its Runtime API. The daemon is the control plane: it renders,
reloads on route changes, and adds or removes replicas at run time.
"""

from flotilla.gateway.config import build_gateway_config, render_config, shadowed_routes
from flotilla.gateway.model import (
    Backend,
    Frontend,
    GatewayConfig,
    GatewayRoute,
    Server,
    backend_name,
    parse_backend_name,
)
from flotilla.gateway.runtime import GatewayError, RuntimeApi, ServerState, StatRow

__all__ = [
    "Backend",
    "Frontend",
    "GatewayConfig",
    "GatewayError",
    "GatewayRoute",
    "RuntimeApi",
    "Server",
    "ServerState",
    "StatRow",
    "backend_name",
    "build_gateway_config",
    "parse_backend_name",
    "render_config",
    "shadowed_routes",
]
