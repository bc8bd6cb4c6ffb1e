"""The daemon's side of the gateway: which replicas serve traffic, and how much.

Bridges the controller's picture (specs and observed replicas with their
health) to the gateway manager, drains a routed replica before its container
stops, and samples HAProxy's counters once a second into the metrics window
that `flotilla` commands, the API and the autoscaler read.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping

from flotilla.errors import FlotillaError
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.metrics import MetricsWindow, Sample
from flotilla.errors import GatewayError
from flotilla.gateway.sync import DesiredServer
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import AppSpec

log = logging.getLogger(__name__)
SAMPLE_INTERVAL = 1.0


class Traffic:
    def __init__(self, *, gateway: GatewayManager, clock: Callable[[], float]) -> None:
        self.gateway = gateway
        self.metrics = MetricsWindow()
        self._clock = clock
        self._lock = threading.Lock()
        self.activator_port: int | None = None  # set when scale-from-zero is served

    def sync(self, apps: Mapping[str, tuple[AppSpec, Observed]]) -> None:
        """Make the gateway route to the healthy replicas of every routed service."""
        specs = {name: spec for name, (spec, _) in apps.items()}
        desired: dict[tuple[str, str], list[DesiredServer]] = defaultdict(list)
        for name, (spec, observed) in apps.items():
            for replica in observed.replicas:
                server = _desired_server(spec, replica)
                if server:
                    desired[(name, replica.service)].append(server)
            self._hold_at_zero(spec, desired)
        with self._lock:
            self.gateway.apply(specs, desired)

    def _hold_at_zero(self, spec: AppSpec, desired: dict[tuple[str, str], list[DesiredServer]]) -> None:
        """A routed service that may scale to zero and has no healthy replica is
        served by the activator, which holds requests while a replica starts."""
        if self.activator_port is None:
            return
        for name, svc in spec.services.items():
            if not (svc.routes and svc.autoscale and svc.autoscale.min == 0):
                continue
            serving = [s for s in desired.get((spec.app, name), []) if s.healthy]
            if not serving:
                desired[(spec.app, name)].append(
                    DesiredServer(name="activator", address="127.0.0.1", port=self.activator_port, healthy=True)
                )

    def drain(self, app: str, replica: ObservedReplica) -> None:
        """Take one replica out of rotation and let its requests finish (bounded)."""
        backend = self.gateway.backend_of(app, replica.service)
        if backend and replica.ip:
            self.gateway.drain(backend, replica.ip)

    def gateway_state(self, app: str, replica: ObservedReplica) -> str | None:
        backend = self.gateway.backend_of(app, replica.service)
        return self.gateway.admin_state(backend, replica.ip) if backend and replica.ip else None

    def run_sampler(self, stop: threading.Event) -> None:
        while not stop.wait(SAMPLE_INTERVAL):
            try:
                self.sample()
            except FlotillaError as exc:
                log.debug("metrics sample: %s", exc.message)

    def sample(self) -> None:
        if not self.gateway.process.running():
            return
        try:
            rows = self.gateway.runtime.stats()
        except GatewayError:
            return
        now = self._clock()
        services = self.gateway.services_by_backend()
        for row in rows:
            key = services.get(row.pxname)
            if key and row.svname == "BACKEND":
                self.metrics.add(*key, _sample(row, now))
        self.metrics.forget(services.values())


def _desired_server(spec: AppSpec, replica: ObservedReplica) -> DesiredServer | None:
    svc = spec.services.get(replica.service)
    if svc is None or not svc.routes or not replica.running or not replica.ip or svc.port is None:
        return None
    return DesiredServer(name=replica.name, address=replica.ip, port=svc.port, healthy=replica.healthy)


def _sample(row, now: float) -> Sample:
    return Sample(
        at=now,
        requests_total=row.req_tot or 0,
        in_flight=row.scur or 0,
        queued=row.qcur or 0,
        http_5xx_total=row.hrsp_5xx or 0,
        response_ms=float(row.rtime or 0),
    )
