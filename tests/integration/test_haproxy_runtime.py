"""A real HAProxy, fed the rendered configuration, routing to real HTTP servers on loopback.

What the unit tests can only read in the text is proven here through the
proxy: host and path matching, prefix stripping, the 404 for no route, the
headers every service gets; then the Runtime API moves a replica through its
whole life in a pre-declared server slot (a free slot pointed at it while in
maintenance, ready, draining, back in maintenance, freed) while requests
flow, with the workers dropped to the haproxy user as the daemon runs them.
Everything listens on 127.0.0.1; HAProxy is started by the test and stopped
by its pid. No Docker needed; skipped with the reason without HAProxy.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flotilla.gateway.accesslog import AccessLog, open_pipe, parse_line
from flotilla.gateway.config import (
    COUNTED_BODY,
    FREE_ADDRESS,
    FREE_PORT,
    SLOTS_PER_BACKEND,
    build_gateway_config,
    render_config,
    slot_name,
)
from flotilla.gateway.model import Server, backend_name
from flotilla.gateway.runtime import GatewayError, RuntimeApi
from flotilla.gateway.workers import DEFAULT_USER, worker_account
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec
from tests.support.ports import free_port
from tests.support.waiting import wait_for

HAPROXY = "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                reason=f"HAProxy is not installed ({HAPROXY}); apt-get install haproxy")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WEIRD_PATH = "/it's\"$x"


# -- tiny backends that say who they are and what they received ---------------------------------

class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        if "slow" in self.path:
            self.server.slow_started.set()
            self.server.release.wait(timeout=10)
        body = json.dumps({
            "replica": self.server.label, "path": self.path,
            "host": self.headers.get("Host"),
            "x_forwarded_for": self.headers.get("X-Forwarded-For"),
            "forwarded": self.headers.get("Forwarded"),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
            "x_request_id": self.headers.get("X-Request-ID"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # http.server's naming
        body = self._chunked_body() if "chunked" in self.headers.get("Transfer-Encoding", "") else \
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(len(body))
        answer = json.dumps({"replica": self.server.label, "body_bytes": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _chunked_body(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(parts)

    def log_message(self, *args) -> None:
        pass


class EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, label: str) -> None:
        super().__init__(("127.0.0.1", 0), Echo)
        self.label = label
        self.slow_started = threading.Event()
        self.release = threading.Event()
        self.bodies: list[int] = []  # the length of each request body that reached this replica

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        pass  # HAProxy resets idle keep-alive connections; that is no error here


@pytest.fixture(scope="module")
def echoes():
    servers = {label: EchoServer(label) for label in
               ("web", "api", "v2", "weird", "pool-a", "pool-b", "flaky-ok", "uploads")}
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for s in servers.values()]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers.values():
        server.release.set()
        server.shutdown()
        server.server_close()


def replica(echoes: dict, label: str, *, enabled: bool = True) -> Server:
    return Server(f"shop-{label}-1-abc123", "127.0.0.1", echoes[label].port, enabled)


UPLOAD_LIMIT = 64 * 1024  # max_body of the uploads service


def shop_spec(port: int) -> AppSpec:
    def svc(*routes: RouteSpec, **more) -> ServiceSpec:
        return ServiceSpec(image="img:1", port=8000, routes=routes, **more)

    return AppSpec(app="shop", gateway=GatewaySpec(listen_host="127.0.0.1", listen_port=port),
                   services={
                       "web": svc(RouteSpec(host="shop.localhost")),
                       "api": svc(RouteSpec(host="shop.localhost", path="/api", strip_prefix=True),
                                  RouteSpec(host="*.shop.example")),
                       "v2": svc(RouteSpec(host="shop.localhost", path="/api/v2")),
                       "weird": svc(RouteSpec(host="shop.localhost", path=WEIRD_PATH, strip_prefix=True)),
                       "pool": svc(RouteSpec(host="pool.localhost")),
                       "flaky": svc(RouteSpec(host="flaky.localhost")),
                       "uploads": svc(RouteSpec(host="uploads.localhost"), max_body=UPLOAD_LIMIT),
                       "internal": svc(),
                   })


@dataclass
class Gateway:
    port: int
    api: RuntimeApi
    log: Path
    access_log: Path
    echoes: dict = field(repr=False)

    def get(self, path: str, *, host: str, headers: dict | None = None
            ) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={**(headers or {}), "Host": host})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            conn.close()

    def raw(self, request: bytes) -> bytes:
        """Send bytes as they are (HTTP/1.0 without Host, say) and read until closed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def echo(self, path: str, *, host: str, headers: dict | None = None) -> dict:
        status, _, body = self.get(path, host=host, headers=headers)
        assert status == 200, f"{host}{path}: {status} {body}"
        return json.loads(body)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, echoes):
    root = tmp_path_factory.mktemp("haproxy")
    port = free_port()
    servers = {("shop", label): [replica(echoes, label)] for label in ("web", "api", "v2", "weird", "uploads")}
    servers[("shop", "pool")] = [replica(echoes, "pool-a")]
    servers[("shop", "flaky")] = [replica(echoes, "flaky-ok")]
    servers[("shop", "internal")] = [replica(echoes, "web")]
    config = build_gateway_config({"shop": shop_spec(port)}, servers)
    cfg = root / "haproxy.cfg"
    # workers as the daemon runs them: dropped to the haproxy user, the Runtime API socket root's alone
    cfg.write_text(render_config(config, runtime_socket=str(root / "haproxy.sock"),
                                 workers=worker_account(DEFAULT_USER)))
    log, access_log = root / "haproxy.log", AccessLog(root / "access.log", pipe=root / "access.fifo")
    access = open_pipe(root / "access.fifo")  # stdout as process.py gives it, drained as the daemon does
    with open(log, "wb") as errors:
        proc = subprocess.Popen([HAPROXY, "-W", "-S", str(root / "master.sock"), "-f", str(cfg)],
                                stdin=subprocess.DEVNULL, stdout=access, stderr=errors)
    os.close(access)
    draining = threading.Event()
    drain = threading.Thread(target=access_log.run, args=(draining,), daemon=True)
    drain.start()
    try:
        wait_listening(port, sock=root / "haproxy.sock", proc=proc, log=log)
        yield Gateway(port=port, api=RuntimeApi(root / "haproxy.sock"), log=log, access_log=access_log.path,
                      echoes=echoes)
    finally:
        stop(proc)
        draining.set()
        drain.join(5)


def wait_listening(port: int, *, sock: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited {proc.returncode}:\n{log.read_text()}")
        if sock.exists():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
        time.sleep(0.02)
    pytest.fail(f"haproxy did not listen on 127.0.0.1:{port}:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# -- routing through the real proxy ---------------------------------------------------------------

def test_exact_host_reaches_its_service(gateway):
    seen = gateway.echo("/hello", host="shop.localhost")
    assert (seen["replica"], seen["path"], seen["host"]) == ("web", "/hello", "shop.localhost")


def test_host_match_ignores_port_case_and_trailing_dot(gateway):
    for host in (f"shop.localhost:{gateway.port}", "SHOP.Localhost", "shop.localhost."):
        assert gateway.echo("/", host=host)["replica"] == "web", host


def test_wildcard_host_matches_exactly_one_more_label(gateway):
    assert gateway.echo("/x", host="eu.shop.example")["replica"] == "api"
    for host in ("shop.example", "a.b.shop.example"):
        status, _, body = gateway.get("/x", host=host)
        assert (status, body) == (404, f"no route for {host}/x\n")


def test_longest_path_wins(gateway):
    seen = gateway.echo("/api/v2/items", host="shop.localhost")
    assert (seen["replica"], seen["path"]) == ("v2", "/api/v2/items")
    assert gateway.echo("/api/items", host="shop.localhost")["replica"] == "api"


def test_prefix_matches_at_segment_boundaries_only(gateway):
    seen = gateway.echo("/apix", host="shop.localhost")
    assert (seen["replica"], seen["path"]) == ("web", "/apix")
    assert gateway.echo("/api/v2x", host="shop.localhost")["replica"] == "api"


@pytest.mark.parametrize("sent, received", [
    ("/api/x?q=1&r=2", "/x?q=1&r=2"),
    ("/api?q=1", "/?q=1"),
    ("/api", "/"),
    ("/api/", "/"),
    ("/api/a/b", "/a/b"),
])
def test_strip_prefix_keeps_the_query_string(gateway, sent, received):
    seen = gateway.echo(sent, host="shop.localhost")
    assert (seen["replica"], seen["path"]) == ("api", received)


def test_a_path_full_of_quotes_routes_and_strips(gateway):
    seen = gateway.echo(WEIRD_PATH + "/in?x=1", host="shop.localhost")
    assert (seen["replica"], seen["path"]) == ("weird", "/in?x=1")


def test_no_route_is_a_404_naming_host_and_path(gateway):
    status, headers, body = gateway.get("/missing", host="nothing.localhost:8080")
    assert (status, body) == (404, "no route for nothing.localhost/missing\n")
    assert headers["content-type"] == "text/plain"
    assert UUID.fullmatch(headers["x-request-id"])
    answer = gateway.raw(b"GET /x HTTP/1.0\r\n\r\n")  # HTTP/1.0 may omit Host
    assert answer.startswith(b"HTTP/1.1 404") and answer.endswith(b"\r\n\r\nno route for /x\n")


def test_request_id_is_kept_or_made_and_echoed_back(gateway):
    status, headers, body = gateway.get("/", host="shop.localhost", headers={"X-Request-ID": "abc-123"})
    assert json.loads(body)["x_request_id"] == "abc-123" and headers["x-request-id"] == "abc-123"
    status, headers, body = gateway.get("/", host="shop.localhost")
    made = json.loads(body)["x_request_id"]
    assert UUID.fullmatch(made) and headers["x-request-id"] == made
    assert gateway.echo("/", host="shop.localhost")["x_request_id"] != made


def test_forwarded_headers_are_set(gateway):
    seen = gateway.echo("/", host="shop.localhost", headers={"X-Forwarded-Proto": "https"})
    assert seen["x_forwarded_for"] == "127.0.0.1"
    assert seen["x_forwarded_proto"] == "http"


def test_a_forged_client_address_is_replaced_by_the_connections(gateway):
    seen = gateway.echo("/", host="shop.localhost", headers={"X-Forwarded-For": "6.6.6.6, 10.0.0.1",
                                                             "Forwarded": "for=6.6.6.6"})
    assert (seen["x_forwarded_for"], seen["forwarded"]) == ("127.0.0.1", None)


# -- the access log -------------------------------------------------------------------------------

def logged(gateway: Gateway, request_id: str) -> dict:
    """The access log's entry for the request with this X-Request-ID, once HAProxy has written it."""
    def entry() -> dict | None:
        if not gateway.access_log.exists():
            return None  # the drain loop makes the file with its first line
        lines = gateway.access_log.read_bytes().splitlines()
        return next((e for e in map(parse_line, lines) if e and e["request_id"] == request_id), None)
    return wait_for(entry, timeout=5, interval=0.02, what=f"the access log line of {request_id}")


def test_each_request_is_one_json_line_without_its_query_or_headers(gateway):
    secrets = {"Authorization": "Bearer secret-token-77", "Cookie": "session=cookie-secret-77",
               "X-Request-ID": "logged-1"}
    assert gateway.get("/private/area?token=query-secret-77&x=1", host="shop.localhost", headers=secrets)[0] == 200
    entry = logged(gateway, "logged-1")
    assert (entry["status"], entry["method"], entry["path"], entry["client"]) == (200, "GET", "/private/area",
                                                                                 "127.0.0.1")
    assert (entry["backend"], entry["server"], entry["app"], entry["service"]) == ("be_shop_web", "slot1", "shop",
                                                                                   "web")
    assert entry["ms"]["total"] >= 0 and entry["ms"]["response"] >= 0 and entry["bytes_out"] > 0
    text = gateway.access_log.read_text()
    for secret in ("secret-token-77", "cookie-secret-77", "query-secret-77", "token=", "Bearer"):
        assert secret not in text
    assert all(parse_line(line) for line in text.encode().splitlines() if line.startswith(b"{"))


def test_what_a_client_puts_in_a_path_cannot_break_a_line(gateway):
    status, _, _ = gateway.get('/a"b\\c/%22%0A', host="shop.localhost", headers={"X-Request-ID": 'logged-"2"'})
    entry = logged(gateway, 'logged-"2"')
    assert (status, entry["path"]) == (200, '/a"b\\c/%22%0A')


def test_a_long_path_is_cut_so_that_a_line_is_one_write_to_the_pipe(gateway):
    long_path = "/" + "%C3%A9" * 1000  # 6,001 bytes (a client may not send them unencoded)
    assert gateway.get(long_path, host="shop.localhost", headers={"X-Request-ID": "logged-3"})[0] == 200
    assert logged(gateway, "logged-3")["path"] == long_path[:512]


# -- request bodies: max_body, chunked bodies, slow bodies ---------------------------------------

def send(gateway: Gateway, head: str, body: bytes = b"", *, trickle: float = 0.0) -> tuple[str, float]:
    """Send ``head`` then ``body`` (a byte every ``trickle`` seconds, if set); the status line and the time it took."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        started = time.monotonic()
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + (b"" if trickle else body))
        answer = _answer(sock, body if trickle else b"", trickle)
        return answer.split(b"\r\n")[0].decode(), time.monotonic() - started


def _answer(sock: socket.socket, trickled: bytes, interval: float) -> bytes:
    sock.settimeout(interval or 20)
    for byte in [trickled[i:i + 1] for i in range(len(trickled))] or [b""]:
        try:
            return sock.recv(65536)
        except TimeoutError:
            sock.sendall(byte)
    sock.settimeout(20)
    return sock.recv(65536)


def chunked(size: int, *, chunk: int) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (n, b"x" * n) for n in [chunk] * (size // chunk) + [size % chunk] if n]
    return b"".join(pieces) + b"0\r\n\r\n"


def post(length: str) -> str:
    return f"POST /upload HTTP/1.1\nHost: uploads.localhost\n{length}\n"


def test_a_body_within_max_body_reaches_the_replica_whole(gateway):
    uploads = gateway.echoes["uploads"]
    assert send(gateway, post(f"Content-Length: {UPLOAD_LIMIT}"), b"x" * UPLOAD_LIMIT)[0] == "HTTP/1.1 200 OK"
    assert send(gateway, post("Transfer-Encoding: chunked"), chunked(10_000, chunk=1000))[0] == "HTTP/1.1 200 OK"
    assert uploads.bodies[-2:] == [UPLOAD_LIMIT, 10_000]


def test_a_body_over_max_body_is_refused_from_its_length_before_it_is_sent(gateway):
    uploads, before = gateway.echoes["uploads"], len(gateway.echoes["uploads"].bodies)
    status, took = send(gateway, post(f"Content-Length: {UPLOAD_LIMIT + 1}\nExpect: 100-continue"))
    assert status == "HTTP/1.1 413 Request Entity Too Large" and took < 1, (status, took)
    assert len(uploads.bodies) == before


def test_a_chunked_body_is_counted_and_one_too_long_to_count_must_say_its_length(gateway):
    uploads, before = gateway.echoes["uploads"], len(gateway.echoes["uploads"].bodies)
    one_chunk = send(gateway, post("Transfer-Encoding: chunked"), chunked(UPLOAD_LIMIT + 1, chunk=UPLOAD_LIMIT + 1))
    assert one_chunk[0] == "HTTP/1.1 413 Request Entity Too Large"  # the chunk's size says it
    small_chunks = send(gateway, post("Transfer-Encoding: chunked"), chunked(3 * COUNTED_BODY, chunk=1000))
    assert small_chunks[0] == "HTTP/1.1 411 Length Required"
    assert len(uploads.bodies) == before


def test_a_slow_body_is_answered_408_and_never_reaches_a_replica(gateway):
    uploads, before = gateway.echoes["uploads"], len(gateway.echoes["uploads"].bodies)
    status, took = send(gateway, post("Content-Length: 1000"), b"x" * 1000, trickle=0.5)
    assert status == "HTTP/1.1 408 Request Time-out" and 9.5 < took < 12, (status, took)
    assert len(uploads.bodies) == before


def test_a_service_without_routes_has_no_backend(gateway):
    proxies = {row.pxname for row in gateway.api.stats()}
    assert backend_name("shop", "web") in proxies
    assert backend_name("shop", "internal") not in proxies


# -- the Runtime API ------------------------------------------------------------------------------

POOL = backend_name("shop", "pool")


def replicas_hit(gateway: Gateway, count: int = 12) -> dict[str, int]:
    hits: dict[str, int] = {}
    for _ in range(count):
        label = gateway.echo("/", host="pool.localhost")["replica"]
        hits[label] = hits.get(label, 0) + 1
    return hits


def take_free_slot(api: RuntimeApi, backend: str, address: str, port: int) -> str:
    """What the daemon does for a new replica: point a free slot at it, still in maintenance."""
    slot = next(name for name, s in sorted(api.servers(backend).items(), key=lambda i: slot_number(i[0]))
                if (s.address, s.port, s.admin) == (FREE_ADDRESS, FREE_PORT, "maint"))
    api.set_address(backend, slot, address, port)
    return slot


def free_slot(api: RuntimeApi, backend: str, slot: str) -> None:
    """What the daemon does once a replica is gone: maintenance, then 0.0.0.0:1 again."""
    api.set_state(backend, slot, "maint")
    api.set_address(backend, slot, FREE_ADDRESS, FREE_PORT)


def slot_number(name: str) -> int:
    return int(name.removeprefix("slot"))


def test_every_backend_lists_all_its_slots(gateway):
    slots = gateway.api.servers(POOL)
    assert sorted(slots, key=slot_number) == [slot_name(i) for i in range(1, SLOTS_PER_BACKEND + 1)]
    first = slots["slot1"]  # the replica rendered in the configuration
    assert (first.address, first.port, first.admin, first.operational) == (
        "127.0.0.1", gateway.echoes["pool-a"].port, "ready", "up")
    for name in [slot_name(i) for i in range(2, SLOTS_PER_BACKEND + 1)]:
        state = slots[name]
        assert (state.address, state.port, state.admin, state.operational, state.sessions) == (
            FREE_ADDRESS, FREE_PORT, "maint", "down", 0), name


def test_a_replica_takes_a_free_slot_is_made_ready_drained_and_freed(gateway):
    api, b_port = gateway.api, gateway.echoes["pool-b"].port
    slot = take_free_slot(api, POOL, "127.0.0.1", b_port)
    assert slot != "slot1"  # slot1 holds the replica of the configuration
    state = api.servers(POOL)[slot]
    assert (state.address, state.port, state.admin, state.sessions) == ("127.0.0.1", b_port, "maint", 0)
    assert replicas_hit(gateway) == {"pool-a": 12}  # in maintenance: no traffic

    api.set_state(POOL, slot, "ready")
    assert api.servers(POOL)[slot].admin == "ready"
    assert set(replicas_hit(gateway)) == {"pool-a", "pool-b"}

    api.set_state(POOL, slot, "drain")
    assert api.servers(POOL)[slot].admin == "drain"
    assert replicas_hit(gateway) == {"pool-a": 12}

    free_slot(api, POOL, slot)
    state = api.servers(POOL)[slot]
    assert (state.address, state.port, state.admin) == (FREE_ADDRESS, FREE_PORT, "maint")
    assert replicas_hit(gateway, 4) == {"pool-a": 4}
    assert take_free_slot(api, POOL, "127.0.0.1", b_port) == slot  # free again: the next replica gets it
    api.set_address(POOL, slot, FREE_ADDRESS, FREE_PORT)


def test_draining_finishes_requests_in_flight_before_the_slot_is_freed(gateway):
    api, echo_b = gateway.api, gateway.echoes["pool-b"]
    slot = take_free_slot(api, POOL, "127.0.0.1", echo_b.port)
    api.set_state(POOL, slot, "ready")
    api.set_state(POOL, "slot1", "drain")  # so the slow request lands on pool-b
    echo_b.slow_started.clear()
    echo_b.release.clear()
    result: dict = {}
    slow = threading.Thread(target=lambda: result.update(
        seen=gateway.echo("/slow", host="pool.localhost")))
    slow.start()
    try:
        assert echo_b.slow_started.wait(5)
        api.set_state(POOL, "slot1", "ready")
        api.set_state(POOL, slot, "drain")
        assert api.sessions(POOL, slot) == 1
        assert api.servers(POOL)[slot].sessions == 1
        assert replicas_hit(gateway, 4) == {"pool-a": 4}  # no new requests while it drains
    finally:
        echo_b.release.set()
        slow.join(10)
    assert result["seen"]["replica"] == "pool-b"  # the drained request completed
    wait_for(lambda: api.sessions(POOL, slot) == 0, timeout=5, interval=0.02,
             what="the drained slot's last session to end")
    free_slot(api, POOL, slot)
    state = api.servers(POOL)[slot]
    assert (state.address, state.port, state.admin, state.sessions) == (FREE_ADDRESS, FREE_PORT, "maint", 0)
    assert replicas_hit(gateway, 4) == {"pool-a": 4}


def test_a_dead_replica_costs_no_failed_request(gateway):
    flaky, api = backend_name("shop", "flaky"), gateway.api
    slot = take_free_slot(api, flaky, "127.0.0.1", free_port())  # nothing listens
    api.set_state(flaky, slot, "ready")
    try:
        for _ in range(10):
            assert gateway.echo("/", host="flaky.localhost")["replica"] == "flaky-ok"
    finally:
        free_slot(api, flaky, slot)


def test_stats_count_requests(gateway):
    def totals() -> tuple[int, int]:
        rows = {(r.pxname, r.svname): r for r in gateway.api.stats()}
        backend = rows[(backend_name("shop", "web"), "BACKEND")]
        server = rows[(backend_name("shop", "web"), "slot1")]
        assert backend.kind == "backend" and server.kind == "server"
        return backend.req_tot, server.stot

    before = totals()
    for _ in range(3):
        gateway.echo("/", host="shop.localhost")
    after = totals()
    assert after[0] == before[0] + 3 and after[1] == before[1] + 3
    frontends = [r for r in gateway.api.stats() if r.kind == "frontend"]
    assert frontends and frontends[0].req_tot > 0


def test_servers_state_reports_configured_servers(gateway):
    state = gateway.api.servers(backend_name("shop", "web"))["slot1"]
    assert (state.name, state.address, state.port, state.admin, state.operational) == (
        "slot1", "127.0.0.1", gateway.echoes["web"].port, "ready", "up")


@pytest.mark.parametrize("call", [
    lambda api: api.set_address("be_nope_web", "slot1", "127.0.0.1", 9),
    lambda api: api.set_state("be_nope_web", "slot1", "ready"),
    lambda api: api.servers("be_nope_web"),
    lambda api: api.sessions("be_nope_web", "slot1"),
])
def test_an_unknown_backend_is_a_clear_error(gateway, call):
    with pytest.raises(GatewayError, match=r"be_nope_web.*(No such|Can't find).*reload the gateway"):
        call(gateway.api)


def test_unknown_servers_and_injected_commands_are_errors(gateway):
    web, api = backend_name("shop", "web"), gateway.api
    beyond = slot_name(SLOTS_PER_BACKEND + 1)
    for name in ("ghost", beyond):
        with pytest.raises(GatewayError, match="No such server.*pre-declared slots"):
            api.set_state(web, name, "ready")
        with pytest.raises(GatewayError, match="No such server.*pre-declared slots"):
            api.set_address(web, name, "127.0.0.1", 9)
        with pytest.raises(GatewayError, match=f"no server {name}"):
            api.sessions(web, name)
    with pytest.raises(GatewayError, match="Unknown command"):
        api.command("frobnicate everything")
    with pytest.raises(GatewayError, match="not a valid HAProxy"):
        api.set_state(web, "a; shutdown sessions", "ready")
    with pytest.raises(GatewayError, match="not a valid HAProxy"):
        api.set_address(web, "slot2; shutdown sessions", "127.0.0.1", 9)
    with pytest.raises(GatewayError, match="not an IP address"):
        api.set_address(web, "slot2", "127.0.0.1 port 9; shutdown sessions", 9)
    with pytest.raises(GatewayError, match="not an IP address"):
        api.set_address(web, "slot2", "localhost", 9)  # HAProxy would only warn
    for port in (0, 65536, "9; shutdown sessions"):
        with pytest.raises(GatewayError, match="1-65535"):
            api.set_address(web, "slot2", "127.0.0.1", port)  # HAProxy would wrap or only warn
    slot2 = api.servers(web)["slot2"]  # nothing above reached it
    assert (slot2.address, slot2.port, slot2.admin) == (FREE_ADDRESS, FREE_PORT, "maint")
    assert gateway.echo("/", host="shop.localhost")["replica"] == "web"


def test_an_ipv6_address_is_taken_without_brackets(gateway):
    web, api = backend_name("shop", "web"), gateway.api
    api.set_address(web, "slot3", "[::1]", 8080)
    try:
        state = api.servers(web)["slot3"]
        assert (state.address, state.port, state.admin) == ("::1", 8080, "maint")
    finally:
        api.set_address(web, "slot3", FREE_ADDRESS, FREE_PORT)
    assert api.servers(web)["slot3"].address == FREE_ADDRESS


def test_a_missing_socket_is_a_clear_error(tmp_path):
    with pytest.raises(GatewayError, match="does not exist; is the gateway running"):
        RuntimeApi(tmp_path / "none.sock").stats()

