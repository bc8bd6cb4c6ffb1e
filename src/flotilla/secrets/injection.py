"""Secrets into a container's environment without plaintext on disk.

Docker writes a container's environment into its configuration on disk, so
secret values never go there. Instead each replica gets a directory on a
RAM-backed filesystem (a tmpfs Flotilla mounts, without swap where the kernel
allows), bind-mounted read-only into the container at ``/run/flotilla``:

* ``env/NAME`` holds the value of each environment-variable secret, and a
  small POSIX shell shim exports them and then executes the image's own
  entrypoint and command, so the process sees ``DB_PASSWORD`` in its
  environment while ``docker inspect`` shows only the shim;
* file secrets are bind-mounted, read-only, one file each, at the path the
  spec names.

The directory is removed with its replica. Its parents are private to root,
so other users of the host cannot reach it. The tmpfs is shared by every app
and daemon of the host: ``up`` refuses secrets that cannot fit
(secrets/budget.py), and a tmpfs full anyway is a SecretsError that leaves no
half-written directory behind, so no replica starts with part of its secrets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import SecretsError
from flotilla.naming import home_identity
from flotilla.secrets.budget import MIB, TMPFS_BYTES
from flotilla.secrets.keys import write_all
from flotilla.spec.service_parts import FLOTILLA_DIR

CONTAINER_DIR = FLOTILLA_DIR  # the spec refuses file secrets here (service_parts.py)
SHIM_NAME = "flotilla-shim.sh"
SHIM = """#!/bin/sh
# Written by Flotilla: export secrets kept in RAM, then run the image's command.
for f in /run/flotilla/env/*; do
    [ -f "$f" ] || continue
    v=$(cat "$f"; printf x)
    export "${f##*/}=${v%x}"
done
exec "$@"
"""
SHARED_ROOT = Path("/run/flotilla-secrets")
LOCK_FILE = "/run/flotilla-secrets.lock"
RAM_FILESYSTEMS = ("tmpfs", "ramfs")
FULL = (errno.ENOSPC, errno.EDQUOT)
# `mount` runs with this environment only: the daemon's own holds FLOTILLA_MASTER_KEY.
MOUNT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
Writer = Callable[[Path, bytes], None]


@dataclass(frozen=True)
class SecretMounts:
    """What one replica's container needs to see its secrets."""

    host_dir: str
    env_names: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # (host path, path in the container)

    def mounts(self) -> list[tuple[str, str]]:
        """(host path, path in the container) of each read-only bind mount."""
        shim_dir = [(self.host_dir, CONTAINER_DIR)] if self.env_names else []
        return shim_dir + list(self.files)

    def wrap(self, command: list[str]) -> tuple[list[str] | None, list[str]]:
        """(entrypoint, command) that run ``command`` through the shim when needed."""
        if not self.env_names:
            return None, command
        return ["/bin/sh", f"{CONTAINER_DIR}/{SHIM_NAME}"], command


class SecretsRuntime:
    """The RAM-backed directory tree of one daemon (one ``$FLOTILLA_HOME``)."""

    def __init__(self, *, home: Path, shared_root: Path = SHARED_ROOT, write: Writer | None = None) -> None:
        self.shared_root = shared_root
        self.root = shared_root / home_identity(home)
        self._write = write or _write

    def materialize(
        self, *, app: str, replica: str, env: Mapping[str, bytes], files: Mapping[str, bytes]
    ) -> SecretMounts:
        """Write one replica's secrets to RAM; returns how to mount them. All or nothing: on any
        failure the replica's directory is removed (a full tmpfs says so: ``SecretsError``)."""
        base = self._replica_dir(app, replica)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(base)
        try:
            return self._write_files(base, env=env, files=files)
        except BaseException as exc:
            shutil.rmtree(base, ignore_errors=True)
            if isinstance(exc, OSError):
                raise self._write_error(replica, exc) from exc
            raise

    def _write_files(self, base: Path, *, env: Mapping[str, bytes], files: Mapping[str, bytes]) -> SecretMounts:
        (base / "env").mkdir(parents=True, mode=0o755)
        os.chmod(base, 0o755)
        self._write(base / SHIM_NAME, SHIM.encode())
        for name, value in env.items():
            self._write(base / "env" / name, value)
        mounted = []
        for number, (target, value) in enumerate(sorted(files.items())):
            host = base / f"file-{number}"
            self._write(host, value)
            mounted.append((str(host), target))
        return SecretMounts(host_dir=str(base), env_names=tuple(sorted(env)), files=tuple(mounted))

    def _write_error(self, replica: str, exc: OSError) -> SecretsError:
        if exc.errno in FULL:
            return SecretsError(
                f"the secrets tmpfs {self.shared_root} is full ({exc.strerror}), so {replica} was not started "
                f"and nothing of its secrets was kept; it is shared by every app on this host: remove apps or "
                f"replicas you no longer need (`flotilla ps` lists them), or lower replicas of services with "
                f"large secrets, then run `flotilla up` again"
            )
        return SecretsError(f"cannot write the secrets of {replica} to {self.shared_root}: {exc.strerror}; "
                            f"{replica} was not started")

    def room(self, app: str) -> int:
        """Bytes the tmpfs can give ``app``: what is free plus what the app holds now (its replicas
        give theirs back as they are replaced). The whole tmpfs when it is not mounted yet."""
        if not _on_ram(self.shared_root):
            return TMPFS_BYTES
        fs = os.statvfs(self.shared_root)
        return fs.f_bavail * fs.f_frsize + _used(self.root / app)

    def remove(self, app: str, replica: str) -> None:
        shutil.rmtree(self._replica_dir(app, replica), ignore_errors=True)

    def replicas(self, app: str) -> set[str]:
        app_dir = self.root / app
        return {p.name for p in app_dir.iterdir()} if app_dir.is_dir() else set()

    def remove_app(self, app: str) -> None:
        shutil.rmtree(self.root / app, ignore_errors=True)

    def gateway_dir(self) -> Path:
        """The gateway's TLS certificates and keys (gateway/certificates.py): on the same tmpfs, root only.
        No app can be called ``-gateway`` (an app name starts with a letter)."""
        self._ensure_ram()
        path = self.root / "-gateway"
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    def _replica_dir(self, app: str, replica: str) -> Path:
        self._ensure_ram()
        app_dir = self.root / app
        app_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return app_dir / replica

    def _ensure_ram(self) -> None:
        if not _on_ram(self.shared_root):
            with _host_lock():  # two daemons starting at once must not mount twice
                if not _on_ram(self.shared_root):
                    _mount_tmpfs(self.shared_root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)


@contextlib.contextmanager
def _host_lock():
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, data: bytes) -> None:
    """Every byte of ``data`` (one os.write may write less on a nearly full tmpfs) in a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def _used(directory: Path) -> int:
    """Bytes the files under ``directory`` take (their blocks); 0 when there is none."""
    total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


def _on_ram(path: Path) -> bool:
    """Whether ``path`` is the mount point of a RAM-backed filesystem."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(
        len(fields) > 2 and fields[1] == str(path) and fields[2] in RAM_FILESYSTEMS
        for fields in (line.split() for line in mounts)
    )


def _mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o711)
    size = f"size={TMPFS_BYTES // MIB}m,mode=0711"
    for options in (f"{size},noswap", size):
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "flotilla-secrets", str(path)],
            capture_output=True,
            text=True,
            env=MOUNT_ENV,
        )
        if result.returncode == 0:
            return
    raise SecretsError(
        f"cannot mount a tmpfs on {path} for secrets ({result.stderr.strip() or 'mount failed'}); "
        "secrets are kept in RAM only, which needs root: run the daemon as root"
    )
