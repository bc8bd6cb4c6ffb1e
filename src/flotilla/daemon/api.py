"""The daemon's HTTP API, served on a UNIX socket only its owner can open.

Thin glue: each route parses its request, calls an operation or a status
function, and answers JSON. Flotilla errors become JSON bodies with the
error's code and message (and, for a bad spec, every problem), so the CLI
shows the same sentence the daemon wrote.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import queue
import re
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from flotilla import __version__
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.operations import Operations
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.status import StatusViews
from flotilla.daemon.store import Store
from flotilla.errors import (
    BadRequestError,
    ConflictError,
    EngineUnavailableError,
    FlotillaError,
    NotFoundError,
    SpecError,
)

log = logging.getLogger(__name__)
HTTP_STATUS = {
    SpecError: 400,
    BadRequestError: 400,
    ConflictError: 409,
    NotFoundError: 404,
    EngineUnavailableError: 503,
}
Route = tuple[str, re.Pattern, Callable]


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, params: dict) -> None:
        self.handler = handler
        self.params = params
        self.query = {k: v[-1] for k, v in parse_qs(urlsplit(handler.path).query).items()}

    def json(self) -> dict:
        declared = self.handler.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            raise BadRequestError(f"Content-Length {declared!r} is not a number of bytes")
        length = int(declared)
        raw = self.handler.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequestError("request body must be a JSON object")
        return body

    def flag(self, name: str) -> bool:
        return self.query.get(name, "") in ("1", "true", "yes")

    def number(self, name: str, *, default: int) -> int:
        """A whole-number query parameter (``?since=12``); BadRequestError when it is not one."""
        raw = self.query.get(name, "") or str(default)
        if not raw.isdigit():
            raise BadRequestError(f"?{name}={raw!r}: write a whole number, for example ?{name}={default}")
        return int(raw)


class Api:
    """Routes requests to the daemon's parts; one instance per daemon."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        operations: Operations,
        status: StatusViews,
        history: Store,
        engine: ReplicaEngine,
    ) -> None:
        self._apps = apps
        self._operations = operations
        self._status = status
        self._history = history
        self._engine = engine
        self.routes: list[Route] = [
            ("GET", re.compile(r"/v1/health"), self.health),
            ("GET", re.compile(r"/v1/apps"), self.list_apps),
            ("POST", re.compile(r"/v1/apps"), self.submit),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)"), self.app_status),
            ("DELETE", re.compile(r"/v1/apps/(?P<app>[^/]+)"), self.remove),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/scale"), self.scale),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/events"), self.events),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/logs"), self.logs),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/routes"), self.routes),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/metrics"), self.metrics),
            ("GET", re.compile(r"/metrics"), self.prometheus),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets"), self.list_secrets),
            ("PUT", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.set_secret),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.reveal_secret),
            ("DELETE", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.remove_secret),
            ("POST", re.compile(r"/v1/secrets/rekey"), self.rekey),
            (
                "GET",
                re.compile(r"/v1/apps/(?P<app>[^/]+)/services/(?P<service>[^/]+)/endpoints"),
                self.endpoints,
            ),
        ]

    def dispatch(self, method: str, path: str) -> tuple[Callable | None, dict, bool]:
        """The handler for ``method path``, its URL parameters, and whether the path exists."""
        known = False
        for verb, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                known = True
                if verb == method:
                    return handler, match.groupdict(), True
        return None, {}, known

    # -- handlers: each returns (status, body) or streams itself and returns None

    def health(self, req: Request):
        return 200, {"ok": True, "version": __version__}

    def list_apps(self, req: Request):
        apps = []
        for stored in self._apps.stored():
            apps.append({"app": stored.name, "status": stored.status, "updated": stored.updated})
        return 200, {"apps": apps}

    def submit(self, req: Request):
        body = req.json()
        result = self._operations.submit(body.get("spec") or {}, dry_run=req.flag("dry_run"))
        return 200, result

    def app_status(self, req: Request):
        return 200, self._status.app_status(req.params["app"])

    def remove(self, req: Request):
        return 200, self._operations.remove(req.params["app"])

    def scale(self, req: Request):
        counts = req.json().get("replicas") or {}
        return 200, self._operations.scale(req.params["app"], counts)

    def events(self, req: Request):
        since = req.number("since", default=0)
        limit = min(req.number("limit", default=1000), 10_000)
        events = self._history.events(req.params["app"], since=since, limit=limit)
        return 200, {"events": [e.to_dict() for e in events]}

    def endpoints(self, req: Request):
        found = self._status.endpoints(req.params["app"], req.params["service"])
        return 200, {"endpoints": found}

    def routes(self, req: Request):
        return 200, {"routes": self._status.routes(req.params["app"])}

    def metrics(self, req: Request):
        return 200, {"services": self._status.metrics(req.params["app"])}

    def prometheus(self, req: Request):
        text = self._status.prometheus()
        req.handler.send_text(200, text, content_type="text/plain; version=0.0.4; charset=utf-8")

    def list_secrets(self, req: Request):
        infos = self._operations.vault.list(req.params["app"])
        return 200, {"secrets": [_secret_info(i) for i in infos]}

    def set_secret(self, req: Request):
        value = _decode_value(req.json().get("value_b64"))
        return 200, self._operations.set_secret(req.params["app"], req.params["name"], value)

    def reveal_secret(self, req: Request):
        if not req.flag("reveal"):
            raise BadRequestError("secret values are only sent with ?reveal=1 (`flotilla secrets get --reveal`)")
        value = self._operations.vault.get(req.params["app"], req.params["name"])
        return 200, {"name": req.params["name"], "value_b64": base64.b64encode(value).decode()}

    def remove_secret(self, req: Request):
        return 200, self._operations.remove_secret(req.params["app"], req.params["name"])

    def rekey(self, req: Request):
        return 200, self._operations.rekey()

    def logs(self, req: Request):
        spec = self._status.runtime_spec(req.params["app"])
        service = req.query.get("service")
        if service and service not in spec.services:
            raise NotFoundError(f"app {spec.app} has no service {service!r}; it has: {', '.join(spec.services)}")
        observed = self._engine.observe(spec.app)
        replicas = [r for r in observed.replicas if not service or r.service == service]
        stream_logs(
            req.handler,
            self._engine,
            replicas,
            follow=req.flag("follow"),
            tail=req.query.get("tail", "all"),
        )


def _secret_info(info) -> dict:
    return {"name": info.name, "version": info.version, "created": info.created, "versions": info.versions}


def _decode_value(encoded) -> bytes:
    try:
        return base64.b64decode(encoded or "", validate=True)
    except (ValueError, TypeError) as exc:
        raise BadRequestError("value_b64 must be the secret's value in base64") from exc


def stream_logs(handler: BaseHTTPRequestHandler, engine, replicas, *, follow: bool, tail: str) -> None:
    """Write ``replica | line`` for every replica, merged as lines arrive."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.end_headers()
    width = max((len(r.replica) for r in replicas), default=0)
    lines: queue.Queue = queue.Queue(maxsize=10_000)
    done = threading.Event()
    readers = [
        threading.Thread(
            target=_read_logs, args=(engine, r, lines, done, follow, tail, width), daemon=True
        )
        for r in replicas
    ]
    for reader in readers:
        reader.start()
    try:
        while any(t.is_alive() for t in readers) or not lines.empty():
            try:
                handler.wfile.write(lines.get(timeout=0.2))
                handler.wfile.flush()
            except queue.Empty:
                continue
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        done.set()


def _read_logs(engine, replica, lines: queue.Queue, done: threading.Event, follow, tail, width) -> None:
    prefix = f"{replica.replica:<{width}} | ".encode()
    pending = b""
    try:
        for chunk in engine.logs(replica.container_id, follow=follow, tail=tail):
            if done.is_set():
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                lines.put(prefix + line + b"\n")
    except FlotillaError:
        return
    if pending:
        lines.put(prefix + pending + b"\n")


class ApiHandler(BaseHTTPRequestHandler):
    server_version = f"flotilla/{__version__}"
    api: Api  # set on the subclass the server makes
    token: str | None = None  # the TCP listener's bearer token; None on the UNIX socket

    def address_string(self) -> str:  # UNIX sockets have no peer address
        return "local"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("api: " + format, *args)

    def do_GET(self) -> None:  # stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _authorized(self) -> bool:
        if self.token is None:
            return True  # the UNIX socket: its 0600 mode is the access control
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _handle(self, method: str) -> None:
        if not self._authorized():
            self._send(401, {"error": "unauthorized", "message": "send Authorization: Bearer <token>; "
                             "the token is in $FLOTILLA_HOME/api.token"})
            return
        path = urlsplit(self.path).path.rstrip("/") or "/"
        handler, params, known = self.api.dispatch(method, path)
        if handler is None:
            code = 405 if known else 404
            self._send(code, {"error": "not_found", "message": f"{method} {path} is not part of the API"})
            return
        try:
            result = handler(Request(self, params))
        except FlotillaError as exc:
            self._send(_status_of(exc), exc.to_dict())
            return
        except Exception as exc:  # answer, log, and keep serving
            log.exception("API %s %s failed", method, path)
            self._send(500, {"error": "internal", "message": f"internal error: {exc!r}"})
            return
        if result is not None:
            self._send(*result)

    def _send(self, code: int, body: dict) -> None:
        self.send_text(code, json.dumps(body), content_type="application/json")

    def send_text(self, code: int, text: str, *, content_type: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _status_of(exc: FlotillaError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


class UnixApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, api: Api) -> None:
        handler = type("BoundApiHandler", (ApiHandler,), {"api": api})
        super().__init__(path, handler)


class TcpApiServer(ThreadingHTTPServer):
    """The optional TCP listener: every request needs the bearer token."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: Api, *, token: str) -> None:
        handler = type("TokenApiHandler", (ApiHandler,), {"api": api, "token": token})
        super().__init__(address, handler)
