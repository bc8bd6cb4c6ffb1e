"""The one place Flotilla talks to Redis: observe a cluster's nodes, carry out planned steps.

The topology planner decides in plain data; this module turns its actions into
``CLUSTER MEET``, ``ADDSLOTSRANGE``, ``REPLICATE``, ``FAILOVER``, ``FORGET``
and the slot migration protocol (``SETSLOT IMPORTING/MIGRATING``,
``MIGRATE ... KEYS``, ``SETSLOT NODE``), and turns every node's
``CLUSTER NODES`` into ``ObservedNode`` values. redis-py errors never leave
it: they become ``CacheError`` with the node and the command.

Nodes are reached from the host at their container IPs on the cache's own
network (the host is that bridge's gateway); nothing is published.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flotilla.addons.redis_cluster.nodes import REDIS_PORT
from flotilla.addons.redis_cluster.topology import (
    AssignSlots,
    ClusterAction,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    ObservedNode,
    Replicate,
    Reset,
    parse_cluster_nodes,
    self_view,
)
from flotilla.errors import CacheError

CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 2.0
MIGRATE_TIMEOUT_MS = 5000
MIGRATE_BATCH = 100
# A node being introduced has a random id until the handshake ends. (A "noaddr"
# node is kept: it may be a master that still holds slots, at an address now
# taken by a new node.)
_TRANSIENT_FLAGS = ("handshake",)


@dataclass(frozen=True)
class NodeAddress:
    """Where one node's container answers now."""

    name: str
    ip: str


class ClusterClient:
    """Connections to the nodes of every cache, kept per address and password."""

    def __init__(self, *, connect_timeout: float = CONNECT_TIMEOUT, timeout: float = COMMAND_TIMEOUT) -> None:
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._clients: dict[tuple[str, str], redis.Redis] = {}
        self._lock = threading.Lock()

    def _client(self, ip: str, password: str) -> redis.Redis:
        with self._lock:
            client = self._clients.get((ip, password))
            if client is None:
                client = redis.Redis(
                    host=ip, port=REDIS_PORT, password=password, decode_responses=True,
                    retry=Retry(NoBackoff(), 0),  # a dead node must not hold up a whole pass
                    socket_connect_timeout=self._connect_timeout, socket_timeout=self._timeout,
                )
                self._clients[(ip, password)] = client
            return client

    def forget_addresses(self, keep: set[str]) -> None:
        """Close connections to addresses no node has any more."""
        with self._lock:
            for key in [k for k in self._clients if k[0] not in keep]:
                self._clients.pop(key).close()

    def _run(self, node: NodeAddress, password: str, *args: object):
        try:
            return self._client(node.ip, password).execute_command(*args)
        except redis.RedisError as exc:
            raise CacheError(f"{node.name} ({node.ip}): {' '.join(map(str, args[:2]))}: {exc}") from exc

    # -- observe ---------------------------------------------------------------------

    def observe(self, nodes: list[NodeAddress], password: str) -> list[ObservedNode]:
        """Every node the cluster knows of: the reachable ones as they report themselves,
        the others as their peers last saw them (marked unreachable)."""
        names_by_address = {n.ip: n.name for n in nodes}
        selves: dict[str, ObservedNode] = {}
        seen: dict[str, ObservedNode] = {}
        for node in nodes:
            try:
                text = _settled(self._run(node, password, "CLUSTER", "NODES"))
                me = self_view(text, names_by_address=names_by_address)
                if me.role == "replica":
                    info = self._run(node, password, "INFO", "replication")
                    master_ip = _ip_of(text, me.master_id)
                    me = replace(me, linked=info.get("master_link_status") == "up",
                                 stale_master_address=bool(master_ip) and info.get("master_host") != master_ip)
            except CacheError:
                continue
            if me.name != node.name:
                continue  # the address is stale: another node has it now
            selves[me.node_id] = me
            for other in parse_cluster_nodes(text, names_by_address=names_by_address):
                seen.setdefault(other.node_id, other)
        gone = [replace(n, reachable=False, linked=False) for i, n in seen.items() if i not in selves]
        return [*selves.values(), *gone]

    # -- change ----------------------------------------------------------------------

    def carry_out(
        self, action: ClusterAction, *, observed: list[ObservedNode], addresses: Mapping[str, str], password: str
    ) -> bool:
        """One planned step; False if the cluster is not ready for it yet (a node
        not yet known to another through gossip): the next pass plans it again.
        Markers (AddShard, EmptyShard) need no command."""
        ids = {n.name: n.node_id for n in observed if n.reachable}
        at = {name: NodeAddress(name, ip) for name, ip in addresses.items()}
        match action:
            case Meet(node=node, peer=peer):
                self._run(at[node], password, "CLUSTER", "MEET", addresses[peer], REDIS_PORT)
            case AssignSlots(node=node, ranges=ranges):
                self._run(at[node], password, "CLUSTER", "ADDSLOTSRANGE", *[s for r in ranges for s in r])
            case Replicate(node=node, master=master):
                try:
                    self._run(at[node], password, "CLUSTER", "REPLICATE", ids[master])
                except CacheError as exc:
                    if "Unknown node" in str(exc):
                        return False
                    raise
            case Failover(node=node):
                self._run(at[node], password, "CLUSTER", "FAILOVER")
            case Reset(node=node):
                self._run(at[node], password, "CLUSTER", "RESET", "SOFT")
            case Forget(node_id=node_id):
                self._forget(node_id, observed, at, password)
            case MoveSlots():
                self._move(action, from_id=ids[action.from_node], to_id=ids[action.to_node], at=at,
                           password=password)
        return True

    def _forget(self, node_id: str, observed: list[ObservedNode], at: Mapping[str, NodeAddress], password: str) -> None:
        for other in observed:
            if other.reachable and other.node_id != node_id and other.name in at:
                try:
                    self._run(at[other.name], password, "CLUSTER", "FORGET", node_id)
                except CacheError as exc:
                    if "Unknown node" not in str(exc) and "forget my master" not in str(exc):
                        raise

    def _move(
        self, action: MoveSlots, *, from_id: str, to_id: str, at: Mapping[str, NodeAddress], password: str
    ) -> None:
        """Redis' own slot migration, slot by slot, keys included (the way ``redis-cli --cluster reshard`` does)."""
        src, dst = at[action.from_node], at[action.to_node]
        for slot in _highest_first(action.slots):
            self._run(dst, password, "CLUSTER", "SETSLOT", slot, "IMPORTING", from_id)
            self._run(src, password, "CLUSTER", "SETSLOT", slot, "MIGRATING", to_id)
            while keys := self._run(src, password, "CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
                self._run(src, password, "MIGRATE", dst.ip, REDIS_PORT, "", 0, MIGRATE_TIMEOUT_MS,
                          "REPLACE", "AUTH", password, "KEYS", *keys)
            for node in (dst, src):
                self._run(node, password, "CLUSTER", "SETSLOT", slot, "NODE", to_id)


def _settled(text: str) -> str:
    """``CLUSTER NODES`` without nodes still being introduced (their ids are not final yet)."""
    return "\n".join(
        line for line in text.splitlines()
        if line.strip() and not any(flag in line.split()[2].split(",") for flag in _TRANSIENT_FLAGS)
    )


def _ip_of(text: str, node_id: str | None) -> str | None:
    """The IP ``CLUSTER NODES`` shows for ``node_id`` (``172.18.0.5:6379@16379,name``)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == node_id:
            return fields[1].partition(":")[0] or None
    return None


def _highest_first(ranges: tuple[tuple[int, int], ...]) -> Iterator[int]:
    """Every slot of ``ranges``, highest first."""
    for a, b in sorted(ranges, reverse=True):
        yield from range(b, a - 1, -1)
