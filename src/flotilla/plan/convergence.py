"""Whether an app has converged on its spec: a pure decision, read by ``up`` and ``ps``.

Converged means every slot of every service (its warm standby ones too) is
held by a running, healthy replica of the current config, and nothing else runs: no replica of an old
config, of a slot beyond the count, or of a service no longer in the spec.
"""

from __future__ import annotations

from collections.abc import Iterable

from flotilla.plan.model import Desired, DesiredService, Observed, ObservedReplica


def ready_slots(service: DesiredService, replicas: Iterable[ObservedReplica], *, standby: bool = False) -> set[int]:
    """The serving slots of ``service`` (with ``standby``, every slot) held by a healthy replica of its
    current config."""
    last = service.slots if standby else service.replicas
    return {
        r.index
        for r in replicas
        if r.service == service.name and r.running and r.healthy
        and r.config_hash == service.config_hash and r.index <= last
    }


def converged(desired: Desired, observed: Observed) -> bool:
    """Every wanted slot ready, exactly one replica each, and nothing unwanted left."""
    for service in desired.services:
        mine = [r for r in observed.replicas if r.service == service.name]
        if len(mine) != service.slots or len(ready_slots(service, mine, standby=True)) != service.slots:
            return False
    wanted = {s.name for s in desired.services}
    return all(r.service in wanted for r in observed.replicas)
