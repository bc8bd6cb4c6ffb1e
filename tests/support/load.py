"""A bounded, open-loop HTTP load generator for tests that must prove "no request failed".

Why it exists: the gateway, rolling-update and autoscaler tests need steady
traffic while something changes underneath (a replica replaced, HAProxy
reloaded, a service scaled), and then an exact account of what failed and why.
wrk and ab report throughput, not which request failed; this does, from plain
threads and `http.client`, so a test can assert `result.failed == 0` and print
`result.failures` when it is not.

Shape:

* open loop: request ``i`` is due at ``start + i / rate``; ``workers`` threads,
  each with its own keep-alive connection, take the next due request. While
  ``workers`` requests are in flight, later ones wait (and `max_lag` says by how
  much): keep ``workers`` above ``rate`` x the server's latency;
* bounded: at most ``max_requests`` (default ``rate * max_seconds``) requests
  and ``max_seconds`` seconds; the generator stops by itself;
* every ``post_every``-th request is a POST with a small JSON body (to
  ``post_path``, or the same path); the rest are GETs, round-robin over ``paths``;
* HTTPS when given ``tls`` (an ``ssl.SSLContext``): SNI and the checked name are
  the Host header's, so a certificate the context does not trust is a failure.

A request fails on any exception, a timeout, or a status not in ``ok_statuses``.

The stale keep-alive rule
-------------------------
A server may close an idle keep-alive connection at the very moment the client
sends a request on it (an idle timeout, HAProxy closing idle connections on a
reload). Real clients retry that, so must we; but a proxy that read a request
and then dropped the connection without answering has failed, and must count.
The generator tells them apart from TCP itself (Linux), never from timing:

1. Before reusing a connection it polls the socket: if the peer has already
   closed it (or sent something unasked), the connection is replaced before
   anything is sent. Not a retry, not a failure (counted in ``reconnects``).
2. If sending the request on a reused connection fails (EPIPE / ECONNRESET),
   nothing of it was accepted: the request's head and small body go out in
   one ``send()`` (see ``_Connection.send``), and a failed ``send()`` queues
   nothing. Retried once.
3. If, on a reused connection, no byte of a response arrives and the peer's
   kernel then *resets* the connection (RST; our socket ends in TCP_CLOSE), the
   request's bytes reached a socket the server had already closed, or one it
   closed without reading them: no server program ever read it. Retried once.
   Exactly, with not one byte received since the request was sent (TCP_INFO
   ``tcpi_bytes_received``, where a FIN counts one): ``RemoteDisconnected``
   (an EOF) followed by an RST within 0.2 s, or ``ConnectionResetError``.

Everything else counts as a failure, in particular an orderly close (FIN, no
RST) after the request was sent: the server read the request and dropped it.
A retry always goes on a fresh connection, where none of the rules apply; a
failure there counts. Retries are listed in ``LoadResult.retries`` so a test
can show them. (A server that aborts with SO_LINGER=0 after reading a request
would be taken for rule 3; HAProxy does not do that unless told ``option
nolinger``.)
"""

from __future__ import annotations

import http.client
import json
import math
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.support.waiting import wait_for

DEFAULT_OK_STATUSES = frozenset({200, 201, 204})
FAILURES_KEPT = 50  # descriptions kept for assertion messages; the counts are exact
RESET_GRACE_SECONDS = 0.2  # how long to wait for the RST that follows an EOF in rule 3
SERVED_BY_HEADER = "X-Served-By"

_TCP_CLOSE = 7  # tcpi_state after a reset (include/net/tcp_states.h)
_TCPI_STATE_OFFSET = 0
_TCPI_BYTES_RECEIVED_OFFSET = 128  # struct tcp_info, Linux >= 4.1 (counts a FIN as one byte)
_TCP_INFO_SIZE = 256
_STALE_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0x2000)


@dataclass
class LoadResult:
    """What a load run did: counts, latencies of successes, and why requests failed."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    by_status: dict[int, int] = field(default_factory=dict)
    served_by: Counter[str] = field(default_factory=Counter)
    retries: list[str] = field(default_factory=list)
    retried: int = 0
    reconnects: int = 0
    max_lag: float = 0.0
    duration: float = 0.0

    @property
    def rps(self) -> float:
        """Requests completed per second over the run."""
        done = self.ok + self.failed
        return done / self.duration if self.duration > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        """Latency (s) at `fraction` (0.5, 0.99) of successful requests; nan if none."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return ordered[rank]

    def summary(self) -> str:
        return (
            f"sent {self.sent}, ok {self.ok}, failed {self.failed}, "
            f"{self.rps:.1f} req/s over {self.duration:.2f}s, "
            f"p50 {self.percentile(0.5) * 1000:.2f} ms, p99 {self.percentile(0.99) * 1000:.2f} ms, "
            f"retried {self.retried}, reconnects {self.reconnects}, max lag {self.max_lag * 1000:.1f} ms"
        )


class _NotDelivered(Exception):
    """The peer closed a reused connection before any server program read the request."""


def _tcp_info(sock: socket.socket) -> tuple[int, int]:
    """(tcpi_state, tcpi_bytes_received) of a TCP socket."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return info[_TCPI_STATE_OFFSET], struct.unpack_from("Q", info, _TCPI_BYTES_RECEIVED_OFFSET)[0]


def _wait_for_reset(sock: socket.socket, timeout: float) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)
    poller.poll(timeout * 1000)


def _never_read(sock: socket.socket, exc: ConnectionError, bytes_before: int) -> bool:
    """Rule 3: did the peer reset the connection without reading the request?"""
    if isinstance(exc, http.client.RemoteDisconnected):  # an EOF; its FIN counts one byte, if it
        _wait_for_reset(sock, RESET_GRACE_SECONDS)       # came after bytes_before was taken
        state, received = _tcp_info(sock)
        return state == _TCP_CLOSE and received - bytes_before <= 1
    if isinstance(exc, ConnectionResetError):
        state, received = _tcp_info(sock)
        return state == _TCP_CLOSE and received == bytes_before
    return False


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection that knows whether a failed request ever reached the server."""

    reused = False
    bytes_before = 0
    _head_waits_for_body = False
    _head: bytes | None = None
    tls: ssl.SSLContext | None = None  # HTTPS: the TCP rules hold on the socket under TLS
    server_name: str | None = None

    def connect(self) -> None:
        super().connect()
        if self.tls is not None:
            self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.server_name or self.host)

    def prepare(self) -> bool:
        """Before a request: drop a connection the peer has closed; True if one was dropped."""
        self.reused = False
        if self.sock is None:
            return False
        if self.peer_gone():
            self.close()
            return True
        self.reused = True
        self.bytes_before = _tcp_info(self.sock)[1]
        return False

    def peer_gone(self) -> bool:
        """Rule 1: has the peer closed (or written to) this idle connection?"""
        poller = select.poll()
        poller.register(self.sock, _STALE_EVENTS)
        return bool(poller.poll(0))

    def request(self, method, url, body=None, headers=None, *, encode_chunked=False):
        self._head_waits_for_body = body is not None
        try:
            super().request(method, url, body, headers or {}, encode_chunked=encode_chunked)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            if self.reused:  # rule 2
                self.close()
                raise _NotDelivered(f"send on a reused connection failed: {exc!r}") from exc
            raise
        finally:
            self._head_waits_for_body, self._head = False, None

    def send(self, data) -> None:
        """Send a request's head and body in one send() (http.client sends them apart).

        That makes rule 2 exact (a failed send() queued nothing of the request)
        and spares a second segment.
        """
        if self._head_waits_for_body:
            self._head_waits_for_body, self._head = False, data
            return
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        super().send(data)

    def getresponse(self):
        sock = self.sock
        # A second reference keeps the descriptor open through http.client's
        # own close() on error, so that the socket can still be examined.
        hold = sock.makefile("rb", buffering=0) if sock is not None and self.reused else None
        try:
            return super().getresponse()
        except ConnectionError as exc:
            if hold is not None and _never_read(sock, exc, self.bytes_before):
                raise _NotDelivered(f"reset before any reply on a reused connection: {exc!r}") from exc
            raise
        finally:
            if hold is not None:
                hold.close()


@dataclass(frozen=True)
class _Request:
    index: int
    method: str
    path: str
    body: bytes | None


class LoadGenerator:
    """Open-loop HTTP load at `rate` requests/s, bounded in count and time (see module doc)."""

    def __init__(self, *, host: str, port: int, host_header: str, rate: float = 200.0,
                 max_seconds: float = 120.0, paths: Sequence[str] = ("/",), post_every: int = 2,
                 post_path: str | None = None, timeout: float = 5.0, workers: int = 16,
                 ok_statuses: frozenset[int] = DEFAULT_OK_STATUSES,
                 max_requests: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        if rate <= 0 or max_seconds <= 0 or workers < 1 or not paths:
            raise ValueError("rate and max_seconds must be > 0, workers >= 1, paths non-empty")
        self.host, self.port, self.host_header = host, port, host_header
        self.rate, self.max_seconds, self.timeout, self.workers = rate, max_seconds, timeout, workers
        self.paths, self.post_every, self.post_path = tuple(paths), post_every, post_path
        self.ok_statuses = frozenset(ok_statuses)
        self.tls = tls  # HTTPS with this context (its SNI and checked name: host_header), else plain HTTP
        self.max_requests = max_requests if max_requests is not None else math.ceil(rate * max_seconds)
        self.result: LoadResult | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acc = LoadResult()
        self._issued = 0
        self._started = 0.0
        self._last_done = 0.0

    # -- public -------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("a LoadGenerator runs once; make a new one")
        self._started = self._last_done = time.monotonic()
        for n in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"load-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> LoadResult:
        """Stop sending, wait for requests in flight, and return the result."""
        self._stop.set()
        deadline = time.monotonic() + 2 * self.timeout + RESET_GRACE_SECONDS + 1
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.result = self.snapshot()
        return self.result

    def run(self) -> LoadResult:
        """Start, wait until the run ends by itself (count or time used up), return the result."""
        self.start()
        return self.wait()

    def wait(self) -> LoadResult:
        """Wait until the run ends by itself (count or time used up), then return the result."""
        if not self._threads:
            raise RuntimeError("wait() before start()")
        deadline = self._started + self.max_seconds + 2 * self.timeout + 1
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.stop()

    def snapshot(self) -> LoadResult:
        """The results so far (a copy; the run goes on)."""
        with self._lock:
            acc = self._acc
            return LoadResult(
                sent=acc.sent, ok=acc.ok, failed=acc.failed, failures=list(acc.failures),
                latencies=list(acc.latencies), by_status=dict(acc.by_status),
                served_by=Counter(acc.served_by), retries=list(acc.retries), retried=acc.retried,
                reconnects=acc.reconnects, max_lag=acc.max_lag,
                duration=self._last_done - self._started,
            )

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- workers ------------------------------------------------------------

    def _worker(self) -> None:
        conn = _Connection(self.host, self.port, timeout=self.timeout)
        conn.tls, conn.server_name = self.tls, self.host_header.split(":")[0]
        try:
            while (request := self._next_request()) is not None:
                due = self._started + request.index / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                self._perform(conn, request, lag=time.monotonic() - due)
        finally:
            conn.close()

    def _next_request(self) -> _Request | None:
        with self._lock:
            index = self._issued
            if self._stop.is_set() or index >= self.max_requests or index / self.rate >= self.max_seconds:
                return None
            self._issued += 1
        return self._request_for(index)

    def _request_for(self, index: int) -> _Request:
        path = self.paths[index % len(self.paths)]
        if self.post_every and index % self.post_every == self.post_every - 1:
            body = json.dumps({"seq": index, "from": "flotilla-load"}).encode()
            return _Request(index, "POST", self.post_path or path, body)
        return _Request(index, "GET", path, None)

    def _perform(self, conn: _Connection, request: _Request, *, lag: float) -> None:
        with self._lock:
            self._acc.sent += 1
            self._acc.max_lag = max(self._acc.max_lag, lag)
        started = time.monotonic()
        try:
            try:
                status, served_by = self._exchange(conn, request)
            except _NotDelivered as exc:
                self._note_retry(request, exc, started)
                status, served_by = self._exchange(conn, request)  # a fresh connection
        except Exception as exc:  # noqa: BLE001 - any exception is a failed request
            conn.close()
            self._note_done(request, None, f"{type(exc).__name__}: {exc}", started, None)
            return
        self._note_done(request, status, None, started, served_by)

    def _exchange(self, conn: _Connection, request: _Request) -> tuple[int, str | None]:
        if conn.prepare():
            with self._lock:
                self._acc.reconnects += 1
        headers = {"Host": self.host_header}
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(request.method, request.path, body=request.body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader(SERVED_BY_HEADER)

    # -- accounting ---------------------------------------------------------

    def _note_retry(self, request: _Request, exc: Exception, started: float) -> None:
        with self._lock:
            self._acc.retried += 1
            if len(self._acc.retries) < FAILURES_KEPT:
                self._acc.retries.append(self._describe(request, str(exc), started))

    def _note_done(self, request: _Request, status: int | None, error: str | None,
                   started: float, served_by: str | None) -> None:
        now = time.monotonic()
        ok = status in self.ok_statuses
        with self._lock:
            acc = self._acc
            self._last_done = max(self._last_done, now)
            if status is not None:
                acc.by_status[status] = acc.by_status.get(status, 0) + 1
            if served_by:
                acc.served_by[served_by] += 1
            if ok:
                acc.ok += 1
                acc.latencies.append(now - started)
                return
            acc.failed += 1
            if len(acc.failures) < FAILURES_KEPT:
                acc.failures.append(self._describe(request, error or f"HTTP {status}", started))

    def _describe(self, request: _Request, what: str, started: float) -> str:
        return f"+{started - self._started:.3f}s #{request.index} {request.method} {request.path}: {what}"


def shop_traffic(port: int, *, rate: float = 220.0) -> LoadGenerator:
    """Mixed traffic through a gateway on 127.0.0.1:``port`` to a shop-catalog service routed as shop.localhost.

    GETs of /items and /whoami, every third request a POST to /debug/request,
    for at most 150 s: what the gateway and secrets tests keep running while a
    replica, a route or a secret changes underneath.
    """
    return LoadGenerator(
        host="127.0.0.1", port=port, host_header="shop.localhost", rate=rate, max_seconds=150,
        paths=("/items", "/whoami"), post_every=3, post_path="/debug/request",
    )


def wait_for_answers(load: LoadGenerator, more: int, *, timeout: float = 60.0) -> None:
    """Wait until ``more`` requests beyond those answered by now are answered (served or failed).

    What tests do around a change under load, instead of sleeping: before it,
    so that traffic flows when the change starts; after it, so that traffic
    has gone through the changed gateway before the result is judged.
    """
    def answered() -> int:
        seen = load.snapshot()
        return seen.ok + seen.failed

    target = answered() + more
    wait_for(lambda: answered() >= target, timeout=timeout, interval=0.02, what=f"{more} more requests answered")
