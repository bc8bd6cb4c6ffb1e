"""A session workload against a Flotilla Redis Cluster, from the host, for tests and benchmarks.

The nodes announce hostnames (``sessions-1-0``) that only resolve inside the
app's network, so a stock cluster client on the host cannot follow them. This
small client keeps the slot map from ``CLUSTER SLOTS``, resolves node names to
container IPs through Docker, follows ``MOVED`` and ``ASK``, and retries
within a window the way an application's client would. Every write can be
acknowledged with ``WAIT 1`` on the same connection, so a test can tell an
acknowledged write from one that may legitimately be lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

RETRY_PAUSE = 0.05
_RETRYABLE = (
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
    redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError,
    redis.ConnectionError, redis.TimeoutError,
)


def docker_resolver(docker_client, app: str) -> Callable[[str], str | None]:
    """Node name -> the IP of its running container on its cache's own network (``flotilla-APP-cache-NAME``)."""
    def resolve(name: str) -> str | None:
        found = docker_client.containers.list(
            filters={"label": [f"io.flotilla.app={app}", f"io.flotilla.service={name}"], "status": "running"})
        for container in found:
            networks = container.attrs["NetworkSettings"]["Networks"]
            ip = next((net.get("IPAddress") for net_name, net in networks.items()
                       if net_name.startswith(f"flotilla-{app}-cache-")), None)
            if ip:
                return ip
        return None
    return resolve


class SessionClient:
    """One connection per node, a slot map, MOVED/ASK, retries within ``retry_window`` seconds."""

    def __init__(self, *, seeds: list[str], password: str, resolve: Callable[[str], str | None],
                 retry_window: float = 5.0, timeout: float = 1.0) -> None:
        self.seeds, self.password, self.resolve = seeds, password, resolve
        self.retry_window, self.timeout = retry_window, timeout
        self._conns: dict[str, redis.Redis] = {}
        self._slots: dict[int, str] = {}

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # -- plumbing ------------------------------------------------------------------

    def _conn(self, node: str) -> redis.Redis:
        conn = self._conns.get(node)
        if conn is None:
            ip = self.resolve(node)
            if ip is None:
                raise redis.ConnectionError(f"{node} has no running container")
            conn = redis.Redis(host=ip, port=6379, password=self.password, single_connection_client=True,
                               retry=Retry(NoBackoff(), 0),  # this client retries itself, elsewhere
                               socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                               decode_responses=True)
            self._conns[node] = conn
        return conn

    def _drop(self, node: str) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None:
            conn.close()

    def refresh(self) -> None:
        """Rebuild the slot map from the first seed that answers."""
        for node in [*self.seeds, *self._conns]:
            try:
                ranges = self._conn(node).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                self._drop(node)
                continue
            slots = {}
            for entry in ranges:
                start, end, master = entry[0], entry[1], entry[2]
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = str(master[0])
            if len(slots) == 16384:
                self._slots = slots
                return

    def node_for(self, key: str) -> str:
        if not self._slots:
            self.refresh()
        return self._slots.get(key_slot(key.encode()), self.seeds[0])

    def _attempt(self, node: str, commands: list[tuple], *, asking: bool):
        conn = self._conn(node)
        if asking:
            conn.execute_command("ASKING")
        return [conn.execute_command(*c) for c in commands]

    def run(self, key: str, commands: list[tuple]):
        """``commands`` on the node serving ``key``, on one connection; retried until the window ends."""
        deadline = time.monotonic() + self.retry_window
        node, asking = self.node_for(key), False
        while True:
            try:
                return self._attempt(node, commands, asking=asking)
            except redis.exceptions.MovedError:  # (a subclass of AskError) the slot map changed
                if time.monotonic() > deadline:
                    raise
            except redis.exceptions.AskError as exc:  # "ASK slot host:port": once, to that node
                node, asking = exc.host, True
                continue
            except _RETRYABLE:
                if time.monotonic() > deadline:
                    raise
                self._drop(node)
            time.sleep(RETRY_PAUSE)
            self.refresh()
            node, asking = self.node_for(key), False

    # -- sessions ------------------------------------------------------------------------

    def write(self, key: str, value: str, *, replicas: int = 1, wait_ms: int = 1000) -> bool:
        """SET, then WAIT for ``replicas`` replicas on the same connection: True if acknowledged.

        The SET itself succeeded if this returns at all; False means no replica
        confirmed it within ``wait_ms`` (say, right after a failover, before the
        shard has a replica again), so it may be lost without breaking a promise.
        """
        _, acked = self.run(key, [("SET", key, value), ("WAIT", replicas, wait_ms)])
        return int(acked) >= replicas

    def read(self, key: str) -> str | None:
        return self.run(key, [("GET", key)])[0]


@dataclass
class Workload:
    """A thread writing and reading sessions until stopped, counting what happened."""

    client: SessionClient
    prefix: str = "live"
    acked: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)  # monotonic time of each successful SET
    wrong_reads: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._loop, name="session-workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Workload:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        return self

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            key, value = f"{self.prefix}:{n}", f"v{n}-{time.monotonic():.3f}"
            try:
                if self.client.write(key, value, wait_ms=200):
                    self.acked[key] = value
                self.successes.append(time.monotonic())
                if n % 5 == 0 and n:
                    earlier = f"{self.prefix}:{n // 2}"
                    if earlier in self.acked and self.client.read(earlier) != self.acked[earlier]:
                        self.wrong_reads.append(earlier)
            except redis.RedisError as exc:
                self.failures.append(f"{key}: {exc}")
            n += 1

    def longest_gap(self, after: float = 0.0) -> float:
        """The longest time without a successful write, from ``after`` on."""
        times = [t for t in self.successes if t >= after]
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


def write_sessions(client: SessionClient, count: int, *, prefix: str = "session", batch: int = 200) -> dict[str, str]:
    """``count`` sessions, each acknowledged by a replica (``WAIT 1`` after each batch per node)."""
    written: dict[str, str] = {}
    by_node: dict[str, list[str]] = {}
    for i in range(count):
        key = f"{prefix}:{i}"
        by_node.setdefault(client.node_for(key), []).append(key)
    for keys in by_node.values():
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            commands = [("SET", k, f"user-{k}") for k in chunk]
            *_, acked = client.run(chunk[0], [*commands, ("WAIT", 1, 2000)])
            assert int(acked) >= 1, f"WAIT 1 was not acknowledged for {chunk[0]}..{chunk[-1]}"
            written.update({k: f"user-{k}" for k in chunk})
    return written


def missing(client: SessionClient, expected: dict[str, str]) -> list[str]:
    """Keys whose value is not what was acknowledged."""
    return [k for k, v in expected.items() if client.read(k) != v]
