"""Deploy history and rollouts: revisions, their outcome, and undoing a failed one.

``up`` makes a revision whenever the spec it is given differs from the
current one (``scale`` and the autoscaler change counts, never the revision);
a rollback makes one too, a copy of an older revision. Each pass of the
reconciler hands this part what it observed, and it judges the rollout in
progress (plan/rollouts.py, pure): settled, the revision is ``rolled out``;
failed (a new replica crashed, or none turned healthy within the deploy
deadline), it records why with the replica's last output and, by default,
puts the previous good revision's spec back so the same health-gated
rolling update returns every changed service to it (``deploy.on_failure:
hold`` stops replacing instead). Its state is in the store, so a daemon
killed mid-rollout finishes or undoes it when it comes back.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import replace

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.events import EventLog
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.revision_store import (
    FAILED,
    HELD,
    PROGRESSING,
    ROLLED_BACK,
    ROLLED_OUT,
    SETTLED,
    UNDOING,
    Revision,
    RevisionStore,
    Rollout,
)
from flotilla.errors import ConflictError, FlotillaError, NotFoundError
from flotilla.plan import Desired, Observed
from flotilla.plan.crashes import Failure
from flotilla.plan.rollouts import RolloutCheck, check_rollout
from flotilla.secrets import Vault
from flotilla.spec import AppSpec, spec_from_dict, spec_to_dict


class Deployments:
    """Revisions of every app and the judging of their rollouts.

    An app's first revision has nothing to return to: its failures are the crash
    back-off's and ``up``'s timeout, as before, and it is only marked rolled out."""

    def __init__(self, *, store: RevisionStore, apps: AppRepository, events: EventLog, engine: ReplicaEngine,
                 clock: Callable[[], float], vault: Vault | None = None) -> None:
        self._store = store
        self._apps = apps
        self._events = events
        self._engine = engine
        self._clock = clock
        self._vault = vault

    # -- making revisions ----------------------------------------------------

    def record(self, spec: AppSpec, runtime: AppSpec, *, command: str) -> int:
        """The revision ``spec`` (as ``up`` gave it) is: the current one if unchanged, else a new one."""
        data = spec_to_dict(spec)
        rollout = self._store.rollout(spec.app)
        if rollout:
            current = self._store.get(spec.app, rollout.current)
            if current and current.spec == data and not command.startswith("rollback"):
                return current.number
        previous = self.last_good(spec.app)
        number = self._store.add(app=spec.app, spec=data, images=self._image_ids(runtime),
                                 secrets=self._secret_versions(runtime), created=self._clock(), command=command,
                                 previous=previous.number if previous else 0)
        self._events.record(spec.app, "rollout", spec.app, f"revision {number} ({command}): rolling out")
        return number

    def record_failed(self, spec: AppSpec, runtime: AppSpec, *, command: str, reason: str) -> int:
        """A revision that never rolled out (its before_deploy failed): in the history, not current."""
        previous = self.last_good(spec.app)
        number = self._store.add(app=spec.app, spec=spec_to_dict(spec), images=self._image_ids(runtime),
                                 secrets=self._secret_versions(runtime), created=self._clock(), command=command,
                                 previous=previous.number if previous else 0, outcome=FAILED, current=False)
        self._store.set_outcome(spec.app, number, FAILED, reason)
        return number

    def _image_ids(self, runtime: AppSpec) -> dict[str, str]:
        """Each image's ID as the deploy pinned it (``AppSpec.images``), else as the engine names it now."""
        ids = {}
        for image in sorted({svc.image for svc in runtime.services.values()}):
            if image in runtime.images:
                ids[image] = runtime.images[image].digest or runtime.images[image].id
                continue
            try:
                ids[image] = self._engine.image_id(image)
            except FlotillaError:
                ids[image] = ""
        return ids

    def _secret_versions(self, runtime: AppSpec) -> dict[str, int]:
        if self._vault is None:
            return {}
        used = {name for svc in runtime.services.values() for name in svc.secrets.values()}
        return {name: v for name, v in sorted(self._vault.versions(runtime.app).items()) if name in used}

    # -- reading -------------------------------------------------------------

    def history(self, app: str) -> dict:
        self._apps.require(app)
        rollout = self._store.rollout(app)
        return {"app": app, "current": rollout.current if rollout else 0,
                "rollout": rollout.state if rollout else "",
                "revisions": [r.to_dict() for r in self._store.list(app)]}

    def show(self, app: str, number: int) -> dict:
        revision = self.require(app, number)
        before = self._store.get(app, number - 1)
        rollout = self._store.rollout(app)
        return {**revision.to_dict(with_spec=True), "current": bool(rollout and rollout.current == number),
                "diff": revision_diff(before, revision)}

    def require(self, app: str, number: int) -> Revision:
        revision = self._store.get(app, number)
        if revision is None:
            known = [r.number for r in self._store.list(app)]
            raise NotFoundError(f"app {app} has no revision {number}; it has "
                                f"{', '.join(map(str, known)) or 'none'} (`flotilla history {app}` lists them)")
        return revision

    def last_good(self, app: str, *, before: int | None = None) -> Revision | None:
        """The newest revision that rolled out (before ``before``, if given)."""
        good = [r for r in self._store.list(app) if r.outcome == ROLLED_OUT and (before is None or r.number < before)]
        return good[-1] if good else None

    def current(self, app: str) -> int:
        rollout = self._store.rollout(app)
        return rollout.current if rollout else 0

    # -- rollback ------------------------------------------------------------

    def rollback_target(self, app: str, number: int | None) -> Revision:
        """Revision ``number``, or the good one before the current revision."""
        if number is not None:
            return self.require(app, number)
        target = self.last_good(app, before=self.current(app))
        if target is None:
            raise ConflictError(f"app {app} has no earlier revision that rolled out; "
                                f"`flotilla history {app}` lists its revisions, pick one with `rollback {app} N`")
        return target

    def with_current_counts(self, app: str, data: dict) -> dict:
        """A revision's spec with today's replica counts: a rollback changes the revision, not the scale."""
        stored = self._apps.get(app)
        counts = {n: s.replicas for n, s in stored.services.items()} if stored else {}
        services = {n: {**s, **({"replicas": counts[n]} if n in counts else {})} for n, s in data["services"].items()}
        return {**data, "services": services}

    def secrets_to_restore(self, app: str, target: Revision) -> dict[str, bytes]:
        """The old values of secrets whose version changed since ``target``; refused if the vault dropped one."""
        if self._vault is None or not target.secrets:
            return {}
        now = self._vault.versions(app)
        changed = {name: v for name, v in target.secrets.items() if now.get(name) != v}
        lost = []
        values = {}
        for name, version in sorted(changed.items()):
            try:
                values[name] = self._vault.get(app, name, version)
            except FlotillaError:
                lost.append(f"{name} version {version}")
        if lost:
            raise ConflictError(
                f"revision {target.number} of {app} used {', '.join(lost)}, which the vault no longer keeps; "
                f"nothing was changed. Set the secret again (`flotilla secrets set {app} NAME`) and run "
                f"`flotilla up`, or roll back to a newer revision")
        return values

    # -- restarts ------------------------------------------------------------

    def restarts(self, app: str) -> dict[str, int]:
        return self._store.restarts(app)

    def restart(self, app: str, services: list[str]) -> dict[str, int]:
        return self._store.bump_restarts(app, services)

    def forget(self, app: str) -> None:
        self._store.forget(app)

    # -- judging rollouts (each reconcile pass) --------------------------------

    def review(self, spec: AppSpec, desired: Desired, observed: Observed, *, failures: Iterable[Failure],
               last_output: Callable[[str], str]) -> tuple[Desired, bool]:
        """The desired state to plan for (paused if a failed rollout is held), and whether the app's spec
        was just put back to its previous revision (then the pass should start again)."""
        rollout = self._store.rollout(spec.app)
        if rollout is None:
            return desired, False
        if rollout.state == HELD:
            why = f"rollout of revision {rollout.current} failed and is held (deploy.on_failure: hold)"
            return replace(desired, services=tuple(replace(s, paused=why) for s in desired.services)), False
        if not rollout.active:
            return desired, False
        check = check_rollout(desired=desired, observed=observed, progress=rollout.progress,
                              progress_at=rollout.progress_at, now=self._clock(), failures=failures,
                              deadlines={n: s.deploy.deadline for n, s in spec.services.items()})
        if check.state == "settled":
            self._settle(rollout)
        elif check.state == "failed" and (rollout.previous or rollout.state == UNDOING):
            return desired, self._fail(spec, rollout, check, last_output)
        elif (check.progress, check.progress_at) != (rollout.progress, rollout.progress_at):
            self._store.put_rollout(replace(rollout, progress=check.progress, progress_at=check.progress_at))
        return desired, False

    def rolling(self, app: str) -> bool:
        rollout = self._store.rollout(app)
        return bool(rollout and rollout.active)

    def _settle(self, rollout: Rollout) -> None:
        self._store.put_rollout(replace(rollout, state=SETTLED))
        if rollout.state == PROGRESSING:
            self._store.set_outcome(rollout.app, rollout.current, ROLLED_OUT)
            self._events.record(rollout.app, "rollout", rollout.app, f"revision {rollout.current} rolled out")
        else:
            self._events.record(rollout.app, "rollout", rollout.app, f"back on revision {rollout.current}")

    def _fail(self, spec: AppSpec, rollout: Rollout, check: RolloutCheck, last_output: Callable[[str], str]) -> bool:
        output = last_output(check.container_id) if check.container_id else ""
        reason = check.reason + (f"; last output: {output}" if output else "")
        undo = rollout.state == PROGRESSING and rollout.previous and _undoes(spec)
        target = self._store.get(spec.app, rollout.previous) if undo else None
        if target is None:
            self._store.put_rollout(replace(rollout, state=HELD))
            if rollout.state == PROGRESSING:
                self._store.set_outcome(spec.app, rollout.current, FAILED, reason)
            self._events.record(spec.app, "rollout", spec.app, f"revision {rollout.current} failed and is held: "
                                f"{reason}; no further old replica is replaced")
            return False
        self._store.set_outcome(spec.app, rollout.current, ROLLED_BACK,
                                f"{reason}; returned to revision {target.number}")
        self._apps.put(spec_from_dict(self.with_current_counts(spec.app, target.spec)))
        now = self._clock()
        self._store.put_rollout(Rollout(spec.app, target.number, 0, UNDOING, now, now))
        self._events.record(spec.app, "rollout", spec.app, f"revision {rollout.current} failed: {reason}; "
                            f"returning to revision {target.number}")
        return True


def _undoes(spec: AppSpec) -> bool:
    """A failed rollout is undone unless a service says ``deploy.on_failure: hold``."""
    return all(s.deploy.on_failure == "rollback" for s in spec.services.values())


def revision_diff(before: Revision | None, after: Revision) -> str:
    """A unified diff of what a revision changed: its spec, image IDs and secret versions."""
    def text(r: Revision | None) -> list[str]:
        if r is None:
            return []
        body = {"spec": r.spec, "images": r.images, "secrets": r.secrets}
        return json.dumps(body, indent=2, sort_keys=True).splitlines(keepends=True)
    name = f"revision {before.number}" if before else "nothing"
    return "".join(difflib.unified_diff(text(before), text(after), fromfile=name, tofile=f"revision {after.number}"))
