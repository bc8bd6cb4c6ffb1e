"""The Redis Cluster topology, without Redis: names, slots, parsing, and the plan.

Plans are checked by carrying them out on ``Sim``, a small model of a cluster
that behaves as Redis does where it matters here: a replica is promoted when
its master is lost, a master that gives away its last slot becomes a replica
of the taker, and nodes only talk once introduced. Every action is checked as
it is applied: no slot is ever held by two masters, and no action lowers the
number of slots served by a reachable master.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.addons.redis_cluster import (
    SLOTS,
    AddShard,
    AssignSlots,
    EmptyShard,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    NodeName,
    ObservedNode,
    Replicate,
    Reset,
    cluster_ready,
    node_names,
    parse_cluster_nodes,
    plan_cluster,
    self_view,
    slot_ranges,
)
from flotilla.addons.redis_cluster.topology import MOVE_GRACE, shards_at_rest

CACHE = "sessions"


# --- a small model of a cluster --------------------------------------------------------------


@dataclass
class SimNode:
    name: str
    node_id: str
    role: str = "master"
    master_id: str | None = None
    slots: list[tuple[int, int]] = field(default_factory=list)
    live: bool = True
    gone: bool = False  # lost its volume: this id never answers again
    group: int = 0


class Sim:
    def __init__(self):
        self.nodes: dict[str, SimNode] = {}
        self._ids = itertools.count()

    # the engine's part: a container per wanted name (and Redis's: failovers after node-timeout)
    def ensure(self, *, shards, replicas):
        for dead in [n for n in self.nodes.values() if not n.live and n.slots]:
            self._failover(dead, anywhere=True)
        live = {n.name for n in self.nodes.values() if not n.gone}
        for w in node_names(CACHE, shards=shards, replicas=replicas):
            if w.name not in live:
                self._fresh(w.name)

    def _fresh(self, name):
        number = next(self._ids)
        node = SimNode(name=name, node_id=f"id{number:038d}", group=number)
        self.nodes[node.node_id] = node
        return node

    def live(self, name):
        (node,) = [n for n in self.nodes.values() if n.live and n.name == name]
        return node

    def observe(self):
        return [self._observed(n) for n in self.nodes.values()]

    def _observed(self, n):
        master = self.nodes.get(n.master_id or "")
        linked = n.role == "master" or bool(master and master.live and master.group == n.group)
        peers = frozenset(p.name for p in self.nodes.values() if p.live and p is not n and p.group == n.group)
        return ObservedNode(name=n.name, node_id=n.node_id, role=n.role, master_id=n.master_id,
                            slots=tuple(n.slots), linked=linked and n.live, reachable=n.live,
                            peers=peers if n.live else frozenset())

    def served(self):
        return sum(b - a + 1 for n in self.nodes.values() if n.live and n.role == "master" for a, b in n.slots)

    def check(self):
        held = sorted(r for n in self.nodes.values() if n.role == "master" for r in n.slots)
        for (_, b1), (a2, _) in itertools.pairwise(held):
            assert a2 > b1, f"slot {a2} is held by two masters"

    # carrying out actions
    def apply(self, action):
        before = self.served()
        getattr(self, "_" + type(action).__name__)(action)
        self.check()
        assert self.served() >= before, f"{action} lowered the slots served"

    def _Meet(self, a):
        node, peer = self.live(a.node), self.live(a.peer)
        old = node.group
        for n in self.nodes.values():
            if n.group == old:
                n.group = peer.group

    def _AssignSlots(self, a):
        node = self.live(a.node)
        assert node.role == "master"
        node.slots = sorted(node.slots + list(a.ranges))

    def _Replicate(self, a):
        node, master = self.live(a.node), self.live(a.master)
        assert not node.slots and master.role == "master" and node.group == master.group
        heir_of = self.nodes.get(node.master_id or "")
        assert not (heir_of and heir_of.slots and not heir_of.live), (
            f"{a.node} holds the only copy of {heir_of.name}'s slots and would be wiped by {a}")
        node.role, node.master_id = "replica", master.node_id

    def _MoveSlots(self, a):
        src, dst = self.live(a.from_node), self.live(a.to_node)
        assert src.role == dst.role == "master" and src.group == dst.group and a.count > 0
        moved = _pop(src.slots, a.count)
        assert tuple(sorted(moved)) == a.slots, f"{a} names other slots than {a.from_node}'s highest {moved}"
        dst.slots = sorted(dst.slots + moved)
        if not src.slots:  # Redis 7: a master that gives away its last slot follows the taker
            src.role, src.master_id = "replica", dst.node_id

    def _Forget(self, a):
        assert not self.nodes[a.node_id].slots or not self.nodes[a.node_id].live
        del self.nodes[a.node_id]

    def _Failover(self, a):
        node = self.live(a.node)
        holder = self.nodes[node.master_id]
        assert node.role == "replica" and holder.live and holder.group == node.group
        node.role, node.master_id, node.slots, holder.slots = "master", None, holder.slots, []
        holder.role, holder.master_id = "replica", node.node_id

    def _Reset(self, a):
        node = self.live(a.node)
        assert node.role == "replica" and not node.slots
        node.role, node.master_id, node.group = "master", None, next(self._ids)

    def _AddShard(self, a):
        pass

    def _EmptyShard(self, a):
        pass

    # what happens to a cluster without Flotilla
    def wipe(self, name, *, promptly=True):
        """The node loses its volume: it comes back alone with a new id; its replica takes
        over at once, or (``promptly=False``) only at the next round of the engine."""
        old = self.live(name)
        old.live, old.gone = False, True
        if promptly:
            self._failover(old)
        self._fresh(name)

    def _failover(self, old, anywhere=False):
        heirs = sorted((n for n in self.nodes.values() if n.live and n.master_id == old.node_id
                        and n.role == "replica" and (anywhere or n.group == old.group)), key=lambda n: n.name)
        if not heirs or old.role != "master":
            return None
        heir = heirs[0]
        heir.role, heir.master_id, heir.slots, old.slots = "master", None, old.slots, []
        for n in heirs[1:]:
            n.master_id = heir.node_id
        return heir

    def manual_failover(self, name):
        """The master fails over (killed and back): its replica is master, it is the replica."""
        old = self.live(name)
        heir = self._failover(old)
        if heir:
            old.role, old.master_id = "replica", heir.node_id

    def outage(self, name, *, shards, replicas):
        """The node is down for one round of planning, then back with its volume."""
        node = self.live(name)
        node.live = False
        converge(self, shards=shards, replicas=replicas, rounds=1, strict=False)
        node.live = True

    def new_ips(self):
        for n in self.nodes.values():
            n.group = next(self._ids)


def _pop(ranges, count):
    """Take ``count`` slots from the end of ``ranges`` (in place)."""
    moved = []
    while count:
        a, b = ranges.pop()
        take = min(count, b - a + 1)
        moved.append((b - take + 1, b))
        if take < b - a + 1:
            ranges.append((a, b - take))
        count -= take
    return moved


def plan_for(sim, *, shards, replicas):
    return plan_cluster(cache=CACHE, shards=shards, replicas=replicas, observed=sim.observe(), now=0.0)


def converge(sim, *, shards, replicas, budget=None, rounds=12, strict=True):
    """Plan, apply, observe, until the plan is empty (or ``budget`` actions were applied)."""
    applied = []
    for _ in range(rounds):
        sim.ensure(shards=shards, replicas=replicas)
        plan = plan_for(sim, shards=shards, replicas=replicas)
        if not plan:
            return applied
        for action in plan:
            if budget is not None and len(applied) >= budget:
                return applied
            sim.apply(action)
            applied.append(action)
    if not strict:
        return applied
    raise AssertionError(f"no convergence in {rounds} rounds; last plan {plan}")


def formed(shards=3, replicas=1):
    sim = Sim()
    converge(sim, shards=shards, replicas=replicas)
    return sim


def assert_ready(sim, *, shards, replicas):
    ready, why = cluster_ready(sim.observe(), shards=shards, replicas=replicas)
    assert ready, why
    assert plan_for(sim, shards=shards, replicas=replicas) == []


def slot_counts(sim):
    return {n.name: sum(b - a + 1 for a, b in n.slots) for n in sim.nodes.values() if n.slots}


# --- names and slots -------------------------------------------------------------------------


def test_node_names_are_stable_per_shard_and_ordinal():
    names = node_names("sessions", shards=3, replicas=1)
    assert names[:2] == [NodeName("sessions-0-0", 0, 0), NodeName("sessions-0-1", 0, 1)]
    assert [n.name for n in names][-1] == "sessions-2-1"
    assert len(names) == 6 and node_names("sessions", shards=3, replicas=1) == names


def test_slot_ranges_for_three_shards_match_redis_cli():
    assert slot_ranges(3) == [(0, 5461), (5462, 10922), (10923, 16383)]


@given(st.integers(1, 64))
@settings(max_examples=25, deadline=None)
def test_slot_ranges_cover_every_slot_once_and_are_balanced(shards):
    ranges = slot_ranges(shards)
    assert len(ranges) == shards and ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
    assert all(b + 1 == a for (_, b), (a, _) in itertools.pairwise(ranges))
    sizes = [b - a + 1 for a, b in ranges]
    assert sum(sizes) == SLOTS and max(sizes) - min(sizes) <= 1


# --- parsing CLUSTER NODES -----------------------------------------------------------------------

M0, M1, M2 = "a" * 40, "b" * 40, "c" * 40
R0, R1, R2 = "d" * 40, "e" * 40, "f" * 40

NODES_TEXT = f"""\
{M0} 172.18.0.2:6379@16379,sessions-0-0 myself,master - 0 0 1 connected 0-5460 [5461->-{M1}]
{M1} 172.18.0.3:6379@16379,sessions-1-0 master - 0 1700000001000 2 connected 5461-10922 [93-<-{M0}]
{M2} 172.18.0.4:6379@16379,sessions-2-0.flotilla-shop-internal master,fail - 1700000000000 1700000000500 3 disconnected 10923-16383
{R0} 172.18.0.5:6379@16379,sessions-0-1 slave {M0} 0 1700000001000 1 connected
{R1} 172.18.0.6:6379@16379 slave {M1} 0 1700000001000 2 connected
{R2} 172.18.0.7:6379@16379,,shard-id=0123456789abcdef slave,fail? {M2} 1700000000000 0 3 connected
"""  # noqa: E501 - CLUSTER NODES' answer, verbatim


def test_parse_cluster_nodes_reads_roles_slots_names_and_health():
    nodes = parse_cluster_nodes(NODES_TEXT, names_by_address={"172.18.0.6:6379": "sessions-1-1",
                                                              "172.18.0.7": "sessions-2-1"})
    by_name = {n.name: n for n in nodes}
    assert list(by_name) == ["sessions-0-0", "sessions-1-0", "sessions-2-0",
                             "sessions-0-1", "sessions-1-1", "sessions-2-1"]
    assert by_name["sessions-0-0"] == ObservedNode(name="sessions-0-0", node_id=M0, role="master",
                                                   slots=((0, 5460),), address="172.18.0.2")
    assert by_name["sessions-1-0"].slots == ((5461, 10922),)  # the importing marker is not a slot
    failed = by_name["sessions-2-0"]
    assert (failed.reachable, failed.linked, failed.slots) == (False, False, ((10923, 16383),))
    assert (failed.address, failed.up_to_peers) == ("172.18.0.4", False)
    assert by_name["sessions-0-1"].role == "replica" and by_name["sessions-0-1"].master_id == M0
    suspect = by_name["sessions-2-1"]
    assert suspect.reachable and not suspect.linked and suspect.master_id == M2


def test_unknown_address_keeps_the_address_as_name():
    line = f"{R1} 10.0.0.9:6379@16379 slave {M1} 0 0 2 connected\n"
    assert parse_cluster_nodes(line, names_by_address={})[0].name == "10.0.0.9:6379"


def test_self_view_is_the_myself_line_with_its_live_peers():
    me = self_view(NODES_TEXT, names_by_address={"172.18.0.6": "sessions-1-1"})
    assert me.name == "sessions-0-0"
    assert me.peers == {"sessions-1-0", "sessions-0-1", "sessions-1-1"}  # not the failed ones


def test_a_line_that_is_not_cluster_nodes_is_an_error():
    try:
        parse_cluster_nodes("ERR This instance has cluster support disabled", names_by_address={})
    except ValueError as exc:
        assert "CLUSTER NODES" in str(exc)
    else:
        raise AssertionError("no error")


def test_a_real_formed_cluster_parses_to_a_ready_one():
    healthy = NODES_TEXT.replace("master,fail -", "master -").replace("slave,fail?", "slave")
    healthy = healthy.replace(" disconnected ", " connected ")
    nodes = parse_cluster_nodes(healthy, names_by_address={"172.18.0.6": "sessions-1-1"})
    assert cluster_ready(nodes, shards=3, replicas=1) == (
        True, "16384 slots held by 3 masters, each with 1 linked replicas")
    assert cluster_ready(parse_cluster_nodes(NODES_TEXT, names_by_address={}), shards=3, replicas=1)[1] == (
        "masters holding slots are unreachable: sessions-2-0")


# --- formation -----------------------------------------------------------------------------------


def test_forming_3x1_meets_then_assigns_then_replicates():
    sim = Sim()
    sim.ensure(shards=3, replicas=1)
    first = plan_for(sim, shards=3, replicas=1)
    assert {type(a) for a in first} == {Meet} and len(first) == 5
    for a in first:
        sim.apply(a)
    second = plan_for(sim, shards=3, replicas=1)
    assert second == [
        AssignSlots(node="sessions-0-0", ranges=((0, 5461),), reason=""),
        AssignSlots(node="sessions-1-0", ranges=((5462, 10922),), reason=""),
        AssignSlots(node="sessions-2-0", ranges=((10923, 16383),), reason=""),
        Replicate(node="sessions-0-1", master="sessions-0-0", reason=""),
        Replicate(node="sessions-1-1", master="sessions-1-0", reason=""),
        Replicate(node="sessions-2-1", master="sessions-2-0", reason=""),
    ]
    assert all(a.reason for a in second)
    for a in second:
        sim.apply(a)
    assert_ready(sim, shards=3, replicas=1)


def test_forming_3x2_reaches_ready():
    sim = formed(3, 2)
    assert_ready(sim, shards=3, replicas=2)
    assert len([n for n in sim.nodes.values() if n.role == "replica"]) == 6


def test_not_ready_says_what_is_missing():
    sim = Sim()
    sim.ensure(shards=3, replicas=1)
    assert cluster_ready(sim.observe(), shards=3, replicas=1) == (False, "16384 of 16384 slots have no master")
    converge(sim, shards=3, replicas=1, budget=8)  # 5 meets, 3 assigns: no replicas yet
    assert cluster_ready(sim.observe(), shards=3, replicas=1) == (
        False, "sessions-0-0 has 0 linked replicas, 1 wanted")


def test_a_node_is_ready_only_when_every_slot_is_served_and_its_link_is_up():
    from dataclasses import replace

    from flotilla.addons.redis_cluster import node_ready

    observed = formed(3, 1).observe()
    replica = next(n for n in observed if n.name == "sessions-1-1")
    assert node_ready(replica, observed)
    assert not node_ready(replace(replica, linked=False), observed)
    master_down = [replace(n, reachable=False) if n.name == "sessions-2-0" else n for n in observed]
    assert not node_ready(replica, master_down)  # slots of shard 2 are not served


def test_a_formed_cluster_plans_nothing():
    sim = formed(3, 1)
    assert plan_for(sim, shards=3, replicas=1) == []
    assert plan_for(sim, shards=3, replicas=1) == []


# --- healing -------------------------------------------------------------------------------------


def test_master_lost_with_its_volume_comes_back_as_replica_of_the_promoted_one():
    sim = formed(3, 1)
    sim.wipe("sessions-0-0")
    assert sim.live("sessions-0-1").role == "master"
    actions = converge(sim, shards=3, replicas=1)
    assert Replicate(node="sessions-0-0", master="sessions-0-1", reason="") in actions
    assert any(isinstance(a, Forget) and a.node == "sessions-0-0" for a in actions)
    assert not any(isinstance(a, (AssignSlots, MoveSlots)) for a in actions)
    assert_ready(sim, shards=3, replicas=1)


def test_master_back_without_its_volume_before_its_replica_took_over_waits_for_the_failover():
    sim = formed(3, 1)
    old = sim.live("sessions-1-0")
    old.live, old.gone = False, True
    sim._fresh("sessions-1-0")  # back (empty, new id) before Redis promoted sessions-1-1
    plan = plan_for(sim, shards=3, replicas=1)
    assert plan and all(isinstance(a, Meet) for a in plan)
    for action in plan:
        sim.apply(action)
    assert not any(isinstance(a, (Replicate, AssignSlots, Forget)) for a in plan_for(sim, shards=3, replicas=1))
    converge(sim, shards=3, replicas=1)  # Redis promotes the replica; the empty node follows it
    assert sim.live("sessions-1-1").slots == [(5462, 10922)]
    assert sim.live("sessions-1-0").role == "replica"
    assert_ready(sim, shards=3, replicas=1)


def test_master_lost_without_replicas_gets_its_slots_back():
    sim = formed(3, 0)
    sim.wipe("sessions-1-0")
    converge(sim, shards=3, replicas=0)
    assert sim.live("sessions-1-0").slots == [(5462, 10922)]
    assert_ready(sim, shards=3, replicas=0)


def test_every_node_back_with_new_ips_is_met_again():
    sim = formed(3, 1)
    sim.new_ips()
    plan = plan_for(sim, shards=3, replicas=1)
    assert len(plan) == 5 and all(isinstance(a, Meet) for a in plan)
    for a in plan:
        sim.apply(a)
    assert_ready(sim, shards=3, replicas=1)


def test_a_replica_replicating_from_its_masters_old_address_is_pointed_again():
    from dataclasses import replace

    observed = formed(3, 1).observe()
    stale = [replace(n, stale_master_address=True, linked=False) if n.name == "sessions-1-1" else n
             for n in observed]
    plan = plan_cluster(cache=CACHE, shards=3, replicas=1, observed=stale, now=0)
    assert plan == [Replicate(node="sessions-1-1", master="sessions-1-0", reason="")]
    assert "old address of sessions-1-0" in plan[0].reason


def test_no_slots_are_assigned_while_a_failover_is_pending():
    sim = formed(3, 1)
    sim.live("sessions-2-0").live = False  # down, its replica not promoted yet
    assert not any(isinstance(a, AssignSlots) for a in plan_for(sim, shards=3, replicas=1))


# --- changing the number of shards ------------------------------------------------------------------


def test_three_to_four_shards_moves_a_quarter_of_the_slots_to_the_new_master():
    sim = formed(3, 1)
    actions = converge(sim, shards=4, replicas=1)
    moves = [a for a in actions if isinstance(a, MoveSlots)]
    assert {m.to_node for m in moves} == {"sessions-3-0"}
    assert sum(m.count for m in moves) == SLOTS // 4
    assert AddShard(shard=3, node="sessions-3-0", reason="") in actions
    assert set(slot_counts(sim).values()) == {4096}
    assert_ready(sim, shards=4, replicas=1)


def test_four_to_three_shards_empties_the_last_shard_then_forgets_it():
    sim = formed(4, 1)
    actions = converge(sim, shards=3, replicas=1)
    assert EmptyShard(shard=3, node="sessions-3-0", reason="") in actions
    assert sum(a.count for a in actions if isinstance(a, MoveSlots)) == 4096
    forgotten = [a.node for a in actions if isinstance(a, Forget)]
    assert sorted(forgotten) == ["sessions-3-0", "sessions-3-1"]
    assert actions.index(next(a for a in actions if isinstance(a, Forget))) > max(
        i for i, a in enumerate(actions) if isinstance(a, MoveSlots))
    assert sorted(slot_counts(sim).values()) == [5461, 5461, 5462]
    assert {n.name for n in sim.nodes.values()} == {w.name for w in node_names(CACHE, shards=3, replicas=1)}
    assert_ready(sim, shards=3, replicas=1)


def test_an_emptied_shard_rests_for_the_grace_before_it_is_forgotten():
    sim = formed(4, 1)
    moves, plan = [], plan_for(sim, shards=3, replicas=1)
    while not any(isinstance(a, Forget) for a in plan):
        moves += [a for a in plan if isinstance(a, MoveSlots)]
        for action in plan:
            sim.apply(action)
        plan = plan_for(sim, shards=3, replicas=1)
    assert moves and not slot_counts(sim).get("sessions-3-0")  # emptied: now it would be forgotten

    def plan_at(now):
        return plan_cluster(cache=CACHE, shards=3, replicas=1, observed=sim.observe(), now=now, moved_off={3: 50.0})
    assert not [a for a in plan_at(50.0 + MOVE_GRACE / 2) if isinstance(a, Forget | Failover | Reset)]
    forgotten = [a.node for a in plan_at(50.0 + MOVE_GRACE) if isinstance(a, Forget)]
    assert sorted(forgotten) == ["sessions-3-0", "sessions-3-1"]
    assert shards_at_rest({3: 50.0, 1: 10.0}, now=51.0) == {3}


def test_a_takeover_waits_for_the_grace_of_the_shard_it_takes_from():
    sim = sim_of(("sessions-0-0", "sessions-3-0", []), ("sessions-1-0", None, [(5462, 10922)]),
                 ("sessions-2-0", None, [(10923, 16383)]), ("sessions-3-0", None, [(0, 5461)]))
    observed = sim.observe()
    resting = plan_cluster(cache=CACHE, shards=3, replicas=0, observed=observed, now=1.0, moved_off={3: 0.0})
    assert not any(isinstance(a, Failover) for a in resting)
    later = plan_cluster(cache=CACHE, shards=3, replicas=0, observed=observed, now=9.0, moved_off={3: 0.0})
    assert Failover(node="sessions-0-0", reason="") in later


def test_moves_of_one_plan_from_one_donor_name_disjoint_slots():
    sim = formed(4, 1)
    moves = [a for a in plan_for(sim, shards=3, replicas=1) if isinstance(a, MoveSlots)]
    assert len(moves) == 3 and {m.from_node for m in moves} == {"sessions-3-0"}
    named = [slot for m in moves for a, b in m.slots for slot in range(a, b + 1)]
    assert len(named) == len(set(named)) == 4096 == sum(m.count for m in moves)


def test_fewer_replicas_forgets_the_extra_ones():
    sim = formed(3, 2)
    actions = converge(sim, shards=3, replicas=1)
    assert sorted(a.node for a in actions) == ["sessions-0-2", "sessions-1-2", "sessions-2-2"]
    assert_ready(sim, shards=3, replicas=1)


def sim_of(*nodes):
    """A connected cluster of hand-made nodes: (name, master name or None, slot ranges)."""
    sim = Sim()
    for name, _, slots in nodes:
        sim._fresh(name).slots = list(slots)
    for n in sim.nodes.values():
        n.group = 0
    for name, master, _ in nodes:
        if master:
            sim.live(name).role, sim.live(name).master_id = "replica", sim.live(master).node_id
    return sim


def test_a_shard_left_replicating_a_going_master_takes_its_slots_over():
    sim = sim_of(("sessions-0-0", "sessions-3-0", []), ("sessions-1-0", None, [(5462, 10922)]),
                 ("sessions-2-0", None, [(10923, 16383)]), ("sessions-3-0", None, [(0, 5461)]))
    actions = converge(sim, shards=3, replicas=0)
    assert actions[0] == Failover(node="sessions-0-0", reason="")
    assert not any(isinstance(a, MoveSlots) for a in actions)
    assert_ready(sim, shards=3, replicas=0)


def test_a_shard_left_replicating_another_shard_is_reset_to_an_empty_master():
    sim = sim_of(("sessions-0-0", "sessions-1-0", []), ("sessions-1-0", None, [(0, 10922)]),
                 ("sessions-2-0", None, [(10923, 16383)]))
    actions = converge(sim, shards=3, replicas=0)
    assert actions[0] == Reset(node="sessions-0-0", reason="")
    assert MoveSlots(from_node="sessions-1-0", to_node="sessions-0-0", count=5462, reason="") in actions
    assert_ready(sim, shards=3, replicas=0)


# --- properties -------------------------------------------------------------------------------------

EVENT = st.tuples(st.sampled_from(["wipe", "late_wipe", "failover", "new_ips", "outage"]), st.integers(0, 99))
EVENTS = st.lists(EVENT, max_size=3)


@given(shards=st.integers(3, 8), replicas=st.integers(0, 2), new_shards=st.integers(3, 8),
       partial=st.integers(0, 30), midway=st.integers(0, 30), events=EVENTS)
@settings(max_examples=30, deadline=None)
def test_any_partial_state_converges_to_ready_without_double_assignment(
        shards, replicas, new_shards, partial, midway, events):
    sim = Sim()
    converge(sim, shards=shards, replicas=replicas, budget=partial)
    converge(sim, shards=new_shards, replicas=replicas, budget=midway)
    for kind, pick in events:
        live = sorted(n.name for n in sim.nodes.values() if n.live)
        if kind == "new_ips":
            sim.new_ips()
        elif kind in ("wipe", "late_wipe"):
            sim.wipe(live[pick % len(live)], promptly=kind == "wipe")
            if kind == "late_wipe":  # one plan, carried out, before Redis promotes the replica
                for action in plan_for(sim, shards=new_shards, replicas=replicas):
                    sim.apply(action)
        elif kind == "outage":
            sim.outage(live[pick % len(live)], shards=new_shards, replicas=replicas)
        else:
            sim.manual_failover(live[pick % len(live)])
    converge(sim, shards=new_shards, replicas=replicas)
    assert_ready(sim, shards=new_shards, replicas=replicas)
    assert not any(not n.live for n in sim.nodes.values())  # every ghost forgotten


def test_a_replica_that_lost_its_masters_address_is_introduced_to_it_again():
    """After a restart of dockerd: every node has a new IP, the replica holds its master as `noaddr`
    (so not among its peers) while the rest of the cluster sees both: a MEET with the master, nothing else."""
    names = [n.name for n in node_names("sessions", shards=1, replicas=1)]
    master = ObservedNode(name=names[0], node_id="m" * 40, role="master", slots=((0, 16383),),
                          peers=frozenset({names[1]}))
    replica = ObservedNode(name=names[1], node_id="r" * 40, role="replica", master_id=master.node_id,
                           linked=False, peers=frozenset())
    plan = plan_cluster(cache="sessions", shards=1, replicas=1, observed=[master, replica], now=0.0)
    assert plan == [Meet(node=names[1], peer=names[0], reason="")]
    assert "lost the address of its master" in plan[0].reason
    seen = replace(replica, peers=frozenset({names[0]}))
    assert not any(isinstance(a, Meet) for a in plan_cluster(cache="sessions", shards=1, replicas=1,
                                                             observed=[master, seen], now=0.0))
