"""Tests of the test helpers themselves: tests/support/load.py and tests/support/netns.py.

They live with the integration tests because they need what tests/unit may
not use: real sockets on 127.0.0.1 and, for the outside host, network
namespaces and root.

The load generator is what later tests trust to say "no request failed"
during a reload or a rolling update, so its rate, its bounds and above all its
stale keep-alive rule are tested here against servers whose behaviour is
scripted byte by byte on 127.0.0.1. The netns helper is tested against HTTP
servers on the host side of its own veth pair (skipped without root).
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import load as load_mod
from tests.support.load import LoadGenerator
from tests.support.netns import outside_host
from tests.support.waiting import wait_for

# -- an ordinary keep-alive server ----------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _answer(self, body: bytes | None) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Host"), body))
        status = self.server.statuses.get(self.path, 200)
        if self.path == "/slow":  # answers only when the test is over: longer than any client timeout
            self.server.release.wait(timeout=10)
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Served-By", f"replica-{len(self.server.seen) % 2}")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.seen: list[tuple[str, str, str, bytes | None]] = []
        self.statuses: dict[str, int] = {}
        self.release = threading.Event()  # set when the server stops: /slow answers then


@contextmanager
def http_server(host: str = "127.0.0.1") -> Iterator[_Server]:
    server = _Server((host, 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def generator(server: _Server, **kwargs) -> LoadGenerator:
    return LoadGenerator(host="127.0.0.1", port=server.server_address[1], host_header="app.localhost", **kwargs)


# -- rate, bounds, the request mix, accounting ----------------------------------


def test_sustains_200_requests_per_second_against_a_fast_local_server():
    with http_server() as server:
        result = generator(server, rate=200, max_seconds=3).run()
    assert result.failed == 0, result.failures
    assert result.sent == result.ok == 600, result.summary()
    assert 190 <= result.rps <= 210, result.summary()  # open loop: the rate is kept by the schedule
    # The aim is a lag of a few ms; 0.5 s is the margin that holds on a loaded
    # 2-core machine, and a generator that fell behind its schedule would lag by seconds.
    assert result.max_lag < 0.5, result.summary()
    assert len(server.seen) == 600


def test_stops_by_itself_at_the_request_bound_and_the_time_bound():
    with http_server() as server:
        by_count = generator(server, rate=100, max_requests=7).run()
        started = time.monotonic()
        by_time = generator(server, rate=50, max_seconds=0.5).run()
        took = time.monotonic() - started
    assert by_count.sent == by_count.ok == 7
    assert by_time.sent == 25 and took < 2, by_time.summary()  # a 0.5 s bound, 4x margin for a loaded machine


def test_mixes_gets_and_posts_round_robin_over_paths_with_the_host_header():
    with http_server() as server:
        generator(server, rate=100, max_requests=8, paths=("/a", "/b"), post_every=4,
                  post_path="/orders").run()
    methods = Counter((method, path) for method, path, _, _ in server.seen)
    assert methods == {("GET", "/a"): 4, ("GET", "/b"): 2, ("POST", "/orders"): 2}
    assert {host for _, _, host, _ in server.seen} == {"app.localhost"}
    bodies = [json.loads(body) for method, _, _, body in server.seen if method == "POST"]
    assert sorted(b["seq"] for b in bodies) == [3, 7]


def test_posts_go_to_the_same_path_without_post_path_and_never_with_post_every_zero():
    with http_server() as server:
        generator(server, rate=100, max_requests=4, paths=("/x",)).run()
        generator(server, rate=100, max_requests=4, post_every=0).run()
    assert Counter((m, p) for m, p, _, _ in server.seen) == {("GET", "/x"): 2, ("POST", "/x"): 2, ("GET", "/"): 4}


def test_counts_statuses_not_allowed_as_failures_and_names_them():
    with http_server() as server:
        server.statuses = {"/bad": 502, "/missing": 404}
        strict = generator(server, rate=100, max_requests=6, paths=("/", "/bad", "/missing"), post_every=0).run()
        lenient = generator(server, rate=100, max_requests=3, paths=("/missing",), post_every=0,
                            ok_statuses=frozenset({200, 404})).run()
    assert (strict.ok, strict.failed) == (2, 4)
    assert strict.by_status == {200: 2, 502: 2, 404: 2}
    assert any("GET /bad: HTTP 502" in f for f in strict.failures), strict.failures
    assert (lenient.ok, lenient.failed) == (3, 0)


def test_records_which_replica_answered():
    with http_server() as server:
        result = generator(server, rate=100, max_requests=10).run()
    assert result.served_by == {"replica-0": 5, "replica-1": 5}


def test_a_refused_connection_and_a_timeout_are_failures():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        refused = LoadGenerator(host="127.0.0.1", port=port, host_header="x", rate=50, max_requests=3).run()
    with http_server() as server:
        slow = generator(server, rate=10, max_requests=1, paths=("/slow",), timeout=0.1).run()
    assert (refused.ok, refused.failed) == (0, 3)
    assert "ConnectionRefusedError" in refused.failures[0]
    assert slow.failed == 1 and "timed out" in slow.failures[0], slow.failures


def test_snapshot_while_running_and_the_context_manager_form():
    with http_server() as server:
        with generator(server, rate=100, max_seconds=5) as load:
            def thirty_answered() -> load_mod.LoadResult | None:
                snapshot = load.snapshot()
                return snapshot if snapshot.ok >= 30 else None

            early = wait_for(thirty_answered, timeout=4, interval=0.01, what="30 requests answered")
        result = load.result
    assert early.ok >= 30 and early.failed == 0, early.summary()
    assert result is not None and result.ok >= early.ok and result.failed == 0
    assert result.sent == result.ok < 500, result.summary()  # the context's exit stopped it before the 5 s bound


def test_summary_is_one_line_with_rate_and_percentiles():
    result = load_mod.LoadResult(sent=4, ok=4, latencies=[0.001, 0.002, 0.003, 0.1], duration=2.0)
    line = result.summary()
    assert "\n" not in line
    assert "sent 4, ok 4, failed 0, 2.0 req/s" in line and "p50 2.00 ms" in line and "p99 100.00 ms" in line


def test_rejects_an_unbounded_or_empty_configuration():
    for bad in ({"rate": 0}, {"max_seconds": 0}, {"workers": 0}, {"paths": ()}):
        with pytest.raises(ValueError):
            LoadGenerator(host="127.0.0.1", port=1, host_header="x", **bad)


# -- the stale keep-alive rule, against servers scripted byte by byte -------------

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += sock.recv(65536)
    return data


def serve_normally(sock: socket.socket) -> None:
    while read_request(sock):
        sock.sendall(OK_RESPONSE)


def wait_readable(sock: socket.socket) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll(5000)


def abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashing or aborting server would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextmanager
def scripted_server(*scripts: Callable[[socket.socket], None]) -> Iterator[int]:
    """Connection n is handled by scripts[n] (the last one for all later connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept_loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(5)
            script = scripts[min(n, len(scripts) - 1)]
            threading.Thread(target=_run_script, args=(script, sock), daemon=True).start()
            n += 1

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _run_script(script: Callable[[socket.socket], None], sock: socket.socket) -> None:
    try:
        script(sock)
    except OSError:
        pass
    finally:
        if sock.fileno() != -1:
            sock.close()


def run_load(port: int, count: int, post_every: int = 0) -> load_mod.LoadResult:
    # One worker, so every request after the first is on a reused connection
    # unless a rule replaced it; 20/s leaves 50 ms between requests.
    return LoadGenerator(host="127.0.0.1", port=port, host_header="x", rate=20, max_requests=count,
                         workers=1, post_every=post_every, timeout=2).run()


@pytest.fixture
def no_probe(monkeypatch):
    """Switch off rule 1 (the poll before reuse) to reach the rarer races it usually hides."""
    monkeypatch.setattr(load_mod._Connection, "peer_gone", lambda self: False)


def close_after_one_response(sock: socket.socket) -> None:
    read_request(sock)
    sock.sendall(OK_RESPONSE)  # says keep-alive (HTTP/1.1, no Connection: close), then closes


def test_rule1_a_connection_the_server_closed_while_idle_is_replaced_before_sending():
    with scripted_server(close_after_one_response) as port:
        result = run_load(port, 4)
    assert (result.ok, result.failed, result.retried) == (4, 0, 0), result.failures
    assert result.reconnects == 3


def test_rule2_a_send_that_fails_on_a_reused_connection_is_retried(no_probe):
    def answer_then_abort(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK_RESPONSE)
        abort(sock)  # the RST is in before the next request: its send() fails

    with scripted_server(answer_then_abort, serve_normally) as port:
        result = run_load(port, 3)
    assert (result.ok, result.failed, result.retried) == (3, 0, 1), result.summary()
    assert "send on a reused connection failed" in result.retries[0]


def test_rule3_a_request_arriving_as_the_server_closes_idle_is_retried():
    def answer_then_close_unread(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK_RESPONSE)
        wait_readable(sock)  # the next request is here, unread...
        sock.close()  # ...as an idle timeout fires: the kernel answers with RST

    with scripted_server(answer_then_close_unread, serve_normally) as port:
        result = run_load(port, 3, post_every=2)  # the request caught is a POST
    assert (result.ok, result.failed, result.retried) == (3, 0, 1), result.summary()
    assert "#1 POST" in result.retries[0] and "reset before any reply" in result.retries[0]


def test_rule3_a_request_arriving_after_the_server_closed_is_retried(no_probe):
    with scripted_server(close_after_one_response, serve_normally) as port:
        result = run_load(port, 3)  # FIN, 50 ms later our request, then the server's RST
    assert (result.ok, result.failed, result.retried) == (3, 0, 1), result.summary()


def test_a_server_that_reads_the_request_and_closes_without_answer_fails_it():
    def answer_then_drop_the_next(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK_RESPONSE)
        read_request(sock)  # it reached the server...
        sock.close()  # ...which dropped it: FIN, no RST

    with scripted_server(answer_then_drop_the_next, serve_normally) as port:
        result = run_load(port, 3)
    assert (result.ok, result.failed, result.retried) == (2, 1, 0), result.summary()
    assert "#1 GET /" in result.failures[0] and "RemoteDisconnected" in result.failures[0]


def test_a_server_that_aborts_mid_response_fails_the_request():
    def answer_then_abort_mid_reply(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK_RESPONSE)
        read_request(sock)
        sock.sendall(OK_RESPONSE[:20])
        # Not a synchronisation: a moment for the partial reply to leave before the RST,
        # so the client sees "mid-response"; the request must fail either way.
        time.sleep(0.05)
        abort(sock)

    with scripted_server(answer_then_abort_mid_reply, serve_normally) as port:
        result = run_load(port, 3)
    assert (result.ok, result.failed, result.retried) == (2, 1, 0), result.summary()


def test_a_fresh_connection_reset_before_any_reply_fails_the_request():
    def close_unread(sock: socket.socket) -> None:
        wait_readable(sock)
        sock.close()  # RST, but on a connection never used before: no stale race

    with scripted_server(close_unread, serve_normally) as port:
        result = run_load(port, 2)
    assert (result.ok, result.failed, result.retried) == (1, 1, 0), result.summary()
    assert "ConnectionResetError" in result.failures[0]


def test_a_retry_that_fails_too_counts_once_as_a_failure():
    def answer_then_close_unread(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK_RESPONSE)
        wait_readable(sock)
        sock.close()

    def refuse_by_reset(sock: socket.socket) -> None:
        wait_readable(sock)
        sock.close()

    with scripted_server(answer_then_close_unread, refuse_by_reset) as port:
        result = run_load(port, 2)
    assert (result.sent, result.ok, result.failed, result.retried) == (2, 1, 1, 1), result.summary()


# -- the outside host -------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="an outside host needs root (ip netns, veth)")


@needs_root
def test_outside_host_reaches_the_host_side_ip_but_not_loopback():
    with outside_host() as outside:
        with http_server(outside.host_ip) as public, http_server("127.0.0.1") as private:
            public_port, private_port = public.server_address[1], private.server_address[1]
            status, body = outside.http_get(f"http://{outside.host_ip}:{public_port}/", host_header="a.localhost")
            assert (status, json.loads(body)) == (200, {"ok": True})
            assert public.seen[-1][2] == "a.localhost"
            assert outside.tcp_connect(outside.host_ip, public_port)
            assert not outside.tcp_connect(outside.host_ip, private_port)
            status, error = outside.http_get(f"http://{outside.host_ip}:{private_port}/", timeout=1)
            assert status is None and "refused" in error.lower(), error
        assert outside.run(["ip", "-4", "-o", "addr", "show", "dev", outside.ns_if]).stdout.count(outside.ip) == 1
        name, host_if = outside.name, outside.host_if
    assert name not in subprocess_out(["ip", "netns", "list"])
    assert host_if not in subprocess_out(["ip", "-o", "link", "show"])


@needs_root
def test_outside_host_is_removed_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"), outside_host() as outside:
        name = outside.name
        raise RuntimeError("boom")
    assert name not in subprocess_out(["ip", "netns", "list"])


def subprocess_out(argv: list[str]) -> str:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
