"""The rules of a whole spec: top-level keys, gateway, caches, and what spans services.

Validation runs on plain data, whether it came from YAML (positions known) or
from JSON over the daemon API (no positions), and reports through a Reporter
so that every problem is collected before anything is refused. The models are
built only when the spec is clean, so no half-valid AppSpec ever exists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from flotilla.naming import cache_variables, is_cache_node
from flotilla.spec import checks as c
from flotilla.spec import units, validate_acme, validate_images, validate_jobs
from flotilla.spec.locate import Path, Reporter, dotted
from flotilla.spec.models import AcmeSpec, AppSpec, CacheSpec, GatewaySpec, ServiceSpec
from flotilla.spec.validate_service import ServiceContext, check_service

TOP_KEYS = ("app", "gateway", "services", "caches", "pull", "acme", "jobs")
CACHE_KEYS = ("type", "shards", "replicas", "memory", "persistence", "image")
MIN_CACHE_MEMORY = 32 * units.MIB
_LISTEN_HINT = 'write "host:port" with an IPv4 address, localhost or [IPv6], e.g. "127.0.0.1:8080"'


def validate(rep: Reporter, data: object) -> AppSpec | None:
    """The AppSpec for ``data``, or None with every problem in ``rep``."""
    top = c.mapping(rep, (), data, allowed=TOP_KEYS, required={
        "app": "add app: the application's name, e.g. app: shop",
        "services": "add services: with at least one service and its image",
    })
    if top is None:
        return None
    app = _app_name(rep, top["app"]) if "app" in top else None
    gateway = _gateway(rep, ("gateway",), top["gateway"]) if "gateway" in top else GatewaySpec()
    cache_bodies = c.string_map(rep, ("caches",), top["caches"], hint=(
        "give a mapping of cache names to settings, e.g. caches: {sessions: {type: "
        "redis-cluster}}")) if "caches" in top else {}
    caches = _caches(rep, cache_bodies or {})
    ctx = ServiceContext(cache_names=tuple(cache_bodies or ()))
    services = _services(rep, top["services"], ctx=ctx) if "services" in top else None
    _check_names_unique(rep, services=top.get("services"), caches=cache_bodies or {})
    _check_cache_wiring(rep, services or {}, caches)
    _check_routes_unique(rep, ctx.routes)
    _check_tls_listener(rep, ctx.tls_routes, gateway)
    pull = validate_images.pull(rep, ("pull",), top["pull"]) if "pull" in top else "missing"
    acme = validate_acme.acme(rep, ("acme",), top["acme"]) if "acme" in top else AcmeSpec()
    names = top["services"] if isinstance(top.get("services"), dict) else {}
    jobs = validate_jobs.jobs(rep, top["jobs"], services=names, ctx=ctx) if "jobs" in top else {}
    if rep.count():
        return None
    return AppSpec(app=app, gateway=gateway, services=services, caches=caches, pull=pull, acme=acme, jobs=jobs)


def _app_name(rep: Reporter, value: object) -> str | None:
    app = c.text(rep, ("app",), value, hint=c.NAME_HINT)
    return None if app is None else c.name(rep, ("app",), app, what="app", at_key=False)


def _gateway(rep: Reporter, path: Path, value: object) -> GatewaySpec | None:
    known = c.mapping(rep, path, value, allowed=("listen", "https_port"))
    if known is None:
        return None
    parsed = _listen(rep, path + ("listen",), known["listen"]) if "listen" in known else ("127.0.0.1", 8080)
    https = _https_port(rep, path + ("https_port",), known["https_port"]) if "https_port" in known else None
    if parsed is None or ("https_port" in known and https is None):
        return None
    if https == parsed[1]:
        rep.add(path + ("https_port",), f"https_port {https} is also the HTTP listen port",
                "give HTTPS its own port, e.g. https_port: 8443 (or 443)")
        return None
    return GatewaySpec(listen_host=parsed[0], listen_port=parsed[1], https_port=https)


def _https_port(rep: Reporter, path: Path, value: object) -> int | None:
    return c.integer(rep, path, value, low=1, high=65535,
                     hint="give the HTTPS listener's port on the listen host, e.g. https_port: 8443")


def _check_tls_listener(rep: Reporter, tls_routes: list[Path], gateway: GatewaySpec | None) -> None:
    """A TLS route needs the gateway's HTTPS listener (``gateway.https_port``)."""
    if gateway is None or gateway.https_port is not None:
        return
    for path in tls_routes:
        rep.add(path, "this route is served over TLS, but the gateway has no HTTPS listener",
                "add gateway: {https_port: 8443} (or 443), or remove tls from the route")


def _listen(rep: Reporter, path: Path, value: object) -> tuple[str, int] | None:
    listen = c.text(rep, path, value, hint=_LISTEN_HINT)
    if listen is None:
        return None
    host, sep, port = listen.rpartition(":")
    reason = _listen_problem(host, port) if sep else "no ':port'"
    if reason:
        rep.add(path, f"invalid listen address {c.clip(listen)}: {reason}", _LISTEN_HINT)
        return None
    return _bind_host(host), int(port)


def _listen_problem(host: str, port: str) -> str:
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return "the port must be a number from 1 to 65535"
    if host == "localhost":
        return ""
    if host.startswith("[") and host.endswith("]"):
        return _ipv6_problem(host[1:-1])
    return _address_problem(ipaddress.IPv4Address, host)


def _ipv6_problem(address: str) -> str:
    if "%" in address:  # HAProxy's frontend names cannot hold it, and a zone is one link's, not the host's
        return "an IPv6 zone (scope id) such as %eth0 is not supported: listen on [::1] or a global address"
    return _address_problem(ipaddress.IPv6Address, address)


def _address_problem(parse: Callable[[str], object], address: str) -> str:
    try:
        parse(address)
    except ValueError:
        return "the host must be an IPv4 address, localhost or [IPv6]"
    return ""


def _bind_host(host: str) -> str:
    """The host as HAProxy binds it: IPv6 in its one short form (``[0::1]`` is ``::1``), no brackets.

    One form per address, so apps that write one address two ways share one
    frontend instead of binding it twice (which would split its connections).
    """
    if host.startswith("[") and host.endswith("]"):
        return str(ipaddress.IPv6Address(host[1:-1]))
    return host


def _caches(rep: Reporter, bodies: dict) -> dict[str, CacheSpec]:
    caches = {}
    for name, body in bodies.items():
        path = ("caches", name)
        valid_name = c.name(rep, path, name, what="cache", at_key=True)
        cache = _cache(rep, path, body)
        if valid_name and cache:
            caches[name] = cache
    return caches


def _cache(rep: Reporter, path: Path, body: object) -> CacheSpec | None:
    known = c.mapping(rep, path, body, allowed=CACHE_KEYS,
                      required={"type": "add type: redis-cluster"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {
        "type": _cache_type,
        "shards": lambda r, p, v: c.integer(
            r, p, v, low=3, high=16, hint="a Redis Cluster needs 3 to 16 shards (masters)"),
        "replicas": lambda r, p, v: c.integer(
            r, p, v, low=0, high=5, hint="give 0 to 5 replicas per shard"),
        "memory": lambda r, p, v: c.memory(r, p, v, minimum=MIN_CACHE_MEMORY),
        "persistence": lambda r, p, v: c.choice(r, p, v, options=("none", "aof", "rdb")),
        "image": lambda r, p, v: c.word(r, p, v, hint="give a Redis image, e.g. redis:7"),
    })
    return CacheSpec(**clean) if len(clean) == len(known) and "type" in clean else None


def _cache_type(rep: Reporter, path: Path, value: object) -> str | None:
    hint = "write type: redis-cluster (the only cache type so far)"
    kind = c.text(rep, path, value, hint=hint)
    if kind is not None and kind != "redis-cluster":
        rep.add(path, f"unsupported cache type {c.clip(kind)}", hint)
        return None
    return kind


def _services(rep: Reporter, value: object, *, ctx: ServiceContext) -> dict[str, ServiceSpec]:
    bodies = c.string_map(rep, ("services",), value, hint=(
        "give a mapping of service names to settings, e.g. services: {web: {image: shop-web:1}}"))
    if bodies is None:
        return {}
    if not bodies:
        rep.add(("services",), "must not be empty",
                "add a service, e.g. services: {web: {image: shop-web:1}}")
    services = {}
    for name, body in bodies.items():
        path = ("services", name)
        valid_name = c.name(rep, path, name, what="service", at_key=True)
        service = check_service(rep, path, body, ctx=ctx)
        if valid_name and service:
            services[name] = service
    return services


def _check_names_unique(rep: Reporter, *, services: object, caches: dict) -> None:
    if not isinstance(services, dict):
        return
    for name in caches:
        if name in services:
            rep.add(("caches", name), f"cache {name!r} has the same name as a service",
                    "rename the cache or the service: both are reached by name on the "
                    "app's network", key=True)


def _check_cache_wiring(rep: Reporter, services: dict[str, ServiceSpec], caches: dict[str, CacheSpec]) -> None:
    """A cache's node names and the variables it gives its consumers are taken."""
    for name, service in services.items():
        clash = next((cache for cache in caches if is_cache_node(cache, name)), None)
        if clash:
            rep.add(("services", name), f"service {name!r} has the name of a node of cache {clash!r}",
                    f"rename the service: the nodes of {clash} are called {clash}-SHARD-ORDINAL", key=True)
        for cache in service.caches:
            for variable in cache_variables(cache):
                where = "env" if variable in service.env else "secrets" if variable in service.secrets else None
                if where:
                    rep.add(("services", name, where, variable),
                            f"{variable} is set by cache {cache!r}, which this service lists",
                            f"remove {variable} from {where}: Flotilla sets it", key=True)


def _check_routes_unique(rep: Reporter, routes: list[tuple[tuple[str, str], Path]]) -> None:
    first_seen: dict[tuple[str, str], Path] = {}
    for (host, route_path), path in routes:
        first = first_seen.setdefault((host, route_path), path)
        if first != path:
            rep.add(path, f"route {host}{route_path} is also defined at {dotted(first)}"
                    f"{rep.where(first)}", "give each route its own host or path")
