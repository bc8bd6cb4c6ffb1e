"""The autoscaler loop: at each new gateway sample (twice a second), metrics in, a decision out, per service.

Each tick reads what the gateway saw of every autoscaled service (requests in
flight and queued, requests per second, the replicas' time per request) and, when the policy targets CPU, the
replicas' CPU time from their cgroups; the pure policy (autoscale/policy.py)
turns the window of observations into a replica count and a reason. A change
is stored like `flotilla scale` would store it, recorded as an event with its
reason, and the reconciler converges. The loop looks every ``POLL`` seconds
and decides for a service as soon as the gateway has sampled it again (at
least every ``TICK``): a tick of its own, out of step with the sampler,
added up to half a second to every decision.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flotilla.autoscale import Observation, PolicyState, decide, initial_state
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.counts import ReplicaCounts
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.traffic import serving_replicas
from flotilla.errors import FlotillaError
from flotilla.gateway.metrics import MetricsWindow
from flotilla.plan import Observed
from flotilla.spec import AppSpec, ServiceSpec
from flotilla.spec.concurrency import DEFAULT_QUEUE_TIMEOUT

log = logging.getLogger(__name__)
TICK = 0.5  # the longest between two decisions for a service; the gateway samples as often
POLL = 0.05  # how soon a new sample is decided on: decision p95 about a sample, 0.5 s (benchmarks/autoscale.py)
WINDOW = 360  # observations kept per service: enough for a scale_down_delay of 3 minutes


@dataclass
class _ServiceState:
    policy: PolicyState
    window: deque
    reason: str = "starting"
    decided_at: float = float("-inf")
    sample_at: float | None = None  # the gateway sample the last decision read


class Autoscaler:
    def __init__(
        self,
        *,
        apps: AppRepository,
        snapshots: Snapshots,
        metrics: MetricsWindow,
        engine: ReplicaEngine,
        counts: ReplicaCounts,
        clock: Callable[[], float],
    ) -> None:
        self._apps = apps
        self._snapshots = snapshots
        self._metrics = metrics
        self._engine = engine
        self._counts = counts
        self._clock = clock
        self._states: dict[tuple[str, str], _ServiceState] = {}
        self._cpu: dict[str, tuple[float, float]] = {}  # container -> (at, cpu seconds)
        self._lock = threading.RLock()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(POLL):
            try:
                self.tick(only_due=True)
            except FlotillaError as exc:
                log.warning("autoscaler: %s", exc.message)
            except Exception:  # the loop must survive a bug
                log.exception("autoscaler tick failed")

    def tick(self, *, only_due: bool = False) -> None:
        """Decide for every autoscaled service (``only_due``: those with a new sample, or TICK since)."""
        now = self._clock()
        for spec in self._apps.active():
            names = [n for n, svc in spec.services.items()
                     if svc.autoscale and (not only_due or self._due(spec.app, n, now=now))]
            if names:
                observed = self._snapshots.latest(spec)
                for name in names:
                    self._decide(spec, name, spec.services[name], observed, now=now)

    def _due(self, app: str, service: str, *, now: float) -> bool:
        with self._lock:
            state = self._states.get((app, service))
        return state is None or now - state.decided_at >= TICK or self._last_sample(app, service) != state.sample_at

    def _last_sample(self, app: str, service: str) -> float | None:
        samples = self._metrics.samples(app, service)
        return samples[-1].at if samples else None

    def wake(self, app: str, service: str) -> None:
        """A request waits at the gateway for a service at zero: one replica, now."""
        with self._lock:
            spec = self._apps.get(app)
            if spec is None or service not in spec.services or spec.services[service].replicas > 0:
                return
            reason = "a request is waiting at the gateway: 0 → 1 replica"
            self._apply(spec, service, 1, reason=reason)
            self._states[(app, service)] = _ServiceState(
                policy=initial_state(replicas=1, now=self._clock()), window=deque(maxlen=WINDOW), reason=reason
            )

    def describe(self, app: str, service: str) -> str | None:
        with self._lock:
            state = self._states.get((app, service))
            return state.reason if state else None

    # -- internals ---------------------------------------------------------------

    def _decide(self, spec: AppSpec, name: str, svc: ServiceSpec, observed: Observed, *, now: float) -> None:
        with self._lock:
            state = self._state(spec.app, name, svc, now=now)
            state.decided_at, state.sample_at = now, self._last_sample(spec.app, name)
            state.window.append(self._observe(spec, name, svc, observed, now=now))
            decision = decide(window=tuple(state.window), policy=svc.autoscale, state=state.policy, now=now)
            state.policy = decision.state
            state.reason = decision.reason
            if decision.replicas != svc.replicas:
                self._apply(spec, name, decision.replicas, reason=decision.reason)

    def _state(self, app: str, name: str, svc: ServiceSpec, *, now: float) -> _ServiceState:
        key = (app, name)
        state = self._states.get(key)
        if state is None or state.policy.desired != svc.replicas:  # scaled by hand or by a new spec
            state = _ServiceState(policy=initial_state(replicas=svc.replicas, now=now), window=deque(maxlen=WINDOW))
            self._states[key] = state
        return state

    def _observe(self, spec: AppSpec, name: str, svc: ServiceSpec, observed: Observed, *, now: float) -> Observation:
        current = self._metrics.current(spec.app, name)
        ready = serving_replicas(name, svc, observed)
        cpu = self._cpu_percent(ready, svc, now=now) if svc.autoscale.target.cpu else None
        return Observation(
            at=now,
            in_flight=float(current.in_flight) if current else 0.0,
            queued=float(current.queued) if current else 0.0,
            rps=current.arrival_rps if current else 0.0,  # arrivals: a queued request counts at once
            service_time=_seconds(current.service_ms) if current else None,
            limit=float(svc.concurrency) if svc.concurrency else None,
            queue_timeout=_queue_timeout(svc),
            cpu_percent=cpu,
            ready=len(ready),
        )

    def _cpu_percent(self, replicas, svc: ServiceSpec, *, now: float) -> float | None:
        percents = []
        for replica in replicas:
            used = self._engine.cpu_seconds(replica.container_id)
            before = self._cpu.get(replica.container_id)
            if used is not None:
                self._cpu[replica.container_id] = (now, used)
            if used is None or before is None or now <= before[0]:
                continue
            share = (used - before[1]) / (now - before[0])
            percents.append(100.0 * share / (svc.resources.cpus or 1.0))
        return sum(percents) / len(percents) if percents else None

    def _apply(self, spec: AppSpec, service: str, replicas: int, *, reason: str) -> None:
        self._counts.store(spec.app, {service: replicas}, kind="autoscale", summary=reason)


def _seconds(millis: float | None) -> float | None:
    return millis / 1000.0 if millis is not None else None


def _queue_timeout(svc: ServiceSpec) -> float | None:
    """How long the gateway queues a request for ``svc`` (None: it queues nothing)."""
    if not svc.concurrency:
        return None
    return svc.queue_timeout if svc.queue_timeout is not None else DEFAULT_QUEUE_TIMEOUT
