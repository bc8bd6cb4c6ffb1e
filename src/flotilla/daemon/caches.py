"""Keeps every app's Redis Cluster caches formed, healed and at their declared shape.

The controller runs a cache's nodes like any replicas (addons/redis_cluster/
nodes.py makes them services); this loop looks inside: twice a second it
observes each cache through its nodes, asks the pure topology planner what to
do next and carries that out (meet, assign slots, attach replicas, move slots,
forget), one step per pass. It also says which nodes outside the declared
shape must stay for now (a master whose slots are still moving away), and
whether a cache is ready, for ``ps`` and ``up``.
"""

from __future__ import annotations

import logging
import secrets as token_source
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flotilla.addons.redis_cluster import ObservedNode, cluster_ready, node_names, plan_cluster
from flotilla.addons.redis_cluster.client import ClusterClient, NodeAddress
from flotilla.addons.redis_cluster.nodes import cache_of
from flotilla.addons.redis_cluster.topology import AddShard, ClusterAction, EmptyShard, MoveSlots
from flotilla.errors import FlotillaError
from flotilla.naming import cache_password_secret, is_cache_node
from flotilla.plan import Observed
from flotilla.secrets import Vault
from flotilla.spec import AppSpec, CacheSpec

log = logging.getLogger(__name__)
INTERVAL = 0.5
PASSWORD_BYTES = 24


@dataclass(frozen=True)
class CacheState:
    """One cache as last observed: its nodes, whether it is ready, and why (not)."""

    nodes: tuple[ObservedNode, ...] = ()
    ready: bool = False
    reason: str = "not observed yet"
    pending: tuple[str, ...] = field(default=())  # the reasons of the steps planned last


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

    def __init__(self, *, controller, client: ClusterClient, vault: Vault, clock: Callable[[], float],
                 interval: float = INTERVAL) -> None:
        self.controller = controller
        self.client = client
        self.vault = vault
        self._clock = clock
        self._interval = interval
        self._states: dict[tuple[str, str], CacheState] = {}
        self._lock = threading.Lock()

    # -- what others read --------------------------------------------------------------

    def state(self, app: str, cache: str) -> CacheState:
        with self._lock:
            return self._states.get((app, cache), CacheState())

    def keep(self, spec: AppSpec, observed: Observed) -> dict[str, frozenset[str]]:
        """Per cache, the nodes outside its shape that must not be removed yet.

        Those still holding slots, reachable or not (a draining master that
        crashed must come back, with its volume, to hand its slots over);
        when nothing could be observed (a daemon that just started, or no node
        answering), every such node that has a container, to be safe.
        """
        kept = {}
        for cache, cache_spec in spec.caches.items():
            shape = {n.name for n in node_names(cache, shards=cache_spec.shards, replicas=cache_spec.replicas)}
            with self._lock:
                state = self._states.get((spec.app, cache))
            if state is None or not any(n.reachable for n in state.nodes):
                extra = {r.service for r in observed.replicas if is_cache_node(cache, r.service)}
            else:
                extra = {n.name for n in state.nodes if n.holds_slots}
            kept[cache] = frozenset(extra - shape)
        return kept

    def forget_app(self, app: str) -> None:
        with self._lock:
            for key in [k for k in self._states if k[0] == app]:
                del self._states[key]

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for spec in self.controller.active_specs(with_caches=True):  # twice a second: parse only those
                for cache in spec.caches:
                    self._tend_safely(spec, cache)
            stop.wait(self._interval)

    def _tend_safely(self, spec: AppSpec, cache: str) -> None:
        try:
            self.tend(spec, cache)
        except FlotillaError as exc:
            self.controller.events.note_error(spec.app, f"cache {cache}: {exc.message}")
        except Exception:  # noqa: BLE001 - the loop must survive any bug
            log.exception("tending cache %s of %s failed", cache, spec.app)

    def tend(self, spec: AppSpec, cache: str) -> CacheState:
        """Observe ``cache``, carry out the next planned step, remember what was seen."""
        cache_spec = spec.caches[cache]
        addresses = self._addresses(spec, cache)
        password = self.vault.get(spec.app, cache_password_secret(cache)).decode()
        nodes = [NodeAddress(name, ip) for name, ip in sorted(addresses.items())]
        observed = self.client.observe(nodes, password)
        actions = plan_cluster(cache=cache, shards=cache_spec.shards, replicas=cache_spec.replicas,
                               observed=observed, now=self._clock())
        state = _state(observed, cache_spec, actions)
        before = self._remember(spec.app, cache, state)
        for action in actions:
            self._carry_out(spec.app, cache, action, observed, addresses, password)
        if actions or before.ready != state.ready or _holders(before) != _holders(state):
            self.controller.trigger(spec.app)  # nodes may be removable now, or `up` may finish
        return state

    def _addresses(self, spec: AppSpec, cache: str) -> dict[str, str]:
        runtime = self.controller.runtime_spec(spec)
        observed = self.controller.snapshot(runtime)
        return {
            r.service: r.ip
            for r in observed.replicas
            if r.running and r.ip and r.service in runtime.services and cache_of(runtime.services[r.service]) == cache
        }

    def _remember(self, app: str, cache: str, state: CacheState) -> CacheState:
        with self._lock:
            before = self._states.get((app, cache), CacheState())
            self._states[(app, cache)] = state
        if before.ready != state.ready:
            what = "ready" if state.ready else "not ready"
            self.controller.events.record(app, "cache", cache, f"{what}: {state.reason}")
        return before

    def _carry_out(self, app: str, cache: str, action: ClusterAction, observed, addresses, password) -> None:
        started = self._clock()
        if not self.client.carry_out(action, observed=observed, addresses=addresses, password=password):
            return
        took = self._clock() - started
        timing = f" in {took:.1f}s" if isinstance(action, MoveSlots) else ""
        self.controller.events.record(app, "cache", cache, f"{describe(action)}{timing}: {action.reason}")


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


def _state(observed: list[ObservedNode], cache_spec: CacheSpec, actions: list[ClusterAction]) -> CacheState:
    ready, reason = cluster_ready(observed, shards=cache_spec.shards, replicas=cache_spec.replicas)
    return CacheState(nodes=tuple(observed), ready=ready and not actions, reason=reason,
                      pending=tuple(a.reason for a in actions))


def _holders(state: CacheState) -> set[str]:
    return {n.name for n in state.nodes if n.holds_slots}
