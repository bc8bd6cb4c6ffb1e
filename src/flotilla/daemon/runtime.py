"""The runtime spec: an app's spec plus the services Flotilla adds to it.

A spec says ``caches: {sessions: ...}``; what runs is a service per cache node,
and consumers wired to them (addons/redis_cluster/nodes.py). Which nodes
outside the declared shape must still run depends on what the cache keeper
last saw, so this part joins the stored spec, the cache states and the app's
snapshot. Everything that plans, reports or routes uses the runtime spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.addons.redis_cluster.keep import nodes_to_keep
from flotilla.addons.redis_cluster.nodes import with_cache_nodes
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.snapshots import Snapshots
from flotilla.plan import Observed
from flotilla.spec import AppSpec


class RuntimeSpecs:
    def __init__(self, *, cache_states: CacheStates, snapshots: Snapshots, cache_image: str) -> None:
        self._cache_states = cache_states
        self._snapshots = snapshots
        self._cache_image = cache_image

    def of(self, spec: AppSpec, observed: Observed | None = None) -> AppSpec:
        """``spec`` with its cache nodes; ``observed`` (default: the snapshot) says which containers exist."""
        if not spec.caches:
            return spec
        observed = observed or self._snapshots.raw(spec.app) or Observed(app=spec.app)
        containers = {r.service for r in observed.replicas}
        keep = {}
        for cache, cache_spec in spec.caches.items():
            state = self._cache_states.get(spec.app, cache)
            keep[cache] = nodes_to_keep(cache=cache, spec=cache_spec, nodes=state.nodes if state else None,
                                        containers=containers, resting=state.resting if state else ())
        return with_cache_nodes(spec, image=self._cache_image, keep=keep)


@dataclass(frozen=True)
class ReadyReplicas:
    """What the activator asks while it holds a request: a healthy replica's address, if any."""

    apps: AppRepository
    runtime: RuntimeSpecs
    snapshots: Snapshots

    def find(self, app: str, service: str) -> tuple[str, int] | None:
        stored = self.apps.get(app)
        if stored is None:
            return None
        spec = self.runtime.of(stored)
        port = spec.services[service].port if service in spec.services else None
        for replica in self.snapshots.latest(spec).replicas:
            if replica.service == service and replica.running and replica.healthy and replica.ip and port:
                return replica.ip, port
        return None
