"""Scale from zero: hold a request at the gateway while the first replica starts.

A service with ``autoscale.min: 0`` and no replica serving has one server in
its gateway backend: this activator, on loopback. It receives the request
(HAProxy names the backend in ``X-Flotilla-Backend``), asks the autoscaler
for a replica, waits until one is healthy (bounded), then forwards the
request to it and relays the answer. The client sees a slower first
response, never a refusal. As soon as a replica serves, the gateway sends
traffic straight to it and the activator is out of the path.

It is an ASGI app on a uvicorn server of its own (daemon/serving.py: the same
connection, head and time limits as the API), in a thread of its own, on a
port bound when it is made, so the gateway's configuration can name it before
the server starts. A held request waits in one of at most ``HOLDS`` threads
(the wait and the relay block); the request's body is read first, at most
``MAX_BODY``.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable

import anyio
from starlette.responses import Response

from flotilla.daemon.serving import MIB, BodyRefused, ClientGone, HttpServer, Limits, read_body
from flotilla.gateway.model import parse_backend_name

log = logging.getLogger(__name__)
HOLD_TIMEOUT = 30.0
BACKEND_HEADER = "x-flotilla-backend"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}
HOLDS = 64  # requests held (or relayed) at once; more wait for one of them to finish
MAX_BODY = 16 * MIB  # a held request's body is kept in memory until a replica takes it
BODY_TIMEOUT = 30.0


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
        self._holds = anyio.CapacityLimiter(HOLDS)
        listener = socket.create_server(("127.0.0.1", 0), backlog=Limits().backlog)
        self._server = HttpServer(self, sockets=[listener], limits=Limits())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def start(self) -> None:
        self._thread = self._server.start_thread("activator")

    def stop(self) -> None:
        self._server.stop()
        if self._thread:
            self._thread.join(timeout=2)

    def replica_for(self, backend: str) -> tuple[str, int] | None:
        """Wake the service behind ``backend`` and wait for a healthy replica."""
        parsed = parse_backend_name(backend)
        if parsed is None:  # no backend of Flotilla's: nothing to wake
            return None
        app, service = parsed
        self._wake(app, service)
        deadline = time.monotonic() + self._hold_timeout
        while time.monotonic() < deadline:
            found = self._ready_replica(app, service)
            if found:
                return found
            time.sleep(0.02)
        return None

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            response = await self._forward(scope, receive)
            await response(scope, receive, send)

    async def _forward(self, scope: dict, receive) -> Response:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body = await read_body(headers, receive, limit=MAX_BODY, timeout=BODY_TIMEOUT)
        except BodyRefused as refused:
            return _answer(refused.status, f"{refused.message}\n".encode())
        except ClientGone:
            return _answer(400, b"the client left before its request body arrived\n")
        forward = {k: v for k, v in headers.items() if k not in HOP_BY_HOP and k != BACKEND_HEADER}
        return await anyio.to_thread.run_sync(
            self._hold_and_relay, headers.get(BACKEND_HEADER, ""), scope["method"], _target_of(scope), forward,
            body, limiter=self._holds,
        )

    def _hold_and_relay(self, backend: str, method: str, target: str, headers: dict, body: bytes) -> Response:
        replica = self.replica_for(backend)
        if replica is None:
            return _answer(503, b"no replica became ready in time; try again\n")
        try:
            status, relayed, payload = _relay(replica, method, target, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            return _answer(502, f"the new replica did not answer: {exc}\n".encode())
        response = Response(payload, status_code=status)  # its own content-length
        response.raw_headers += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                 for name, value in relayed
                                 if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"]
        return response


def _target_of(scope: dict) -> str:
    """The request target as the client sent it: the raw path and the query."""
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope["query_string"].decode("latin-1")
    return f"{path}?{query}" if query else path


def _answer(status: int, text: bytes) -> Response:
    return Response(text, status_code=status, media_type="text/plain")


def _relay(target: tuple[str, int], method: str, path: str, headers: dict, body: bytes):
    conn = http.client.HTTPConnection(*target, timeout=HOLD_TIMEOUT)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()
