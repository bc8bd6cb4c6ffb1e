"""Plumbing shared by the shop demo's three services, standard library only.

Each service (web, catalog, cart) is a small ThreadingHTTPServer; what they
all need the same way lives here, so that each app.py holds only its own
routes: JSON responses, one access-log line per request, /healthz and
/whoami, calls to other services with short timeouts, and a prompt, clean
stop on SIGTERM (Flotilla and Docker stop replicas that way).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY_BYTES = 64 * 1024
UPSTREAM_TIMEOUT = float(os.environ.get("UPSTREAM_TIMEOUT", "2"))
QUIET_LEVELS = {"warning", "error", "critical"}

# Calls between services never go through a proxy, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def service_name(default: str) -> str:
    """The service's name in the app's spec when Flotilla says it, else the image's own."""
    return os.environ.get("FLOTILLA_SERVICE") or default


def identity(service: str) -> dict:
    """Who is answering: the service, the replica Flotilla named, the container."""
    return {
        "service": service_name(service),
        "replica": os.environ.get("FLOTILLA_REPLICA", ""),
        "hostname": socket.gethostname(),
    }


def log(service: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    replica = os.environ.get("FLOTILLA_REPLICA", "-")
    print(f"{stamp} {service_name(service)}[{replica}] {message}", flush=True)


class HttpError(Exception):
    """A request this service refuses: becomes a JSON error with `status`."""

    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"error": message, **extra}


class UpstreamError(HttpError):
    """Another service failed or did not answer in time: a 502 naming it."""

    def __init__(self, upstream: str, detail: str, cause=None) -> None:
        extra = {} if cause is None else {"cause": cause}
        super().__init__(502, f"upstream {upstream} failed", upstream=upstream, detail=detail, **extra)


def upstream_url(env_name: str, default: str) -> str:
    return os.environ.get(env_name, default).rstrip("/")


def call_upstream(name: str, url: str, *, method: str = "GET", payload=None) -> tuple[int, dict]:
    """Call another service's JSON API: (status, body) for 2xx and 4xx answers.

    Anything else (refused, timed out, 5xx, not JSON) raises UpstreamError,
    which the handler turns into a 502 that names `name`.
    """
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=UPSTREAM_TIMEOUT) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        if status >= 500:
            raise UpstreamError(name, f"{method} {url} answered {status}", _json_or_none(raw)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpstreamError(name, f"{method} {url}: {reason}") from exc
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise UpstreamError(name, f"{method} {url} answered non-JSON") from exc


def _json_or_none(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


class ServiceHandler(BaseHTTPRequestHandler):
    """Routes requests to methods; subclasses set `service` and `routes`.

    `routes` is a list of (HTTP method, path regex, method name); the method is
    called with the regex match and returns nothing (it sends the response).
    """

    service = "service"
    routes: list[tuple[str, str, str]] = []
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # holds the body back until the peer's delayed ACK, 40 ms per response.
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections give their thread back
    _compiled: dict[type, list] = {}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routing ------------------------------------------------------------

    def _table(self) -> list:
        cls = type(self)
        if cls not in self._compiled:
            builtin = [
                ("GET", r"/healthz", "healthz"),
                ("GET", r"/whoami", "whoami"),
                ("GET", r"/debug/request(/.*)?", "echo_request"),
                ("POST", r"/debug/request(/.*)?", "echo_request"),
                ("GET", r"/debug/work", "work"),
            ]
            self._compiled[cls] = [(m, re.compile(p), f) for m, p, f in builtin + cls.routes]
        return self._compiled[cls]

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        self.status_sent = 0
        parts = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            self.body = self._read_body()
            handler, match = self._route(method, parts.path)
            handler(match)
        except HttpError as exc:
            self.send_json(exc.status, exc.payload)
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500, keep serving, say why in the log
            log(self.service, f"error: {method} {parts.path}: {exc!r}")
            self.send_json(500, {"error": "internal error"})
        took = (time.monotonic() - started) * 1000
        if os.environ.get("LOG_LEVEL", "info").lower() not in QUIET_LEVELS:
            log(self.service, f'{self.client_address[0]} "{method} {self.path}" {self.status_sent} {took:.1f}ms')

    def _route(self, method: str, path: str):
        allowed = False
        for route_method, pattern, name in self._table():
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return getattr(self, name), match
            allowed = allowed or bool(match)
        if allowed:
            raise HttpError(405, f"method {method} not allowed on {path}")
        raise HttpError(404, f"no route for {path}")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would poison the connection
            raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length > 0 else b""

    # -- helpers for handlers -----------------------------------------------

    def json_body(self) -> dict:
        try:
            value = json.loads(self.body or b"null")
        except ValueError as exc:
            raise HttpError(400, "body is not valid JSON") from exc
        if not isinstance(value, dict):
            raise HttpError(400, "body must be a JSON object")
        return value

    def send_json(self, status: int, payload, headers: dict | None = None) -> None:
        self.send_body(status, json.dumps(payload, indent=1).encode() + b"\n", "application/json", headers)

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.status_sent = status
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", f"{service_name(self.service)}/{os.environ.get('FLOTILLA_REPLICA', '')}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def healthz(self, match) -> None:
        self.send_body(200, b"ok", "text/plain; charset=utf-8")

    def whoami(self, match) -> None:
        self.send_json(200, identity(self.service))

    def echo_request(self, match) -> None:
        """What reached this replica: for checking what a gateway adds or rewrites."""
        self.send_json(200, {
            **identity(self.service),
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body_bytes": len(self.body),
        })

    def work(self, match) -> None:
        """Busy for ?ms= milliseconds (default 50), at most $MAX_CONCURRENCY at once.

        A stand-in for real work with a fixed capacity per replica: requests
        beyond the limit wait their turn, so latency grows with load until
        more replicas share it.
        """
        millis = min(float(self.query.get("ms", "50")), 10_000)
        with WORK_SLOTS:
            time.sleep(millis / 1000)
        self.send_json(200, {**identity(self.service), "ms": millis})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        # Only protocol errors reach here (access lines are written by _dispatch).
        log(self.service, "http: " + format % args)


class ServiceServer(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs under a burst of new connections,
    # which clients see as 1 s (SYN retry) stalls.
    request_queue_size = 128


WORK_SLOTS = threading.BoundedSemaphore(int(os.environ.get("MAX_CONCURRENCY", "1000")))


def serve(handler: type[ServiceHandler]) -> None:
    """Serve on $PORT (default 8000) until SIGTERM or SIGINT, then stop at once."""
    port = int(os.environ.get("PORT", "8000"))
    server = ServiceServer(("", port), handler)
    server.daemon_threads = True  # in-flight requests never hold up the exit

    def stop(signum, frame) -> None:
        log(handler.service, f"got {signal.Signals(signum).name}, stopping")
        # shutdown() waits for serve_forever, which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(handler.service, f"listening on :{port}")
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    log(handler.service, "stopped")
    sys.exit(0)
