"""The activator holds a request until a replica is ready, then relays it both ways, unchanged.

A real activator (its uvicorn server on its UNIX socket) and a replica that is
a small http.server on loopback; the autoscaler, the readiness lookup and
which services are held are stand-ins, so the test decides when the replica
"becomes ready". Through the real gateway and daemon: test_activator_gateway.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flotilla.daemon.activator import Activator, GatewayAccess


class Echo(BaseHTTPRequestHandler):
    """Answers what it received, with two cookies (a header that must not be merged)."""

    def do_POST(self) -> None:  # stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = {"method": self.command, "path": self.path, "body": body.decode(),
                "backend": self.headers.get("X-Flotilla-Backend"), "token": self.headers.get("X-Token"),
                "cookies": self.headers.get_all("Cookie")}
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
def activator_for(tmp_path):
    made: list[Activator] = []

    def make(scaler: Scaler, *, held=lambda app, service: True, **kwargs) -> Activator:
        path = tmp_path / "run" / f"a{len(made)}" / "activator.sock"
        activator = Activator(path=path, access=GatewayAccess(group=None, peers=None), wake=scaler.wake,
                              ready_replica=scaler.ready, held=held, **kwargs)
        activator.start()
        made.append(activator)
        return activator

    yield make
    for activator in made:
        activator.stop()


class UnixConnection(http.client.HTTPConnection):
    """http.client over the activator's UNIX socket."""

    def __init__(self, path, timeout: float = 10) -> None:
        super().__init__("activator", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def post(activator: Activator, headers: dict[str, str], body: bytes = b"hello"):
    conn = UnixConnection(activator.path)
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
    status, headers, body = post(activator, {"X-Flotilla-Backend": "be_shop_web", "X-Token": "t"})
    assert time.monotonic() - started >= 0.3, "answered before the replica was ready"
    assert scaler.woken == [("shop", "web")]
    assert status == 201
    assert json.loads(body) == {"method": "POST", "path": "/orders?id=7", "body": "hello", "backend": None,
                                "token": "t", "cookies": None}
    assert [v for k, v in headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]


def test_without_a_ready_replica_in_time_the_answer_is_503(replica, activator_for):
    activator = activator_for(Scaler(replica, delay=60), hold_timeout=0.2)
    status, _, body = post(activator, {"X-Flotilla-Backend": "be_shop_web"})
    assert status == 503 and body == b"no replica became ready in time; try again\n"


def test_a_request_that_names_no_backend_wakes_nothing(replica, activator_for):
    scaler = Scaler(replica, delay=0)
    activator = activator_for(scaler)
    assert post(activator, {})[0] == 503
    assert post(activator, {"X-Flotilla-Backend": "not-a-backend"})[0] == 503
    assert scaler.woken == []


def test_a_service_that_is_not_held_gets_503_and_wakes_nothing(replica, activator_for):
    scaler = Scaler(replica, delay=0)
    activator = activator_for(scaler, held=lambda app, service: (app, service) == ("shop", "web"))
    status, _, body = post(activator, {"X-Flotilla-Backend": "be_shop_catalog"})
    assert status == 503 and b"shop/catalog is not held for scale from zero" in body
    assert scaler.woken == []


def test_every_header_reaches_the_replica_once_and_in_order(replica, activator_for):
    activator = activator_for(Scaler(replica, delay=0))
    conn = UnixConnection(activator.path)
    conn.putrequest("POST", "/orders", skip_accept_encoding=True)
    for name, value in [("X-Flotilla-Backend", "be_shop_web"), ("Cookie", "a=1"), ("Cookie", "b=2"),
                        ("Content-Length", "5")]:
        conn.putheader(name, value)
    conn.endheaders(b"hello")
    seen = json.loads(conn.getresponse().read())
    conn.close()
    assert seen["cookies"] == ["a=1", "b=2"] and seen["body"] == "hello"


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nX-Flotilla-Backend: be_shop_web\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nX-A: \x01\x02\r\nX-Flotilla-Backend: be_shop_web\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
])
def test_a_malformed_request_head_gets_400_and_wakes_nothing(replica, activator_for, head):
    scaler = Scaler(replica, delay=0)
    activator = activator_for(scaler)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(activator.path))
        sock.sendall(head)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert scaler.woken == []


class Counter(BaseHTTPRequestHandler):
    """Reads a body of any size in pieces and answers how many bytes came."""

    def do_POST(self) -> None:  # stdlib naming
        left, seen = int(self.headers["Content-Length"]), 0
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            left, seen = left - len(piece), seen + len(piece)
        data = json.dumps({"bytes": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_a_large_body_is_streamed_not_buffered(activator_for):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        activator = activator_for(Scaler(server.server_address, delay=0))
        size = 128 * 1024 * 1024
        before = rss_kib()
        conn = UnixConnection(activator.path, timeout=60)
        chunk = b"x" * (1 << 20)
        conn.request("POST", "/up", body=(chunk for _ in range(size // len(chunk))),
                     headers={"X-Flotilla-Backend": "be_shop_web", "Content-Length": str(size)})
        answer = json.loads(conn.getresponse().read())
        conn.close()
        grown = (rss_kib() - before) // 1024
    finally:
        server.shutdown()
        server.server_close()
    assert answer == {"bytes": size}
    assert grown < 32, f"this process grew {grown} MiB relaying a 128 MiB body"


PROBE = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1])
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flotilla-Backend: be_shop_web\r\n\r\n")
    print(repr(sock.recv(65536)))
except OSError as exc:
    print(exc.strerror)
"""


def test_a_peer_the_socket_lets_in_but_that_is_not_the_gateway_is_closed_unread(replica):
    # The socket's group is 65534's own, so only the peer check stands between it and the activator.
    root = Path(tempfile.mkdtemp(prefix="flotilla-activator-test-"))
    root.chmod(0o711)
    scaler = Scaler(replica, delay=0)
    activator = Activator(path=root / "id" / "activator.sock", access=GatewayAccess(group=65534, peers=frozenset({0})),
                          wake=scaler.wake, ready_replica=scaler.ready, held=lambda app, service: True)
    activator.start()
    try:
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                                "-I", "-c", PROBE, str(activator.path)], capture_output=True, text=True, timeout=30)
        assert post(activator, {"X-Flotilla-Backend": "be_shop_web"})[0] == 201, "root is served"
    finally:
        activator.stop()
        root.rmdir()
    said = probe.stdout.strip()
    assert said in ("b''", "Broken pipe", "Connection reset by peer"), probe  # closed, nothing answered
    assert scaler.woken == [("shop", "web")], "only root's request woke the service"
