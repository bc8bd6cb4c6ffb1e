"""Which Runtime API changes bring HAProxy's servers in line with the replicas.

Pure: the replicas Flotilla wants behind a backend (with their health) and
the servers HAProxy has now go in; a list of changes comes out. The rules
that keep requests from failing live here:

* a new replica is added in maintenance and made ready only once healthy;
* a replica whose health is not known yet (the daemon just restarted) keeps
  whatever state HAProxy has for it: a restart of the control plane must not
  take serving replicas out of rotation;
* an unhealthy replica stops receiving new requests;
* a replica being drained is left alone: its removal is under way elsewhere;
* a server whose replica is gone is put in maintenance and deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Literal, Protocol

READY = "ready"
MAINT = "maint"


@dataclass(frozen=True)
class DesiredServer:
    name: str
    address: str
    port: int
    healthy: bool | None  # None: not probed yet


class CurrentServer(Protocol):
    address: str
    port: int
    admin: str  # "ready", "drain" or "maint"


@dataclass(frozen=True)
class ServerChange:
    backend: str
    server: str
    op: Literal["add", "ready", "maint", "delete"]
    reason: str
    address: str = ""
    port: int = 0


def server_changes(
    backend: str,
    desired: Sequence[DesiredServer],
    current: Mapping[str, CurrentServer],
    *,
    draining: Set[str] = frozenset(),
) -> list[ServerChange]:
    changes: list[ServerChange] = []
    wanted = {d.name: d for d in desired}
    for server in desired:
        if server.name in draining:
            continue
        now = current.get(server.name)
        if now is None or (now.address, now.port) != (server.address, server.port):
            changes += _replace(backend, server, exists=now is not None)
        else:
            changes += _state_change(backend, server, now.admin)
    for name in sorted(set(current) - set(wanted) - set(draining)):
        changes += [
            ServerChange(backend, name, "maint", "its replica is gone"),
            ServerChange(backend, name, "delete", "its replica is gone"),
        ]
    return changes


def enabled_for_config(server: DesiredServer, current: CurrentServer | None) -> bool:
    """Whether a (re)rendered configuration should list ``server`` as ready."""
    if server.healthy is None:
        return current is not None and current.admin == READY
    return server.healthy


def _replace(backend: str, server: DesiredServer, *, exists: bool) -> list[ServerChange]:
    changes = []
    if exists:
        changes += [
            ServerChange(backend, server.name, "maint", "its address changed"),
            ServerChange(backend, server.name, "delete", "its address changed"),
        ]
    changes.append(ServerChange(backend, server.name, "add", "new replica", server.address, server.port))
    if server.healthy:
        changes.append(ServerChange(backend, server.name, "ready", "healthy"))
    return changes


def _state_change(backend: str, server: DesiredServer, admin: str) -> list[ServerChange]:
    if server.healthy is True and admin != READY:
        return [ServerChange(backend, server.name, "ready", "healthy")]
    if server.healthy is False and admin == READY:
        return [ServerChange(backend, server.name, "maint", "unhealthy")]
    return []
