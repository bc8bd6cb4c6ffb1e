"""The daemon's side of secrets: which values each replica gets, and when to roll.

Joins the vault (values, versions), the RAM-backed runtime (where a replica's
values live while it runs) and the engine (the image's own command, wrapped
by the shim). A secret's version is part of its services' config hash, so
setting a new value rolls those services one replica at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flotilla.daemon.ports import ReplicaEngine
from flotilla.engines.docker.containers import MountSpec, Overrides
from flotilla.errors import BadRequestError, Problem, SpecError
from flotilla.naming import cache_password_secret, container_name, is_task_name
from flotilla.plan import Observed
from flotilla.secrets import (
    MasterKey,
    Vault,
    WrongKeyError,
    decode_key_text,
    generate_key,
    load_master_key,
    write_key_file,
)
from flotilla.secrets.budget import budget_problem, most_replicas, service_need, value_sizes
from flotilla.secrets.injection import CONTAINER_DIR, SHIM, SecretMounts, SecretsRuntime
from flotilla.secrets.keys import ENV_SOURCE
from flotilla.spec import AppSpec, ServiceSpec, config_hash
from flotilla.spec.images import image_to_run
from flotilla.spec.models import JobSpec

# A cache password reaches redis-server as a config line (``requirepass PASSWORD``): a space
# or a quote breaks the line, and redis-server then echoes it, password and all.
_CACHE_PASSWORD_SUFFIX = cache_password_secret("")  # "<cache>-redis-password"


def cache_password_rule(app: str, name: str) -> str:
    return ("a cache password is letters and digits only (Redis reads it from a config line), and a "
            f"trailing newline counts: set one with `openssl rand -hex 24 | tr -d '\\n' | flotilla secrets set "
            f"{app} {name}` (the cache's nodes then restart with it, one at a time)")


def cache_password_problem(name: str, value: bytes) -> str | None:
    """Why ``value`` cannot be the cache password secret ``name``; None when it can (or is no such secret)."""
    if not name.endswith(_CACHE_PASSWORD_SUFFIX) or value.isalnum():  # bytes: ASCII letters and digits
        return None
    odd = sum(1 for byte in value if not bytes([byte]).isalnum())
    return f"secret {name} is a cache password and holds {odd} byte(s) that are not ASCII letters or digits"


def check_cache_password(app: str, name: str, value: bytes) -> None:
    """``flotilla secrets set``: a bad cache password is refused before it is stored."""
    problem = cache_password_problem(name, value)
    if problem:
        raise BadRequestError(f"{problem}; {cache_password_rule(app, name)}")


@dataclass(frozen=True)
class KeyPlace:
    """Where the master key came from (``"env"`` or a file) and where a new one is staged."""

    source: str
    pending: Path


def open_vault(*, home: Path, store: Path, environ: Mapping[str, str], clock) -> tuple[Vault, KeyPlace]:
    """The vault under its master key; finishes a rekey that a crash interrupted."""
    key, source = load_master_key(home=home, environ=environ)
    place = KeyPlace(source=source, pending=home / "master.key.new")
    try:
        return Vault(store, key, clock=clock, key_source=source), place
    except WrongKeyError:
        staged = _staged_key(place.pending)
        if staged is None:
            raise
        vault = Vault(store, staged, clock=clock)  # the rekey committed: adopt its key
        if source != ENV_SOURCE:
            place.pending.replace(source)
        return vault, place


def _staged_key(path: Path) -> MasterKey | None:
    try:
        return decode_key_text(path.read_text())
    except OSError:
        return None


class SecretInjector:
    def __init__(
        self, *, vault: Vault, runtime: SecretsRuntime, engine: ReplicaEngine, keys: KeyPlace
    ) -> None:
        self.vault = vault
        self.runtime = runtime
        self.engine = engine
        self.keys = keys

    def rekey(self) -> dict:
        """A new master key for every secret, crash-safe in this order: the new key
        is written first (``master.key.new``), then every value is re-encrypted in
        one transaction, then the new key takes the old one's place."""
        new = generate_key()
        write_key_file(self.keys.pending, new)
        count = self.vault.rekey(new)
        if self.keys.source == ENV_SOURCE:
            return {
                "reencrypted": count,
                "key": str(self.keys.pending),
                "message": f"re-encrypted {count} secret(s); the new key is in {self.keys.pending}: "
                f"put it in FLOTILLA_MASTER_KEY before the daemon next starts, then delete that file",
            }
        self.keys.pending.replace(self.keys.source)
        return {
            "reencrypted": count,
            "key": self.keys.source,
            "message": f"re-encrypted {count} secret(s) under a new master key in {self.keys.source}",
        }

    def config_hash(self, spec: AppSpec, service: str, versions: Mapping[str, int]) -> str:
        """The service's config hash, with the versions of the secrets it uses."""
        used = sorted(set(spec.services[service].secrets.values()))
        extra = {f"secret:{name}": str(versions.get(name, 0)) for name in used}
        return config_hash(spec, service, extra=extra or None)

    def check(self, spec: AppSpec, *, generated: set[str] = frozenset()) -> None:
        """Every named secret is set (or ``generated`` by Flotilla), and env secrets have a shell to run the shim."""
        stored = self.vault.versions(spec.app)
        versions = {**dict.fromkeys(generated, 0), **stored}
        problems = self._bad_cache_passwords(spec, set(stored)) + self.budget_problems(spec)
        for name, job in spec.jobs.items():
            problems += _unset(spec.app, name, job, versions, section="jobs")
        for name, svc in spec.services.items():
            problems += _unset(spec.app, name, svc, versions) + _volume_clashes(name, svc)
            if svc.secret_env and not self.engine.image_has_shell(image_to_run(spec, svc)):
                problems.append(_no_shell(name, svc))
        if problems:
            raise SpecError(problems)

    def budget_problems(self, spec: AppSpec) -> list[Problem]:
        """The app's secrets, at the most replicas each service may run, against what the shared
        tmpfs can give it (secrets/budget.py); also for ``flotilla scale``."""
        stored = self.vault.versions(spec.app)
        used = {n for svc in spec.services.values() for n in svc.secrets.values() if n in stored}
        sizes = {name: len(self.vault.get(spec.app, name)) for name in used}
        needs = [
            service_need(service=name, value_sizes=value_sizes(svc.secrets, sizes, unknown=1),
                         most_replicas=most_replicas(svc.replicas, svc.autoscale.max if svc.autoscale else None),
                         shim_size=len(SHIM))
            for name, svc in spec.services.items() if svc.secrets
        ]
        found = budget_problem(app=spec.app, needs=needs, room=self.runtime.room(spec.app))
        if found is None:
            return []
        service, message, hint = found
        return [Problem.at_path(f"services.{service}.secrets", message, hint=hint)]

    def _bad_cache_passwords(self, spec: AppSpec, stored: set[str]) -> list[Problem]:
        """A cache password set before the rule was enforced is refused at ``up``."""
        found = ((cache, cache_password_secret(cache)) for cache in spec.caches)
        return [
            Problem.at_path(f"caches.{cache}", problem, hint=cache_password_rule(spec.app, name))
            for cache, name in found
            if name in stored and (problem := cache_password_problem(name, self.vault.get(spec.app, name)))
        ]

    def prepare(self, spec: AppSpec, *, service: str, index: int, config_hash: str) -> Overrides:
        """Put one new replica's secrets in RAM; the container settings that mount them."""
        replica = container_name(app=spec.app, service=service, index=index, config_hash=config_hash)
        return self.prepare_named(spec, service=service, replica=replica)

    def prepare_named(self, spec: AppSpec, *, service: str, replica: str) -> Overrides:
        """As ``prepare``, for the container named ``replica`` (a task's, daemon/tasks.py)."""
        svc = spec.services[service]
        if not svc.secrets:
            return Overrides()
        mounts = self.runtime.materialize(
            app=spec.app,
            replica=replica,
            env={var: self.vault.get(spec.app, secret) for var, secret in svc.secret_env.items()},
            files={path: self.vault.get(spec.app, secret) for path, secret in svc.secret_files.items()},
        )
        return self._overrides(svc, mounts, image=image_to_run(spec, svc))  # the deploy's pinned image

    def _overrides(self, svc: ServiceSpec, mounts: SecretMounts, *, image: str) -> Overrides:
        binds = tuple(MountSpec.bind(host, target) for host, target in mounts.mounts())
        if not mounts.env_names:
            return Overrides(mounts=binds)
        entrypoint, cmd = self.engine.image_command(image)
        command = [*entrypoint, *(svc.command or cmd)]
        wrapper, wrapped = mounts.wrap(command)
        return Overrides(mounts=binds, entrypoint=tuple(wrapper or ()), command=tuple(wrapped))

    def forget(self, app: str, replica: str) -> None:
        self.runtime.remove(app, replica)

    def collect_garbage(self, app: str, observed: Observed) -> None:
        """Remove the secrets of replicas whose containers are gone (say, after a crash of the daemon)."""
        alive = {r.name for r in observed.replicas}
        for replica in self.runtime.replicas(app) - alive:
            if is_task_name(app, replica):
                continue  # a task's, removed with its task (daemon/tasks.py)
            self.runtime.remove(app, replica)


def _unset(app: str, service: str, svc: ServiceSpec | JobSpec, versions: Mapping[str, int], *,
           section: str = "services") -> list[Problem]:
    return [
        Problem.at_path(
            f"{section}.{service}.secrets.{key}",
            f"secret {name!r} is not set for app {app}",
            hint=f"set it with `flotilla secrets set {app} {name}` (the value is read from standard input)",
        )
        for key, name in svc.secrets.items()
        if name not in versions
    ]


def _volume_clashes(service: str, svc: ServiceSpec) -> list[Problem]:
    """A file secret (or the env-secret directory) at a volume's path: one mount point twice."""
    mine = [*svc.secret_files, *([CONTAINER_DIR] if svc.secret_env else [])]
    return [
        Problem.at_path(f"services.{service}.secrets.{target}", f"{target} is also the path of volume {volume}",
                        hint="mount the secret at another path")
        for volume, v in svc.volumes.items() for target in mine if target == v.path
    ]


def _no_shell(service: str, svc: ServiceSpec) -> Problem:
    first = next(iter(svc.secret_env))
    return Problem.at_path(
        f"services.{service}.secrets.{first}",
        f"image {svc.image} has no /bin/sh, so secrets cannot become environment variables",
        hint="map the secret to a file instead, e.g. /run/secrets/NAME: SECRET, and read it from there",
    )
