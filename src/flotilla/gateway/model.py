"""The gateway as plain data: what HAProxy should route, before it becomes text.

``config.py`` builds these values from the app specs and renders them as an
haproxy.cfg; the daemon compares them, stores them and prints them. Keeping
the data apart from the rendering means a route table can be tested, shown in
``flotilla plan`` and diffed without reading HAProxy syntax.

The names here are the contract between the rendered configuration and the
Runtime API: the daemon points the server slots of ``backend_name(app,
service)`` at replicas and frees them at run time, so the same function must name the backend in both.
App and service names are lowercase letters, digits and '-', never '_', so
``be_<app>_<service>`` can always be split back into its two parts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# What the spec allows for app and service names (spec/checks.py NAME_RULE).
_SPEC_NAME = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
# What HAProxy accepts in proxy and server names (its invalid_char()).
_HAPROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class Server:
    """One replica in a backend."""

    name: str  # the container name, e.g. "shop-web-3-ab12cd"
    address: str  # the container's IP address
    port: int
    enabled: bool  # False: rendered `disabled` (maintenance), gets no traffic


@dataclass(frozen=True)
class Backend:
    """The servers of one routed service."""

    name: str  # backend_name(app, service)
    app: str
    service: str
    servers: tuple[Server, ...]
    max_body: int  # bytes: a longer request body is refused before it reaches a server
    # The activator's UNIX socket, for a service that may scale to zero (None: no activator server);
    # ``held``: the activator is the backend's server now, because no replica serves (docs/architecture.md).
    activator: str | None = None
    held: bool = False
    # The service's ``concurrency``: HAProxy's ``maxconn`` on each replica's slot, so requests over it
    # wait in the backend's queue (any replica that frees a slot, or joins, takes them) for at most
    # ``queue_timeout`` seconds, then get 503 with Retry-After. None: no limit, as before the setting.
    maxconn: int | None = None
    queue_timeout: float | None = None


@dataclass(frozen=True)
class GatewayRoute:
    """A public entry: requests for ``host`` under ``path`` go to ``backend``."""

    app: str
    service: str
    host: str  # exact "shop.localhost" or wildcard "*.shop.example" (one label)
    path: str  # normalized prefix: "/" or "/api" (no trailing '/')
    strip_prefix: bool
    backend: str
    # HTTPS (docs/https.md): the app's https_port when the route has tls and plain HTTP is redirected
    # there (308); hsts: seconds of Strict-Transport-Security on its HTTPS answers (0: none).
    redirect_port: int | None = None
    hsts: int = 0

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")


@dataclass(frozen=True)
class Frontend:
    """One listening address and every route that arrives on it, in priority order.

    Apps that share a ``gateway.listen`` address (the default, 127.0.0.1:8080)
    share a frontend: two frontends bound to one port would split connections
    between them at random (SO_REUSEPORT) instead of failing.
    """

    name: str  # frontend_name(bind_host, bind_port)
    apps: tuple[str, ...]
    bind_host: str
    bind_port: int
    routes: tuple[GatewayRoute, ...]  # in match priority order
    # The HTTPS listeners on bind_host (every app's gateway.https_port): TLS ends there, with the
    # certificates of tls_files, and requests are routed as on the plain port.
    https_ports: tuple[int, ...] = ()

    @property
    def bind(self) -> str:
        """``host:port`` for HAProxy's ``bind``, with an IPv6 host in brackets."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.bind_port}"


@dataclass(frozen=True)
class TlsPaths:
    """Where HAProxy reads its certificates at (re)start: RAM only (gateway/certificates.py)."""

    default_cert: str  # a self-signed certificate for a client whose SNI matches none
    crt_list: str  # one line per served certificate file, kept in step with the Runtime API


@dataclass(frozen=True)
class GatewayConfig:
    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...]
    tls: TlsPaths | None = None  # None: no frontend listens for HTTPS

    def https_frontends(self) -> tuple[Frontend, ...]:
        return tuple(f for f in self.frontends if f.https_ports)

    def backend(self, app: str, service: str) -> Backend | None:
        name = backend_name(app, service)
        return next((b for b in self.backends if b.name == name), None)


def host_matches(route_host: str, host: str) -> bool:
    """Whether a request for ``host`` matches ``route_host``: equal, or for ``*.shop.example``
    exactly one label more (``a.shop.example``, not ``shop.example`` nor ``a.b.shop.example``)."""
    if not route_host.startswith("*."):
        return host == route_host
    label, _, rest = host.partition(".")
    return bool(label) and "*." + rest == route_host


def hosts_overlap(first: str, second: str) -> bool:
    """Whether one Host header can match both route hosts (so they cannot belong to two apps).

    Two different wildcards never overlap: each matches one label more than its own suffix.
    """
    return first == second or host_matches(first, second) or host_matches(second, first)


def backend_name(app: str, service: str) -> str:
    """``be_<app>_<service>``: valid for HAProxy as is, and unambiguous ('_' is never in a name)."""
    return f"be_{_spec_name(app, 'app')}_{_spec_name(service, 'service')}"


def parse_backend_name(name: str) -> tuple[str, str] | None:
    """``(app, service)`` for a name made by backend_name, None for any other proxy."""
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "be":
        return None
    app, service = parts[1], parts[2]
    ok = _SPEC_NAME.fullmatch(app) and _SPEC_NAME.fullmatch(service)
    return (app, service) if ok else None


def frontend_name(bind_host: str, bind_port: int) -> str:
    """``fe_<host>_<port>``, e.g. ``fe_127.0.0.1_8080`` or ``fe_::1_8080``."""
    return haproxy_name(f"fe_{bind_host.strip('[]')}_{bind_port}", what="frontend")


def haproxy_name(name: str, *, what: str) -> str:
    """``name`` unchanged if HAProxy accepts it as an identifier; ValueError otherwise."""
    if not _HAPROXY_NAME.fullmatch(name):
        raise ValueError(f"{what} name {name!r} is not valid for HAProxy: use letters, "
                         "digits, '-', '_', '.' and ':' only")
    return name


def check_server(server: Server) -> Server:
    """``server`` if HAProxy can take it as written; ValueError saying what is wrong otherwise."""
    haproxy_name(server.name, what="server")
    try:
        ipaddress.ip_address(server.address)
    except ValueError:
        raise ValueError(f"server {server.name}: address {server.address!r} is not an IP "
                         "address (the gateway does not resolve names)") from None
    if not 1 <= server.port <= 65535:
        raise ValueError(f"server {server.name}: port {server.port} is outside 1-65535")
    return server


def server_address(address: str, port: int) -> str:
    """``ip:port`` as HAProxy reads it, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _spec_name(name: str, what: str) -> str:
    if not _SPEC_NAME.fullmatch(name):
        raise ValueError(f"{what} name {name!r} is not a valid Flotilla name "
                         "(lowercase letters, digits and '-', starting with a letter)")
    return name
