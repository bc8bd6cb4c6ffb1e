"""Registry logins, kept in the vault: what `flotilla registry login/ls/logout` manage.

A login is checked by the registry's own answer before it is kept, and then
it lives encrypted in the vault under a namespace no app can have
(``REGISTRY_NAMESPACE``), one entry per registry host. Pulls hand it to Docker
as the SDK's ``auth_config`` of that one call (engines/docker/images.py):
nothing is written to ~/.docker/config.json, and no answer of this part ever
carries a password.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

from flotilla.engines.docker.images import Credentials
from flotilla.errors import BadRequestError, NotFoundError
from flotilla.secrets import Vault
from flotilla.secrets.vault import REGISTRY_NAMESPACE

# host[:port], as an image reference names a registry (IPv4, names; lowercase)
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?::[0-9]{1,5})?")
MAX_PASSWORD = 16 * 1024


class LoginCheck(Protocol):
    def verify_login(self, registry: str, auth: Credentials) -> None: ...


class Registries:
    """The logins of this daemon, by registry host."""

    def __init__(self, *, vault: Vault, checker: LoginCheck) -> None:
        self._vault = vault
        self._checker = checker

    def login(self, host: str, *, username: str, password: str) -> dict:
        """Keep the login once the registry accepts it; RegistryAuthError (nothing kept) when it refuses."""
        host = _check_host(host)
        auth = _check_credentials(username, password)
        self._checker.verify_login(host, auth)
        value = json.dumps({"username": auth.username, "password": auth.password}).encode()
        self._vault.set(REGISTRY_NAMESPACE, _entry(host), value)
        return {"registry": host, "username": auth.username, "logged_in": True}

    def logout(self, host: str) -> dict:
        host = _check_host(host)
        if not self._vault.remove(REGISTRY_NAMESPACE, _entry(host)):
            raise NotFoundError(f"no login for registry {host}; `flotilla registry ls` lists them")
        return {"registry": host, "logged_out": True}

    def list(self) -> list[dict]:
        """Every login: host, user name and when it was made; never a password."""
        return [
            {"registry": _host(info.name), "username": self._read(info.name).username, "since": info.created}
            for info in self._vault.list(REGISTRY_NAMESPACE)
        ]

    def credentials(self, host: str) -> Credentials | None:
        entry = _entry(host.lower())
        if self._vault.version(REGISTRY_NAMESPACE, entry) is None:
            return None
        return self._read(entry)

    def all_credentials(self) -> dict[str, Credentials]:
        """Every login by host (for Kubernetes' image pull Secrets)."""
        return {_host(info.name): self._read(info.name) for info in self._vault.list(REGISTRY_NAMESPACE)}

    def _read(self, entry: str) -> Credentials:
        data = json.loads(self._vault.get(REGISTRY_NAMESPACE, entry))
        return Credentials(username=data["username"], password=data["password"])


def _entry(host: str) -> str:
    """The vault name of a host's login (vault names have no ``:``)."""
    return host.replace(":", "_")


def _host(entry: str) -> str:
    return entry.replace("_", ":")


def _check_host(host: str) -> str:
    host = (host or "").strip().lower()
    if not _HOST.fullmatch(host) or len(host) > 63:
        raise BadRequestError(f"registry {host!r} is not a registry host; give HOST or HOST:PORT as an image "
                              f"names it, e.g. registry.example.com or 127.0.0.1:5000")
    return host


def _check_credentials(username: object, password: object) -> Credentials:
    if not isinstance(username, str) or not username.strip() or any(c.isspace() for c in username):
        raise BadRequestError("give the registry user name with --username (no spaces)")
    if not isinstance(password, str) or not password:
        raise BadRequestError("the password or token is empty; pipe it on standard input, "
                              "e.g. `printf %s \"$TOKEN\" | flotilla registry login HOST -u USER`")
    if len(password) > MAX_PASSWORD:
        raise BadRequestError(f"the password or token is over {MAX_PASSWORD // 1024} KiB; check what was piped in")
    return Credentials(username=username, password=password)
