"""cart: each user's shopping cart, which is their session in the shop.

GET    /cart/<user>  the cart
POST   /cart/<user>  add {"item": id, "qty": n}; the item is checked with catalog first
DELETE /cart/<user>  empty the cart

With the Redis Cluster add-on (SESSIONS_REDIS_NODES set, see flotilla.yaml),
carts live in the cluster: one hash per user, shared by every replica, so a
user sees the same cart whichever replica answers and after any of them
restarts; a cart unused for CART_TTL_SECONDS (default a day) expires. A node
failing over makes the store wait and retry for a few seconds; past that it
answers 503. Without the add-on, carts live in this process's memory (each
replica has its own, a restart forgets them), which is handy without Docker.
All storage goes through a CartStore; /healthz never touches it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

from shopkit import HttpError, ServiceHandler, call_upstream, identity, log, serve, upstream_url

SERVICE = "cart"
CATALOG_URL = upstream_url("CATALOG_URL", "http://catalog:8000")
USER_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
ITEM_PATTERN = USER_PATTERN
MAX_QTY = 100
CART_TTL_SECONDS = int(os.environ.get("CART_TTL_SECONDS", str(24 * 3600)))


class CartStore(Protocol):
    def get(self, user: str) -> dict[str, int]: ...
    def add(self, user: str, item: str, qty: int) -> dict[str, int]: ...
    def clear(self, user: str) -> None: ...


class MemoryCartStore:
    """Carts in a dict: item id -> quantity, per user."""

    def __init__(self) -> None:
        self._carts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def get(self, user: str) -> dict[str, int]:
        with self._lock:
            return dict(self._carts.get(user, {}))

    def add(self, user: str, item: str, qty: int) -> dict[str, int]:
        with self._lock:
            cart = self._carts.setdefault(user, {})
            cart[item] = min(cart.get(item, 0) + qty, MAX_QTY)
            return dict(cart)

    def clear(self, user: str) -> None:
        with self._lock:
            self._carts.pop(user, None)


class RedisCartStore:
    """Carts in a Redis Cluster: the hash ``cart:<user>``, item id -> quantity.

    The cluster client (redis-py 4.3.4's RedisCluster) is made on first use,
    so the service starts and is healthy before the cluster has formed. A
    failover (a master killed) leaves its slots unserved for 2-3 s; each
    operation therefore retries for up to ``budget`` seconds (an attempt
    under way when it runs out may finish up to ~4 s later: 4.3.4 itself
    retries a node 5 times before it rereads the slot map), with a fresh
    client after every failure: in 4.3.4 a client that failed mid-failover
    can keep a stale slot map or none at all, and a new one bootstraps from
    every node in SESSIONS_REDIS_NODES again. Past the budget: HTTP 503.
    A write is retried like a read, so one whose reply was lost may count
    twice; the cap keeps that harmless for a demo cart.
    """

    SOCKET_TIMEOUT = 1.0  # a command on an open connection
    CONNECT_TIMEOUT = 0.5  # a node that is gone must not hold a request up long
    FIRST_PAUSE, MAX_PAUSE = 0.1, 0.8  # between attempts, doubling
    # One round trip, atomic: add, cap at the maximum, refresh the TTL, read back.
    ADD_SCRIPT = """
local qty = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if qty > tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""

    def __init__(self, *, nodes: list[tuple[str, int]], password: str | None, ttl: int = CART_TTL_SECONDS,
                 budget: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import redis  # only this store needs the package (python3-redis in the image)

        self._redis = redis
        self._nodes = nodes
        self._connection_class = bounded_lookup_connection(redis, timeout=self.CONNECT_TIMEOUT)
        self._password, self._ttl, self._budget = password, ttl, budget
        self._clock, self._sleep = clock, sleep
        self._client = None
        self._lock = threading.Lock()
        # What a failover or a cluster still forming raises, in 4.3.4.
        self._retryable = (
            redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
            redis.exceptions.TryAgainError, redis.exceptions.RedisClusterException,
        )
        # 4.3.4 logs a traceback for every MOVED and retried error; each
        # request that gives up logs one line of its own instead.
        logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)

    def get(self, user: str) -> dict[str, int]:
        found = self._run(lambda client: client.hgetall(self._key(user)))
        return {item: int(qty) for item, qty in found.items()}

    def add(self, user: str, item: str, qty: int) -> dict[str, int]:
        flat = self._run(lambda client: client.eval(
            self.ADD_SCRIPT, 1, self._key(user), item, qty, MAX_QTY, self._ttl))
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def clear(self, user: str) -> None:
        self._run(lambda client: client.delete(self._key(user)))

    @staticmethod
    def _key(user: str) -> str:
        return f"cart:{user}"

    def _run(self, operation):
        """``operation(client)``, retried on cluster trouble until the budget is spent."""
        deadline = self._clock() + self._budget
        pause = self.FIRST_PAUSE
        while True:
            try:
                return self._attempt(operation)
            except self._retryable as exc:
                if self._clock() + pause >= deadline:
                    log(SERVICE, f"session store unavailable after {self._budget:g}s: {exc!r}")
                    raise HttpError(503, "session store unavailable, try again shortly",
                                    store="redis-cluster", detail=str(exc)) from exc
                self._sleep(pause)
                pause = min(pause * 2, self.MAX_PAUSE)

    def _attempt(self, operation):
        client = self._connect()
        try:
            return operation(client)
        except self._retryable:
            self._forget(client)
            raise

    def _connect(self):
        """The shared client, made (topology discovered) if there is none."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self):
        # New ClusterNode objects each time: 4.3.4 keeps connections on them.
        (host, port), *others = self._nodes
        try:
            return self._redis.RedisCluster(
                # 4.3.4 passes connection_class on to its nodes only for a client made with a url.
                url=f"redis://{host}:{port}", connection_class=self._connection_class,
                startup_nodes=[self._redis.cluster.ClusterNode(h, p) for h, p in others],
                password=self._password, decode_responses=True,
                socket_timeout=self.SOCKET_TIMEOUT, socket_connect_timeout=self.CONNECT_TIMEOUT,
                cluster_error_retry_attempts=1,  # retries are ours, within the budget
            )
        except IndexError as exc:  # 4.3.4, when no node has slots yet (cluster not formed)
            raise self._redis.exceptions.RedisClusterException("no slots assigned yet") from exc

    def _forget(self, client) -> None:
        """Drop a client that failed (unless another thread already has), so the next attempt makes a new one."""
        with self._lock:
            if self._client is client:
                self._client = None


def bounded_lookup_connection(redis, *, timeout: float) -> type:
    """A redis-py Connection class whose name lookup gives up after ``timeout`` s.

    A killed node's name is unknown until Flotilla replaces it, and the
    resolver needs a second or more to say so (socket_connect_timeout does not
    cover lookups); 4.3.4 tries a node several times before rereading the
    slot map, so each of those must fail fast.
    """

    class BoundedLookupConnection(redis.Connection):
        def _connect(self):
            name = self.host
            self.host = resolve(name, self.port, timeout=timeout)
            try:
                return super()._connect()
            finally:
                self.host = name

    return BoundedLookupConnection


def resolve(host: str, port: int, *, timeout: float) -> str:
    """An address of ``host``; TimeoutError (socket.timeout) if the lookup takes longer (it finishes unseen)."""
    found: list = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=look_up, daemon=True)
    worker.start()
    worker.join(timeout)
    if not found:
        raise TimeoutError(f"looking up {host} took more than {timeout:g}s")
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def parse_nodes(text: str) -> list[tuple[str, int]]:
    """``"sessions-0-0:6379,sessions-0-1:6379"`` -> [("sessions-0-0", 6379), ...]."""
    nodes = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = entry.rpartition(":")
        nodes.append((host, int(port)) if host else (entry, 6379))
    return nodes


def make_store() -> CartStore:
    """Redis Cluster when Flotilla wired the sessions cache in, else memory."""
    nodes = parse_nodes(os.environ.get("SESSIONS_REDIS_NODES", ""))
    if not nodes:
        log(SERVICE, "carts in memory (SESSIONS_REDIS_NODES is not set)")
        return MemoryCartStore()
    log(SERVICE, f"carts in the Redis Cluster of {len(nodes)} nodes, expiring after {CART_TTL_SECONDS}s")
    return RedisCartStore(nodes=nodes, password=os.environ.get("SESSIONS_REDIS_PASSWORD") or None)


STORE: CartStore = make_store()


def parse_line(body: dict) -> tuple[str, int]:
    """Check a POSTed {"item": id, "qty": n}: an id and a whole number 1..MAX_QTY."""
    item, qty = body.get("item"), body.get("qty", 1)
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or not re.fullmatch(ITEM_PATTERN, item):
        raise HttpError(400, '"item" must be an item id such as "mug"')
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        raise HttpError(400, f'"qty" must be a whole number from 1 to {MAX_QTY}')
    return item, qty


def check_item_exists(item: str) -> None:
    status, _ = call_upstream("catalog", f"{CATALOG_URL}/items/{quote(item)}")
    if status == 404:
        raise HttpError(404, "no such item", item=item)
    if status != 200:
        raise HttpError(502, f"catalog answered {status}", upstream="catalog")


class CartHandler(ServiceHandler):
    service = SERVICE
    routes = [
        ("GET", rf"/cart/(?P<user>{USER_PATTERN})", "get_cart"),
        ("POST", rf"/cart/(?P<user>{USER_PATTERN})", "add_to_cart"),
        ("DELETE", rf"/cart/(?P<user>{USER_PATTERN})", "clear_cart"),
    ]

    def reply(self, user: str, cart: dict[str, int]) -> None:
        lines = [{"item": item, "qty": qty} for item, qty in sorted(cart.items())]
        self.send_json(200, {"user": user, "items": lines, "served_by": identity(SERVICE)})

    def get_cart(self, match) -> None:
        self.reply(match["user"], STORE.get(match["user"]))

    def add_to_cart(self, match) -> None:
        item, qty = parse_line(self.json_body())
        check_item_exists(item)
        self.reply(match["user"], STORE.add(match["user"], item, qty))

    def clear_cart(self, match) -> None:
        STORE.clear(match["user"])
        self.reply(match["user"], {})


if __name__ == "__main__":
    serve(CartHandler)
