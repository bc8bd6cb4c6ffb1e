"""Which cache nodes outside the declared shape the keeper holds on to (no Docker, no Redis)."""

from __future__ import annotations

from flotilla.addons.redis_cluster import Meet, MoveSlots, ObservedNode
from flotilla.daemon.caches import CacheKeeper, CacheState, describe
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import parse_spec

SPEC = parse_spec("""\
app: shop
caches:
  sessions: {type: redis-cluster, shards: 3, replicas: 1}
services:
  web: {image: x, caches: [sessions]}
""", filename="flotilla.yaml", environ={})


def running(*services: str) -> Observed:
    return Observed(app="shop", replicas=tuple(
        ObservedReplica(container_id=s, name=f"shop-{s}-1-abc", service=s, index=1, config_hash="h", state="running")
        for s in services))


def keeper_with(nodes: list[ObservedNode] | None) -> CacheKeeper:
    keeper = CacheKeeper(controller=None, client=None, vault=None, clock=lambda: 0.0)
    if nodes is not None:
        keeper._states[("shop", "sessions")] = CacheState(nodes=tuple(nodes))
    return keeper


def node(name: str, *, slots=(), reachable=True, role="master") -> ObservedNode:
    return ObservedNode(name=name, node_id=f"id-{name}", role=role, slots=tuple(slots), reachable=reachable)


def test_before_any_observation_every_extra_node_with_a_container_stays():
    kept = keeper_with(None).keep(SPEC, running("sessions-0-0", "sessions-3-0", "sessions-3-1", "web"))
    assert kept == {"sessions": frozenset({"sessions-3-0", "sessions-3-1"})}


def test_once_observed_only_extra_masters_holding_slots_stay_even_if_down():
    keeper = keeper_with([node("sessions-0-0", slots=[(0, 4095)]), node("sessions-3-0", slots=[(12288, 16383)]),
                         node("sessions-4-0", slots=[(5000, 5001)], reachable=False),
                         node("sessions-3-1", role="replica")])
    kept = keeper.keep(SPEC, running("sessions-0-0", "sessions-3-0", "sessions-3-1"))
    assert kept == {"sessions": frozenset({"sessions-3-0", "sessions-4-0"})}


def test_an_observation_where_nothing_answered_is_no_reason_to_let_go():
    keeper = keeper_with([node("sessions-0-0", reachable=False)])
    assert keeper.keep(SPEC, running("sessions-3-0"))["sessions"] == {"sessions-3-0"}


def test_steps_are_described_for_events():
    assert describe(Meet(node="sessions-1-0", peer="sessions-0-0", reason="")) == "meet sessions-1-0 -> sessions-0-0"
    assert describe(MoveSlots(from_node="a", to_node="b", count=3, reason="")) == "move 3 slots a -> b"
