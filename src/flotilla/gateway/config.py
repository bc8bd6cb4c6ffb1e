"""From app specs to a complete haproxy.cfg: the gateway's routing table as text.

Two pure steps, no file or process I/O: ``build_gateway_config`` decides what
is routed where (a value the daemon can compare, print and test), and
``render_config`` writes it in HAProxy's syntax. The daemon checks the text
with ``haproxy -c`` and reloads HAProxy with it when routes change; replicas
coming and going are applied through the Runtime API (runtime.py) instead, so
the rendered backends must accept servers added at run time.

How a request is routed, in each frontend:

1. the Host header is normalized (lowercase, no ``:port``, no trailing dot);
2. the routes are tried in priority order (exact hosts before wildcards, then
   the longest path) and the first match is remembered in ``txn.route``;
3. no match: 404 with ``no route for HOST/PATH``;
4. the matched route's prefix is stripped if it asks for that;
5. ``use_backend`` picks the backend from ``txn.route``, so the rewrite in 4
   cannot change which backend is chosen.

A path prefix matches at segment boundaries: ``/api`` matches ``/api``,
``/api/``, ``/api/x`` and ``/api?q=1``, never ``/apix``. A wildcard host
``*.shop.example`` matches exactly one label more (``a.shop.example``, not
``shop.example`` nor ``a.b.shop.example``), as a Kubernetes Ingress does, so
a spec routes the same way on both targets. A service without routes gets
no backend at all: nothing in the gateway can reach it.

Every request reaches its replica with ``X-Forwarded-For`` set to the
connection's address (what a client sends there is replaced, not appended to,
so a replica can trust it), and a backend takes a request body only within
its service's ``max_body``: a longer one is refused from its Content-Length
before it is read (413), a body is waited for before a replica is chosen (408
when it is slow), and a chunked one is counted once buffered (413, or 411
when it is too long for the gateway to count).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import replace

from flotilla.gateway.accesslog import LINE_LIMIT, log_format
from flotilla.gateway.challenges import ACME_CHALLENGE_ACL, ACME_CHALLENGE_PREFIX, challenge_lines
from flotilla.gateway.model import (
    Backend,
    Frontend,
    GatewayConfig,
    GatewayRoute,
    Server,
    TlsPaths,
    backend_name,
    check_server,
    frontend_name,
    server_address,
)
from flotilla.gateway.workers import WorkerAccount
from flotilla.spec.concurrency import DEFAULT_QUEUE_TIMEOUT
from flotilla.spec.models import AppSpec, RouteSpec, ServiceSpec
from flotilla.spec.units import KIB, format_memory

# HAProxy sizes maxconn from the file descriptors it may use (about half of
# them). A fixed maxconn above what the hard RLIMIT_NOFILE allows makes 2.6
# refuse to start; this caps the descriptors instead and lets maxconn follow.
FD_HARD_LIMIT = 20000
# Replicas occupy pre-declared server slots, changed at run time with `set
# server ... addr`: HAProxy 2.6 keeps no idle connections to servers made with
# `add server`, which costs a new TCP connection per request (measured: 5x
# fewer requests/s, +3.5 ms). One slot more than the most replicas a service
# may have (100), for the replacement started during a rolling update.
SLOTS_PER_BACKEND = 101
FREE_ADDRESS = "0.0.0.0"
FREE_PORT = 1
# The activator's server in a backend of a service that may scale to zero, and how
# many requests HAProxy gives it at once (more wait in HAProxy's queue, timeout queue).
ACTIVATOR_SERVER = "activator"
ACTIVATOR_MAXCONN = 64
# Seconds a client is told to wait after the queue timed out: new replicas join within a few.
RETRY_AFTER = 1
ROUTE_VAR = "txn.route"
HOST_VAR = "txn.host"
REQUEST_ID_VAR = "txn.request_id"
SINGLE_THREAD_CPUS = 2  # up to this many CPUs, HAProxy runs one thread (gateway_threads)
PATH_VAR = "txn.path"  # the request's path as it came (no query), for the access log
# Methods HAProxy may send again after the server took the request but sent
# nothing back (retry-on empty-response): replaying them changes nothing.
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")
# How much of a request body without Content-Length (chunked) the gateway can
# count: HAProxy holds at most one buffer of it before forwarding (tune.bufsize
# 16 KiB less tune.maxrewrite 1 KiB, less its own bookkeeping: 15,240 bytes
# measured on 2.6). A longer chunked body would stream past the count, so where
# max_body is larger it must come with a Content-Length (411 otherwise).
COUNTED_BODY = 14 * KIB
# How long a request's head may take, and then its body (each backend waits for
# the body before it picks a replica): 408 beyond, and no replica waited.
REQUEST_TIMEOUT = "10s"

# An upgraded connection (WebSocket) idle this long is closed; `timeout client/server` (30 s) would
# otherwise cut every quiet WebSocket.
TUNNEL_TIMEOUT = "1h"
# Mozilla's "intermediate" TLS 1.2 list without DHE: ECDHE only, AEAD only (GCM, ChaCha20-Poly1305).
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
TLS_CURVES = ("X25519", "P-256", "P-384")
TLS13_CIPHERSUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.:/@+=,*-]+")
# Control characters but '\n' (HAProxy ends a line at CR and refuses NUL) and lone surrogates (no UTF-8).
_UNWRITABLE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\ud800-\udfff]")
_REGEX_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")
_INDENT = "    "


# -- build: specs -> GatewayConfig ----------------------------------------------------------

def build_gateway_config(
    apps: Mapping[str, AppSpec],
    servers: Mapping[tuple[str, str], Sequence[Server]],
    *,
    activator: str | None = None,
    held: Set[tuple[str, str]] = frozenset(),
    tls: TlsPaths | None = None,
) -> GatewayConfig:
    """What the gateway routes: a frontend per listen address, a backend per routed service.

    ``servers`` maps ``(app, service)`` to that service's replicas; entries for
    services without routes are ignored (an internal service has no backend).
    ``activator`` is the activator's UNIX socket: each backend of a service that
    may scale to zero gets it as a server of its own, enabled for the
    ``(app, service)`` in ``held`` (no replica serves them now). ``tls`` says where
    the certificates are, for the HTTPS listeners of apps with ``gateway.https_port``.
    """
    backends: list[Backend] = []
    routes_by_bind: dict[tuple[str, int], list[GatewayRoute]] = defaultdict(list)
    https_by_bind: dict[tuple[str, int], set[int]] = defaultdict(set)
    for app_name in sorted(apps):
        spec = apps[app_name]
        bind = (spec.gateway.listen_host, spec.gateway.listen_port)
        if spec.gateway.https_port is not None:
            https_by_bind[bind].add(spec.gateway.https_port)
        for service_name in sorted(spec.services):
            service_routes = spec.services[service_name].routes
            if not service_routes:
                continue
            svc = spec.services[service_name]
            backend = _backend(app=spec.app, service=service_name, svc=svc,
                               servers=servers.get((spec.app, service_name), ()))
            if activator and may_scale_to_zero(svc):
                backend = replace(backend, activator=activator, held=(spec.app, service_name) in held)
            backends.append(backend)
            routes_by_bind[bind] += [_route(r, app=spec.app, service=service_name, backend=backend.name,
                                            https_port=spec.gateway.https_port)
                                     for r in service_routes]
    frontends = tuple(_frontend(bind, routes, https_ports=tuple(sorted(https_by_bind[bind])))
                      for bind, routes in sorted(routes_by_bind.items()))
    has_https = any(f.https_ports for f in frontends)
    return GatewayConfig(frontends=frontends, backends=tuple(backends), tls=tls if has_https else None)


def route_priority(route: GatewayRoute) -> tuple:
    """Sort key: exact hosts first, then longer paths, then names (for a stable order)."""
    return (route.wildcard, -len(route.path), route.host, route.path, route.app, route.service)


def shadowed_routes(frontend: Frontend) -> tuple[GatewayRoute, ...]:
    """Routes that can never match: an earlier route has the same host and path.

    The spec forbids duplicates within an app, but two apps sharing a listen
    address may both claim ``shop.localhost/``; the first in priority order
    (app name order) wins, and the daemon can warn about the others.
    """
    seen: set[tuple[str, str]] = set()
    shadowed = []
    for route in frontend.routes:
        key = (route.host, route.path)
        if key in seen:
            shadowed.append(route)
        seen.add(key)
    return tuple(shadowed)


def normalize_path(path: str) -> str:
    """A route prefix without trailing '/': ``/api/`` routes like ``/api``; ``/`` stays."""
    return path.rstrip("/") or "/"


def may_scale_to_zero(service: ServiceSpec) -> bool:
    """A routed service with ``autoscale.min: 0``: the activator holds its requests while it has no replica."""
    return bool(service.routes and service.autoscale and service.autoscale.min == 0)


def _backend(*, app: str, service: str, svc: ServiceSpec, servers: Iterable[Server]) -> Backend:
    checked = tuple(sorted((check_server(s) for s in servers), key=lambda s: s.name))
    queue_timeout = svc.queue_timeout if svc.queue_timeout is not None else DEFAULT_QUEUE_TIMEOUT
    return Backend(name=backend_name(app, service), app=app, service=service, servers=checked,
                   max_body=svc.max_body, maxconn=svc.concurrency,
                   queue_timeout=queue_timeout if svc.concurrency else None)


def _route(route: RouteSpec, *, app: str, service: str, backend: str, https_port: int | None) -> GatewayRoute:
    tls = route.tls if https_port is not None else None
    return GatewayRoute(app=app, service=service, host=route.host.lower(),
                        path=normalize_path(route.path), strip_prefix=route.strip_prefix,
                        backend=backend, redirect_port=https_port if tls and tls.redirect else None,
                        hsts=tls.hsts if tls else 0)


def _frontend(bind: tuple[str, int], routes: list[GatewayRoute], *, https_ports: tuple[int, ...]) -> Frontend:
    host, port = bind
    return Frontend(name=frontend_name(host, port), apps=tuple(sorted({r.app for r in routes})),
                    bind_host=host, bind_port=port,
                    routes=tuple(sorted(routes, key=route_priority)), https_ports=https_ports)


# -- render: GatewayConfig -> haproxy.cfg -----------------------------------------------------

def render_config(config: GatewayConfig, *, runtime_socket: str, max_drain_seconds: int = 10,
                  workers: WorkerAccount | None = None, challenge_map: str | None = None,
                  threads: int | None = None) -> str:
    """The complete haproxy.cfg text for ``config``.

    ``max_drain_seconds`` bounds how long an old worker keeps finishing its
    requests after a reload (``hard-stop-after``). ``workers`` is the account
    the workers switch to once the ports are bound (None: they keep HAProxy's
    own user). ``threads`` is the workers' thread count (``gateway_threads``;
    None: HAProxy's own, one per CPU). ``challenge_map`` is the file of ACME
    HTTP-01 answers every frontend serves (challenges.py; None: no answers).
    With no routes at all the result is still a valid configuration: HAProxy
    runs idle, its Runtime API socket open.
    """
    sections = [
        _header(),
        _global(runtime_socket=runtime_socket, max_drain_seconds=max_drain_seconds, workers=workers,
                tls=config.tls is not None, threads=threads),
        _defaults(),
        *(_render_frontend(f, tls=config.tls, challenge_map=challenge_map) for f in config.frontends),
        *(_render_backend(b) for b in config.backends),
    ]
    return _writable("\n".join(sections))


def _writable(text: str) -> str:
    """``text`` if it can be written as UTF-8 and HAProxy reads each line as written; else ValueError.

    The spec refuses what could break this (spec/urls.py); this keeps a value
    that reached the renderer another way from failing later, when the file is
    written (a lone surrogate) or when ``haproxy -c`` stops every app (a NUL).
    """
    bad = _UNWRITABLE.search(text)
    if bad is None:
        return text
    before = text[:bad.start()].split("\n")
    raise ValueError(f"the gateway configuration cannot hold {bad.group()!r} "
                     f"(line {len(before)}, after {before[-1][-60:]!r})")


def _header() -> str:
    return "# Generated by Flotilla: edits are overwritten at the next change of routes.\n"


def gateway_threads(cpus: int) -> int | None:
    """HAProxy's threads on a host of ``cpus`` CPUs: one on two or fewer, else None (HAProxy's one per CPU).

    On two CPUs, shared with the replicas, the daemon and the clients, a
    second thread costs more than it gives: measured with benchmarks/tls.py
    (docs/architecture.md), one thread spends 12% less CPU per new TLS
    connection (OpenSSL 3's locks, contended by two threads) and no more per
    keep-alive request. More CPUs were not measured: HAProxy keeps its default.
    """
    return 1 if cpus <= SINGLE_THREAD_CPUS else None


def _global(*, runtime_socket: str, max_drain_seconds: int, workers: WorkerAccount | None, tls: bool,
            threads: int | None) -> str:
    return _section("global", [
        *(_tls_global() if tls else []),
        "master-worker",
        *([f"# {threads} thread(s): fewer locks contended per TLS handshake on a small host (gateway_threads)",
           f"nbthread {threads}"] if threads else []),
        *_worker_account(workers),
        "# maxconn follows: about half of this, or of the system's hard limit if lower",
        f"fd-hard-limit {FD_HARD_LIMIT}",
        f"stats socket {_word(runtime_socket)} mode 600 level admin expose-fd listeners",
        "# the access log: one JSON line per request on stdout, the daemon's access.log (accesslog.py)",
        f"log stdout len {LINE_LIMIT} format raw local0",
        "# an old worker left after a reload stops once its requests are done, or after this",
        f"hard-stop-after {max(1, int(max_drain_seconds))}s",
    ])


def _worker_account(workers: WorkerAccount | None) -> list[str]:
    if workers is None:
        return []
    return ["# workers switch to this account once the ports are bound; the master stays root for reloads",
            f"user {_word(workers.user)}", f"group {_word(workers.group)}"]


def _defaults() -> str:
    return _section("defaults", [
        "mode http",
        "log global",
        "option dontlognull",
        "# what happened, never what was said: no header value, no query string (accesslog.py)",
        f"log-format {_word(log_format(path_var=PATH_VAR, request_id_var=REQUEST_ID_VAR))}",
        "timeout connect 2s",
        "timeout client 30s",
        "timeout server 30s",
        f"timeout http-request {REQUEST_TIMEOUT}",
        "timeout queue 10s",
        "timeout http-keep-alive 10s",
        "# an upgraded connection (WebSocket) may stay idle this long, both ways",
        f"timeout tunnel {TUNNEL_TIMEOUT}",
        "option http-keep-alive",
        "# a refused connection is tried again on another replica (every retry redispatches)",
        "option redispatch 1",
        "retries 3",
        "retry-on conn-failure empty-response",
        "# leastconn: each request goes to the replica with the fewest in flight",
        "balance leastconn",
        "# dynamic servers ignore default-server; this only makes configured servers start",
        "# like dynamic ones do (no name resolution at startup)",
        "default-server init-addr none",
    ])


def _render_frontend(frontend: Frontend, *, tls: TlsPaths | None, challenge_map: str | None = None) -> str:
    lines = [f"# apps: {', '.join(frontend.apps)}", f"bind {frontend.bind}"]
    lines += _https_binds(frontend, tls)
    lines += _request_headers(https=bool(frontend.https_ports and tls))
    lines += challenge_lines(challenge_map)
    lines += [
        "# the Host header without :port, trailing dot or capitals",
        f"http-request set-var({HOST_VAR}) req.hdr(host),lower,regsub(:[0-9]*$,),regsub([.]$,)",
        f"acl route_found var({ROUTE_VAR}) -m found",
    ]
    ids = [f"r{i}" for i in range(len(frontend.routes))]
    for route_id, route in zip(ids, frontend.routes):
        lines += _route_selection(route_id, route)
    lines.append(_not_found())
    if frontend.https_ports and tls:
        lines += _redirects(ids, frontend.routes) + _hsts(ids, frontend.routes)
    lines += [_strip(route_id, route) for route_id, route in zip(ids, frontend.routes)
              if route.strip_prefix and route.path != "/"]
    lines += _use_backends(ids, frontend.routes)
    return _section(f"frontend {frontend.name}", lines)


def _request_headers(*, https: bool) -> list[str]:
    proto = (["http-request set-header X-Forwarded-Proto https if { ssl_fc }",
              "http-request set-header X-Forwarded-Proto http if !{ ssl_fc }"] if https
             else ["http-request set-header X-Forwarded-Proto http"])
    return [
        f"http-request set-var({PATH_VAR}) path",
        *proto,
        "# the port the client connected to (the listener's), replacing whatever it sent",
        "http-request set-header X-Forwarded-Port %[dst_port]",
        "# the connection's address, replacing whatever the client sent (which anyone can forge)",
        "http-request set-header X-Forwarded-For %[src]",
        "http-request del-header Forwarded",
        "# keep the caller's X-Request-ID, make one when there is none; echo it back",
        "http-request set-header X-Request-ID %[uuid()] unless { req.fhdr(x-request-id) -m len gt 0 }",
        f"http-request set-var({REQUEST_ID_VAR}) req.fhdr(x-request-id)",
        f"http-response set-header X-Request-ID %[var({REQUEST_ID_VAR})]",
        "# after the server took a request, only idempotent ones are sent again",
        f"http-request disable-l7-retry unless {{ method {' '.join(IDEMPOTENT_METHODS)} }}",
    ]


def _tls_global() -> list[str]:
    return [
        "# HTTPS (docs/https.md): TLS 1.2 and 1.3 only; AEAD ciphers with forward secrecy (ECDHE), no CBC,",
        "# no RSA key exchange; the certificates come from RAM and change at run time (set ssl cert)",
        "ssl-default-bind-options ssl-min-ver TLSv1.2",
        "# key exchange on elliptic curves of 128 bits or more; no finite-field groups (ffdhe2048 is 112)",
        f"ssl-default-bind-curves {':'.join(TLS_CURVES)}",
        f"ssl-default-bind-ciphers {':'.join(TLS12_CIPHERS)}",
        f"ssl-default-bind-ciphersuites {':'.join(TLS13_CIPHERSUITES)}",
    ]


def _https_binds(frontend: Frontend, tls: TlsPaths | None) -> list[str]:
    if not frontend.https_ports or tls is None:
        return []
    host = f"[{frontend.bind_host}]" if ":" in frontend.bind_host else frontend.bind_host
    certs = f"ssl crt {_word(tls.default_cert)} crt-list {_word(tls.crt_list)} alpn h2,http/1.1"
    return [f"bind {host}:{port} {certs}" for port in frontend.https_ports]


def _redirects(ids: Sequence[str], routes: Sequence[GatewayRoute]) -> list[str]:
    """Plain HTTP of a TLS route gets 308 to its HTTPS port; an ACME HTTP-01 challenge never does."""
    by_port: dict[int, list[str]] = defaultdict(list)
    for route_id, route in zip(ids, routes):
        if route.redirect_port is not None:
            by_port[route.redirect_port].append(route_id)
    if not by_port:
        return []
    lines = ["# HTTP -> HTTPS for TLS routes (308 keeps the method and body); never an ACME challenge",
             f"acl {ACME_CHALLENGE_ACL} path_beg {ACME_CHALLENGE_PREFIX}"]
    for port, route_ids in sorted(by_port.items()):
        where = f"https://%[var({HOST_VAR})]" + ("" if port == 443 else f":{port}") + "%[pathq]"
        lines.append(f"http-request redirect location {_word(where)} code 308 "
                     f"if !{{ ssl_fc }} !{ACME_CHALLENGE_ACL} {{ var({ROUTE_VAR}) -m str {' '.join(route_ids)} }}")
    return lines


def _hsts(ids: Sequence[str], routes: Sequence[GatewayRoute]) -> list[str]:
    by_age: dict[int, list[str]] = defaultdict(list)
    for route_id, route in zip(ids, routes):
        if route.hsts:
            by_age[route.hsts].append(route_id)
    return [f'http-response set-header Strict-Transport-Security "max-age={age}" '
            f"if {{ ssl_fc }} {{ var({ROUTE_VAR}) -m str {' '.join(route_ids)} }}"
            for age, route_ids in sorted(by_age.items())]


def _route_selection(route_id: str, route: GatewayRoute) -> list[str]:
    strip = f" (strip {route.path})" if route.strip_prefix and route.path != "/" else ""
    lines = [f"# {route_id}: {route.host}{route.path} -> {route.backend}{strip}",
             f"acl {route_id}_host {_host_match(route.host)}"]
    conditions = ["!route_found", f"{route_id}_host"]
    if route.path != "/":
        lines += [f"acl {route_id}_path path -m str {_word(route.path)}",
                  f"acl {route_id}_path path -m beg {_word(route.path + '/')}"]
        conditions.append(f"{route_id}_path")
    lines.append(f"http-request set-var({ROUTE_VAR}) str({route_id}) if {' '.join(conditions)}")
    return lines


def _host_match(host: str) -> str:
    if host.startswith("*."):
        return f"var({HOST_VAR}) -m reg {_word('^[^.]+' + _regex_escape(host[1:]) + '$')}"
    return f"var({HOST_VAR}) -m str {_word(host)}"


def _not_found() -> str:
    return ("http-request return status 404 content-type text/plain "
            f'lf-string "no route for %[var({HOST_VAR})]%[path]\\n" '
            f"hdr X-Request-ID %[var({REQUEST_ID_VAR})] unless route_found")


def _strip(route_id: str, route: GatewayRoute) -> str:
    # replace-path works on the path alone: the query string is kept as it was.
    pattern = _word("^" + _regex_escape(route.path) + "/?(.*)")
    return f"http-request replace-path {pattern} '/\\1' if {{ var({ROUTE_VAR}) -m str {route_id} }}"


def _use_backends(ids: Sequence[str], routes: Sequence[GatewayRoute]) -> list[str]:
    by_backend: dict[str, list[str]] = defaultdict(list)
    for route_id, route in zip(ids, routes):
        by_backend[route.backend].append(route_id)
    return [f"use_backend {backend} if {{ var({ROUTE_VAR}) -m str {' '.join(route_ids)} }}"
            for backend, route_ids in sorted(by_backend.items())]


def _render_backend(backend: Backend) -> str:
    if len(backend.servers) > SLOTS_PER_BACKEND:
        raise ValueError(f"{backend.name}: {len(backend.servers)} servers, more than {SLOTS_PER_BACKEND} slots")
    lines = [
        f"# app {backend.app}, service {backend.service}",
        *_body_limit(backend),
        "# names the backend for Flotilla's activator, which holds requests while a service scales from zero",
        f"http-request set-header X-Flotilla-Backend {backend.name}",
        *_queue_lines(backend),
        f"# {SLOTS_PER_BACKEND} slots; replicas take a free one at run time (set server ... addr)",
    ]
    limit = _maxconn(backend)
    lines += [_server_line(slot_name(i), s, limit=limit) for i, s in enumerate(backend.servers, start=1)]
    lines += [_free_slot_line(slot_name(i)) + limit
              for i in range(len(backend.servers) + 1, SLOTS_PER_BACKEND + 1)]
    lines += _activator_lines(backend)
    return _section(f"backend {backend.name}", lines)


def _queue_lines(backend: Backend) -> list[str]:
    """With a concurrency limit: how long a request waits in the queue, and its 503 when that runs out.

    ``http-error`` replaces only answers HAProxy makes itself (a queue timeout, no replica at all),
    never a replica's own 503. The count is the backend's ``econ`` (HAProxy counts a request that
    left its queue unserved as a failed connection; gateway/metrics.py reads it)."""
    if backend.maxconn is None or backend.queue_timeout is None:
        return []
    timeout = _milliseconds(backend.queue_timeout)
    message = f"no replica of {backend.service} was free within {timeout}ms; retry after {RETRY_AFTER}s"
    return [f"# concurrency {backend.maxconn} per replica: requests over it wait here, in the order they came",
            f"timeout queue {timeout}ms",
            f'http-error status 503 content-type text/plain string "{message}\\n" hdr Retry-After {RETRY_AFTER}']


def _maxconn(backend: Backend) -> str:
    return f" maxconn {backend.maxconn}" if backend.maxconn else ""


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _activator_lines(backend: Backend) -> list[str]:
    """The activator as one more server, on its UNIX socket: enabled (``set server ... state``) only
    while the service is held at zero. A socket path, never an address another local user could bind."""
    if backend.activator is None:
        return []
    line = f"server {ACTIVATOR_SERVER} {_word('unix@' + backend.activator)} maxconn {ACTIVATOR_MAXCONN}"
    return ["# scale from zero: holds requests while the first replica starts (enabled at run time)",
            line if backend.held else line + " disabled"]


def _body_limit(backend: Backend) -> list[str]:
    """Bodies over max_body are refused (413) from their Content-Length at once, else counted once
    buffered; one too long to count is refused too (411). No replica waits for a slow body (408)."""
    limit, over = backend.max_body, f"{{ req.body_size gt {backend.max_body} }}"
    refuse = _refusal(413, f"request body over {format_memory(limit)} (max_body of {backend.service})", over)
    lines = [f"# max_body {format_memory(limit)}: said by Content-Length, refused before the body is read",
             refuse,
             "# the body (as much as a buffer holds) before a replica is chosen: 408 if it is slow",
             f"http-request wait-for-body time {REQUEST_TIMEOUT}",
             "# counted, for a body without Content-Length (chunked)",
             refuse]
    if limit >= COUNTED_BODY:
        lines += ["# a chunked body is counted only within one buffer: a longer one must say its length",
                  _refusal(411, f"a request body over {format_memory(COUNTED_BODY)} needs a Content-Length",
                           f"!{{ req.hdr(content-length) -m found }} {{ req.body_len ge {COUNTED_BODY} }}")]
    return lines


def _refusal(status: int, message: str, condition: str) -> str:
    return (f'http-request deny status {status} content-type text/plain string "{message}\\n" '
            f"hdr X-Request-ID %[var({REQUEST_ID_VAR})] if {condition}")


def slot_name(number: int) -> str:
    return f"slot{number}"


def _server_line(slot: str, server: Server, *, limit: str = "") -> str:
    line = f"server {slot} {server_address(server.address, server.port)}{limit}"
    line += f" # {server.name}"
    return line if server.enabled else line.replace(" #", " disabled #", 1)


def _free_slot_line(slot: str) -> str:
    return f"server {slot} {FREE_ADDRESS}:{FREE_PORT} disabled"


def _section(title: str, lines: Iterable[str]) -> str:
    return "\n".join([title, *(_INDENT + line for line in lines)]) + "\n"


def _word(text: str) -> str:
    """``text`` as one configuration word: bare when safe, else strongly quoted."""
    if _PLAIN_WORD.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def _regex_escape(text: str) -> str:
    """A PCRE pattern matching ``text`` literally (only metacharacters escaped)."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)
