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
from flotilla.errors import Problem, SpecError
from flotilla.naming import container_name
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
from flotilla.secrets.injection import SecretMounts, SecretsRuntime
from flotilla.secrets.keys import ENV_SOURCE
from flotilla.spec import AppSpec, ServiceSpec, config_hash
from flotilla.spec.images import image_to_run


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
        versions = {**dict.fromkeys(generated, 0), **self.vault.versions(spec.app)}
        problems = []
        for name, svc in spec.services.items():
            problems += _unset(spec.app, name, svc, versions)
            if svc.secret_env and not self.engine.image_has_shell(image_to_run(spec, svc)):
                problems.append(_no_shell(name, svc))
        if problems:
            raise SpecError(problems)

    def prepare(self, spec: AppSpec, *, service: str, index: int, config_hash: str) -> Overrides:
        """Put one new replica's secrets in RAM; the container settings that mount them."""
        svc = spec.services[service]
        if not svc.secrets:
            return Overrides()
        replica = container_name(app=spec.app, service=service, index=index, config_hash=config_hash)
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
            self.runtime.remove(app, replica)


def _unset(app: str, service: str, svc: ServiceSpec, versions: Mapping[str, int]) -> list[Problem]:
    return [
        Problem.at_path(
            f"services.{service}.secrets.{key}",
            f"secret {name!r} is not set for app {app}",
            hint=f"set it with `flotilla secrets set {app} {name}` (the value is read from standard input)",
        )
        for key, name in svc.secrets.items()
        if name not in versions
    ]


def _no_shell(service: str, svc: ServiceSpec) -> Problem:
    first = next(iter(svc.secret_env))
    return Problem.at_path(
        f"services.{service}.secrets.{first}",
        f"image {svc.image} has no /bin/sh, so secrets cannot become environment variables",
        hint="map the secret to a file instead, e.g. /run/secrets/NAME: SECRET, and read it from there",
    )
