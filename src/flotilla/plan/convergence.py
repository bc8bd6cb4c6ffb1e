"""Whether an app has converged on its spec: a pure decision, read by ``up`` and ``ps``.

Converged means every slot of every service is served by a running, healthy
replica of the current config, and nothing else runs: no replica of an old
config, of a slot beyond the count, or of a service no longer in the spec.
"""

from __future__ import annotations

from collections.abc import Iterable

from flotilla.plan.model import Desired, DesiredService, Observed, ObservedReplica


def ready_slots(service: DesiredService, replicas: Iterable[ObservedReplica]) -> set[int]:
    """The slots of ``service`` served by a healthy replica of its current config."""
    return {
        r.index
        for r in replicas
        if r.service == service.name and r.running and r.healthy
        and r.config_hash == service.config_hash and r.index <= service.replicas
    }


def converged(desired: Desired, observed: Observed) -> bool:
    """Every wanted slot ready, exactly one replica each, and nothing unwanted left."""
    for service in desired.services:
        mine = [r for r in observed.replicas if r.service == service.name]
        if len(mine) != service.replicas or len(ready_slots(service, mine)) != service.replicas:
            return False
    wanted = {s.name for s in desired.services}
    return all(r.service in wanted for r in observed.replicas)
