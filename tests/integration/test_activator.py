"""The activator holds a request until a replica is ready, then relays it both ways, unchanged.

A real activator (its uvicorn server on loopback) and a replica that is a
small http.server on loopback; the autoscaler and the readiness lookup are
stand-ins, so the test decides when the replica "becomes ready".
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flotilla.daemon.activator import Activator


class Echo(BaseHTTPRequestHandler):
    """Answers what it received, with two cookies (a header that must not be merged)."""

    def do_POST(self) -> None:  # stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = {"method": self.command, "path": self.path, "body": body.decode(),
                "backend": self.headers.get("X-Flotilla-Backend"), "token": self.headers.get("X-Token")}
        data = json.dumps(seen).encode()
        self.send_response(201)
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def replica():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


class Scaler:
    """Wakes record (app, service); the replica is ready ``delay`` seconds after the first wake."""

    def __init__(self, address, *, delay: float) -> None:
        self.address = address
        self.delay = delay
        self.woken: list[tuple[str, str]] = []
        self.at: float | None = None

    def wake(self, app: str, service: str) -> None:
        self.woken.append((app, service))
        self.at = self.at or time.monotonic() + self.delay

    def ready(self, app: str, service: str):
        return self.address if self.at is not None and time.monotonic() >= self.at else None


@pytest.fixture
def activator_for():
    made: list[Activator] = []

    def make(scaler: Scaler, **kwargs) -> Activator:
        activator = Activator(wake=scaler.wake, ready_replica=scaler.ready, **kwargs)
        activator.start()
        made.append(activator)
        return activator

    yield make
    for activator in made:
        activator.stop()


def post(port: int, headers: dict[str, str], body: bytes = b"hello"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/orders?id=7", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def test_a_held_request_reaches_the_new_replica_and_its_answer_comes_back(replica, activator_for):
    scaler = Scaler(replica, delay=0.3)
    activator = activator_for(scaler)
    started = time.monotonic()
    status, headers, body = post(activator.port, {"X-Flotilla-Backend": "be_shop_web", "X-Token": "t"})
    assert time.monotonic() - started >= 0.3, "answered before the replica was ready"
    assert scaler.woken == [("shop", "web")]
    assert status == 201
    assert json.loads(body) == {"method": "POST", "path": "/orders?id=7", "body": "hello", "backend": None,
                                "token": "t"}
    assert [v for k, v in headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]


def test_without_a_ready_replica_in_time_the_answer_is_503(replica, activator_for):
    activator = activator_for(Scaler(replica, delay=60), hold_timeout=0.2)
    status, _, body = post(activator.port, {"X-Flotilla-Backend": "be_shop_web"})
    assert status == 503 and body == b"no replica became ready in time; try again\n"


def test_a_request_that_names_no_backend_wakes_nothing(replica, activator_for):
    scaler = Scaler(replica, delay=0)
    activator = activator_for(scaler)
    assert post(activator.port, {})[0] == 503
    assert post(activator.port, {"X-Flotilla-Backend": "not-a-backend"})[0] == 503
    assert scaler.woken == []
