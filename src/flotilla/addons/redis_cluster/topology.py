"""The shape of a Redis Cluster cache and the plan that gets a real cluster there.

Redis Cluster heals some things by itself (a replica is promoted when its master
dies) but not others: forming the cluster, attaching replicas, re-introducing
nodes that all came back with new IPs, giving an empty node back to its shard,
and moving slots when the number of shards changes. This module decides those
steps as plain data, with no I/O and no Redis client, so that every decision is
unit- and property-tested and shown by ``flotilla plan`` before it is made.

Nodes have stable names, ``<cache>-<shard>-<ordinal>``; ordinal 0 is the node
that starts as its shard's master. A node is placed in a shard by its name,
whatever its current role: after a failover ``sessions-0-1`` may be the master
of shard 0, and that is fine.

The observed snapshot is one ``ObservedNode`` per node the cluster knows of,
merged by node id by the engine: a reachable node as it reports itself
(``self_view``), a node that does not answer as its peers last saw it. A node
that lost its volume answers under its old name with a new id; its old id
lingers, unreachable, as a *ghost* that is forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from flotilla.naming import cache_node, cache_node_place

SLOTS = 16384
Ranges = tuple[tuple[int, int], ...]
# After slots last moved off a shard, its nodes are not forgotten, failed over or
# reset (nor removed) for this long: a client that wrote there just before the
# move may still be blocked in WAIT on it, or be about to follow a MOVED from it,
# and a role change would fail that client ("UNBLOCKED ... master -> replica?").
MOVE_GRACE = 2.0


# --- names and slots -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeName:
    """One node of the wanted shape: ``sessions-0-1`` is shard 0, ordinal 1."""

    name: str
    shard: int
    ordinal: int


node_name = cache_node


def node_names(cache: str, *, shards: int, replicas: int) -> list[NodeName]:
    """Every node of a ``shards`` x (1 + ``replicas``) cluster, shard by shard."""
    return [
        NodeName(node_name(cache, shard=s, ordinal=o), s, o)
        for s in range(shards)
        for o in range(replicas + 1)
    ]


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """The 16384 slots in ``shards`` contiguous ranges whose sizes differ by at most one."""
    if not 1 <= shards <= SLOTS:
        raise ValueError(f"shards must be between 1 and {SLOTS}, not {shards}")
    base, extra = divmod(SLOTS, shards)
    ranges, start = [], 0
    for shard in range(shards):
        size = base + (shard < extra)
        ranges.append((start, start + size - 1))
        start += size
    return ranges


def _count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The slots in 0..16383 that ``ranges`` do not cover."""
    gaps, nxt = [], 0
    for a, b in _merge(ranges):
        if a > nxt:
            gaps.append((nxt, a - 1))
        nxt = b + 1
    return gaps + ([(nxt, SLOTS - 1)] if nxt < SLOTS else [])


def _take(ranges: Sequence[tuple[int, int]], count: int) -> tuple[Ranges, list[tuple[int, int]]]:
    """The first ``count`` slots of ``ranges``, and what is left."""
    taken, rest = [], list(ranges)
    while count > 0 and rest:
        a, b = rest.pop(0)
        if b - a + 1 > count:
            rest.insert(0, (a + count, b))
            b = a + count - 1
        taken.append((a, b))
        count -= b - a + 1
    return tuple(taken), rest


def _take_last(ranges: Sequence[tuple[int, int]], count: int) -> tuple[Ranges, list[tuple[int, int]]]:
    """The last (highest) ``count`` slots of ``ranges``, and what is left."""
    taken, rest = [], sorted(ranges)
    while count > 0 and rest:
        a, b = rest.pop()
        if b - a + 1 > count:
            rest.append((a, b - count))
            a = b - count + 1
        taken.append((a, b))
        count -= b - a + 1
    return tuple(sorted(taken)), rest


def _overlap(ranges: Iterable[tuple[int, int]]) -> int | None:
    """A slot that two of ``ranges`` both cover, if any."""
    last = -1
    for a, b in sorted(ranges):
        if a <= last:
            return a
        last = max(last, b)
    return None


# --- what CLUSTER NODES shows -------------------------------------------------------------


@dataclass(frozen=True)
class ObservedNode:
    """One node as the cluster sees it.

    ``linked``: the node's links are up (for a replica, the engine sets it from
    ``master_link_status``). ``reachable``: the node answers / is not failed.
    ``peers``: names of the nodes it has a live cluster-bus link to; empty for a
    node that is alone (new, or every peer came back at a new IP).
    """

    name: str
    node_id: str
    role: Literal["master", "replica"]
    master_id: str | None = None
    slots: Ranges = ()
    linked: bool = True
    reachable: bool = True
    peers: frozenset[str] = frozenset()
    # A replica still replicating from its master's old address (Redis 7.0 moves
    # the cluster link to a master's new IP but not the replication link).
    stale_master_address: bool = False
    # The IP the cluster has the node at, and whether the node whose CLUSTER
    # NODES it was read from saw it up: how the keeper tells the cache's own
    # nodes from strangers that announced themselves (keep.strangers).
    address: str = ""
    up_to_peers: bool = True

    @property
    def slot_count(self) -> int:
        return _count(self.slots)

    @property
    def holds_slots(self) -> bool:
        return self.role == "master" and bool(self.slots)


_DOWN = frozenset({"fail", "noaddr", "handshake"})  # "fail?" is one node's suspicion only


def _slots(fields: Sequence[str]) -> Ranges:
    """``0-5460``, ``5461``; ``[1234->-id]`` (migrating/importing) is skipped."""
    ranges = []
    for f in fields:
        if f.startswith("["):
            continue
        a, _, b = f.partition("-")
        ranges.append((int(a), int(b or a)))
    return tuple(_merge(ranges))


def _name(address: str, names_by_address: Mapping[str, str]) -> str:
    """The hostname after the address if announced (first DNS label), else a lookup by ip:port or ip."""
    endpoint, _, extra = address.partition(",")
    hostname = extra.split(",")[0]
    if hostname and "=" not in hostname:
        return hostname.split(".")[0]
    ip_port = endpoint.partition("@")[0]
    ip = ip_port.rpartition(":")[0]
    return names_by_address.get(ip_port) or names_by_address.get(ip) or ip_port


def _parse_line(line: str, names_by_address: Mapping[str, str]) -> tuple[ObservedNode, set[str]]:
    fields = line.split()
    if len(fields) < 8:
        raise ValueError(f"not a CLUSTER NODES line (expected at least 8 fields): {line!r}")
    node_id, address, flag_text, master, _ping, _pong, _epoch, link, *slot_fields = fields
    flags = set(flag_text.split(","))
    reachable = "myself" in flags or not flags & _DOWN
    node = ObservedNode(
        name=_name(address, names_by_address),
        node_id=node_id,
        role="replica" if "slave" in flags else "master",
        master_id=None if master == "-" else master,
        slots=_slots(slot_fields),
        linked=link == "connected" and not flags & {"fail", "fail?"},
        reachable=reachable,
        address=address.partition("@")[0].rpartition(":")[0],
        up_to_peers=reachable,
    )
    return node, flags


def parse_cluster_nodes(text: str, *, names_by_address: Mapping[str, str]) -> list[ObservedNode]:
    """Every node in one node's ``CLUSTER NODES`` output, as that node sees it."""
    return [_parse_line(line, names_by_address)[0] for line in text.splitlines() if line.strip()]


def self_view(text: str, *, names_by_address: Mapping[str, str]) -> ObservedNode:
    """The ``myself`` line of a node's ``CLUSTER NODES``, with its live peers filled in."""
    parsed = [_parse_line(line, names_by_address) for line in text.splitlines() if line.strip()]
    mine = [node for node, flags in parsed if "myself" in flags]
    if len(mine) != 1:
        raise ValueError("CLUSTER NODES output has no single 'myself' line")
    peers = frozenset(n.name for n, flags in parsed if "myself" not in flags and n.linked and n.reachable)
    return replace(mine[0], peers=peers)


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Meet:
    """``node`` runs ``CLUSTER MEET`` with ``peer``'s current address (looked up by name)."""

    node: str
    peer: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class AssignSlots:
    """``node`` runs ``CLUSTER ADDSLOTSRANGE`` for ``ranges``, which no master holds."""

    node: str
    ranges: Ranges
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class Replicate:
    """``node`` (holding no slots) runs ``CLUSTER REPLICATE`` with ``master``'s id."""

    node: str
    master: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class AddShard:
    """Marks the start of moving slots to a new shard whose master is ``node`` (no command)."""

    shard: int
    node: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class EmptyShard:
    """Marks the start of moving every slot away from a shard that is going (no command)."""

    shard: int
    node: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class MoveSlots:
    """Migrate ``count`` slots, with their keys, from master ``from_node`` to master ``to_node``.

    ``slots``: which ones (the donor's highest, none another move of the same
    plan takes), so that moves of one plan never race for the same slot.
    """

    from_node: str
    to_node: str
    count: int
    reason: str = field(compare=False)
    slots: Ranges = field(default=(), compare=False)


@dataclass(frozen=True, kw_only=True)
class Forget:
    """Every other node runs ``CLUSTER FORGET node_id``; a live node of that id is then removed."""

    node: str
    node_id: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class Failover:
    """Replica ``node`` runs ``CLUSTER FAILOVER``: it takes its master's slots, the master becomes its replica."""

    node: str
    reason: str = field(compare=False)


@dataclass(frozen=True, kw_only=True)
class Reset:
    """Replica ``node`` runs ``CLUSTER RESET SOFT``: an empty master again, alone (met again next plan)."""

    node: str
    reason: str = field(compare=False)


ClusterAction = Meet | AssignSlots | Replicate | AddShard | EmptyShard | MoveSlots | Forget | Failover | Reset


# --- the view the planner works on ------------------------------------------------------------


class _View:
    """The observed nodes, by name and by shard, with ghosts set apart."""

    def __init__(self, *, cache: str, shards: int, replicas: int, observed: Sequence[ObservedNode]):
        self.shards, self.replicas = shards, replicas
        self.place: dict[str, tuple[int, int]] = {}
        for n in observed:
            if place := cache_node_place(cache, n.name):
                self.place[n.name] = place
        self.nodes, self.ghosts = _current(n for n in observed if n.name in self.place)
        self.by_id = {n.node_id: n for n in [*self.nodes.values(), *self.ghosts]}
        shape = node_names(cache, shards=shards, replicas=replicas)
        self.all_wanted_present = all(w.name in self.nodes for w in shape)

    def wanted(self, node: ObservedNode) -> bool:
        shard, ordinal = self.place[node.name]
        return shard < self.shards and ordinal <= self.replicas

    def shard_nodes(self, shard: int) -> list[ObservedNode]:
        nodes = [n for n in self.nodes.values() if self.place[n.name][0] == shard]
        return sorted(nodes, key=lambda n: self.place[n.name][1])

    def master_of(self, shard: int) -> ObservedNode | None:
        """The master holding the shard's slots; else its lowest-ordinal wanted, reachable, empty master.

        None while the shard's slots are held by a ghost (a master that came
        back without its volume before its replica took over): the replica
        holds the only copy of the data, and Redis is about to promote it.
        """
        nodes = self.shard_nodes(shard)
        holders = [n for n in nodes if n.holds_slots]
        if holders:
            return max(holders, key=lambda n: (n.slot_count, -self.place[n.name][1]))
        if self.ghost_holds(shard):
            return None
        empty = [n for n in nodes if n.reachable and n.role == "master" and self.wanted(n)]
        return empty[0] if empty else None

    def ghost_holds(self, shard: int) -> bool:
        """Whether an old id of one of the shard's nodes still holds slots."""
        return any(g.holds_slots and self.place[g.name][0] == shard for g in self.ghosts)

    def target(self, node: ObservedNode) -> int:
        """How many slots ``node`` should end with: its shard's even share if it is the shard's master."""
        shard = self.place[node.name][0]
        if shard < self.shards and self.master_of(shard) == node:
            return _count([slot_ranges(self.shards)[shard]])
        return 0

    def holders(self) -> list[ObservedNode]:
        return [n for n in self.nodes.values() if n.holds_slots]

    def held(self) -> list[tuple[int, int]]:
        """Every slot range some master holds, ghosts included (their slots are not free)."""
        return [r for n in [*self.nodes.values(), *self.ghosts] if n.holds_slots for r in n.slots]


def _current(observed: Iterable[ObservedNode]) -> tuple[dict[str, ObservedNode], list[ObservedNode]]:
    """One entry per name (the reachable one if any); unreachable entries shadowed by it are ghosts."""
    by_name: dict[str, list[ObservedNode]] = {}
    for n in observed:
        by_name.setdefault(n.name, []).append(n)
    nodes, ghosts = {}, []
    for name, entries in by_name.items():
        entries.sort(key=lambda n: (not n.reachable, -n.slot_count, n.node_id))
        nodes[name] = entries[0]
        if entries[0].reachable:
            ghosts += [g for g in entries[1:] if not g.reachable]
    return nodes, ghosts


# --- the plan -----------------------------------------------------------------------------------


def plan_cluster(
    *, cache: str, shards: int, replicas: int, observed: Sequence[ObservedNode], now: float,
    moved_off: Mapping[int, float] | None = None,
) -> list[ClusterAction]:
    """What to do next to bring the observed cluster to ``shards`` x (1 + ``replicas``).

    Level-based: the plan is one step of several (introductions first, then
    slots, replicas and moves); carry it out, observe again and plan again until
    the plan is empty. ``moved_off``: when slots last moved off each shard
    (its history, kept by the caller); a ``Forget``, ``Failover`` or ``Reset``
    of a node of such a shard waits until ``MOVE_GRACE`` has passed at ``now``.
    """
    view = _View(cache=cache, shards=shards, replicas=replicas, observed=observed)
    meets = _meets(view)
    if meets:
        return meets
    assigns, takeovers = _assigns(view), _takeovers(view)
    moves = [] if assigns or takeovers or _complement(view.held()) else _moves(view)
    plan = [*_forget_ghosts(view), *assigns, *takeovers, *_replications(view), *moves, *_forget_extras(view)]
    resting = shards_at_rest(moved_off or {}, now=now)
    return [a for a in plan if not resting & _shards_changed(view, a)]


def shards_at_rest(moved_off: Mapping[int, float], *, now: float) -> frozenset[int]:
    """The shards whose slots moved off less than ``MOVE_GRACE`` ago."""
    return frozenset(shard for shard, at in moved_off.items() if now < at + MOVE_GRACE)


def _shards_changed(view: _View, action: ClusterAction) -> set[int]:
    """The shards whose nodes ``action`` forgets or turns from master to replica (or back)."""
    if not isinstance(action, Forget | Failover | Reset):
        return set()
    shards = {view.place[action.node][0]} if action.node in view.place else set()
    if isinstance(action, Failover):
        holder = view.by_id.get(view.nodes[action.node].master_id or "")
        shards |= {view.place[holder.name][0]} if holder else set()
    return shards


def _meets(view: _View) -> list[ClusterAction]:
    """Introduce every reachable node that should be in the cluster to one anchor node."""
    members = [n for n in view.nodes.values() if n.reachable and (view.wanted(n) or n.holds_slots)]
    if len(members) < 2:
        return []
    anchor = max(members, key=lambda n: (len(n.peers), n.slot_count, n.name))
    meets: list[ClusterAction] = [
        Meet(node=n.name, peer=anchor.name, reason=f"{n.name} is not connected to the cluster ({anchor.name})")
        for n in sorted(members, key=lambda n: n.name)
        if n is not anchor and anchor.name not in n.peers and n.name not in anchor.peers
    ]
    met = {a.node for a in meets}  # introduced to the anchor now: the next pass sees what gossip left
    return meets + [a for a in _lost_masters(members) if a.node not in met]


def _lost_masters(members: list[ObservedNode]) -> list[ClusterAction]:
    """A replica that no longer sees its own master, though the master is up: introduced to it again.

    After every node restarted with a new IP (a restart of dockerd), a replica may
    hold its master as ``noaddr`` and keep replicating from the master's old IP,
    which another node may have taken meanwhile (seen: a replica replicating from
    its own address). The rest of the cluster sees both, so the anchor rule above
    never fires; a MEET at the master's current address lets the replica learn it,
    and the next pass re-points the replication (``stale_master_address``)."""
    by_id = {n.node_id: n for n in members}
    actions: list[ClusterAction] = []
    for n in sorted(members, key=lambda n: n.name):
        master = by_id.get(n.master_id or "") if n.role == "replica" else None
        if master is not None and master.name not in n.peers:
            actions.append(Meet(node=n.name, peer=master.name,
                                reason=f"{n.name} has lost the address of its master {master.name}"))
    return actions


def _assigns(view: _View) -> list[ClusterAction]:
    """Give slots no master holds to the shard masters below their share, in shard order."""
    uncovered = _complement(view.held())
    masters = [view.master_of(s) for s in range(view.shards)]
    if not uncovered or not view.all_wanted_present or _failover_pending(view):
        return []
    if any(m is None or not m.reachable for m in masters):
        return []
    forming = len(uncovered) == 1 and uncovered[0] == (0, SLOTS - 1)
    why = "forming the cluster" if forming else "these slots had no master"
    actions: list[ClusterAction] = []
    for master in masters:
        taken, uncovered = _take(uncovered, view.target(master) - master.slot_count)
        if taken:
            actions.append(AssignSlots(node=master.name, ranges=taken, reason=f"{why}: {_count(taken)} slots"))
    return actions


def _failover_pending(view: _View) -> bool:
    """A replica's master holds slots but is down: Redis is about to promote the replica."""
    for n in view.nodes.values():
        master = view.by_id.get(n.master_id or "")  # a ghost, after a wipe
        if n.reachable and n.role == "replica" and master and master.holds_slots and not master.reachable:
            return True
    return False


def _takeovers(view: _View) -> list[ClusterAction]:
    """A shard with no wanted master gets one: a wanted replica takes over, or is reset to an empty master.

    This follows scaling down: Redis turns a master that gave away its last
    slot into a replica of the taker, which may leave a shard's nodes all
    replicating a node that is going away.
    """
    actions: list[ClusterAction] = []
    for shard in range(view.shards):
        master = view.master_of(shard)
        candidates = [n for n in view.shard_nodes(shard) if n.reachable and view.wanted(n) and n.role == "replica"]
        if (master is not None and view.wanted(master)) or not candidates:
            continue
        node, holder = candidates[0], view.by_id.get(candidates[0].master_id or "")
        if holder is not None and not holder.reachable:
            continue  # Redis fails over by itself
        if holder is not None and holder.holds_slots and not _serves_wanted_shard(view, holder):
            if node.linked:  # else wait for the replica to catch up
                why = f"{holder.name} is going; {node.name} takes its slots"
                actions.append(Failover(node=node.name, reason=why))
        else:
            actions.append(Reset(node=node.name, reason=f"shard {shard} has no master; {node.name} becomes one"))
    return actions


def _serves_wanted_shard(view: _View, node: ObservedNode) -> bool:
    shard = view.place[node.name][0]
    return view.wanted(node) and view.master_of(shard) == node


def _replications(view: _View) -> list[ClusterAction]:
    """Every other wanted node of a shard becomes a replica of the shard's (wanted) master."""
    actions: list[ClusterAction] = []
    for shard in range(view.shards):
        master = view.master_of(shard)
        if master is None or not master.reachable or not view.wanted(master):
            continue
        for n in view.shard_nodes(shard):
            if n is master or not n.reachable or not view.wanted(n) or n.holds_slots:
                continue
            if n.role != "replica" or n.master_id != master.node_id or n.stale_master_address:
                actions.append(Replicate(node=n.name, master=master.name, reason=_why_replicate(n, master, view)))
    return actions


def _why_replicate(node: ObservedNode, master: ObservedNode, view: _View) -> str:
    if node.role == "replica" and node.master_id == master.node_id:
        return f"{node.name} replicates from an old address of {master.name}"
    if node.role == "master":
        return f"{node.name} is an empty master; shard {view.place[master.name][0]} is served by {master.name}"
    return f"{node.name} replicates another node, not its shard's master {master.name}"


def _moves(view: _View) -> list[ClusterAction]:
    """Move slots from masters above their share to masters below it, with markers for shard changes."""
    balance = {n.name: n.slot_count - view.target(n) for n in view.holders() if n.reachable}
    for shard in range(view.shards):
        m = view.master_of(shard)
        if m is not None and m.reachable and not m.slots:
            balance[m.name] = -view.target(m)
    donors = sorted((b, -view.place[k][0], k) for k, b in balance.items() if b > 0)[::-1]
    takers = sorted((view.place[k][0], k, -b) for k, b in balance.items() if b < 0)
    moves, i = [], 0
    surplus = [[name, b] for b, _, name in donors]
    left = {name: list(view.nodes[name].slots) for _, _, name in donors}
    for _, taker, need in takers:
        while need and i < len(surplus):
            donor, count = surplus[i][0], min(need, surplus[i][1])
            slots, left[donor] = _take_last(left[donor], count)
            moves.append(MoveSlots(from_node=donor, to_node=taker, count=count, slots=slots,
                                   reason=f"{taker} needs {view.target(view.nodes[taker])} slots"))
            need, surplus[i][1] = need - count, surplus[i][1] - count
            i += surplus[i][1] == 0
    return [*_markers(view, moves), *moves] if moves else []


def _markers(view: _View, moves: list[MoveSlots]) -> list[ClusterAction]:
    markers: list[ClusterAction] = []
    for name in sorted({m.to_node for m in moves} | {m.from_node for m in moves}):
        node, shard = view.nodes[name], view.place[name][0]
        if shard < view.shards and not node.slots:
            markers.append(AddShard(shard=shard, node=name, reason=f"shards grew to {view.shards}"))
        elif shard >= view.shards:
            markers.append(EmptyShard(shard=shard, node=name, reason=f"shards shrank to {view.shards}"))
    return markers


def _forget_ghosts(view: _View) -> list[ClusterAction]:
    """Forget old ids of nodes that came back under a new id, unless a failover still needs them."""
    replicated = {n.master_id for n in view.nodes.values() if n.reachable and n.role == "replica"}
    return [
        Forget(node=g.name, node_id=g.node_id, reason=f"{g.name} came back as a new node; {g.node_id[:8]} is gone")
        for g in view.ghosts
        if not (g.holds_slots and g.node_id in replicated)
    ]


def _forget_extras(view: _View) -> list[ClusterAction]:
    """Forget nodes outside the wanted shape once nothing is served from them or their shard."""
    actions: list[ClusterAction] = []
    for n in sorted(view.nodes.values(), key=lambda n: n.name):
        shard, ordinal = view.place[n.name]
        if view.wanted(n) or n.holds_slots:
            continue
        if shard >= view.shards and (any(s.holds_slots for s in view.shard_nodes(shard)) or view.ghost_holds(shard)):
            continue
        if shard < view.shards and view.master_of(shard) == n:
            continue
        why = f"shards are now {view.shards}" if shard >= view.shards else f"replicas are now {view.replicas}"
        actions.append(Forget(node=n.name, node_id=n.node_id, reason=f"{n.name} is not in the shape: {why}"))
    return actions


# --- readiness ------------------------------------------------------------------------------------


def coverage_problem(observed: Sequence[ObservedNode]) -> str | None:
    """Why not every slot is served by exactly one reachable master; None if it is."""
    masters = [n for n in observed if n.holds_slots]
    double = _overlap(s for n in masters for s in n.slots)
    if double is not None:
        return f"slot {double} is held by two masters"
    down = sorted(n.name for n in masters if not n.reachable)
    if down:
        return f"masters holding slots are unreachable: {', '.join(down)}"
    missing = SLOTS - _count(s for n in masters for s in n.slots)
    if missing:
        return f"{missing} of {SLOTS} slots have no master"
    return None


def node_ready(node: ObservedNode, observed: Sequence[ObservedNode]) -> bool:
    """A node is ready when every slot is served and its own links (replication, for a replica) are up."""
    return node.reachable and node.linked and coverage_problem(observed) is None


def cluster_ready(observed: Sequence[ObservedNode], *, shards: int, replicas: int) -> tuple[bool, str]:
    """Ready: every slot held once by a reachable master, ``shards`` masters, each with enough linked replicas."""
    problem = coverage_problem(observed)
    if problem:
        return False, problem
    masters = [n for n in observed if n.holds_slots]
    if len(masters) != shards:
        return False, f"{len(masters)} masters hold slots, {shards} wanted"
    for m in sorted(masters, key=lambda n: n.name):
        linked = sum(n.master_id == m.node_id and n.role == "replica" and n.reachable and n.linked for n in observed)
        if linked < replicas:
            return False, f"{m.name} has {linked} linked replicas, {replicas} wanted"
    return True, f"{SLOTS} slots held by {shards} masters, each with {replicas} linked replicas"
