"""The reconcile loop: observe -> plan -> apply, for every app, forever.

Level-based, like a Kubernetes controller: whatever woke it (a new spec, a
Docker event, a health change, a timer), it reads the whole desired and
actual state of the app and lets the pure planner decide. So a daemon killed
at any moment and started again simply converges from where things stand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from flotilla.addons.redis_cluster.nodes import DEFAULT_IMAGE as DEFAULT_CACHE_IMAGE
from flotilla.addons.redis_cluster.nodes import with_cache_nodes
from flotilla.daemon.events import EventLog
from flotilla.daemon.health import HealthProber, ProbeTarget
from flotilla.daemon.injection import SecretInjector
from flotilla.daemon.store import DELETING, Store
from flotilla.daemon.traffic import Traffic
from flotilla.engines.docker import DockerEngine
from flotilla.engines.docker.containers import Overrides
from flotilla.errors import FlotillaError, NotFoundError
from flotilla.naming import volume_name
from flotilla.plan import (
    CrashRecord,
    CreateReplica,
    Desired,
    DesiredService,
    EnsureNetwork,
    Hold,
    Observed,
    ObservedReplica,
    Plan,
    RemoveReplica,
    plan,
    plan_removal,
)
from flotilla.plan.backoff import next_crash_record
from flotilla.spec import AppSpec, config_hash, spec_from_dict

log = logging.getLogger(__name__)
RESYNC_INTERVAL = 5.0
APPLY_WORKERS = 8
WATCHED_EVENTS = ("die", "start", "destroy", "oom")
EVENT_RECHECKS = (0.05, 0.25)


def desired_state(spec: AppSpec, *, hash_of: Callable[[AppSpec, str], str] = config_hash) -> Desired:
    return Desired(
        app=spec.app,
        services=tuple(
            DesiredService(
                name=name,
                replicas=svc.replicas,
                config_hash=hash_of(spec, name),
                egress=svc.egress,
                recreate=bool(svc.volumes),
                restart_delay=svc.restart_delay,
                group=svc.addon,
            )
            for name, svc in spec.services.items()
        ),
    )


class Controller:
    """Keeps every stored app converged on its spec."""

    def __init__(
        self,
        *,
        engine: DockerEngine,
        store: Store,
        clock: Callable[[], float],
        traffic: Traffic | None = None,
        injector: SecretInjector | None = None,
        resync_interval: float = RESYNC_INTERVAL,
        cache_image: str = DEFAULT_CACHE_IMAGE,
    ) -> None:
        self.engine = engine
        self.store = store
        self.traffic = traffic
        self.injector = injector
        self.autoscaler = None  # set by the daemon (daemon/autoscaler.py); it reads this controller
        self.caches = None  # set by the daemon (daemon/caches.py): which cache nodes must stay
        self.cache_image = cache_image
        self.events = EventLog(store)
        self._clock = clock
        self._resync = resync_interval
        self._prober = HealthProber(on_change=self._health_changed, clock=clock)
        self._pool = ThreadPoolExecutor(max_workers=APPLY_WORKERS, thread_name_prefix="apply")
        self._lock = threading.RLock()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._crashes: dict[tuple[str, str, int], CrashRecord] = {}
        self._counted_dead: set[str] = set()
        self._last_seen: dict[str, dict[str, ObservedReplica]] = {}  # app -> its replicas at the last pass
        self._removed: set[str] = set()  # containers Flotilla itself is removing
        self._next_wakes: dict[str, float] = {}  # app -> when its earliest back-off hold ends
        self._snapshots: dict[str, Observed] = {}
        self._snapshot_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._loops: list[tuple[str, Callable[[threading.Event], None]]] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for name, target in (
            ("reconcile", self._reconcile_loop),
            ("docker-events", self._watch_events),
            ("health", lambda: self._prober.run(self._stop)),
            *([("metrics", lambda: self.traffic.run_sampler(self._stop))] if self.traffic else []),
            *((name, lambda loop=loop: loop(self._stop)) for name, loop in self._loops),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.trigger_all()

    def add_loop(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        """Run ``loop(stop_event)`` in its own thread from ``start`` on (the autoscaler)."""
        self._loops.append((name, loop))

    def active_specs(self, *, with_caches: bool = False) -> list[AppSpec]:
        """The spec of every app that is not being removed (only those with caches, if asked), as its file says it."""
        return [
            spec_from_dict(a.spec)
            for a in self.store.apps()
            if a.status != DELETING and (a.spec.get("caches") or not with_caches)
        ]

    def runtime_spec(self, spec: AppSpec, observed: Observed | None = None) -> AppSpec:
        """``spec`` with the services Flotilla adds: a cache's nodes (and its consumers' wiring)."""
        if not spec.caches:
            return spec
        keep = {}
        if self.caches is not None:
            with self._snapshot_lock:
                observed = observed or self._snapshots.get(spec.app) or Observed(app=spec.app)
            keep = self.caches.keep(spec, observed)
        return with_cache_nodes(spec, image=self.cache_image, keep=keep)

    def ready_replica(self, app: str, service: str) -> tuple[str, int] | None:
        """The address of one healthy replica of ``service``, if there is one."""
        stored = self.store.get_app(app)
        if stored is None:
            return None
        spec = self.runtime_spec(spec_from_dict(stored.spec))
        port = spec.services[service].port if service in spec.services else None
        for replica in self.snapshot(spec).replicas:
            if replica.service == service and replica.running and replica.healthy and replica.ip and port:
                return replica.ip, port
        return None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def trigger(self, app: str) -> None:
        with self._dirty_lock:
            self._dirty.add(app)
        self._wake.set()

    def trigger_all(self) -> None:
        for stored in self.store.apps():
            self.trigger(stored.name)

    # -- the loop --------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._wait_time())
            self._wake.clear()
            with self._dirty_lock:
                apps, self._dirty = self._dirty, set()
            if not apps:  # timer: resync everything
                apps = {a.name for a in self.store.apps()}
            for app in sorted(apps):
                self._reconcile_safely(app)

    def _wait_time(self) -> float:
        now = self._clock()
        upcoming = [t - now for t in self._next_wakes.values() if t > now]  # past ones already woke a pass
        return min([self._resync, *upcoming])

    def _reconcile_safely(self, app: str) -> None:
        try:
            self.reconcile(app)
        except FlotillaError as exc:
            self.events.note_error(app, exc.message)
        except Exception:  # noqa: BLE001 - the loop must survive any bug
            log.exception("reconcile of %s failed", app)

    def reconcile(self, app: str) -> Plan | None:
        with self._lock:
            stored = self.store.get_app(app)
            if stored is None:
                return None
            if stored.status == DELETING:
                self._remove_now(app)
                return None
            raw = self.engine.observe(app)
            spec = self.runtime_spec(spec_from_dict(stored.spec), raw)
            observed = self._remember(spec, raw)
            if self.injector:
                self.injector.collect_garbage(app, observed)
            self.sync_gateway()
            self._record_crashes(app, observed)
            the_plan = plan(
                self.desired(spec), observed, now=self._clock(), crashes=self._crashes_of(app)
            )
            self._schedule_holds(the_plan)
            self.apply(spec, the_plan)
            if any(r.service not in spec.services for r in the_plan.of_kind(RemoveReplica)):
                self._remove_unused_volumes(spec)
            if the_plan.changes:
                self.trigger(app)  # look again: new replicas need probing
            return the_plan

    def observe(self, spec: AppSpec) -> Observed:
        """Ask the engine what runs for ``spec.app``; health filled in, kept as the snapshot."""
        return self._remember(spec, self.engine.observe(spec.app))

    def _remember(self, spec: AppSpec, observed: Observed) -> Observed:
        self._prober.set_targets(spec.app, _probe_targets(spec, observed))
        with self._snapshot_lock:
            self._snapshots[spec.app] = observed
        return self._with_health(observed)

    def snapshot(self, spec: AppSpec) -> Observed:
        """The latest observation (refreshed by every reconcile), with current health.

        Status reads use this instead of asking Docker on every poll: the
        snapshot is refreshed on each Docker event, health change and resync.
        """
        with self._snapshot_lock:
            observed = self._snapshots.get(spec.app)
        return self._with_health(observed) if observed else self.observe(spec)

    def _snapshot_replica(self, app: str, container_id: str) -> ObservedReplica | None:
        with self._snapshot_lock:
            observed = self._snapshots.get(app)
        replicas = observed.replicas if observed else ()
        return next((r for r in replicas if r.container_id == container_id), None)

    def _with_health(self, observed: Observed) -> Observed:
        replicas = tuple(
            replace(r, healthy=self._prober.healthy(r.container_id) if r.running else False)
            for r in observed.replicas
        )
        return replace(observed, replicas=replicas)

    def preview(self, spec: AppSpec) -> Plan:
        """The plan ``up`` would carry out for ``spec`` (a runtime spec), changing nothing."""
        observed = self.observe(spec)
        return plan(self.desired(spec), observed, now=self._clock(), crashes=self._crashes_of(spec.app))

    def desired(self, spec: AppSpec) -> Desired:
        """The desired state; config hashes include the versions of the secrets used."""
        if self.injector is None:
            return desired_state(spec)
        versions = self.injector.vault.versions(spec.app)
        return desired_state(spec, hash_of=lambda s, name: self.injector.config_hash(s, name, versions))

    # -- apply -----------------------------------------------------------------

    def apply(self, spec: AppSpec, the_plan: Plan) -> None:
        for net in the_plan.of_kind(EnsureNetwork):
            self.engine.ensure_network(app=spec.app, name=net.name, internal=net.internal)
        removals = the_plan.of_kind(RemoveReplica)
        self._run_all([(self._remove, spec.app, a) for a in removals if not a.graceful])
        self._run_all([(self._create, spec, a) for a in the_plan.of_kind(CreateReplica)])
        self._run_all([(self._remove, spec.app, a) for a in removals if a.graceful])

    def _run_all(self, calls: list[tuple]) -> None:
        futures = [self._pool.submit(fn, *args) for fn, *args in calls]
        for future in futures:
            future.result()

    def _create(self, spec: AppSpec, action: CreateReplica) -> None:
        try:
            overrides = self._overrides(spec, action)
            created = self.engine.create_replica(
                spec=spec,
                service=action.service,
                index=action.index,
                config_hash=action.config_hash,
                overrides=overrides,
            )
        except FlotillaError as exc:
            self.events.record(spec.app, "error", action.replica, f"could not start: {exc.message}")
            return
        self._prober.add_target(_probe_target(spec, created))  # probe now, not after the whole plan
        self.events.record(spec.app, "create", action.replica, f"started ({action.reason})")

    def _overrides(self, spec: AppSpec, action: CreateReplica) -> Overrides:
        if self.injector is None:
            return Overrides()
        return self.injector.prepare(
            spec, service=action.service, index=action.index, config_hash=action.config_hash
        )

    def _remove(self, app: str, action: RemoveReplica) -> None:
        self._removed.add(action.container_id)
        try:
            replica = self._snapshot_replica(app, action.container_id)
            if self.traffic and action.graceful and replica:
                self.traffic.drain(app, replica)
            self.engine.remove_replica(action.container_id, graceful=action.graceful)
        except FlotillaError as exc:
            self.events.record(app, "error", action.replica, f"could not remove {action.name}: {exc.message}")
            return
        if self.injector:
            self.injector.forget(app, action.name)
        self.events.record(app, "remove", action.replica, f"removed {action.name} ({action.reason})")

    # -- crashes and holds -----------------------------------------------------

    def _record_crashes(self, app: str, observed: Observed) -> None:
        for replica in observed.replicas:
            if replica.state not in ("exited", "dead") or replica.container_id in self._counted_dead:
                continue
            self._counted_dead.add(replica.container_id)
            output = " | ".join(self.engine.last_log_lines(replica.container_id, lines=3))
            self._count_failure(app, replica, f"{replica.name} exited with code {replica.exit_code}",
                                f"; last output: {output}" if output else "")
        self._record_vanished(app, observed)

    def _record_vanished(self, app: str, observed: Observed) -> None:
        """A running replica whose container is gone though Flotilla did not remove it
        (``docker rm -f``) died too: its slot gets the same back-off and restart delay."""
        current = {r.container_id: r for r in observed.replicas}
        for container_id, replica in self._last_seen.pop(app, {}).items():
            if container_id in current:
                continue
            if container_id in self._removed:
                self._removed.discard(container_id)
            elif replica.running:
                self._count_failure(app, replica, f"{replica.name} was removed outside Flotilla", "")
        self._last_seen[app] = current

    def _count_failure(self, app: str, replica: ObservedReplica, what: str, detail: str) -> None:
        key = (app, replica.service, replica.index)
        record = next_crash_record(self._crashes.get(key), now=self._clock())
        self._crashes[key] = record
        self.events.record(app, "crash", replica.replica, f"{what} (failure {record.count} in a row){detail}")

    def _crashes_of(self, app: str) -> dict[tuple[str, int], CrashRecord]:
        return {(svc, idx): rec for (a, svc, idx), rec in self._crashes.items() if a == app}

    def crash_loops(self, app: str) -> dict[str, CrashRecord]:
        """Replicas that failed repeatedly and are being restarted with back-off."""
        now = self._clock()
        return {
            f"{svc}-{idx}": rec
            for (svc, idx), rec in self._crashes_of(app).items()
            if rec.count >= 2 and next_crash_record(rec, now=now).count > 1
        }

    def _schedule_holds(self, the_plan: Plan) -> None:
        untils = [h.until for h in the_plan.of_kind(Hold) if h.until is not None]
        if untils:
            self._next_wakes[the_plan.app] = min(untils)
        else:
            self._next_wakes.pop(the_plan.app, None)
        for hold in the_plan.of_kind(Hold):
            self.events.note_hold(the_plan.app, hold.replica, hold.reason)

    # -- removal ---------------------------------------------------------------

    def remove_app(self, app: str) -> dict:
        """``flotilla down``: everything labelled for ``app`` goes, nothing else."""
        with self._lock:
            known = self.store.get_app(app) is not None
            if not known and app not in self.engine.apps():
                raise NotFoundError(f"no app named {app!r} on this host; `flotilla ps` lists the apps")
            if known:
                self.store.mark_deleting(app)
            return self._remove_now(app)

    def _remove_now(self, app: str) -> dict:
        observed = self.engine.observe(app)
        removal = plan_removal(observed)
        self._run_all([(self._remove, app, a) for a in removal.of_kind(RemoveReplica)])
        networks = self.engine.remove_networks(app)
        volumes = self.engine.remove_volumes(app)
        if self.caches is not None:
            self.caches.forget_app(app)
        if self.injector:
            self.injector.runtime.remove_app(app)
        self._prober.set_targets(app, [])
        with self._snapshot_lock:
            self._snapshots.pop(app, None)
        self.store.delete_app(app)
        self._next_wakes.pop(app, None)
        self.sync_gateway()
        self._forget_crashes(app)
        self._removed -= set(self._last_seen.pop(app, {}))
        self.events.record(
            app, "down", app,
            f"removed {len(observed.replicas)} container(s), {len(networks)} network(s), {len(volumes)} volume(s)",
        )
        return {"containers": [r.name for r in observed.replicas], "networks": networks, "volumes": volumes}

    def _remove_unused_volumes(self, spec: AppSpec) -> None:
        """Volumes of slots that are gone (a cache node outside the shape now)."""
        keep = {
            volume_name(app=spec.app, service=name, index=index, volume=volume)
            for name, svc in spec.services.items()
            for index in range(1, svc.replicas + 1)
            for volume in svc.volumes
        }
        for removed in self.engine.remove_volumes(spec.app, keep=keep):
            self.events.record(spec.app, "remove", spec.app, f"removed volume {removed}")

    def _forget_crashes(self, app: str) -> None:
        for key in [k for k in self._crashes if k[0] == app]:
            del self._crashes[key]

    # -- the gateway -------------------------------------------------------------

    def sync_gateway(self) -> None:
        """Route every app's traffic to its healthy replicas (see daemon/traffic.py)."""
        if self.traffic is None:
            return
        apps = {}
        for spec in map(self.runtime_spec, self.active_specs()):
            apps[spec.app] = (spec, self.snapshot(spec))
        try:
            self.traffic.sync(apps)
        except FlotillaError as exc:
            for app in apps:
                self.events.note_error(app, f"gateway: {exc.message}")

    # -- reacting to the world -------------------------------------------------

    def _health_changed(self, target: ProbeTarget, healthy: bool, detail: str) -> None:
        state = "healthy" if healthy else "unhealthy"
        self.events.record(target.app, "health", target.replica, f"{state} ({detail})")
        self.trigger(target.app)

    def _watch_events(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.engine.events(self._stop):
                    if event.app and event.action in WATCHED_EVENTS:
                        self._trigger_soon(event.app)
            except FlotillaError as exc:
                log.warning("docker events: %s", exc.message)
            self._stop.wait(1.0)

    def _trigger_soon(self, app: str) -> None:
        """Reconcile now, and again shortly: Docker sends ``die`` a moment
        before its container list shows the container as exited."""
        self.trigger(app)
        for delay in EVENT_RECHECKS:
            timer = threading.Timer(delay, self.trigger, args=(app,))
            timer.daemon = True
            timer.start()

    def health_detail(self, container_id: str) -> str:
        return self._prober.detail(container_id)


def _probe_targets(spec: AppSpec, observed: Observed) -> list[ProbeTarget]:
    return [
        _probe_target(spec, r)
        for r in observed.replicas
        if r.service in spec.services and r.running and r.ip
    ]


def _probe_target(spec: AppSpec, replica: ObservedReplica) -> ProbeTarget:
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
    )
