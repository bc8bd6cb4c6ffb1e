"""Which nodes the keeper counts as the cache's own and which outside the declared shape stay
(addons/redis_cluster/keep.py), and how the keeper's steps read in events (no Docker, no Redis)."""

from __future__ import annotations

from dataclasses import replace

from flotilla.addons.redis_cluster import Forget, Meet, MoveSlots, ObservedNode, parse_cluster_nodes, self_view
from flotilla.addons.redis_cluster.keep import next_steps, nodes_to_keep, resting_nodes
from flotilla.addons.redis_cluster.nodes import with_cache_nodes
from flotilla.addons.redis_cluster.topology import MOVE_GRACE
from flotilla.daemon.caches import describe
from flotilla.spec import CacheSpec, parse_spec

SESSIONS = CacheSpec(type="redis-cluster", shards=3, replicas=1)


def keep(nodes: list[ObservedNode] | None, *containers: str) -> frozenset[str]:
    return nodes_to_keep(cache="sessions", spec=SESSIONS, nodes=nodes, containers=containers)


def node(name: str, *, slots=(), reachable=True, role="master") -> ObservedNode:
    return ObservedNode(name=name, node_id=f"id-{name}", role=role, slots=tuple(slots), reachable=reachable)


def test_before_any_observation_every_extra_node_with_a_container_stays():
    assert keep(None, "sessions-0-0", "sessions-3-0", "sessions-3-1", "web") == {"sessions-3-0", "sessions-3-1"}


def test_once_observed_extra_masters_holding_slots_stay_even_if_down_and_so_do_their_shards():
    nodes = [node("sessions-0-0", slots=[(0, 4095)]), node("sessions-3-0", slots=[(12288, 16383)]),
             node("sessions-4-0", slots=[(5000, 5001)], reachable=False), node("sessions-3-1", role="replica"),
             node("sessions-5-1", role="replica")]
    # sessions-3-1 acknowledges sessions-3-0's writes (WAIT) until its last slot has moved
    assert keep(nodes, "sessions-0-0", "sessions-3-0", "sessions-3-1", "sessions-5-1") == {
        "sessions-3-0", "sessions-3-1", "sessions-4-0"}


def test_a_shard_whose_slots_just_moved_off_rests_before_it_goes():
    nodes = [node("sessions-0-0", slots=[(0, 16383)]), node("sessions-3-0", role="replica"),
             node("sessions-3-1", role="replica")]
    resting = resting_nodes("sessions", nodes, {3: 100.0}, now=101.5)
    assert resting == {"sessions-3-0", "sessions-3-1"}
    assert nodes_to_keep(cache="sessions", spec=SESSIONS, nodes=nodes, containers=(), resting=resting) == resting
    assert resting_nodes("sessions", nodes, {3: 100.0}, now=100.0 + MOVE_GRACE) == frozenset()


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


# --- strangers: nodes in the cluster that are none of the cache's containers ---------------------

ROGUE = "9" * 40
SPEC = """\
app: shop
caches:
  sessions: {type: redis-cluster, shards: 3, replicas: 1}
services:
  cart: {image: shop-cart:1, port: 8000, caches: [sessions]}
  catalog: {image: shop-catalog:1, port: 8000}
"""
OWN = {f"sessions-{s}-{o}": f"172.30.0.{2 + 2 * s + o}" for s in range(3) for o in range(2)}


RANGES = {0: "1-5460", 1: "5461-10922", 2: "10923-16383"}  # slot 0 is the rogue's


def own_line(name: str, *, me: bool) -> str:
    shard, ordinal = (int(part) for part in name.split("-")[1:])
    role, master, slots = ("master", "-", RANGES[shard]) if ordinal == 0 else ("slave", f"id-sessions-{shard}-0", "")
    flags = f"myself,{role}" if me else role
    return f"id-{name} {OWN[name]}:6379@16379,{name} {flags} {master} 0 0 {shard + 1} connected {slots}".strip()


def view_of(rogue: str, *, silent: str = "") -> list[ObservedNode]:
    """What client.observe makes of the cluster once ``rogue`` announced itself: every own node
    but ``silent`` answered at its container IP; the rogue is known only from their CLUSTER NODES."""
    names = {ip: name for name, ip in OWN.items()}
    texts = {me: "\n".join([*(own_line(n, me=n == me) for n in OWN), rogue]) for me in OWN if me != silent}
    selves = [self_view(text, names_by_address=names) for text in texts.values()]
    mine = {n.node_id for n in selves}
    others = parse_cluster_nodes(texts["sessions-0-0"], names_by_address=names)
    return [*selves, *(replace(n, reachable=False, linked=False) for n in others if n.node_id not in mine)]


def test_a_node_that_is_none_of_the_caches_containers_is_forgotten_and_never_kept():
    # a rogue started in `cart`'s container took slot 0 and calls itself cart
    seen = view_of(f"{ROGUE} 172.20.0.9:6379@16379,cart master - 0 0 9 connected 0")
    steps = next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=OWN, now=0.0)
    assert [s.name for s in steps.strangers] == ["cart"]
    forgets = [a for a in steps.actions if isinstance(a, Forget)]
    assert [(f.node, f.node_id) for f in forgets] == [("cart", ROGUE)]
    assert "172.20.0.9" in forgets[0].reason and "none of the cache's containers" in forgets[0].reason
    assert ROGUE not in {n.node_id for n in steps.own}  # not counted: slot 0 is seen as free, not as held
    kept = nodes_to_keep(cache="sessions", spec=SESSIONS, nodes=seen, containers=[*OWN, "cart"])
    assert kept == frozenset()  # even fed the unfiltered view, `cart` is not a node to keep
    spec = parse_spec(SPEC, filename="flotilla.yaml", environ={})
    runtime = with_cache_nodes(spec, keep={"sessions": frozenset({"cart", "sessions-7-0"})})
    assert runtime.services["cart"] == with_cache_nodes(spec).services["cart"]  # cart stays cart
    assert runtime.services["cart"].addon is None


def test_a_stranger_naming_itself_after_a_node_is_still_a_stranger():
    seen = view_of(f"{ROGUE} 172.20.0.9:6379@16379,sessions-0-0 master - 0 0 9 connected 0")
    steps = next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=OWN, now=0.0)
    assert [s.node_id for s in steps.strangers] == [ROGUE]
    assert [a.node_id for a in steps.actions if isinstance(a, Forget)] == [ROGUE]


def test_a_stranger_stays_one_when_it_goes_down_and_an_own_node_that_went_down_stays_own():
    down = f"{ROGUE} 172.20.0.9:6379@16379,sessions-5-0 master,fail - 0 0 9 disconnected 0"
    seen = view_of(down)
    assert next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=OWN, now=0.0).strangers == ()
    flagged = next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=OWN, flagged={ROGUE}, now=0.0)
    assert [s.node_id for s in flagged.strangers] == [ROGUE]
    # sessions-2-1 died: its container (and IP) is gone, its peers still list it; it is the cache's own
    alive = {k: v for k, v in OWN.items() if k != "sessions-2-1"}
    seen = view_of("", silent="sessions-2-1")
    steps = next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=alive, known={"id-sessions-2-1"},
                       now=0.0)
    assert steps.strangers == () and "sessions-2-1" in {n.name for n in steps.own}


def test_without_strangers_the_keeper_plans_as_before():
    seen = view_of("")
    steps = next_steps(cache="sessions", spec=SESSIONS, seen=seen, addresses=OWN, now=0.0)
    assert steps.strangers == () and not any(isinstance(a, Forget) for a in steps.actions)
    assert steps.known == {f"id-{n}" for n in OWN}
