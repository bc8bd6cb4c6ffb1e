"""The daemon's side of the gateway: which replicas serve traffic, and how much.

Bridges the reconciler's picture (specs and observed replicas with their
health, kept per app so that one app's pass syncs only what it changed) to
the gateway manager, tells the activator which services it may hold (those
at zero, as the gateway last took them), drains a routed replica before its
container stops, routes a new replica the moment it first answers its probe
(``serve_ready``: the prober calls it, ahead of the reconcile pass that
would, which waits for the pass still starting its siblings), and samples
HAProxy's counters twice a second into the metrics window that `flotilla`
commands, the API and the autoscaler read.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from flotilla.daemon.health import ProbeTarget
from flotilla.errors import FlotillaError, GatewayError
from flotilla.gateway.config import may_scale_to_zero
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.metrics import MetricsWindow, backend_sample
from flotilla.gateway.sync import DesiredServer
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import AppSpec

log = logging.getLogger(__name__)
SAMPLE_INTERVAL = 0.5  # the autoscaler ticks as often: a step is seen within half a second
# A pass whose app routes exactly as before renders nothing, but at least this
# often the whole picture is applied anyway: a gateway that drifted (a server
# state changed by hand, a HAProxy that died) is put right within it.
FULL_SYNC_INTERVAL = 5.0
# A service whose replica began serving is still held this long for the activator:
# requests HAProxy gave the activator just before the switch are relayed, not refused.
RELEASE_GRACE = 5.0
ServiceKey = tuple[str, str]
Entry = tuple[AppSpec, list[tuple[str, DesiredServer]], frozenset[str]]  # spec, servers, services held
# The TLS certificates an app serves: certificate name -> PEM bundle (chain and key), read from the vault.
Certificates = Callable[[AppSpec], dict[str, bytes]]


class Traffic:
    """The gateway's desired servers per app, and the one place that applies them."""

    def __init__(
        self,
        *,
        gateway: GatewayManager,
        metrics: MetricsWindow,
        clock: Callable[[], float],
        scale_from_zero: bool = False,
        certificates: Certificates | None = None,
    ) -> None:
        self.gateway = gateway
        self._certificates = certificates or (lambda spec: {})
        self._served: dict[str, dict[str, bytes]] = {}  # app -> the certificates it serves now
        self.metrics = metrics
        self._clock = clock
        self._scale_from_zero = scale_from_zero  # False: no activator holds requests
        self._apps: dict[str, Entry] = {}
        self._applied_at = float("-inf")  # when the gateway last took the whole picture
        self._lock = threading.Lock()
        # what the gateway holds now, and when each service last stopped being held; read by the
        # activator's threads while a sync may be running, so under a lock of its own
        self._held: frozenset[ServiceKey] = frozenset()
        self._released: dict[ServiceKey, float] = {}
        self._held_lock = threading.Lock()

    def prime(self, spec: AppSpec, observed: Observed) -> None:
        """Learn what serves ``spec.app`` without touching the gateway yet."""
        with self._lock:
            self._apps[spec.app] = self._entry(spec, observed)

    def sync(self, spec: AppSpec, observed: Observed) -> None:
        """Route ``spec.app`` to its healthy replicas; every other app keeps what it had.

        If the gateway refuses the result, this app's previous entry is put
        back, so one app's bad routes never block the others' next syncs; the
        refusal is raised as a GatewayError for this app alone.
        """
        with self._lock:
            before = self._apps.get(spec.app)
            entry = self._entry(spec, observed)
            certificates = self._certificates(spec)
            unchanged = entry == before and certificates == self._served.get(spec.app)
            if unchanged and self._clock() - self._applied_at < FULL_SYNC_INTERVAL:
                return  # routes as they were: nothing to render, most passes of a settled app
            served = self._served.get(spec.app, {})
            self._served[spec.app] = certificates
            try:
                self._put(spec.app, entry, before=before)
            except GatewayError:
                self._served[spec.app] = served  # the gateway kept what it served
                raise

    def serve_ready(self, target: ProbeTarget) -> None:
        """A new replica answered its first probe: route to it now, with the app's last routes.

        The reconcile pass its health change wakes would do the same, but only
        once the pass in progress (starting its siblings) is over. A refusal is
        logged; that pass tries again.
        """
        with self._lock:
            before = self._apps.get(target.app)
            svc = before[0].services.get(target.service) if before else None
            if before is None or svc is None or not svc.routes or svc.port is None or not target.ip:
                return
            spec, servers, _ = before
            server = DesiredServer(name=target.name, address=target.ip, port=svc.port, healthy=True)
            if (target.service, server) in servers:
                return  # a reconcile pass routed it first
            kept = [(name, s) for name, s in servers if (s.name, s.address) != (server.name, server.address)]
            routed = [*kept, (target.service, server)]
            try:
                self._put(target.app, (spec, routed, self._held_at_zero(spec, routed)), before=before)
            except GatewayError as exc:
                log.warning("routing %s at its first answer: %s", target.replica, exc.message)

    def _put(self, app: str, entry: Entry, *, before: Entry | None) -> None:
        """Make ``entry`` the app's routes and apply; on a refusal the app keeps ``before``."""
        self._apps[app] = entry
        try:
            self._apply()
        except Exception as exc:
            self._restore(app, before)
            if isinstance(exc, GatewayError):
                raise
            raise GatewayError(f"the gateway cannot take the routes of {app}: {exc!r}") from exc

    def held(self, app: str, service: str) -> bool:
        """Whether the activator may hold a request for ``service`` of ``app``: the gateway routes it
        to the activator now, or did until less than RELEASE_GRACE seconds ago."""
        key = (app, service)
        with self._held_lock:
            if key in self._held:
                return True
            released = self._released.get(key)
        return released is not None and self._clock() - released < RELEASE_GRACE

    def _restore(self, app: str, entry: Entry | None) -> None:
        if entry is None:
            self._apps.pop(app, None)
        else:
            self._apps[app] = entry

    def forget(self, app: str) -> None:
        """``app`` is gone: its routes leave the gateway."""
        with self._lock:
            self._served.pop(app, None)
            if self._apps.pop(app, None) is not None:
                self._apply()

    def _apply(self) -> None:
        desired: dict[ServiceKey, list[DesiredServer]] = defaultdict(list)
        for app, (_, servers, _) in self._apps.items():
            for service, server in servers:
                desired[(app, service)].append(server)
        held = frozenset((app, service) for app, (_, _, services) in self._apps.items() for service in services)
        certificates = {(app, name): bundle for app, served in self._served.items() if app in self._apps
                        for name, bundle in served.items()}
        self.gateway.apply({app: spec for app, (spec, _, _) in self._apps.items()}, desired, held,
                           certificates=certificates)
        self._applied_at = self._clock()
        self._now_held(held)

    def _now_held(self, held: frozenset[ServiceKey]) -> None:
        with self._held_lock:
            now = self._clock()
            self._released.update((key, now) for key in self._held - held)
            for key in held:
                self._released.pop(key, None)
            self._released = {k: t for k, t in self._released.items() if now - t < RELEASE_GRACE}
            self._held = held

    def _entry(self, spec: AppSpec, observed: Observed) -> Entry:
        servers = [(r.service, s) for r in observed.replicas if (s := _desired_server(spec, r))]
        return spec, servers, self._held_at_zero(spec, servers)

    def _held_at_zero(self, spec: AppSpec, servers: list[tuple[str, DesiredServer]]) -> frozenset[str]:
        """A routed service that may scale to zero and has no healthy replica is
        served by the activator, which holds requests while a replica starts."""
        if not self._scale_from_zero:
            return frozenset()
        return frozenset(name for name, svc in spec.services.items()
                         if may_scale_to_zero(svc) and not any(service == name and s.healthy for service, s in servers))

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
        servers = defaultdict(list)
        for row in rows:
            if row.kind == "server":
                servers[row.pxname].append(row)
        for row in rows:
            key = services.get(row.pxname)
            if key and row.svname == "BACKEND":
                self.metrics.add(*key, backend_sample(row, servers[row.pxname], at=now))
        self.metrics.forget(services.values())


def _desired_server(spec: AppSpec, replica: ObservedReplica) -> DesiredServer | None:
    svc = spec.services.get(replica.service)
    if svc is None or not svc.routes or not replica.running or not replica.ip or svc.port is None:
        return None
    return DesiredServer(name=replica.name, address=replica.ip, port=svc.port, healthy=replica.healthy)
