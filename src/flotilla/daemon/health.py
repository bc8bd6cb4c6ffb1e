"""Health probing of replicas: HTTP GET or TCP connect, from the host.

Flotilla probes replicas itself instead of relying on Docker's HEALTHCHECK,
which runs inside the container (needing curl in every image) and reports no
faster than its interval. A new replica is probed at once and then every
50 ms until it first answers, and that first answer goes straight to
``on_ready`` (the gateway routes to it then, not at the next reconcile
pass), so it serves within about 50 ms of listening; after that it is probed
at the service's ``health.interval``. A replica turns
unhealthy after two failed probes in a row. Each probe ends by its deadline
(``health.timeout`` for the whole exchange, not per read), and one app has
at most PROBES_PER_APP probes in flight, so replicas that answer slowly
cannot starve the probes of any other app.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
STARTUP_INTERVAL = 0.05
# A new replica that has not answered for this long is reported unhealthy (it is still probed).
NEVER_UP_AFTER = 2.0
RECHECK_INTERVAL = 0.5
# A replica with nothing to probe counts as healthy once it has kept running
# this long, so a command that exits at once is seen as a crash, not as ready.
NO_PROBE_SETTLE = 1.0
FAILURES_TO_UNHEALTHY = 2
MAX_STATUS_LINE = 1024
# Probes of one app in flight at once: an app whose replicas answer slowly
# takes at most this many of the workers, and every other app keeps the rest.
PROBES_PER_APP = 4


@dataclass(frozen=True)
class ProbeTarget:
    container_id: str
    app: str
    replica: str
    ip: str
    port: int | None
    kind: str  # "http", "tcp" or "none"
    path: str | None
    interval: float
    timeout: float
    service: str = ""
    name: str = ""  # the container's name
    index: int = 0  # the replica's slot


@dataclass
class _ProbeState:
    target: ProbeTarget
    healthy: bool | None = None
    failures: int = 0
    due: float = 0.0
    in_flight: bool = False
    detail: str = field(default="")
    ever_healthy: bool = False
    started_at: float = 0.0  # when it was first probed (liveness's start period counts from here)
    failing_since: float | None = None  # the first failed probe of the current streak (liveness)


def probe(target: ProbeTarget) -> tuple[bool, str]:
    """Probe once, within ``target.timeout`` in all; returns (healthy, detail)."""
    if target.kind == "none" or target.port is None:
        return True, "running (no probe)"
    try:
        if target.kind == "http":
            return _http_probe(target)
        with socket.create_connection((target.ip, target.port), timeout=target.timeout):
            return True, "TCP connect ok"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    except ValueError as exc:
        return False, f"bad HTTP response: {exc}"


def _http_probe(target: ProbeTarget) -> tuple[bool, str]:
    """GET the health path and read only the status line, all before one deadline.

    A socket timeout bounds each read, not the probe: a replica answering one
    byte at a time would hold a probe (and a worker) forever. So the deadline
    is for the whole exchange, and at most MAX_STATUS_LINE bytes are read.
    """
    deadline = time.monotonic() + target.timeout
    request = (f"GET {target.path or '/'} HTTP/1.1\r\nHost: {target.ip}:{target.port}\r\n"
               "User-Agent: flotilla-health\r\nConnection: close\r\n\r\n")
    with socket.create_connection((target.ip, target.port), timeout=target.timeout) as sock:
        sock.sendall(request.encode())
        status = _status_code(_read_status_line(sock, deadline=deadline, timeout=target.timeout))
    return 200 <= status < 400, f"HTTP {status}"


def _read_status_line(sock: socket.socket, *, deadline: float, timeout: float) -> bytes:
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        late = TimeoutError(f"no status line within {timeout:g}s")
        if remaining <= 0:
            raise late
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(MAX_STATUS_LINE)
        except TimeoutError:
            raise late from None
        if not chunk:
            raise ValueError(f"connection closed after {received[:40]!r}")
        received += chunk
        if len(received) > MAX_STATUS_LINE and b"\n" not in received[:MAX_STATUS_LINE]:
            raise ValueError(f"no status line in the first {MAX_STATUS_LINE} bytes")
    return received.split(b"\n", 1)[0]


def _status_code(line: bytes) -> int:
    """``HTTP/1.1 204 No Content`` -> 204."""
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {line[:60]!r}")
    return int(parts[1])


class HealthProber:
    """Keeps every running replica's health current, in a background thread.

    ``on_change(target, healthy, detail)`` is called whenever a
    replica's health changes, so the reconciler can react at once;
    ``on_ready(target)`` before it when a replica answers for the first time,
    so the gateway can route to it without waiting for a reconcile pass.
    """

    def __init__(
        self,
        *,
        on_change: Callable[[ProbeTarget, bool, str], None],
        clock: Callable[[], float],
        on_ready: Callable[[ProbeTarget], None] | None = None,
        probe_fn: Callable[[ProbeTarget], tuple[bool, str]] = probe,
        workers: int = 16,
        per_app: int = PROBES_PER_APP,
    ) -> None:
        self._per_app = per_app
        self._on_change = on_change
        self._on_ready = on_ready
        self._clock = clock
        self._probe = probe_fn
        self._states: dict[str, _ProbeState] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
        self._wake = threading.Event()

    def set_targets(self, app: str, targets: list[ProbeTarget]) -> None:
        """Replace the probed replicas of ``app``; state of kept ones is kept."""
        wanted = {t.container_id: t for t in targets}
        with self._lock:
            for cid in [c for c, s in self._states.items() if s.target.app == app and c not in wanted]:
                del self._states[cid]
            for cid, target in wanted.items():
                state = self._states.get(cid)
                if state is None:
                    self._states[cid] = self._new_state(target)
                else:
                    state.target = target
        self._wake.set()

    def add_target(self, target: ProbeTarget) -> None:
        """Start probing one new replica at once (``set_targets`` keeps it)."""
        with self._lock:
            if target.container_id not in self._states:
                self._states[target.container_id] = self._new_state(target)
        self._wake.set()

    def _new_state(self, target: ProbeTarget) -> _ProbeState:
        """Probed at once (an unprobed kind once it has kept running NO_PROBE_SETTLE)."""
        now = self._clock()
        unprobed = target.kind == "none" or target.port is None
        return _ProbeState(target=target, due=now + (NO_PROBE_SETTLE if unprobed else 0.0), started_at=now)

    def failing(self, container_id: str) -> tuple[float, float | None] | None:
        """(when the replica was first probed, since when its probes fail or None), for liveness."""
        with self._lock:
            state = self._states.get(container_id)
            return (state.started_at, state.failing_since) if state else None

    def healthy(self, container_id: str) -> bool | None:
        with self._lock:
            state = self._states.get(container_id)
            return state.healthy if state else None

    def detail(self, container_id: str) -> str:
        with self._lock:
            state = self._states.get(container_id)
            return state.detail if state else ""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for state in self._due():
                self._pool.submit(self._probe_one, state)
            self._wake.wait(0.05)
            self._wake.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _due(self) -> list[_ProbeState]:
        """The probes to start now, earliest first, at most PROBES_PER_APP in flight per app."""
        now = self._clock()
        with self._lock:
            busy = Counter(s.target.app for s in self._states.values() if s.in_flight)
            due = []
            for state in sorted(self._states.values(), key=lambda s: s.due):
                if state.due > now:
                    break
                if not state.in_flight and busy[state.target.app] < self._per_app:
                    busy[state.target.app] += 1
                    state.in_flight = True
                    due.append(state)
        return due

    def _probe_one(self, state: _ProbeState) -> None:
        started = self._clock()
        ok, detail = self._probe(state.target)
        with self._lock:
            first = not state.ever_healthy and ok
            changed = self._record(state, ok, detail, started=started)
            current = self._states.get(state.target.container_id) is state
        if first and current:
            self._ready(state.target)
        if changed and current:
            self._on_change(state.target, bool(state.healthy), detail)

    def _ready(self, target: ProbeTarget) -> None:
        if self._on_ready is None:
            return
        try:
            self._on_ready(target)
        except Exception:  # the reconcile pass that on_change wakes routes it anyway
            log.exception("routing %s at its first answer failed", target.replica)

    def _record(self, state: _ProbeState, ok: bool, detail: str, *, started: float) -> bool:
        before = state.healthy
        state.in_flight = False
        state.detail = detail
        state.failures = 0 if ok else state.failures + 1
        # A failed probe counts from when it was sent: the replica did not answer from then on.
        state.failing_since = None if ok else (state.failing_since or started)
        if ok:
            state.healthy = state.ever_healthy = True
        elif before is True and state.failures >= FAILURES_TO_UNHEALTHY:
            state.healthy = False
        elif before is None and self._clock() - state.started_at >= NEVER_UP_AFTER:
            state.healthy = False  # never came up: say so, keep probing
        state.due = self._clock() + self._next_interval(state)
        return state.healthy is not before

    @staticmethod
    def _next_interval(state: _ProbeState) -> float:
        if state.healthy is not True:
            return STARTUP_INTERVAL
        if state.failures:
            return min(state.target.interval, RECHECK_INTERVAL)
        return state.target.interval
