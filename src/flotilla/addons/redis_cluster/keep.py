"""Which nodes the cache keeper counts as the cache's own, and which outside the shape must stay.

Own or stranger. The cluster bus has no password, so any process that can reach
a node's bus port can announce itself into the cluster under any name. The
keeper therefore never takes the cluster's word for who belongs: a node is the
cache's own only if it answered the keeper itself, at the address of one of
the cache's containers, under that container's name (now, or in an earlier
pass), or if the cluster has it at such an address. Any other node that the
cluster sees up is a *stranger*: it is not counted, never kept and never turned
into a service; the cache's nodes forget it. Once a stranger, always (its id is
remembered), even when it later goes down.

Staying. When ``shards`` or ``replicas`` shrink, the nodes outside the new
shape go, but not while they still hold slots: a draining master (even one that
crashed and must come back, with its volume, to hand its slots over) stays
until its slots have moved, and with it the rest of its shard; after the last
slot left, the shard's nodes stay for ``topology.MOVE_GRACE`` more seconds (the
keeper records when slots moved off each shard). When nothing could be observed (a daemon that just
started, or no node answering), every extra node that has a container stays, to
be safe. Only names of the cache's node shape are ever kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from flotilla.addons.redis_cluster.topology import (
    ClusterAction,
    Forget,
    ObservedNode,
    node_names,
    plan_cluster,
    shards_at_rest,
)
from flotilla.naming import cache_node_place, is_cache_node
from flotilla.spec import CacheSpec


def nodes_to_keep(
    *,
    cache: str,
    spec: CacheSpec,
    nodes: Iterable[ObservedNode] | None,
    containers: Iterable[str],
    resting: Iterable[str] = (),
) -> frozenset[str]:
    """The nodes of ``cache`` outside its shape that must not be removed yet.

    ``nodes`` is the cache as last observed through its own nodes (None: never
    observed); ``containers`` names the services that have a container now;
    ``resting`` the nodes of shards whose slots just moved off (Steps.resting).
    A going shard keeps all its nodes while one of them holds slots: its
    master's replica is what acknowledges writes (WAIT) and takes over if the
    master dies until the last slot has left.
    """
    shape = {n.name for n in node_names(cache, shards=spec.shards, replicas=spec.replicas)}
    seen = tuple(nodes or ())
    if not any(n.reachable for n in seen):
        extra = set(containers)
    else:
        serving = {_shard(cache, n.name) for n in seen if n.holds_slots} - {None}
        extra = {n.name for n in seen if n.holds_slots or _shard(cache, n.name) in serving} | set(resting)
    return frozenset(name for name in extra - shape if is_cache_node(cache, name))


def _shard(cache: str, name: str) -> int | None:
    place = cache_node_place(cache, name)
    return place[0] if place else None


def strangers(
    observed: Iterable[ObservedNode], *, addresses: Mapping[str, str], known: Set[str], flagged: Set[str] = frozenset()
) -> list[ObservedNode]:
    """The nodes in ``observed`` that the keeper did not create (see the module docstring).

    ``addresses``: the cache's running containers, name -> IP; ``known``: ids of
    nodes that answered the keeper at those addresses; ``flagged``: ids already
    found to be strangers.
    """
    ips = set(addresses.values())
    return [
        n for n in observed
        if not n.reachable and n.node_id not in known
        and (n.node_id in flagged or (n.up_to_peers and n.address not in ips))
    ]


def forget_strangers(found: Iterable[ObservedNode]) -> list[Forget]:
    """A ``Forget`` for each stranger, saying what it is."""
    return [
        Forget(node=n.name, node_id=n.node_id,
               reason=f"node {n.node_id[:8]} at {n.address or 'no address'} (calling itself {n.name}) joined the "
                      "cluster but is none of the cache's containers: it is not counted, and the nodes forget it")
        for n in found
    ]


@dataclass(frozen=True)
class Steps:
    """One pass of the keeper, decided: the cache's own nodes, the strangers, and what to do."""

    own: tuple[ObservedNode, ...]
    strangers: tuple[ObservedNode, ...]
    known: frozenset[str]  # ids of the cache's own nodes seen so far
    actions: tuple[ClusterAction, ...]
    resting: frozenset[str] = frozenset()  # nodes of shards whose slots just moved off: they stay a while


def next_steps(
    *, cache: str, spec: CacheSpec, seen: Sequence[ObservedNode], addresses: Mapping[str, str],
    known: Set[str] = frozenset(), flagged: Set[str] = frozenset(), moved_off: Mapping[int, float] | None = None,
    now: float,
) -> Steps:
    """Strangers in ``seen`` are forgotten first; the plan is made from the cache's own nodes alone."""
    known = frozenset(known) | {n.node_id for n in seen if n.reachable}
    found = strangers(seen, addresses=addresses, known=known, flagged=flagged)
    own = [n for n in seen if n not in found]
    plan = plan_cluster(cache=cache, shards=spec.shards, replicas=spec.replicas, observed=own, now=now,
                        moved_off=moved_off)
    return Steps(own=tuple(own), strangers=tuple(found), known=known, actions=(*forget_strangers(found), *plan),
                 resting=resting_nodes(cache, own, moved_off or {}, now=now))


def resting_nodes(cache: str, nodes: Iterable[ObservedNode], moved_off: Mapping[int, float], *, now: float
                  ) -> frozenset[str]:
    """The nodes of the shards whose slots moved off less than ``MOVE_GRACE`` ago."""
    resting = shards_at_rest(moved_off, now=now)
    return frozenset(n.name for n in nodes if _shard(cache, n.name) in resting)
