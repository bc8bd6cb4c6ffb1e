"""Scale from zero: hold a request at the gateway while the first replica starts.

A service with ``autoscale.min: 0`` and no replica serving has one server in
its gateway backend: this activator, on loopback. It receives the request
(HAProxy names the backend in ``X-Flotilla-Backend``), asks the autoscaler
for a replica, waits until one is healthy (bounded), then forwards the
request to it and relays the answer. The client sees a slower first
response, never a refusal. As soon as a replica serves, the gateway sends
traffic straight to it and the activator is out of the path.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flotilla.gateway.model import parse_backend_name

log = logging.getLogger(__name__)
HOLD_TIMEOUT = 30.0
BACKEND_HEADER = "X-Flotilla-Backend"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}


class Activator:
    def __init__(
        self,
        *,
        wake: Callable[[str, str], None],
        ready_replica: Callable[[str, str], tuple[str, int] | None],
        hold_timeout: float = HOLD_TIMEOUT,
    ) -> None:
        self._wake = wake
        self._ready_replica = ready_replica
        self._hold_timeout = hold_timeout
        handler = type("BoundActivatorHandler", (_Handler,), {"activator": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="activator", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    def replica_for(self, backend: str) -> tuple[str, int] | None:
        """Wake the service behind ``backend`` and wait for a healthy replica."""
        try:
            app, service = parse_backend_name(backend)
        except ValueError:
            return None
        self._wake(app, service)
        deadline = time.monotonic() + self._hold_timeout
        while time.monotonic() < deadline:
            found = self._ready_replica(app, service)
            if found:
                return found
            time.sleep(0.02)
        return None


class _Handler(BaseHTTPRequestHandler):
    activator: Activator
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # stdlib naming
        self._forward()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("activator: " + format, *args)

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.activator.replica_for(self.headers.get(BACKEND_HEADER, ""))
        if target is None:
            self._answer(503, b"no replica became ready in time; try again\n")
            return
        try:
            status, headers, payload = _relay(target, self.command, self.path, self._headers(), body)
        except OSError as exc:
            self._answer(502, f"the new replica did not answer: {exc}\n".encode())
            return
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k != BACKEND_HEADER}

    def _answer(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


def _relay(target: tuple[str, int], method: str, path: str, headers: dict, body: bytes):
    conn = http.client.HTTPConnection(*target, timeout=HOLD_TIMEOUT)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()
