"""The latest observation of every app, merged with its replicas' current health.

Status reads, the gateway, the autoscaler and the cache keeper all want to
know what runs for an app; asking Docker on every poll would make each of
them cost a round trip. The reconciler refreshes an app's snapshot on every
pass (each Docker event, health change and resync triggers one), and readers
take it from here with the prober's current health filled in. Remembering an
observation also tells the prober which replicas to probe.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from flotilla.daemon.health import ProbeTarget
from flotilla.daemon.ports import HealthSource, ReplicaEngine
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import AppSpec


class Snapshots:
    """Per app, the observation of the last pass; health is read live from the prober."""

    def __init__(self, *, engine: ReplicaEngine, prober: HealthSource) -> None:
        self._engine = engine
        self._prober = prober
        self._latest: dict[str, Observed] = {}
        self._lock = threading.Lock()

    def remember(self, spec: AppSpec, observed: Observed) -> Observed:
        """Keep ``observed`` as the app's snapshot and probe its replicas; returns it with health."""
        self._prober.set_targets(spec.app, probe_targets(spec, observed))
        with self._lock:
            self._latest[spec.app] = observed
        return self.with_health(observed)

    def observe(self, spec: AppSpec) -> Observed:
        """Ask the engine now, and remember the answer."""
        return self.remember(spec, self._engine.observe(spec.app))

    def peek(self, app: str) -> Observed:
        """Ask the engine now, with current health, and remember nothing: for dry runs.

        A dry run's spec may give the running replicas another port or health
        path; remembering it would point their probes there until the next pass.
        """
        return self.with_health(self._engine.observe(app))

    def latest(self, spec: AppSpec) -> Observed:
        """The app's snapshot with current health (observed now if there is none yet)."""
        observed = self.raw(spec.app)
        return self.with_health(observed) if observed else self.observe(spec)

    def raw(self, app: str) -> Observed | None:
        """The snapshot as the engine reported it (health as of that moment), if any."""
        with self._lock:
            return self._latest.get(app)

    def replica(self, app: str, container_id: str) -> ObservedReplica | None:
        observed = self.raw(app)
        return next((r for r in observed.replicas if r.container_id == container_id), None) if observed else None

    def started(self, spec: AppSpec, replica: ObservedReplica) -> None:
        """A replica just created: probe it now, not after the whole plan is applied."""
        self._prober.add_target(probe_target(spec, replica))

    def forget(self, app: str) -> None:
        self._prober.set_targets(app, [])
        with self._lock:
            self._latest.pop(app, None)

    def failing(self, container_id: str) -> tuple[float, float | None] | None:
        """(first probed, failing since) of a replica, for liveness (daemon/health.py)."""
        return self._prober.failing(container_id)

    def health_detail(self, container_id: str) -> str:
        return self._prober.detail(container_id)

    def with_health(self, observed: Observed) -> Observed:
        replicas = tuple(
            replace(r, healthy=self._prober.healthy(r.container_id) if r.running else False)
            for r in observed.replicas
        )
        return replace(observed, replicas=replicas)


def probe_targets(spec: AppSpec, observed: Observed) -> list[ProbeTarget]:
    return [probe_target(spec, r) for r in observed.replicas if r.service in spec.services and r.running and r.ip]


def probe_target(spec: AppSpec, replica: ObservedReplica) -> ProbeTarget:
    svc = spec.services[replica.service]
    return ProbeTarget(
        container_id=replica.container_id,
        app=spec.app,
        replica=replica.replica,
        ip=replica.ip or "",
        port=svc.port,
        kind=svc.probe,
        path=svc.health.path,
        interval=svc.health.interval,
        timeout=svc.health.timeout,
        service=replica.service,
        name=replica.name,
        index=replica.index,
    )
