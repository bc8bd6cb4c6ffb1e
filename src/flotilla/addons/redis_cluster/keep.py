"""Which cache nodes outside the declared shape must stay for now: a pure decision.

When ``shards`` or ``replicas`` shrink, the nodes outside the new shape go,
but not while they still hold slots: a draining master (even one that crashed
and must come back, with its volume, to hand its slots over) stays until its
slots have moved. When nothing could be observed (a daemon that just started,
or no node answering), every extra node that has a container stays, to be safe.
"""

from __future__ import annotations

from collections.abc import Iterable

from flotilla.addons.redis_cluster.topology import ObservedNode, node_names
from flotilla.naming import is_cache_node
from flotilla.spec import CacheSpec


def nodes_to_keep(
    *,
    cache: str,
    spec: CacheSpec,
    nodes: Iterable[ObservedNode] | None,
    containers: Iterable[str],
) -> frozenset[str]:
    """The nodes of ``cache`` outside its shape that must not be removed yet.

    ``nodes`` is the cache as last observed through its nodes (None: never
    observed); ``containers`` names the services that have a container now.
    """
    shape = {n.name for n in node_names(cache, shards=spec.shards, replicas=spec.replicas)}
    seen = tuple(nodes or ())
    if not any(n.reachable for n in seen):
        extra = {name for name in containers if is_cache_node(cache, name)}
    else:
        extra = {n.name for n in seen if n.holds_slots}
    return frozenset(extra - shape)
