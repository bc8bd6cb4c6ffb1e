"""Keeps every app's Redis Cluster caches formed, healed and at their declared shape.

The reconciler runs a cache's nodes like any replicas (addons/redis_cluster/
nodes.py makes them services); this loop looks inside: twice a second it
observes each cache through its nodes, asks the pure topology planner what to
do next and carries that out (meet, assign slots, attach replicas, move slots,
forget), one step per pass. Only the cache's own nodes are counted: a node in
the cluster that is none of the cache's containers (a stranger, keep.py) is
forgotten by every node, and the plan is made without it. What it saw goes to ``CacheStates``, from which
the runtime spec learns which nodes outside the declared shape must stay for
now (addons/redis_cluster/keep.py decides) and ``ps`` and ``up`` learn
whether a cache is ready.
"""

from __future__ import annotations

import logging
import secrets as token_source
import threading
from collections.abc import Callable
from dataclasses import replace

from flotilla.addons.redis_cluster import cluster_ready
from flotilla.addons.redis_cluster.client import ClusterClient, NodeAddress
from flotilla.addons.redis_cluster.keep import Steps, next_steps, resting_nodes
from flotilla.addons.redis_cluster.nodes import cache_of
from flotilla.addons.redis_cluster.topology import MOVE_GRACE, AddShard, ClusterAction, EmptyShard, MoveSlots
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.cache_states import CacheState, CacheStates
from flotilla.daemon.events import EventLog
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import FlotillaError
from flotilla.naming import cache_node_place, cache_password_secret
from flotilla.secrets import Vault
from flotilla.spec import AppSpec, CacheSpec

log = logging.getLogger(__name__)
INTERVAL = 0.5
PASSWORD_BYTES = 24


def generate_passwords(vault: Vault, spec: AppSpec) -> list[str]:
    """Put a random password in the vault for every cache that has none yet; their names."""
    versions = vault.versions(spec.app)
    made = []
    for cache in spec.caches:
        name = cache_password_secret(cache)
        if name not in versions:
            vault.set(spec.app, name, token_source.token_hex(PASSWORD_BYTES).encode())
            made.append(name)
    return made


class CacheKeeper:
    """The loop that drives every cache towards its spec (see the module docstring)."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        runtime: RuntimeSpecs,
        snapshots: Snapshots,
        states: CacheStates,
        client: ClusterClient,
        vault: Vault,
        events: EventLog,
        wakeups: Wakeups,
        clock: Callable[[], float],
        interval: float = INTERVAL,
    ) -> None:
        self._apps = apps
        self._runtime = runtime
        self._snapshots = snapshots
        self._states = states
        self._client = client
        self._vault = vault
        self._events = events
        self._wakeups = wakeups
        self._clock = clock
        self._interval = interval

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for spec in self._apps.active(with_caches=True):
                for cache in spec.caches:
                    self._tend_safely(spec, cache)
            stop.wait(self._interval)

    def _tend_safely(self, spec: AppSpec, cache: str) -> None:
        try:
            self.tend(spec, cache)
        except FlotillaError as exc:
            self._events.note_error(spec.app, f"cache {cache}: {exc.message}")
        except Exception:  # the loop must survive any bug
            log.exception("tending cache %s of %s failed", cache, spec.app)

    def tend(self, spec: AppSpec, cache: str) -> CacheState:
        """Observe ``cache``, carry out the next planned step, remember what was seen."""
        cache_spec = spec.caches[cache]
        addresses = self._addresses(spec, cache)
        password = self._vault.get(spec.app, cache_password_secret(cache)).decode()
        last = self._states.get(spec.app, cache) or CacheState()
        seen = self._client.observe([NodeAddress(name, ip) for name, ip in sorted(addresses.items())], password)
        steps = next_steps(cache=cache, spec=cache_spec, seen=seen, addresses=addresses, known=last.known_ids,
                           flagged=last.stranger_ids, moved_off=last.moved_off, now=self._clock())
        state = _state(steps, cache_spec, last)
        before = self._remember(spec.app, cache, state)
        for action in steps.actions:
            try:
                self._carry_out(spec.app, cache, action, list(steps.own), addresses, password)
            finally:
                if isinstance(action, MoveSlots):
                    state = self._moved_off(spec.app, cache, state, action)
        if steps.actions or before.ready != state.ready or _holders(before) != _holders(state):
            self._wakeups.trigger(spec.app)  # nodes may be removable now, or `up` may finish
        return state

    def _addresses(self, spec: AppSpec, cache: str) -> dict[str, str]:
        runtime = self._runtime.of(spec)
        observed = self._snapshots.latest(runtime)
        return {
            r.service: r.ip
            for r in observed.replicas
            if r.running and r.ip and r.service in runtime.services and cache_of(runtime.services[r.service]) == cache
        }

    def _moved_off(self, app: str, cache: str, state: CacheState, move: MoveSlots) -> CacheState:
        """Note when slots last left ``move``'s donor's shard: its nodes rest (stay as they are) a while."""
        now = self._clock()
        moved_off = {**state.moved_off, cache_node_place(cache, move.from_node)[0]: now}
        state = replace(state, moved_off=moved_off, resting=resting_nodes(cache, state.nodes, moved_off, now=now))
        self._states.put(app, cache, state)
        return state

    def _remember(self, app: str, cache: str, state: CacheState) -> CacheState:
        before = self._states.put(app, cache, state)
        if before.ready != state.ready:
            what = "ready" if state.ready else "not ready"
            self._events.record(app, "cache", cache, f"{what}: {state.reason}")
        return before

    def _carry_out(self, app: str, cache: str, action: ClusterAction, observed, addresses, password) -> None:
        started = self._clock()
        if not self._client.carry_out(action, observed=observed, addresses=addresses, password=password):
            return
        took = self._clock() - started
        timing = f" in {took:.1f}s" if isinstance(action, MoveSlots) else ""
        self._events.record(app, "cache", cache, f"{describe(action)}{timing}: {action.reason}")


def describe(action: ClusterAction) -> str:
    """``meet sessions-1-0 -> sessions-0-0``, ``move 1365 slots sessions-0-0 -> sessions-3-0``..."""
    name = type(action).__name__.lower()
    match action:
        case MoveSlots(from_node=a, to_node=b, count=n):
            return f"move {n} slots {a} -> {b}"
        case AddShard(shard=s, node=n) | EmptyShard(shard=s, node=n):
            return f"{'add' if isinstance(action, AddShard) else 'empty'} shard {s} ({n})"
    peer = getattr(action, "peer", None) or getattr(action, "master", None)
    return f"{name} {action.node}" + (f" -> {peer}" if peer else "")


def _state(steps: Steps, cache_spec: CacheSpec, last: CacheState) -> CacheState:
    """What the keeper saw of its own nodes, and the ids it knows (its own, and strangers) from now on."""
    ready, reason = cluster_ready(steps.own, shards=cache_spec.shards, replicas=cache_spec.replicas)
    resting = tuple(f"{name} rests {MOVE_GRACE:g}s after slots moved off its shard" for name in sorted(steps.resting))
    return CacheState(nodes=steps.own, ready=ready and not steps.actions and not resting, reason=reason,
                      pending=(*(a.reason for a in steps.actions), *resting), known_ids=steps.known,
                      strangers=steps.strangers,
                      stranger_ids=last.stranger_ids | {n.node_id for n in steps.strangers},
                      moved_off=last.moved_off, resting=steps.resting)


def _holders(state: CacheState) -> set[str]:
    return {n.name for n in state.nodes if n.holds_slots}
