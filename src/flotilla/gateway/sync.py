"""Which Runtime API changes bring HAProxy's server slots in line with the replicas.

Each routed backend has a fixed pool of server slots (see config.py for why);
a slot is free (address 0.0.0.0, in maintenance) or holds one replica, found
by its address. Pure: the replicas Flotilla wants behind a backend (with
their health) and the slots HAProxy has now go in; a list of changes comes
out. The rules that keep requests from failing live here:

* a new replica takes a free slot in maintenance and is made ready only once
  healthy;
* a replica whose health is not known yet (the daemon just restarted) keeps
  whatever state HAProxy has for it: a restart of the control plane must not
  take serving replicas out of rotation;
* an unhealthy replica stops receiving new requests;
* a replica being drained is left alone: its removal is under way elsewhere;
* a slot whose replica is gone is put in maintenance and freed.

A backend of a service that may scale to zero has one more server, the
activator (config.py), which is no slot: it is ready while the service is
held (no replica serves it) and in maintenance otherwise. It is made ready
before any slot leaves rotation and put in maintenance only after the slots
changed, so the backend is never left without a server in between.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Literal, Protocol

from flotilla.errors import NoFreeSlotError
from flotilla.gateway.config import ACTIVATOR_SERVER, FREE_ADDRESS, FREE_PORT

READY = "ready"
MAINT = "maint"


@dataclass(frozen=True)
class DesiredServer:
    name: str  # the replica's container name, for messages
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
    slot: str
    op: Literal["assign", "ready", "maint", "release"]
    reason: str
    address: str = ""
    port: int = 0


def is_free(server: CurrentServer) -> bool:
    return server.address == FREE_ADDRESS


def slot_of(slots: Mapping[str, CurrentServer], address: str, port: int) -> str | None:
    """The slot holding the replica at ``address:port``, if any."""
    return next((n for n, s in slots.items() if (s.address, s.port) == (address, port)), None)


def server_changes(
    backend: str,
    desired: Sequence[DesiredServer],
    slots: Mapping[str, CurrentServer],
    *,
    draining: Set[str] = frozenset(),
) -> list[ServerChange]:
    """``draining`` holds the addresses of replicas being drained. The activator is no slot: it is left out."""
    slots = {name: s for name, s in slots.items() if name != ACTIVATOR_SERVER}
    changes: list[ServerChange] = []
    free = sorted((n for n, s in slots.items() if is_free(s)), key=_slot_number)
    for server in desired:
        if server.address in draining:
            continue
        slot = slot_of(slots, server.address, server.port)
        if slot is None:
            if not free:
                raise NoFreeSlotError(f"{backend}: no free server slot for {server.name}")
            changes += _assign(backend, free.pop(0), server)
        else:
            changes += _state_change(backend, slot, server, slots[slot].admin)
    wanted = {(d.address, d.port) for d in desired}
    for slot, now in sorted(slots.items(), key=lambda item: _slot_number(item[0])):
        if not is_free(now) and (now.address, now.port) not in wanted and now.address not in draining:
            changes += _release(backend, slot, now.admin, "its replica is gone")
    return changes


def activator_changes(
    backend: str, *, held: bool, current: CurrentServer | None
) -> tuple[list[ServerChange], list[ServerChange]]:
    """The activator's state change, as (before the slots' changes, after them).

    ``current`` is the backend's activator server as HAProxy has it (None: the
    backend has none, so there is nothing to change).
    """
    if current is None:
        return [], []
    if held and current.admin != READY:
        return [ServerChange(backend, ACTIVATOR_SERVER, "ready", "no replica serves: requests are held")], []
    if not held and current.admin != MAINT:
        return [], [ServerChange(backend, ACTIVATOR_SERVER, "maint", "a replica serves: nothing to hold")]
    return [], []


def enabled_for_config(server: DesiredServer, current: CurrentServer | None) -> bool:
    """Whether a (re)rendered configuration should list ``server`` as ready."""
    if server.healthy is None:
        return current is not None and current.admin == READY
    return server.healthy


def _assign(backend: str, slot: str, server: DesiredServer) -> list[ServerChange]:
    changes = [ServerChange(backend, slot, "assign", f"new replica {server.name}", server.address, server.port)]
    if server.healthy:
        changes.append(ServerChange(backend, slot, "ready", f"{server.name} is healthy"))
    return changes


def _release(backend: str, slot: str, admin: str, reason: str) -> list[ServerChange]:
    changes = [] if admin == MAINT else [ServerChange(backend, slot, "maint", reason)]
    return changes + [ServerChange(backend, slot, "release", reason, FREE_ADDRESS, FREE_PORT)]


def _state_change(backend: str, slot: str, server: DesiredServer, admin: str) -> list[ServerChange]:
    if server.healthy is True and admin != READY:
        return [ServerChange(backend, slot, "ready", f"{server.name} is healthy")]
    if server.healthy is False and admin == READY:
        return [ServerChange(backend, slot, "maint", f"{server.name} is unhealthy")]
    return []


def _slot_number(slot: str) -> int:
    found = re.search(r"(\d+)$", slot)
    return int(found.group(1)) if found else 0
