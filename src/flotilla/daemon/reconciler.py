"""The reconciler: observe -> plan -> apply, for one app at a time, forever.

Level-based, like a Kubernetes controller: whatever woke it (a new spec, a
Docker event, a health change, a timer), it reads the whole desired and
actual state of the app and lets the pure planner decide. So a daemon killed
at any moment and started again simply converges from where things stand.
The decisions are pure and live elsewhere (plan/planner.py, plan/crashes.py);
this part only gathers their inputs, keeps the crash history in the store,
and carries plans out in a fixed order: remove the dead, create, then drain
and stop the replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.deployments import Deployments
from flotilla.daemon.events import EventLog
from flotilla.daemon.injection import SecretInjector
from flotilla.daemon.ports import GatewayRoutes, ReplicaEngine
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.store import Store
from flotilla.daemon.wakeups import Wakeups
from flotilla.engines.docker.containers import Overrides
from flotilla.errors import ConflictError, FlotillaError, NotFoundError
from flotilla.naming import volume_name
from flotilla.plan import (
    CrashRecord,
    CreateReplica,
    Desired,
    DesiredService,
    EnsureNetwork,
    Hold,
    Observed,
    Plan,
    RemoveReplica,
    plan,
    plan_removal,
)
from flotilla.plan.crashes import Failure, Slot, account, crash_loops, record_failure
from flotilla.plan.liveness import Failing, liveness_actions, merge
from flotilla.spec import AppSpec, config_hash

log = logging.getLogger(__name__)
APPLY_WORKERS = 8


def desired_state(spec: AppSpec, *, hash_of: Callable[[AppSpec, str], str] = config_hash) -> Desired:
    return Desired(
        app=spec.app,
        services=tuple(
            DesiredService(
                name=name,
                replicas=svc.replicas,
                standby=svc.standby,
                config_hash=hash_of(spec, name),
                egress=svc.egress,
                # two containers of a slot must never write its volume at once; reading it is fine
                recreate=any(not v.read_only for v in svc.volumes.values()),
                restart_delay=svc.restart_delay,
                group=svc.addon,
                replace_after=svc.health.replace_after,
                start_period=svc.health.start_period,
            )
            for name, svc in spec.services.items()
        ),
    )


class Reconciler:
    """Keeps every stored app converged on its spec."""

    def __init__(
        self,
        *,
        engine: ReplicaEngine,
        apps: AppRepository,
        snapshots: Snapshots,
        runtime: RuntimeSpecs,
        events: EventLog,
        wakeups: Wakeups,
        crash_history: Store,
        cache_states: CacheStates,
        clock: Callable[[], float],
        injector: SecretInjector | None = None,
        traffic: GatewayRoutes | None = None,
        workers: int = APPLY_WORKERS,
        deployments: Deployments | None = None,
    ) -> None:
        self._engine = engine
        self._apps = apps
        self._snapshots = snapshots
        self._runtime = runtime
        self._events = events
        self._wakeups = wakeups
        self._history = crash_history
        self._cache_states = cache_states
        self._clock = clock
        self._injector = injector
        self._traffic = traffic
        self._deployments = deployments
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")
        self._lock = threading.RLock()
        self._previous: dict[str, tuple] = {}  # app -> its replicas at the last pass
        self._removing: set[str] = set()  # containers Flotilla itself is removing
        self._held: dict[str, set[str]] = {}  # app -> services held at 0 replicas (a backup or restore)

    # -- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The reconcile loop: the gateway learns every app first, then each batch of woken apps."""
        self.prime_gateway()
        self._wakeups.trigger_all(self._apps.names())
        while not stop.is_set():
            apps = self._wakeups.wait()
            if stop.is_set():
                return
            for app in sorted(apps if apps is not None else self._apps.names()):
                self.reconcile_safely(app)

    def prime_gateway(self) -> None:
        """Tell the gateway what runs for every app before any single app syncs it, so that
        a restarted daemon's first sync does not drop the routes of apps not reconciled yet."""
        if self._traffic is None:
            return
        for spec in self._apps.active():
            with self._errors_of(spec.app):
                runtime = self._runtime.of(spec)
                self._traffic.prime(runtime, self._snapshots.observe(runtime))

    def reconcile_safely(self, app: str) -> None:
        """Reconcile ``app``; its failure becomes its own event, never a stop for the others."""
        with self._errors_of(app):
            self.reconcile(app)

    @contextlib.contextmanager
    def _errors_of(self, app: str) -> Iterator[None]:
        """Any error inside is ``app``'s event and error (and, if not a FlotillaError, a logged bug)."""
        try:
            yield
        except FlotillaError as exc:
            self._events.note_error(app, exc.message)
        except Exception as exc:  # a bug: this app's error, never a stop for the others
            log.exception("reconcile of %s failed", app)
            self._events.note_error(app, f"internal error while reconciling {app}: {exc!r}; "
                                         "the daemon log has the details")

    def reconcile(self, app: str) -> Plan | None:
        with self._lock:
            if self._apps.is_deleting(app):
                self._remove_now(app)
                return None
            stored = self._apps.get(app)
            if stored is None:
                return None
            raw = self._engine.observe(app)
            spec = self._runtime.of(stored, raw)
            observed = self._snapshots.remember(spec, raw)
            if self._injector:
                self._injector.collect_garbage(app, observed)
            self._sync_gateway(spec, observed)
            history, failures = self._account(app, raw)
            spec, desired = self._judge_rollout(spec, raw, observed, failures)
            the_plan = plan(desired, observed, now=self._clock(), crashes=history)
            the_plan = self._with_liveness(desired, observed, the_plan, history)
            self._schedule_holds(the_plan)
            self.apply(spec, the_plan)
            if any(r.service not in spec.services for r in the_plan.of_kind(RemoveReplica)):
                self._remove_unused_volumes(spec)
            if the_plan.changes:
                self._wakeups.trigger(app)  # look again: new replicas need probing
            return the_plan

    # -- what others ask -----------------------------------------------------------

    @contextlib.contextmanager
    def between_passes(self) -> Iterator[None]:
        """No pass runs inside: a new spec and its revision are stored as one step, never judged half-written."""
        with self._lock:
            yield

    def preview(self, spec: AppSpec) -> Plan:
        """The plan ``up`` would carry out for ``spec`` (a runtime spec), changing nothing, even in memory."""
        observed = self._snapshots.peek(spec.app)
        return plan(self.desired(spec), observed, now=self._clock(), crashes=self._history.crash_history(spec.app))

    def desired(self, spec: AppSpec) -> Desired:
        """The desired state; config hashes include the versions of the secrets used and the restarts asked."""
        restarts = self._deployments.restarts(spec.app) if self._deployments else {}
        injector = self._injector
        if injector is None:
            return self._with_held(desired_state(
                spec, hash_of=lambda s, name: restarted(config_hash(s, name), restarts.get(name, 0))))
        versions = injector.vault.versions(spec.app)
        return self._with_held(desired_state(
            spec, hash_of=lambda s, name: restarted(injector.config_hash(s, name, versions), restarts.get(name, 0))))

    def _with_held(self, desired: Desired) -> Desired:
        held = self._held.get(desired.app)
        if not held:
            return desired
        return replace(desired, services=tuple(replace(s, replicas=0) if s.name in held else s
                                               for s in desired.services))

    @contextlib.contextmanager
    def stopped(self, app: str, service: str, *, timeout: float) -> Iterator[None]:
        """Inside, ``service`` has no replica (held at 0, its replicas stopped as a scale-down
        stops them); after, it is started again. For a backup or restore of its volumes."""
        with self._lock:
            self._held.setdefault(app, set()).add(service)
        try:
            self.reconcile(app)
            self._wait_gone(app, service, timeout=timeout)
            yield
        finally:
            with self._lock:
                self._held.get(app, set()).discard(service)
            self.reconcile_safely(app)

    def _wait_gone(self, app: str, service: str, *, timeout: float) -> None:
        deadline = self._clock() + timeout
        while any(r.service == service for r in self._engine.observe(app).replicas):
            if self._clock() > deadline:
                raise ConflictError(f"the replicas of {service} did not stop within {timeout:.0f}s; "
                                    "`flotilla ps` shows them, try again")
            time.sleep(0.2)

    def crash_loops(self, app: str) -> dict[str, CrashRecord]:
        """Replicas that failed repeatedly and are being restarted with back-off."""
        return crash_loops(self._history.crash_history(app), now=self._clock())

    # -- apply ---------------------------------------------------------------------

    def apply(self, spec: AppSpec, the_plan: Plan) -> None:
        """Networks first; then remove the dead, create, and last drain and stop the replaced."""
        for net in the_plan.of_kind(EnsureNetwork):
            self._engine.ensure_network(app=spec.app, name=net.name, internal=net.internal)
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
            created = self._engine.create_replica(
                spec=spec, service=action.service, index=action.index,
                config_hash=action.config_hash, overrides=self._overrides(spec, action),
            )
        except FlotillaError as exc:
            self._events.record(spec.app, "error", action.replica, f"could not start: {exc.message}")
            return
        self._snapshots.started(spec, created)
        self._events.record(spec.app, "create", action.replica, f"started ({action.reason})")

    def _overrides(self, spec: AppSpec, action: CreateReplica) -> Overrides:
        if self._injector is None:
            return Overrides()
        return self._injector.prepare(
            spec, service=action.service, index=action.index, config_hash=action.config_hash
        )

    def _remove(self, app: str, action: RemoveReplica) -> None:
        self._removing.add(action.container_id)
        try:
            replica = self._snapshots.replica(app, action.container_id)
            if self._traffic and action.graceful and replica:
                self._traffic.drain(app, replica)
            self._engine.remove_replica(action.container_id, graceful=action.graceful)
        except FlotillaError as exc:
            self._events.record(app, "error", action.replica, f"could not remove {action.name}: {exc.message}")
            return
        if self._injector:
            self._injector.forget(app, action.name)
        self._events.record(app, "remove", action.replica, f"removed {action.name} ({action.reason})")

    def _remove_unused_volumes(self, spec: AppSpec) -> None:
        """Volumes of slots that are gone (a cache node outside the shape now); a spec's own
        volumes are retained (labels.RETAIN) even when their service left the spec."""
        keep = {
            volume_name(app=spec.app, service=name, index=index, volume=volume)
            for name, svc in spec.services.items()
            for index in range(1, svc.replicas + 1)
            for volume in svc.volumes
        }
        for removed in self._engine.remove_volumes(spec.app, keep=keep):
            self._events.record(spec.app, "remove", spec.app, f"removed volume {removed}")

    # -- crashes and holds ---------------------------------------------------------

    def _account(self, app: str, observed: Observed) -> tuple[dict[Slot, CrashRecord], tuple[Failure, ...]]:
        """Count the failures since the last pass into the stored history; the history after them, and them."""
        history = self._history.crash_history(app)
        found = account(observed=observed, previous=self._previous.get(app, ()),
                        removing=frozenset(self._removing), history=history)
        self._removing -= found.removed_gone
        for failure in found.failures:
            record = record_failure(history, failure, now=self._clock())
            history[failure.slot] = record
            self._history.put_crash(app, failure.slot, record)
            self._events.record(app, "crash", failure.replica,
                                f"{failure.describe()} (failure {record.count} in a row){self._last_output(failure)}")
        self._previous[app] = observed.replicas
        return history, found.failures

    def _judge_rollout(self, spec: AppSpec, raw: Observed, observed: Observed,
                       failures: tuple[Failure, ...]) -> tuple[AppSpec, Desired]:
        """The spec and desired state to plan for, once the rollout in progress is judged (daemon/deployments.py):
        a failed rollout may have put the previous revision's spec back, or paused the replacements."""
        desired = self.desired(spec)
        if self._deployments is None:
            return spec, desired
        desired, reverted = self._deployments.review(spec, desired, observed, failures=failures,
                                                     last_output=self._output_of)
        if not reverted:
            return spec, desired
        spec = self._runtime.of(self._apps.require(spec.app), raw)
        return spec, self.desired(spec)

    def _output_of(self, container_id: str) -> str:
        return " | ".join(self._engine.last_log_lines(container_id, lines=3))

    def _with_liveness(self, desired: Desired, observed: Observed, the_plan: Plan,
                       history: dict[Slot, CrashRecord]) -> Plan:
        """Add liveness replacements (plan/liveness.py); each counts as a crash of its slot, for the back-off."""
        failing = {r.container_id: Failing(*state) for r in observed.replicas
                   if (state := self._snapshots.failing(r.container_id))}
        rolling = self._deployments is not None and self._deployments.rolling(desired.app)
        found = liveness_actions(desired, observed, failing=failing, now=self._clock(),
                                 rolling=frozenset(s.name for s in desired.services) if rolling else frozenset())
        merged = replace(the_plan, actions=merge(the_plan.actions, found))
        for action in merged.actions[len(the_plan.actions):]:
            if isinstance(action, RemoveReplica):
                self._count_unresponsive(desired.app, action, history)
        return merged

    def _count_unresponsive(self, app: str, action: RemoveReplica, history: dict[Slot, CrashRecord]) -> None:
        failure = Failure(service=action.service, index=action.index, container_id=action.container_id,
                          name=action.name)
        record = record_failure(history, failure, now=self._clock())
        history[failure.slot] = record
        self._history.put_crash(app, failure.slot, record)
        detail = self._snapshots.health_detail(action.container_id)
        self._events.record(app, "health", action.replica, f"{action.name} {action.reason} "
                            f"(last probe: {detail or 'no answer'}; failure {record.count} in a row)")

    def _last_output(self, failure: Failure) -> str:
        if failure.vanished:
            return ""
        output = " | ".join(self._engine.last_log_lines(failure.container_id, lines=3))
        return f"; last output: {output}" if output else ""

    def _schedule_holds(self, the_plan: Plan) -> None:
        holds = the_plan.of_kind(Hold)
        untils = [h.until for h in holds if h.until is not None]
        self._wakeups.wake_at(the_plan.app, min(untils) if untils else None)
        for hold in holds:
            self._events.note_hold(the_plan.app, hold.replica, hold.reason)

    # -- the gateway ---------------------------------------------------------------

    def _sync_gateway(self, spec: AppSpec, observed: Observed) -> None:
        """Route this app's traffic to its healthy replicas (see daemon/traffic.py)."""
        if self._traffic is None:
            return
        try:
            self._traffic.sync(spec, observed)
        except FlotillaError as exc:
            self._events.note_error(spec.app, f"gateway: {exc.message}")

    # -- removal -------------------------------------------------------------------

    def remove_app(self, app: str, *, volumes: bool = False) -> dict:
        """``flotilla down``: everything labelled for ``app`` goes, nothing else; the spec's volumes
        (its data) only with ``volumes`` (``down --volumes``)."""
        with self._lock:
            known = self._apps.is_known(app)
            if not known and app not in self._engine.apps():
                raise NotFoundError(f"no app named {app!r} on this host; `flotilla ps` lists the apps")
            if known:
                self._apps.mark_deleting(app)
            return self._remove_now(app, volumes=volumes)

    def _remove_now(self, app: str, *, volumes: bool = False) -> dict:
        observed = self._engine.observe(app)
        self._run_all([(self._remove, app, a) for a in plan_removal(observed).of_kind(RemoveReplica)])
        networks = self._engine.remove_networks(app)
        removed = self._engine.remove_volumes(app, retained=volumes)
        kept = [v.name for v in self._engine.list_volumes(app, sizes=False) if v.retained]
        self._forget(app)
        self._events.record(
            app, "down", app,
            f"removed {len(observed.replicas)} container(s), {len(networks)} network(s), {len(removed)} volume(s)"
            + (f"; kept {len(kept)} volume(s) with the app's data (`down --volumes` deletes them)" if kept else ""),
        )
        return {"containers": [r.name for r in observed.replicas], "networks": networks, "volumes": removed,
                "kept_volumes": kept}

    def _forget(self, app: str) -> None:
        """Drop everything kept about ``app`` once its objects are gone."""
        self._cache_states.forget_app(app)
        if self._injector:
            self._injector.runtime.remove_app(app)
        self._snapshots.forget(app)
        self._apps.delete(app)
        self._wakeups.wake_at(app, None)
        self._history.forget_crashes(app)
        if self._deployments:
            self._deployments.forget(app)
        self._removing -= {r.container_id for r in self._previous.pop(app, ())}
        if self._traffic:
            try:
                self._traffic.forget(app)
            except FlotillaError as exc:
                log.warning("gateway after removing %s: %s", app, exc.message)


def restarted(config_hash_: str, generation: int) -> str:
    """The config hash after ``flotilla restart`` number ``generation`` (0: unchanged), so the
    rolling update replaces every replica, one at a time, without a change of spec."""
    if not generation:
        return config_hash_
    return hashlib.sha256(f"{config_hash_}:restart:{generation}".encode()).hexdigest()[:len(config_hash_)]
