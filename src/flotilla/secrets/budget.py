"""How much of the shared secrets tmpfs an app's replicas need: refused at validation, not when full.

Every replica's secrets live in RAM, on one tmpfs (``/run/flotilla-secrets``, 64 MiB) shared by
every app and every daemon of the host. A spec could ask for more than it holds (1,100 file
targets x 100 replicas), and it then filled mid-rollout: half-written directories, replicas that
could not start. This module is pure: from the sizes of a service's secret values it computes
the pages one replica takes (a tmpfs file takes whole pages) and the most the service may ever
hold at once, so ``up`` (and ``scale``) can refuse what cannot fit, with the numbers.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MIB = 1024 * 1024
TMPFS_BYTES = 64 * MIB
PAGE = mmap.PAGESIZE
ROLLOUT_SURGE = 1  # a rolling update starts one new replica before it stops an old one (plan/planner.py)


def pages(size: int, *, page: int = PAGE) -> int:
    """Bytes a file of ``size`` bytes takes on a tmpfs: whole pages."""
    return -(-size // page) * page


@dataclass(frozen=True)
class ServiceNeed:
    """One service's share: what one replica takes, and how many replicas may hold it at once."""

    service: str
    per_replica: int  # bytes, in whole pages
    replicas: int  # the most the service may run (autoscale max included), plus the rollout surge

    @property
    def total(self) -> int:
        return self.per_replica * self.replicas


def service_need(*, service: str, value_sizes: Iterable[int], most_replicas: int, shim_size: int,
                 page: int = PAGE) -> ServiceNeed:
    """A replica holds the shim and one file per secret (env or file target)."""
    per_replica = pages(shim_size, page=page) + sum(pages(size, page=page) for size in value_sizes)
    return ServiceNeed(service=service, per_replica=per_replica, replicas=most_replicas + ROLLOUT_SURGE)


def budget_problem(*, app: str, needs: Iterable[ServiceNeed], room: int, capacity: int = TMPFS_BYTES
                   ) -> tuple[str, str, str] | None:
    """(service, message, hint) when the app's secrets cannot fit in ``room`` bytes; None when they fit."""
    needs = sorted((n for n in needs if n.per_replica), key=lambda n: n.total, reverse=True)
    total = sum(n.total for n in needs)
    if total <= room:
        return None
    parts = ", ".join(f"{n.service}: {n.replicas} x {_mib(n.per_replica)}" for n in needs)
    message = (f"the secrets of app {app} need {_mib(total)} of RAM in the secrets tmpfs ({parts}; the most "
               f"replicas each service may run, plus {ROLLOUT_SURGE} during a rollout), and it can give "
               f"{app} only {_mib(room)} ({_mib(capacity)} in all, shared by every app on this host)")
    hint = ("lower replicas or autoscale.max, put fewer or smaller secrets on the service, "
            "or remove apps you no longer need from this host")
    return needs[0].service, message, hint


def most_replicas(replicas: int, autoscale_max: int | None) -> int:
    return max(replicas, autoscale_max or 0)


def value_sizes(names: Mapping[str, str], sizes: Mapping[str, int], *, unknown: int) -> list[int]:
    """The size of each target's value (target -> secret name), ``unknown`` for one not stored yet."""
    return [sizes.get(name, unknown) for name in names.values()]


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"
