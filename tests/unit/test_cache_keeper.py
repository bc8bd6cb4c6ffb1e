"""Which cache nodes outside the declared shape stay (addons/redis_cluster/keep.py), and how
the keeper's steps read in events (no Docker, no Redis)."""

from __future__ import annotations

from flotilla.addons.redis_cluster import Meet, MoveSlots, ObservedNode
from flotilla.addons.redis_cluster.keep import nodes_to_keep
from flotilla.daemon.caches import describe
from flotilla.spec import CacheSpec

SESSIONS = CacheSpec(type="redis-cluster", shards=3, replicas=1)


def keep(nodes: list[ObservedNode] | None, *containers: str) -> frozenset[str]:
    return nodes_to_keep(cache="sessions", spec=SESSIONS, nodes=nodes, containers=containers)


def node(name: str, *, slots=(), reachable=True, role="master") -> ObservedNode:
    return ObservedNode(name=name, node_id=f"id-{name}", role=role, slots=tuple(slots), reachable=reachable)


def test_before_any_observation_every_extra_node_with_a_container_stays():
    assert keep(None, "sessions-0-0", "sessions-3-0", "sessions-3-1", "web") == {"sessions-3-0", "sessions-3-1"}


def test_once_observed_only_extra_masters_holding_slots_stay_even_if_down():
    nodes = [node("sessions-0-0", slots=[(0, 4095)]), node("sessions-3-0", slots=[(12288, 16383)]),
             node("sessions-4-0", slots=[(5000, 5001)], reachable=False), node("sessions-3-1", role="replica")]
    assert keep(nodes, "sessions-0-0", "sessions-3-0", "sessions-3-1") == {"sessions-3-0", "sessions-4-0"}


def test_an_observation_where_nothing_answered_is_no_reason_to_let_go():
    assert keep([node("sessions-0-0", reachable=False)], "sessions-3-0") == {"sessions-3-0"}


def test_nodes_inside_the_shape_and_other_services_are_never_listed():
    nodes = [node("sessions-0-0", slots=[(0, 5460)]), node("sessions-2-1", role="replica")]
    assert keep(nodes, "sessions-0-0", "sessions-2-1", "sessions-extra", "cart") == frozenset()
    assert keep(None, "sessions-0-0", "sessions-1-1", "other-3-0") == frozenset()


def test_a_drained_extra_master_may_go():
    nodes = [node("sessions-0-0", slots=[(0, 16383)]), node("sessions-3-0")]  # sessions-3-0 holds nothing now
    assert keep(nodes, "sessions-0-0", "sessions-3-0") == frozenset()


def test_steps_are_described_for_events():
    assert describe(Meet(node="sessions-1-0", peer="sessions-0-0", reason="")) == "meet sessions-1-0 -> sessions-0-0"
    assert describe(MoveSlots(from_node="a", to_node="b", count=3, reason="")) == "move 3 slots a -> b"
