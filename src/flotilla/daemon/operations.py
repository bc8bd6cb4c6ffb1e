"""What the daemon does for each API request that changes something.

Every operation validates everything first (the spec, the images, the
service names and counts) and only then writes the store and wakes the
reconciler: a bad request changes nothing that is running.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import NamedTuple

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.caches import generate_passwords
from flotilla.daemon.certificates import CertificateStore, certificate_names
from flotilla.daemon.counts import ReplicaCounts
from flotilla.daemon.deployments import Deployments
from flotilla.daemon.events import EventLog
from flotilla.daemon.images import Images, image_changes, shown_images
from flotilla.daemon.injection import SecretInjector, check_cache_password
from flotilla.daemon.jobs import Jobs
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.reconciler import Reconciler
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.tasks import ALL_KINDS, Tasks, before_deploy_due, run_before_deploy
from flotilla.daemon.wakeups import Wakeups
from flotilla.engines.docker.images import Progress, ProgressSink
from flotilla.errors import (
    BadRequestError,
    CertificateError,
    ConflictError,
    FlotillaError,
    NotFoundError,
    Problem,
    SpecError,
    TaskFailedError,
)
from flotilla.gateway.config import normalize_path
from flotilla.gateway.model import hosts_overlap
from flotilla.naming import cache_password_secret
from flotilla.plan import Plan
from flotilla.secrets import Vault
from flotilla.secrets.certs import inspect_pair, serving_problems
from flotilla.spec import AppSpec, spec_from_dict

MAX_REPLICAS = 100
_CERT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # spec/service_parts.py: a route's tls.certificate
_APP_NAME = re.compile(r"[a-z]([a-z0-9-]{0,28}[a-z0-9])?")


def plan_to_dict(the_plan: Plan) -> dict:
    return {"app": the_plan.app, "actions": [asdict(a) for a in the_plan.actions]}


class Operations:
    """``up``, ``plan``, ``scale`` and the secrets commands, each validated before it writes."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        runtime: RuntimeSpecs,
        engine: ReplicaEngine,
        reconciler: Reconciler,
        counts: ReplicaCounts,
        events: EventLog,
        wakeups: Wakeups,
        injector: SecretInjector | None = None,
        images: Images | None = None,
        deployments: Deployments | None = None,
        certificates: CertificateStore | None = None,
        clock: Callable[[], float] = time.time,
        tasks: Tasks | None = None,
        jobs: Jobs | None = None,
    ) -> None:
        self._apps = apps
        self._runtime = runtime
        self._engine = engine
        self._reconciler = reconciler
        self._counts = counts
        self._events = events
        self._wakeups = wakeups
        self._injector = injector
        self._images = images
        self._deployments = deployments
        self._certificates = certificates
        self._clock = clock
        self._tasks = tasks
        self._jobs = jobs

    def submit(self, spec_data: dict, *, dry_run: bool, progress: ProgressSink | None = None,
               command: str = "up") -> dict:
        """``up`` (or ``plan`` with ``dry_run``): validate, pull and build, store, converge; the result
        names the revision (daemon/deployments.py)."""
        spec = spec_from_dict(spec_data)
        self._check_owner(spec.app)
        check_gateway(spec, self._apps.active())
        if self._certificates and (problems := self._certificates.problems(spec)):
            raise SpecError(problems)  # before anything changes (no pull, no build), like an unset secret
        before = self._apps.get(spec.app)
        spec = self._prepare_images(spec, dry_run=dry_run, progress=progress, pinned=before.images if before else {})
        runtime = self._runtime.of(spec)
        if self._injector:
            self._injector.check(runtime, generated={cache_password_secret(c) for c in spec.caches})
        self._check_job_images(spec)
        the_plan = self._reconciler.preview(runtime)
        changed = image_changes(before, spec) if before else []
        if not dry_run:
            if self._injector:
                generate_passwords(self._injector.vault, spec)
            self._before_deploy(spec, runtime, before=before, command=command, progress=progress or _ignore)
            with self._reconciler.between_passes():
                self._apps.put(spec)
                revision = self._deployments.record(spec, runtime, command=command) if self._deployments else 0
            self._events.record(spec.app, "apply", spec.app, _apply_summary(the_plan) + _images_summary(changed))
            self._wakeups.trigger(spec.app)
        result = {**plan_to_dict(the_plan), "images": shown_images(spec),
                  "image_changes": [c.to_dict() for c in changed]}
        return result if dry_run else {**result, "revision": revision}

    def _check_job_images(self, spec: AppSpec) -> None:
        """A job with ``image:`` runs that image as it is on the host at each run: it must be here now."""
        images = {job.image: name for name, job in sorted(spec.jobs.items()) if job.image}
        missing = self._engine.missing_images(set(images)) if images else []
        if missing:
            raise SpecError([Problem.at_path(f"jobs.{images[image]}.image", f"image {image} is not on this host",
                                             hint=f"pull or build it first (docker pull {image}), or take the "
                                                  f"image of a service with service: NAME") for image in missing])

    def _before_deploy(self, spec: AppSpec, runtime: AppSpec, *, before: AppSpec | None, command: str,
                       progress: ProgressSink) -> None:
        """Run each changed service's ``before_deploy`` in its new image, before anything of the new
        revision exists; a failure is recorded as a failed revision and raised: nothing changed."""
        if self._tasks is None:
            return
        for name in before_deploy_due(spec, before):
            progress(Progress(image=f"before_deploy {name}", status="running " + " ".join(
                spec.services[name].before_deploy.command)))
            outcome = run_before_deploy(self._tasks, runtime, service=name)
            if outcome.exit_code == 0:
                progress(Progress(image=f"before_deploy {name}", status=f"done in {outcome.seconds:.1f}s"))
                self._events.record(spec.app, "before_deploy", name,
                                    f"before_deploy of {name} succeeded in {outcome.seconds:.1f}s")
                continue
            self._refuse_rollout(spec, runtime, service=name, outcome=outcome, command=command)

    def _refuse_rollout(self, spec: AppSpec, runtime: AppSpec, *, service: str, outcome, command: str) -> None:
        timeout = spec.services[service].before_deploy.timeout
        what = (f"timed out after {timeout:g}s" if outcome.exit_code is None
                else f"exited with code {outcome.exit_code}")
        reason = f"before_deploy of {service} {what}"
        number = self._deployments.record_failed(spec, runtime, command=command, reason=(
            f"{reason}; last output: {outcome.output[-2000:]}" if outcome.output else reason)) \
            if self._deployments else 0
        self._events.record(spec.app, "before_deploy", service, f"{reason}: the rollout did not begin, the old "
                            f"replicas keep serving" + (f" (revision {number} recorded as failed)" if number else ""))
        tail = "\n".join(f"  | {line}" for line in outcome.output.splitlines()[-20:])
        raise TaskFailedError(f"{reason}; nothing was changed: the old replicas keep serving. Fix the command or "
                              f"the new image and run `flotilla up` again"
                              + (f"\nlast output:\n{tail}" if tail else ""))

    def _prepare_images(self, spec: AppSpec, *, dry_run: bool, progress: ProgressSink | None,
                        pinned: dict) -> AppSpec:
        if self._images is None:
            return spec
        return self._images.prepare(spec, runtime_of=self._runtime.of, dry_run=dry_run,
                                    progress=progress or _ignore, pinned=pinned)

    def build(self, spec_data: dict, *, progress: ProgressSink | None = None) -> dict:
        """``flotilla build``: build every ``build:`` of the spec; nothing is deployed."""
        spec = spec_from_dict(spec_data)
        if self._images is None:
            raise ConflictError("this daemon runs without an image store")
        built = self._images.build_all(spec, progress=progress or _ignore)
        return {"app": spec.app, "built": {n: s.image for n, s in built.services.items() if s.build}}

    # -- history, rollback, restart (daemon/deployments.py) -----------------------

    def history(self, app: str) -> dict:
        return self._history().history(app)

    def revision(self, app: str, number: int) -> dict:
        return self._history().show(app, number)

    def rollback(self, app: str, number: int | None) -> dict:
        """``flotilla rollback APP [N]``: revision N's spec (today's replica counts) and the secret values it
        used, as a new revision rolled out like any other; everything checked before anything changes."""
        deployments = self._history()
        self._apps.require(app)
        target = deployments.rollback_target(app, number)
        spec_data = deployments.with_current_counts(app, target.spec)
        restore = deployments.secrets_to_restore(app, target)
        self.submit(spec_data, dry_run=True)
        for name, value in restore.items():
            version = self.vault.set(app, name, value)
            self._events.record(app, "secret", name, f"secret {name} restored to the value of version "
                                f"{target.secrets[name]} (as version {version}) for the rollback")
        result = self.submit(spec_data, dry_run=False, command=f"rollback to {target.number}")
        return {**result, "target": target.number, "restored_secrets": sorted(restore)}

    def restart(self, app: str, service: str | None) -> dict:
        """``flotilla restart APP [SERVICE]``: every replica replaced one at a time, health-gated and drained."""
        spec = self._apps.require(app)
        if service is not None and service not in spec.services:
            raise NotFoundError(f"app {app} has no service {service!r}; it has: {', '.join(sorted(spec.services))}")
        services = [service] if service else sorted(n for n, s in spec.services.items() if not s.addon)
        self._history().restart(app, services)
        self._events.record(app, "restart", app, f"rolling restart of {', '.join(services)}")
        self._wakeups.trigger(app)
        return {"app": app, "restarting": services}

    def _history(self) -> Deployments:
        if self._deployments is None:
            raise ConflictError("this daemon keeps no deploy history")
        return self._deployments

    def scale(self, app: str, counts: dict[str, int]) -> dict:
        """``flotilla scale``: refused for autoscaled services outside their bounds."""
        spec = self._apps.require(app)
        _check_counts(spec, counts)
        self._check_secrets_fit(spec, counts)
        summary = ", ".join(f"{s} {spec.services[s].replicas} -> {n}" for s, n in counts.items())
        return self._counts.store(app, counts, kind="scale", summary=summary)

    def remove(self, app: str, *, volumes: bool = False) -> dict:
        if self._tasks:
            with contextlib.suppress(FlotillaError):
                self._tasks.reap(app, kinds=ALL_KINDS)  # their containers would hold the networks
        result = self._reconciler.remove_app(app, volumes=volumes)
        if self._jobs:
            self._jobs.forget(app)
        return result

    def _check_secrets_fit(self, spec: AppSpec, counts: dict[str, int]) -> None:
        """More replicas need more of the shared secrets tmpfs: refuse what cannot fit."""
        if self._injector is None:
            return
        runtime = self._runtime.of(spec)
        scaled = {s: runtime.services[s].model_copy(update={"replicas": n}) for s, n in counts.items()}
        problems = self._injector.budget_problems(
            runtime.model_copy(update={"services": {**runtime.services, **scaled}}))
        if problems:
            raise ConflictError(f"{problems[0].message}; {problems[0].hint}")

    def _check_owner(self, app: str) -> None:
        """Refuse an app name another Flotilla home already uses on this Docker host."""
        other = self._engine.foreign_owner(app)
        if other:
            raise ConflictError(
                f"app {app} on this Docker host belongs to another Flotilla home ({other}); "
                f"choose another app name, or manage {app} from that home (FLOTILLA_HOME={other})"
            )

    # -- secrets -------------------------------------------------------------------

    @property
    def vault(self) -> Vault:
        return self._secrets().vault

    def set_secret(self, app: str, name: str, value: bytes) -> dict:
        """Store a new version; services that use it roll, one replica at a time."""
        check_cache_password(app, name, value)
        version = self.vault.set(app, name, value)
        users = self._secret_users(app, name)
        self._events.record(app, "secret", name, f"secret {name} set to version {version}" + (
            f"; rolling {', '.join(users)}" if users else ""))
        if users:
            self._wakeups.trigger(app)
        return {"app": app, "name": name, "version": version, "rolling": users}

    def remove_secret(self, app: str, name: str) -> dict:
        users = self._secret_users(app, name)
        if users:
            raise ConflictError(
                f"secret {name} is used by {', '.join(users)} of app {app}; remove it from the spec "
                f"and run `flotilla up` first"
            )
        if not self.vault.remove(app, name):
            raise NotFoundError(f"app {app} has no secret {name!r}; `flotilla secrets ls {app}` lists them")
        self._events.record(app, "secret", name, f"secret {name} removed")
        return {"app": app, "name": name, "removed": True}

    def rekey(self) -> dict:
        """Re-encrypt every secret under a new master key (see daemon/injection.py)."""
        return self._secrets().rekey()

    def _secrets(self) -> SecretInjector:
        if self._injector is None:
            raise ConflictError("this daemon runs without a secrets vault")
        return self._injector

    # -- certificates (daemon/certificates.py) -----------------------------------

    @property
    def certificates(self) -> CertificateStore:
        if self._certificates is None:
            raise ConflictError("this daemon runs without a secrets vault, so it keeps no certificates")
        return self._certificates

    def set_certificate(self, app: str, name: str, *, cert_pem: bytes, key_pem: bytes) -> dict:
        """``flotilla certs set``: a checked pair that still serves every route of the app using it;
        the gateway loads it at run time (no reload), and nothing changes when it is refused."""
        if not _CERT_NAME.fullmatch(name) or not _APP_NAME.fullmatch(app):
            raise BadRequestError(f"invalid app or certificate name {name!r}: use lowercase letters, digits, "
                                  "'.', '_' and '-', e.g. `flotilla certs set shop shop --cert F --key F`")
        info = inspect_pair(cert_pem, key_pem)
        hosts = self._certificate_hosts(app, name)
        problems = [p for host in hosts for p in serving_problems(info, host=host, now=self._clock())]
        if problems:
            raise CertificateError(f"certificate {name} of app {app} refused: " + "; ".join(problems))
        info = self.certificates.put(app, name, cert_pem, key_pem)
        self._events.record(app, "certificate", name, f"certificate {name} set for {', '.join(info.hosts)} "
                            f"(issuer {info.issuer}, fingerprint {info.fingerprint})")
        self._wakeups.trigger(app)
        return {"app": app, "name": name, **info.to_dict(), "routes": hosts}

    def remove_certificate(self, app: str, name: str) -> dict:
        if self._certificate_hosts(app, name):
            raise ConflictError(f"certificate {name} is used by routes of app {app}; remove them from the spec "
                                "and run `flotilla up` first")
        if not self.certificates.remove(app, name):
            raise NotFoundError(f"app {app} has no certificate {name!r}; `flotilla certs ls {app}` lists them")
        self._events.record(app, "certificate", name, f"certificate {name} removed")
        return {"app": app, "name": name, "removed": True}

    def _certificate_hosts(self, app: str, name: str) -> list[str]:
        """The hosts of the app's routes served with certificate ``name``."""
        spec = self._apps.get(app)
        if spec is None or name not in certificate_names(spec):
            return []
        return sorted({r.host for svc in spec.services.values() for r in svc.routes
                       if r.tls and r.tls.certificate == name})

    def _secret_users(self, app: str, name: str) -> list[str]:
        stored = self._apps.get(app)
        if stored is None:
            return []
        spec = self._runtime.of(stored)
        return [svc for svc, s in spec.services.items() if name in s.secrets.values()]


def _check_counts(spec: AppSpec, counts: dict[str, int]) -> None:
    if not counts or not isinstance(counts, dict):
        raise BadRequestError("name at least one SERVICE=N, for example `flotilla scale shop web=3`")
    for service, count in counts.items():
        if service not in spec.services:
            raise NotFoundError(
                f"app {spec.app} has no service {service!r}; it has: {', '.join(sorted(spec.services))}"
            )
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_REPLICAS:
            raise BadRequestError(f"{service}={count!r}: replicas must be a whole number from 0 to {MAX_REPLICAS}")
        _check_one_writer(spec, service, count)
        bounds = spec.services[service].autoscale
        if bounds and not bounds.min <= count <= bounds.max:
            raise ConflictError(
                f"{service} is autoscaled between {bounds.min} and {bounds.max} replicas; {count} is outside. "
                f"Scale within those bounds, or change autoscale.min/max in the spec and run `flotilla up`"
            )


def check_gateway(spec: AppSpec, active: list[AppSpec]) -> None:
    """Refuse a host another app owns on the same address, and a listen address some
    other program holds, before anything changes.

    Apps on one address share one frontend, where a longer path or an exact host
    is tried before a shorter one or a wildcard. So a host, with every path under
    it, belongs to one app, and a wildcard host belongs to its app with every host
    it matches: then no app's route can take a request another app routes.
    """
    routes = _route_keys(spec)
    if not routes:
        return
    listen = spec.gateway.listen
    on_address = [s for s in active if s.gateway.listen == listen and _route_keys(s)]
    neighbours = sorted((s for s in on_address if s.app != spec.app), key=lambda s: s.app)
    clashes = [clash for route in sorted(routes) if (clash := _clash(route, neighbours))]
    if clashes:
        raise ConflictError(_clash_message(spec, clashes))
    if not on_address:  # the gateway does not hold this address yet: is it free?
        _check_port_free(spec.gateway.listen_host, spec.gateway.listen_port)


_Route = tuple[str, str]  # (host, normalized path)


class _Clash(NamedTuple):
    route: _Route  # the new app's
    owner: str  # the app that owns its host
    owners_route: _Route  # the route through which it owns it


def _route_keys(spec: AppSpec) -> set[_Route]:
    return {(r.host.lower(), normalize_path(r.path)) for svc in spec.services.values() for r in svc.routes}


def _clash(route: _Route, neighbours: list[AppSpec]) -> _Clash | None:
    """The first neighbour routing a host that a request for ``route`` could also match."""
    for other in neighbours:
        owned = sorted(r for r in _route_keys(other) if hosts_overlap(route[0], r[0]))
        if owned:
            return _Clash(route, other.app, route if route in owned else owned[0])
    return None


def _clash_message(spec: AppSpec, clashes: list[_Clash]) -> str:
    (host, path), owner, (their_host, their_path) = clashes[0]
    listen = spec.gateway.listen
    if (their_host, their_path) == (host, path):
        what = f"route {host}{path} on {listen} is already served by app {owner}"
    else:
        owned = host if their_host.startswith("*.") else their_host
        what = (f"route {host}{path} on {listen} would take requests of app {owner}: host {owned} belongs "
                f"to {owner}, which routes {their_host}{their_path} (a host and every path under it belong "
                f"to one app, a wildcard host and every host it matches too)")
    more = f" ({len(clashes) - 1} more of {spec.app}'s routes clash too)" if len(clashes) > 1 else ""
    return (f"{what}{more}; route another host in {spec.app}, move the route into app {owner}, "
            f"or give {spec.app} its own gateway.listen")


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConflictError(
                f"gateway.listen {host}:{port} is not available ({exc.strerror}); another program "
                f"listens there: stop it, or choose another address in gateway.listen"
            ) from exc


def _apply_summary(the_plan: Plan) -> str:
    changes = the_plan.changes
    if not changes:
        return "spec applied; nothing to change"
    kinds: dict[str, int] = {}
    for action in changes:
        kinds[action.kind] = kinds.get(action.kind, 0) + 1
    return "spec applied; " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))


def _images_summary(changes: list) -> str:
    moved = [f"{c.service} {c.before} -> {c.image}" for c in changes if c.before]
    return "; image changed: " + ", ".join(moved) if moved else ""


def _ignore(_progress: Progress) -> None:
    return None


def _check_one_writer(spec: AppSpec, service: str, count: int) -> None:
    """A writable host path is shared by every replica: more than one would write it at once."""
    shared = [name for name, v in spec.services[service].volumes.items() if v.bind and not v.read_only]
    if shared and count > 1:
        raise ConflictError(
            f"{service} mounts host path {spec.services[service].volumes[shared[0]].bind} writable (volume "
            f"{shared[0]}), which {count} replicas would all write; keep 1 replica, or make the volume "
            f"read_only or a named volume (one per replica) in the spec and run `flotilla up`"
        )
